//! The `http` gate against an axum server on port 0, over HTTP and HTTPS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use readiness::{Check, HttpCheck, Verdict};

use crate::{gate, last_seen, ms, only, subject, wait};

fn http(port: u16, path: &str, expect: &[u16]) -> HttpCheck {
    HttpCheck {
        port,
        path: path.to_string(),
        https: false,
        tls_skip_verify: false,
        expect: expect.to_vec(),
        timeout: ms(5000),
    }
}

/// A server on a port of 127.0.0.1 whose `/health` answers `answer(n)` to its n-th
/// request (from 0); the count of requests it had.
async fn serve(answer: fn(u32) -> (StatusCode, &'static str)) -> (u16, Arc<AtomicU32>) {
    let requests = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&requests);
    let app = Router::new().route(
        "/health",
        get(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move { answer(n).into_response() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let port = listener.local_addr().expect("its address").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, requests)
}

#[tokio::test]
async fn a_service_that_answers_503_then_200_passes_on_a_later_attempt() {
    let (port, requests) = serve(|n| {
        if n == 0 {
            (StatusCode::SERVICE_UNAVAILABLE, "starting")
        } else {
            (StatusCode::OK, "ok")
        }
    })
    .await;
    let check = Check::Http(http(port, "/health", &[200]));
    let readiness = wait(&[gate(check, ms(20_000), ms(25))], &subject(&["127.0.0.1"])).await;
    let outcome = only(&readiness);
    assert_eq!(outcome.verdict, Verdict::Passed, "{outcome:#?}");
    assert!(outcome.attempts >= 2, "{outcome:#?}");
    assert_eq!(requests.load(Ordering::SeqCst), outcome.attempts);
    assert_eq!(
        last_seen(outcome),
        format!("HTTP 200 from http://127.0.0.1:{port}/health")
    );
}

#[tokio::test]
async fn a_service_that_always_answers_500_fails_with_that_status() {
    let (port, requests) = serve(|_| (StatusCode::INTERNAL_SERVER_ERROR, "database\ndown")).await;
    let check = Check::Http(http(port, "/health", &[200]));
    let readiness = wait(&[gate(check, ms(300), ms(50))], &subject(&["127.0.0.1"])).await;
    let outcome = only(&readiness);
    assert_eq!(outcome.verdict, Verdict::Failed, "{outcome:#?}");
    assert!(requests.load(Ordering::SeqCst) >= 1);
    assert!(
        last_seen(outcome).starts_with(&format!(
            "HTTP 500 from http://127.0.0.1:{port}/health: database down"
        )),
        "{outcome:#?}"
    );
}

#[tokio::test]
async fn a_redirect_is_a_status_not_followed() {
    let (port, _) = serve(|_| (StatusCode::MOVED_PERMANENTLY, "elsewhere")).await;
    let expecting = |expect: &[u16]| Check::Http(http(port, "/health", expect));
    let passes = wait(
        &[gate(expecting(&[204, 301]), ms(20_000), ms(50))],
        &subject(&["127.0.0.1"]),
    )
    .await;
    assert_eq!(
        last_seen(only(&passes)),
        format!("HTTP 301 from http://127.0.0.1:{port}/health")
    );
    assert!(passes.ready);
    let fails = wait(
        &[gate(expecting(&[200]), ms(200), ms(50))],
        &subject(&["127.0.0.1"]),
    )
    .await;
    assert!(!fails.ready);
    assert!(
        last_seen(only(&fails)).starts_with("HTTP 301 from"),
        "{fails:#?}"
    );
}

#[tokio::test]
async fn one_answering_address_of_two_is_enough() {
    let (port, _) = serve(|_| (StatusCode::OK, "ok")).await;
    let check = Check::Http(http(port, "/health", &[200]));
    let readiness = wait(
        &[gate(check, ms(20_000), ms(50))],
        &subject(&["127.77.0.5", "127.0.0.1"]),
    )
    .await;
    let outcome = only(&readiness);
    assert_eq!(outcome.verdict, Verdict::Passed, "{outcome:#?}");
    assert_eq!(
        last_seen(outcome),
        format!("HTTP 200 from http://127.0.0.1:{port}/health")
    );
}

#[tokio::test]
async fn no_server_is_connection_refused_on_each_url() {
    let listener = tokio::net::TcpListener::bind("127.77.0.5:0")
        .await
        .expect("a port");
    let port = listener.local_addr().expect("its address").port();
    drop(listener);
    let check = Check::Http(http(port, "/health", &[200]));
    let readiness = wait(
        &[gate(check, ms(200), ms(50))],
        &subject(&["127.77.0.5", "127.77.1.5"]),
    )
    .await;
    let outcome = only(&readiness);
    assert_eq!(outcome.verdict, Verdict::Failed);
    assert!(
        last_seen(outcome).starts_with(&format!(
            "connection refused on http://127.77.0.5:{port}/health and http://127.77.1.5:{port}/health"
        )),
        "{outcome:#?}"
    );
}

/// An HTTPS server on a port of 127.0.0.1 with a certificate it made itself.
async fn serve_tls() -> u16 {
    let key = rcgen::KeyPair::generate().expect("a key");
    let cert = rcgen::CertificateParams::new(vec!["guest.example".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("a certificate");
    let config = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert.pem().into_bytes(),
        key.serialize_pem().into_bytes(),
    )
    .await
    .expect("a TLS config");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr: SocketAddr = listener.local_addr().expect("its address");
    let app = Router::new().route("/health", get(|| async { "ok" }));
    tokio::spawn(async move {
        axum_server::from_tcp_rustls(listener, config)
            .serve(app.into_make_service())
            .await
    });
    addr.port()
}

#[tokio::test]
async fn https_to_a_self_signed_guest_passes_only_when_told_to_skip_verification() {
    let port = serve_tls().await;
    let https = |tls_skip_verify| {
        Check::Http(HttpCheck {
            https: true,
            tls_skip_verify,
            ..http(port, "/health", &[200])
        })
    };
    let trusting = wait(
        &[gate(https(true), ms(20_000), ms(50))],
        &subject(&["127.0.0.1"]),
    )
    .await;
    assert_eq!(
        last_seen(only(&trusting)),
        format!("HTTP 200 from https://127.0.0.1:{port}/health")
    );
    assert!(trusting.ready);

    let verifying = wait(
        &[gate(https(false), ms(300), ms(50))],
        &subject(&["127.0.0.1"]),
    )
    .await;
    let outcome = only(&verifying);
    assert_eq!(outcome.verdict, Verdict::Failed, "{outcome:#?}");
    let seen = last_seen(outcome);
    assert!(
        seen.contains("certificate") && seen.contains("set tls_skip_verify = true"),
        "{seen}"
    );
}
