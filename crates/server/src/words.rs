//! Sizes, durations and errors as an operator reads them, the same in the CLI, the
//! console and the evidence report.

/// `107 GiB`, or `0.5 GiB` when it is not a whole number of GiB.
pub fn gib(bytes: i64) -> String {
    const GIB: i64 = 1 << 30;
    if bytes % GIB == 0 {
        format!("{} GiB", bytes / GIB)
    } else {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    }
}

/// `0.4 s`, `12.3 s`, `4 min 05 s`, `2 h 03 min`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {:02} s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{} h {:02} min", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

/// An error in words: the volume daemon records an operation's error as JSON
/// (`class`, `code`, `command`, `detail`, …), of which the detail is what an operator
/// reads; any other text is itself.
pub fn in_words(error: &str) -> String {
    serde_json::from_str::<serde_json::Value>(error)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
        .unwrap_or_else(|| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_recorded_as_json_reads_as_its_detail_and_any_other_as_itself() {
        assert_eq!(in_words(r#"{"class":"x","detail":"boom"}"#), "boom");
        assert_eq!(in_words(r#"{"class":"x"}"#), r#"{"class":"x"}"#);
        assert_eq!(in_words("plain words"), "plain words");
    }
}
