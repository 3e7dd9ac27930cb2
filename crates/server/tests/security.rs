//! Authentication of the REST API, from its own contract: every operation of the
//! checked-in OpenAPI document (`docs/openapi.json`, which `tests/api.rs` proves is
//! the code's) — so a new route is covered the day it is added — and the document's
//! own route, is refused without the right bearer token, with every near miss of it:
//! none, empty, wrong, the token's prefix, the token with more after it, another
//! scheme, the token alone without a scheme. Each refusal is 401 with the JSON error
//! and `WWW-Authenticate: Bearer`, echoes nothing of what was presented, and changes
//! nothing (no VM, no run). `/health` and `/metrics` alone answer without a token, and
//! the document declares exactly that: bearer security on every other operation.
//! (A path that does not exist is 404 with or without a token: the routes are public
//! in the document anyway.)

mod common;

use common::{TOKEN, TestResult, server};
use reqwest::StatusCode;
use serde_json::Value;
use server::config::EngineSection;

fn openapi() -> Value {
    serde_json::from_str(include_str!("../../../docs/openapi.json")).expect("the document")
}

/// Every (method, path) of the document, path parameters filled in.
fn operations(doc: &Value) -> Vec<(reqwest::Method, String, bool)> {
    let mut out = Vec::new();
    let global = doc["security"].as_array().is_some_and(|s| !s.is_empty());
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("an item") {
            let Ok(m) = method.to_uppercase().parse::<reqwest::Method>() else {
                continue;
            };
            // An operation's own `security` wins; `[{}]`/`[]` means none.
            let secured = match op.get("security").and_then(Value::as_array) {
                Some(list) => list
                    .iter()
                    .any(|s| s.as_object().is_some_and(|o| !o.is_empty())),
                None => global,
            };
            let concrete = path
                .replace("{name}", "pgtest1")
                .replace("{id}", "some-run");
            out.push((m, concrete, secured));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_but_health_and_metrics_refuses_every_wrong_token() -> TestResult {
    let server = server(cloudsim::World::default(), EngineSection::default()).await?;
    server.add_pgtest1().await?;
    let before = (server.get("/v1/vms").await?, server.get("/v1/runs").await?);
    let doc = openapi();
    let mut ops = operations(&doc);
    assert!(ops.len() >= 16, "{} operations in the document", ops.len());
    // The document declares bearer security on all but /health and /metrics.
    for (method, path, secured) in &ops {
        let open = path == "/health" || path == "/metrics";
        assert_eq!(*secured, !open, "{method} {path}: security as declared");
    }
    // The document itself, served at /v1/openapi.json, is not in its own paths.
    ops.push((reqwest::Method::GET, "/v1/openapi.json".into(), true));
    let near_misses: Vec<(&str, Option<String>)> = vec![
        ("none", None),
        ("empty", Some("Bearer ".into())),
        ("wrong", Some("Bearer wrong-token".into())),
        (
            "prefix",
            Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        ),
        ("longer", Some(format!("Bearer {TOKEN}x"))),
        ("scheme", Some(format!("Basic {TOKEN}"))),
        ("no scheme", Some(TOKEN.to_string())),
        ("two tokens", Some(format!("Bearer wrong {TOKEN}"))),
    ];
    let mut refusals = 0;
    for (method, path, secured) in &ops {
        let url = format!("{}{path}", server.url);
        if !secured {
            let response = server.http.request(method.clone(), &url).send().await?;
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "{method} {path} without a token"
            );
            continue;
        }
        for (what, header) in &near_misses {
            let mut request = server.http.request(method.clone(), &url);
            if let Some(h) = header {
                request = request.header("authorization", h);
            }
            let response = request.send().await?;
            let status = response.status();
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let text = response.text().await?;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path}, token {what}: {text}"
            );
            assert_eq!(challenge.as_deref(), Some("Bearer"), "{method} {path}");
            let body: Value = serde_json::from_str(&text)?;
            assert_eq!(body["error"]["code"], "unauthorized", "{text}");
            assert!(
                !text.contains("wrong-token") && !text.contains(&TOKEN[..8]),
                "the refusal echoes what was presented: {text}"
            );
            refusals += 1;
        }
    }
    // Nothing the refused requests asked for happened.
    let after = (server.get("/v1/vms").await?, server.get("/v1/runs").await?);
    assert_eq!(before, after, "a refused request changed something");
    // The right token gets past authentication (whatever the answer is then).
    for (method, path, _) in &ops {
        let response = server
            .http
            .request(method.clone(), format!("{}{path}", server.url))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        assert_ne!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} with the token"
        );
    }
    eprintln!(
        "RELIABILITY security api-auth operations={} refusals={refusals} near_misses={}",
        ops.len(),
        near_misses.len()
    );
    Ok(())
}
