//! The `[[gates]]` tables: defaults, every problem at once with its field, and the
//! examples of `docs/readiness.md`.

use std::time::Duration;

use readiness::{Check, CommandCheck, DefinitionError, Gate, GateSpec, HttpCheck, Problem};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn the_gates_of_a_plan_read_with_their_defaults() {
    let gates = readiness::parse(
        r#"
        [[gates]]
        kind = "running"

        [[gates]]
        kind = "tcp"
        port = 5432
        deadline_secs = 300
        interval_secs = 5

        [[gates]]
        kind = "http"
        port = 8080
        path = "/health"
        expect = [200]

        [[gates]]
        kind = "http"
        port = 8443
        https = true
        tls_skip_verify = true
        expect = [200, 204]
        timeout_secs = 3

        [[gates]]
        kind = "command"
        program = "/usr/local/bin/check-replication"
        args = ["--lag-max", "30"]
        timeout_secs = 20
        "#,
    )
    .expect("valid gates");
    assert_eq!(
        gates,
        vec![
            Gate {
                check: Check::Running,
                deadline: secs(600),
                interval: secs(5),
            },
            Gate {
                check: Check::Tcp {
                    port: 5432,
                    connect_timeout: secs(5),
                },
                deadline: secs(300),
                interval: secs(5),
            },
            Gate {
                check: Check::Http(HttpCheck {
                    port: 8080,
                    path: "/health".into(),
                    https: false,
                    tls_skip_verify: false,
                    expect: vec![200],
                    timeout: secs(10),
                }),
                deadline: secs(600),
                interval: secs(5),
            },
            Gate {
                check: Check::Http(HttpCheck {
                    port: 8443,
                    path: "/".into(),
                    https: true,
                    tls_skip_verify: true,
                    expect: vec![200, 204],
                    timeout: secs(3),
                }),
                deadline: secs(600),
                interval: secs(5),
            },
            Gate {
                check: Check::Command(CommandCheck {
                    program: "/usr/local/bin/check-replication".into(),
                    args: vec!["--lag-max".into(), "30".into()],
                    timeout: secs(20),
                }),
                deadline: secs(600),
                interval: secs(5),
            },
        ]
    );
    assert_eq!(readiness::parse("").expect("no gates"), vec![]);
}

#[test]
fn every_problem_is_reported_at_once_with_its_field() {
    let text = r#"
        [[gates]]
        kind = "tcp"
        port = 70000
        deadline_secs = 0

        [[gates]]
        kind = "http"
        port = 0
        path = "health"
        tls_skip_verify = true
        expect = [200, 2000]
        interval_secs = 30
        deadline_secs = 20

        [[gates]]
        kind = "tpc"
        port = 22

        [[gates]]
        kind = "command"
        path = "/x"
        program = "./check.sh"
        timeout_secs = -1

        [[gates]]
        port = 22

        [[gates]]
        kind = "running"
        timeout_secs = 5

        [[gates]]
        kind = "http"
        expect = []

        [[gates]]
        kind = "running"
        deadline_secs = 5
        "#;
    let Err(DefinitionError::Invalid(problems)) = readiness::parse(text) else {
        panic!("the gates are refused");
    };
    let said: Vec<String> = problems.iter().map(Problem::to_string).collect();
    assert_eq!(
        said,
        [
            "gates[0].deadline_secs: must be 1–86400 seconds, not 0",
            "gates[0].port: must be 1–65535, not 70000",
            "gates[1].interval_secs: must be shorter than the deadline (20s), or the gate is tried only once: make it shorter or deadline_secs longer",
            "gates[1].port: must be 1–65535, not 0",
            "gates[1].path: must start with `/` (like `/health`), not `health`",
            "gates[1].tls_skip_verify: only means something over HTTPS: set https = true, or remove it",
            "gates[1].expect[1]: must be an HTTP status, 100–599, not 2000",
            "gates[2].kind: `tpc` is not a kind of gate: use running, tcp, http or command",
            "gates[3].path: a command gate has no path (only http gates do): remove it, or make it kind = \"http\"",
            "gates[3].timeout_secs: must be 1–86400 seconds, not -1",
            "gates[3].program: `./check.sh` is a relative path, which would depend on where ferry was started: give an absolute path or a name looked up on PATH",
            "gates[4].kind: missing: say what the gate checks (kind = \"running\", \"tcp\", \"http\" or \"command\")",
            "gates[5].timeout_secs: a running gate has no timeout_secs (only tcp, http and command gates do): remove it",
            "gates[6].port: missing: an http gate needs the port to connect to (1–65535)",
            "gates[6].expect: names no status, so nothing would pass: list the statuses that mean ready (expect = [200])",
            "gates[7].deadline_secs: must be longer than the interval (5s by default), or the gate is tried only once: make it longer or set a shorter interval_secs",
        ]
    );
    let specs: readiness::GatesFile = toml::from_str(text).expect("readable");
    assert_eq!(readiness::validate(&specs.gates, "vms[2].gates"), {
        let mut moved = problems.clone();
        for p in &mut moved {
            p.field = p.field.replacen("gates", "vms[2].gates", 1);
        }
        moved
    });
    let message = DefinitionError::Invalid(problems).to_string();
    assert!(
        message.starts_with("the gates have 16 problem(s):\n  - gates[0].deadline_secs:"),
        "{message}"
    );
}

#[test]
fn a_misspelt_or_mistyped_field_is_refused_not_ignored() {
    for text in [
        "[[gates]]\nkind = \"tcp\"\nport = 22\ndeadline = 30\n",
        "[[gates]]\nkind = \"tcp\"\nport = \"22\"\n",
        "[gate]\nkind = \"tcp\"\n",
    ] {
        assert!(
            matches!(readiness::parse(text), Err(DefinitionError::Syntax(_))),
            "{text}"
        );
    }
    let spec: GateSpec = toml::from_str("kind = \"tcp\"\nport = 22\n").expect("one table");
    assert!(readiness::validate(&[spec], "gates").is_empty());
}

/// The ```toml blocks of a markdown file.
fn toml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn the_examples_of_the_docs_are_valid_gates() {
    let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/readiness.md");
    let text = std::fs::read_to_string(&doc).expect("docs/readiness.md");
    let blocks = toml_blocks(&text);
    assert!(!blocks.is_empty(), "the doc shows its format");
    for block in blocks {
        let gates = readiness::parse(&block).unwrap_or_else(|e| panic!("{e}\n{block}"));
        assert!(!gates.is_empty(), "{block}");
    }
}
