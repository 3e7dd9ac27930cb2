//! SQL is built only with bound parameters: every statement the store sends is a
//! string literal in the source, with `$1, $2 …` for values, never text assembled at
//! run time (`format!`, `push_str`, a concatenation) — so no value a user, a VM
//! definition or CloudStack supplies can become SQL.
//!
//! The test reads the store's source (`crates/store/src/**.rs`) and finds every call
//! that sends SQL (`sqlx::query`, `query_as`, `query_scalar`, `query_with`,
//! `raw_sql`, `QueryBuilder`); the first argument of each must be a string literal,
//! or one of the few names listed below with why it is safe. And no other crate may
//! talk to the database directly: only `store` depends on sqlx.

use std::path::{Path, PathBuf};

/// Non-literal arguments that are safe, with the reason; a new one must be added here,
/// reviewed.
const ALLOWED: &[(&str, &str, &str)] = &[
    (
        "pool.rs",
        "pragma",
        "iterates over an array of literal PRAGMA statements",
    ),
    (
        "journal.rs",
        "sql",
        "update_op's parameter is &'static str: its callers pass literals",
    ),
    (
        "testing.rs",
        "&format!(\"CREATE SCHEMA {schema}\")",
        "test support only: DDL cannot bind an identifier, and the name is ferry_t_<uuid> made here",
    ),
];

const SENDERS: &[&str] = &[
    "sqlx::query(",
    "sqlx::query_as(",
    "sqlx::query_scalar(",
    "sqlx::query_with(",
    "sqlx::query_as_with(",
    "sqlx::query_scalar_with(",
    "sqlx::raw_sql(",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first argument of the call whose `(` ends at `open`: up to the `,` or `)` that
/// closes it at depth zero (string literals skipped whole).
fn first_argument(text: &str, open: usize) -> String {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    let mut in_string = false;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if in_string {
            if c == '\\' {
                i += 2;
                continue;
            }
            if c == '"' {
                in_string = false;
            }
        } else {
            match c {
                '"' => in_string = true,
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' if depth == 0 => break,
                ')' | ']' | '}' => depth -= 1,
                ',' if depth == 0 => break,
                _ => {}
            }
        }
        i += 1;
    }
    text[open..i].trim().to_string()
}

fn is_literal(argument: &str) -> bool {
    let a = argument.trim_start_matches('&');
    (a.starts_with('"') || a.starts_with("r\"") || a.starts_with("r#\""))
        && (a.ends_with('"') || a.ends_with("\"#"))
}

#[test]
fn every_statement_is_a_string_literal_with_bound_parameters() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(!files.is_empty());
    let mut statements = 0;
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        for sender in SENDERS {
            for (at, _) in text.match_indices(sender) {
                statements += 1;
                let argument = first_argument(&text, at + sender.len());
                let line = text[..at].lines().count() + 1;
                if is_literal(&argument) {
                    if argument.contains("{}") || argument.contains("{0}") {
                        problems.push(format!(
                            "{name}:{line}: a literal with a format placeholder: {argument}"
                        ));
                    }
                    continue;
                }
                if !ALLOWED.iter().any(|(f, a, _)| *f == name && *a == argument) {
                    problems.push(format!(
                        "{name}:{line}: {sender}{argument} — not a string literal; bind the values \
                         (`$1`) instead, or add it to ALLOWED with why it is safe"
                    ));
                }
            }
        }
        for builder in ["QueryBuilder", "push_unseparated", ".push_bind("] {
            if text.contains(builder) {
                problems.push(format!("{name}: uses {builder}: SQL assembled at run time"));
            }
        }
    }
    assert!(
        statements > 40,
        "only {statements} statements found: is the scan still right?"
    );
    assert!(
        problems.is_empty(),
        "SQL not built from literals:\n{}",
        problems.join("\n")
    );
    eprintln!(
        "RELIABILITY security sql statements={statements} non_literal_allowed={}",
        ALLOWED.len()
    );
}

#[test]
fn only_the_store_talks_to_the_database() {
    let crates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut offenders = Vec::new();
    for entry in std::fs::read_dir(&crates).expect("the crates") {
        let dir = entry.expect("an entry").path();
        let manifest = dir.join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        if name != "store" && text.lines().any(|l| l.trim_start().starts_with("sqlx")) {
            offenders.push(name);
        }
    }
    assert!(
        offenders.is_empty(),
        "crates that depend on sqlx directly: {offenders:?}"
    );
}

#[test]
fn the_scan_tells_a_literal_from_assembled_sql() {
    let text = r#"sqlx::query("SELECT * FROM t WHERE id = $1").bind(x); sqlx::query(&format!("SELECT {c} FROM t")).bind(y); sqlx::query(sql, other)"#;
    let args: Vec<String> = text
        .match_indices("sqlx::query(")
        .map(|(at, _)| first_argument(text, at + "sqlx::query(".len()))
        .collect();
    assert_eq!(
        args,
        vec![
            "\"SELECT * FROM t WHERE id = $1\"".to_string(),
            "&format!(\"SELECT {c} FROM t\")".to_string(),
            "sql".to_string()
        ]
    );
    assert!(is_literal(&args[0]));
    assert!(!is_literal(&args[1]) && !is_literal(&args[2]));
}
