//! What an attempt saw, as the text an operator reads in `last_seen`: short, the
//! same words for the same thing whichever gate saw it, and one sentence for several
//! addresses that answered alike (`connection refused on 127.77.0.5:5432 and
//! 127.77.1.5:5432`).

use std::io;
use std::time::Duration;

/// One attempt's result: whether it passed, and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub passed: bool,
    pub what: String,
}

impl Seen {
    pub fn pass(what: impl Into<String>) -> Self {
        Seen {
            passed: true,
            what: what.into(),
        }
    }

    pub fn fail(what: impl Into<String>) -> Self {
        Seen {
            passed: false,
            what: what.into(),
        }
    }
}

/// What one address answered: `{head} {target}{tail}`, e.g. head `HTTP 503 from`,
/// target the URL, tail `: starting`. Answers with the same head and tail are said
/// once, naming all their targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub head: String,
    pub target: String,
    pub tail: String,
}

/// The answers of several addresses as one text, in the addresses' order, alike
/// answers grouped: `connection refused on A and B; no answer within 2s on C`.
pub(crate) fn answers(list: &[Answer]) -> String {
    let mut groups: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for answer in list {
        match groups
            .iter_mut()
            .find(|(head, tail, _)| *head == answer.head && *tail == answer.tail)
        {
            Some((_, _, targets)) => targets.push(&answer.target),
            None => groups.push((&answer.head, &answer.tail, vec![&answer.target])),
        }
    }
    groups
        .into_iter()
        .map(|(head, tail, targets)| format!("{head} {}{tail}", and_list(&targets)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `a`, `a and b`, `a, b and c`.
pub(crate) fn and_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// An I/O error in the words of a readiness report: `connection refused`, `host
/// unreachable`; the system's text when it has no shorter name.
pub(crate) fn io_error(e: &io::Error) -> String {
    let said = match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused",
        io::ErrorKind::ConnectionReset => "connection reset",
        io::ErrorKind::ConnectionAborted => "connection aborted",
        io::ErrorKind::TimedOut => "connection timed out",
        io::ErrorKind::HostUnreachable => "host unreachable",
        io::ErrorKind::NetworkUnreachable => "network unreachable",
        io::ErrorKind::AddrNotAvailable => "address not available",
        io::ErrorKind::UnexpectedEof => "connection closed early",
        _ => return e.to_string(),
    };
    said.to_string()
}

/// A duration as a reader would say it: `2s`, `1.5s`, `250ms`.
pub(crate) fn duration(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// At most `max` bytes of `text` from its start, on one line, `…` where cut.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.len() <= max {
        return flat;
    }
    let mut end = max;
    while !flat.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &flat[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(head: &str, target: &str, tail: &str) -> Answer {
        Answer {
            head: head.into(),
            target: target.into(),
            tail: tail.into(),
        }
    }

    #[test]
    fn alike_answers_are_said_once_in_the_addresses_order() {
        let refused = |t| answer("connection refused on", t, "");
        assert_eq!(answers(&[refused("A")]), "connection refused on A");
        assert_eq!(
            answers(&[refused("A"), refused("B")]),
            "connection refused on A and B"
        );
        assert_eq!(
            answers(&[
                refused("A"),
                answer("HTTP 503 from", "B", ": starting"),
                refused("C"),
                refused("D"),
                answer("HTTP 503 from", "E", ": other"),
            ]),
            "connection refused on A, C and D; HTTP 503 from B: starting; HTTP 503 from E: other"
        );
    }

    #[test]
    fn durations_and_lines_read_short() {
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::from_secs(2)), "2s");
        assert_eq!(duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(one_line("  a\n  b\tc ", 10), "a b c");
        assert_eq!(one_line("ééééé", 3), "é…");
    }
}
