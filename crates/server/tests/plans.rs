//! Recovery plans through the REST API, against a server on port 0 and cloudsim: the
//! token, every problem of a refused plan at once and nothing written, add / show /
//! list / update (dry run first) / remove, and a VM a plan names refused removal.

mod common;

use cloudsim::World;
use common::{Server, TestResult};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::config::EngineSection;

async fn server() -> anyhow::Result<Server> {
    common::server(World::default(), EngineSection::default()).await
}

/// The database tier alone (pgtest1 is the one VM of cloudsim's world).
const PLAN: &str = r#"
name = "shop"
description = "the database, then the web"
drill_interval_days = 30

[[tiers]]
name = "database"
vms = ["pgtest1"]
delay_after_secs = 5
"#;

/// A second tier of the same name, naming a VM that is not registered.
const BAD_TIER: &str = r#"
[[tiers]]
name = "database"
vms = ["web1"]

[[tiers.hooks]]
when = "after"
scope = "test"
run = { kind = "command", program = "/bin/true" }
"#;

#[tokio::test]
async fn a_plan_is_added_shown_listed_updated_and_removed() -> TestResult {
    let server = server().await?;
    server.add_pgtest1().await?;

    // Without the token: 401 on every plan route.
    for (method, path) in [
        (Method::GET, "/v1/plans"),
        (Method::POST, "/v1/plans"),
        (Method::GET, "/v1/plans/shop"),
        (Method::PUT, "/v1/plans/shop"),
        (Method::DELETE, "/v1/plans/shop"),
    ] {
        let response = server
            .http
            .request(method.clone(), format!("{}{path}", server.url))
            .send()
            .await?;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
    }

    // web1 is not registered, and the second tier's name is taken: both reported,
    // nothing written.
    let bad = format!("{PLAN}{BAD_TIER}");
    let (status, body) = server
        .post("/v1/plans", Some(json!({ "definition": bad })))
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid", "{body}");
    let fields: Vec<&str> = body["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["tiers[1].name", "tiers[1].vms[0]"], "{body}");
    let (_, listed) = server.get("/v1/plans").await?;
    assert_eq!(listed, json!([]));
    // Not TOML at all: 422 too, saying so.
    let (status, body) = server
        .post("/v1/plans", Some(json!({ "definition": "tiers = 3 = 4" })))
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("TOML"),
        "{body}"
    );

    let (status, added) = server
        .post("/v1/plans", Some(json!({ "definition": PLAN })))
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(added["name"], "shop");
    assert_eq!(added["tiers"][0]["vms"], json!(["pgtest1"]));
    assert_eq!(added["on_failure"], json!({"test": "stop", "live": "stop"}));
    assert_eq!(added["digest"].as_str().unwrap().len(), 64);
    let (status, again) = server
        .post("/v1/plans", Some(json!({ "definition": PLAN })))
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{again}");
    assert_eq!(again["error"]["problems"][0]["field"], "name", "{again}");

    let (status, shown) = server.get("/v1/plans/shop").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["description"], "the database, then the web");
    let (_, listed) = server.get("/v1/plans").await?;
    assert_eq!(listed[0]["name"], "shop");
    assert_eq!(listed[0]["tiers"], 1);
    assert_eq!(listed[0]["vms"], 1);
    let (status, missing) = server.get("/v1/plans/nope").await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");

    // An update: a dry run says what would change and writes nothing.
    let next = PLAN.replace("delay_after_secs = 5", "delay_after_secs = 9");
    let (status, dry) = server
        .call(
            Method::PUT,
            "/v1/plans/shop",
            Some(json!({ "definition": next, "dry_run": true })),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(
        dry["changes"],
        json!(["tier database: delay after 5 s → 9 s"])
    );
    assert_eq!(dry["updated"], false);
    assert_eq!(dry["tiers"][0]["delay_after_secs"], 5);
    let (_, done) = server
        .call(
            Method::PUT,
            "/v1/plans/shop",
            Some(json!({ "definition": next })),
        )
        .await?;
    assert_eq!(done["updated"], true, "{done}");
    assert_eq!(done["tiers"][0]["delay_after_secs"], 9);
    assert_ne!(done["digest"], added["digest"]);
    // The file must name the plan of the path.
    let (status, other) = server
        .call(
            Method::PUT,
            "/v1/plans/other",
            Some(json!({ "definition": next })),
        )
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{other}");

    // A VM a plan names is not removed; the plan is, and then the VM can be.
    let (status, refused) = server.call(Method::DELETE, "/v1/vms/pgtest1", None).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shop"),
        "{refused}"
    );
    let (status, _) = server.call(Method::DELETE, "/v1/plans/shop", None).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, gone): (StatusCode, Value) =
        server.call(Method::DELETE, "/v1/plans/shop", None).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{gone}");
    let (status, removed) = server.call(Method::DELETE, "/v1/vms/pgtest1", None).await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{removed}");
    Ok(())
}
