//! Two `ferry serve` processes under one worker name on one database would each take
//! the other's runs back as their own: the second refuses to start, saying who holds
//! the name and what to do; once the first is dead (SIGKILL), a successor on the same
//! host starts at once.

mod cli_harness;

use std::process::{Command, Stdio};

use cli_harness::{Server, TOKEN, spawn_announced};
use cloudsim::world::ids;

fn second_serve(server: &Server) -> Command {
    let mut serve = Command::new(env!("CARGO_BIN_EXE_ferry"));
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(server.dir().join("ferry.toml"))
        .env("FERRY_CLOUDSTACK_SECRET", ids::SECRET_KEY)
        .env("FERRY_TOKEN", TOKEN)
        .env("FERRY_LOG", "warn")
        .env_remove("FERRY_DATABASE_URL")
        .env_remove("FERRY_LISTEN")
        .env_remove("FERRY_CLOUDSTACK_ENDPOINT")
        .env_remove("FERRY_CLOUDSTACK_API_KEY")
        .stdin(Stdio::null());
    serve
}

#[test]
fn a_second_serve_under_the_same_worker_name_refuses_to_start() {
    let mut server = Server::start();
    let refused = second_serve(&server)
        .stdout(Stdio::piped())
        .output()
        .expect("ferry serve runs");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("another ferry serve runs on this database under the worker name")
            && stderr.contains("worker_name"),
        "{stderr}"
    );
    // The first one still serves.
    server.ferry().args(["vm", "list"]).run().ok();

    // Killed outright, it leaves the name to the next process on its host at once.
    server.stop_serve();
    let (mut successor, ready) =
        spawn_announced(&mut second_serve(&server), server.dir(), "successor.log");
    assert!(ready["url"].is_string(), "{ready}");
    let _ = successor.kill();
    let _ = successor.wait();
}
