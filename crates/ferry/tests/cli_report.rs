//! `ferry report ID` against a real `ferry serve` and `ferry cloudsim` (tests/cli_harness):
//! a drill started from the CLI records who asked (`$USER@host`, or
//! FERRY_REQUESTED_BY), and its report is written as HTML and as JSON, to stdout and to
//! a file, the two of one digest's kind; an unknown id and a bad format are refused with
//! exit 2 and a message that says what was wrong.

mod cli_harness;

use cli_harness::{Server, pgtest1};

/// A server with pgtest1 through a test failover started by `who`; the run's id.
fn drilled(who: &str) -> (Server, String) {
    let server = Server::start();
    let file = server.write("pgtest1.toml", &pgtest1());
    server.ferry().args(["vm", "add"]).args([&file]).run().ok();
    server
        .ferry()
        .env("FERRY_REQUESTED_BY", who)
        .args(["failover", "test", "pgtest1", "--wait"])
        .run()
        .code(0);
    let runs = server.json(["run", "list", "--limit", "1"]);
    let id = runs[0]["id"].as_str().expect("a run id").to_string();
    (server, id)
}

#[test]
fn report_writes_a_drills_html_and_json_to_stdout_or_a_file() {
    let (server, id) = drilled("erin@ops-4");

    // JSON on stdout: the report's facts, with who asked and the digest.
    let json = server
        .ferry()
        .args(["report", &id, "--format", "json"])
        .run();
    let report = json.ok().json();
    assert_eq!(report["subject"]["id"], id.as_str());
    assert_eq!(report["runs"][0]["requested_by"], "erin@ops-4");
    assert_eq!(report["outcome"]["verdict"], "succeeded");
    let digest = report["digest"].as_str().expect("a digest").to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");

    // HTML (the default) on stdout: one document, the digest printed in it.
    let html = server.ferry().args(["report", &id]).run();
    let html = &html.ok().stdout;
    assert!(
        html.starts_with("<!DOCTYPE html>"),
        "{}",
        &html[..80.min(html.len())]
    );
    assert!(html.trim_end().ends_with("</html>"));
    assert!(html.contains("sha256:"), "no digest in the HTML");
    assert!(html.contains("data-job=\""), "no timeline bars");
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));

    // To files: the same kinds of document, nothing on stdout, a line on stderr.
    let html_file = server.dir().join("drill.html");
    let written = server
        .ferry()
        .args(["report", &id, "--format", "html", "--output-file"])
        .args([&html_file])
        .run();
    written.code(0);
    assert_eq!(written.stdout, "");
    assert!(written.stderr.contains("drill.html"), "{}", written.stderr);
    let text = std::fs::read_to_string(&html_file).expect("the HTML file");
    assert!(text.starts_with("<!DOCTYPE html>") && text.contains("Disk chain"));
    let json_file = server.dir().join("drill.json");
    server
        .ferry()
        .args(["report", &id, "--format", "json", "--output-file"])
        .args([&json_file])
        .run()
        .code(0);
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_file).expect("the JSON file"))
            .expect("JSON");
    assert_eq!(stored["subject"]["id"], id.as_str());
    // Nothing but the file is left in its directory.
    let leftovers: Vec<String> = std::fs::read_dir(server.dir())
        .expect("the directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn the_cli_says_who_asked_by_default_and_refuses_what_it_cannot_report() {
    let server = Server::start();
    let file = server.write("pgtest1.toml", &pgtest1());
    server.ferry().args(["vm", "add"]).args([&file]).run().ok();
    server
        .ferry()
        .env("USER", "frank")
        .env_remove("FERRY_REQUESTED_BY")
        .args(["failover", "test", "pgtest1", "--wait"])
        .run()
        .code(0);
    let runs = server.json(["run", "list", "--limit", "1"]);
    let id = runs[0]["id"].as_str().expect("a run id").to_string();
    let report = server
        .ferry()
        .args(["report", &id, "--format", "json"])
        .run()
        .ok()
        .json();
    let who = report["runs"][0]["requested_by"]
        .as_str()
        .expect("recorded");
    assert!(
        who.starts_with("frank@") && who.len() > "frank@".len(),
        "{who}"
    );

    // An id that names nothing: exit 2, the server's message.
    let unknown = server.ferry().args(["report", "no-such-run"]).run();
    unknown.code(2);
    assert!(
        unknown.stderr.contains("no run or plan run no-such-run"),
        "{}",
        unknown.stderr
    );
    assert_eq!(unknown.stdout, "");
    // A format it does not write: exit 2, the formats it does.
    let bad = server
        .ferry()
        .args(["report", &id, "--format", "pdf"])
        .run();
    bad.code(2);
    assert!(
        bad.stderr.contains("invalid value 'pdf'") && bad.stderr.contains("html, json"),
        "{}",
        bad.stderr
    );
    // A file that cannot be written: exit 2, which and why.
    let nowhere = server
        .ferry()
        .args(["report", &id, "--output-file", "/nonexistent-dir/r.html"])
        .run();
    nowhere.code(2);
    assert!(
        nowhere
            .stderr
            .contains("cannot write the report to /nonexistent-dir/r.html"),
        "{}",
        nowhere.stderr
    );
}
