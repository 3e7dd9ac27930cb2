//! The one signal every long-running command stops on: SIGTERM (a service manager, a
//! test harness) or SIGINT (Ctrl-C). It has a file of its own so that the commands can
//! use it without reaching back into `main.rs`, which uses them.

/// Resolves when the process receives SIGTERM or SIGINT.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
