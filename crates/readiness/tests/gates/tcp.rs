//! The `tcp` gate against listeners on loopback addresses.

use readiness::{Check, Verdict};
use tokio::net::TcpListener;

use crate::{gate, last_seen, ms, only, subject, wait};

fn tcp(port: u16) -> Check {
    Check::Tcp {
        port,
        connect_timeout: ms(2000),
    }
}

/// A port of `ip` on which nothing listens (it was free a moment ago).
async fn free_port(ip: &str) -> u16 {
    let listener = TcpListener::bind((ip, 0)).await.expect("a free port");
    listener.local_addr().expect("its address").port()
}

#[tokio::test]
async fn a_listener_that_starts_late_passes_the_gate() {
    let port = free_port("127.0.0.1").await;
    let late = tokio::spawn(async move {
        tokio::time::sleep(ms(300)).await;
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the port again");
        // Accept until the test ends, so the connection is not refused after all.
        loop {
            let _ = listener.accept().await;
        }
    });
    let readiness = wait(
        &[gate(tcp(port), ms(20_000), ms(25))],
        &subject(&["127.0.0.1"]),
    )
    .await;
    late.abort();
    let outcome = only(&readiness);
    assert_eq!(outcome.verdict, Verdict::Passed, "{outcome:#?}");
    assert!(readiness.ready);
    assert_eq!(last_seen(outcome), format!("connected to 127.0.0.1:{port}"));
    assert!(outcome.passed_at.is_some());
}

#[tokio::test]
async fn a_port_nobody_listens_on_fails_with_connection_refused() {
    let port = free_port("127.0.0.1").await;
    let readiness = wait(
        &[gate(tcp(port), ms(300), ms(50))],
        &subject(&["127.0.0.1"]),
    )
    .await;
    let outcome = only(&readiness);
    assert_eq!(outcome.verdict, Verdict::Failed, "{outcome:#?}");
    assert!(!readiness.ready);
    assert!(outcome.attempts >= 1);
    assert!(outcome.passed_at.is_none());
    assert!(
        last_seen(outcome).starts_with(&format!("connection refused on 127.0.0.1:{port}")),
        "{outcome:#?}"
    );
}

#[tokio::test]
async fn one_listening_address_of_two_is_enough() {
    let listener = TcpListener::bind(("127.77.1.5", 0))
        .await
        .expect("a listener");
    let port = listener.local_addr().expect("its address").port();
    let readiness = wait(
        &[gate(tcp(port), ms(20_000), ms(50))],
        &subject(&["127.77.0.5", "127.77.1.5"]),
    )
    .await;
    let outcome = only(&readiness);
    assert_eq!(outcome.verdict, Verdict::Passed, "{outcome:#?}");
    assert_eq!(outcome.attempts, 1, "the first attempt found the listener");
    assert_eq!(
        last_seen(outcome),
        format!("connected to 127.77.1.5:{port}")
    );
}

#[tokio::test]
async fn addresses_that_answer_alike_are_named_together() {
    let port = free_port("127.77.0.5").await;
    let readiness = wait(
        &[gate(tcp(port), ms(200), ms(50))],
        &subject(&["127.77.0.5", "127.77.1.5"]),
    )
    .await;
    let outcome = only(&readiness);
    assert_eq!(outcome.verdict, Verdict::Failed, "{outcome:#?}");
    assert!(
        last_seen(outcome).starts_with(&format!(
            "connection refused on 127.77.0.5:{port} and 127.77.1.5:{port}"
        )),
        "{outcome:#?}"
    );
}

#[tokio::test]
async fn a_vm_without_an_address_fails_at_once() {
    let readiness = wait(&[gate(tcp(5432), ms(60_000), ms(50))], &subject(&[])).await;
    let outcome = only(&readiness);
    assert_eq!(outcome.verdict, Verdict::Failed);
    assert_eq!(outcome.attempts, 0);
    assert_eq!(
        last_seen(outcome),
        "no address to try: ferry knows no IP address of pgtest1"
    );
}
