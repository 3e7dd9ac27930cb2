//! The console's door over plain HTTP (no browser needed): what is served without a
//! session, the session cookie's attributes, and every way a state-changing request
//! is refused — no session, no or another CSRF token, a foreign `Origin` or
//! `Sec-Fetch-Site` — each checked to change nothing; the typed-name confirmation
//! refused on the server; `[console] enabled = false`; and the REST API's bearer
//! auth unchanged by the console's cookie.

mod common;

use common::{Server, TOKEN, TestResult};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use server::config::{ConsoleSection, EngineSection};

async fn pgtest1() -> anyhow::Result<Server> {
    let server = common::server(
        cloudsim::world::World::default(),
        EngineSection {
            claim_interval_ms: 50,
            ..EngineSection::default()
        },
    )
    .await?;
    server.add_pgtest1().await?;
    Ok(server)
}

/// A client that shows redirects instead of following them.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client")
}

/// Signs in; returns the `Set-Cookie` header and the cookie to send back.
async fn sign_in(server: &Server, headers: HeaderMap) -> anyhow::Result<(String, String)> {
    let response = http()
        .post(format!("{}/sign-in", server.url))
        .headers(headers)
        .form(&[("token", TOKEN), ("next", "/runs")])
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == StatusCode::SEE_OTHER,
        "signed in: {}",
        response.status()
    );
    assert_eq!(response.headers()[LOCATION], "/runs");
    let set = response.headers()[SET_COOKIE].to_str()?.to_string();
    let cookie = set.split(';').next().unwrap_or_default().to_string();
    Ok((set, cookie))
}

/// The CSRF token of the session in `cookie`, as its pages carry it.
async fn csrf(server: &Server, cookie: &str) -> anyhow::Result<String> {
    let page = http()
        .get(format!("{}/", server.url))
        .header("cookie", cookie)
        .send()
        .await?
        .text()
        .await?;
    let start = page
        .find(r#"name="csrf" value=""#)
        .ok_or_else(|| anyhow::anyhow!("no csrf field in {page}"))?
        + r#"name="csrf" value=""#.len();
    Ok(page[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_string())
}

async fn run_count(server: &Server) -> anyhow::Result<usize> {
    let (_, runs) = server.get("/v1/runs").await?;
    Ok(runs.as_array().map_or(0, Vec::len))
}

#[tokio::test]
async fn only_the_sign_in_page_and_its_assets_are_served_without_a_session() -> TestResult {
    let server = pgtest1().await?;
    let http = http();
    for path in [
        "/",
        "/vms/pgtest1",
        "/runs",
        "/appliances",
        "/plans",
        "/runs/x",
    ] {
        let response = http.get(format!("{}{path}", server.url)).send().await?;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        let to = response.headers()[LOCATION].to_str()?;
        assert!(to.starts_with("/sign-in?next="), "{path} → {to}");
    }
    // A live stream is not a page: refused, not redirected.
    let events = http
        .get(format!("{}/runs/x/events", server.url))
        .send()
        .await?;
    assert_eq!(events.status(), StatusCode::UNAUTHORIZED);
    // A POST without a session is refused, and changes nothing.
    let forged = http
        .post(format!("{}/vms/pgtest1/test-failover", server.url))
        .form(&[("confirm", "yes")])
        .send()
        .await?;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(run_count(&server).await?, 0);

    let page = http.get(format!("{}/sign-in", server.url)).send().await?;
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    let csp = headers["content-security-policy"].to_str()?;
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    let body = page.text().await?;
    // Nothing from the network: every script, style and picture is the console's own.
    for attribute in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
        assert!(!body.contains(attribute), "{attribute} in the sign-in page");
    }
    for link in body
        .split("href=\"")
        .skip(1)
        .chain(body.split("src=\"").skip(1))
    {
        let path = link.split('"').next().unwrap_or_default();
        if path.starts_with("/assets/") {
            let asset = http.get(format!("{}{path}", server.url)).send().await?;
            assert_eq!(asset.status(), StatusCode::OK, "{path} without a session");
        }
    }
    let css = http
        .get(format!("{}/assets/console.css", server.url))
        .send()
        .await?;
    assert!(
        css.headers()["content-type"]
            .to_str()?
            .starts_with("text/css")
    );
    let missing = http
        .get(format!("{}/assets/nope.js", server.url))
        .send()
        .await?;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn a_session_is_an_http_only_strict_cookie_that_is_not_the_token() -> TestResult {
    let server = pgtest1().await?;
    let http = http();
    // A wrong token: 401, no cookie.
    let wrong = http
        .post(format!("{}/sign-in", server.url))
        .form(&[("token", "wrong")])
        .send()
        .await?;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    assert!(
        wrong
            .text()
            .await?
            .contains("API token: nothing was signed in")
    );

    let (set, cookie) = sign_in(&server, HeaderMap::new()).await?;
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    assert!(!set.contains(TOKEN), "{set}");
    let value = cookie.trim_start_matches("ferry_session=");
    assert_eq!(value.len(), 43, "256 random bits: {value}");

    // Where to go after signing in: only a path of the console.
    for (next, to) in [
        ("/vms/é", "/"),
        ("//evil.example/", "/"),
        ("/runs?vm=pgtest1", "/runs?vm=pgtest1"),
    ] {
        let response = http
            .post(format!("{}/sign-in", server.url))
            .form(&[("token", TOKEN), ("next", next)])
            .send()
            .await?;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{next}");
        assert_eq!(response.headers()[LOCATION], to, "{next}");
    }

    // Behind a TLS proxy, the cookie is Secure.
    let mut proxied = HeaderMap::new();
    proxied.insert("x-forwarded-proto", "https".parse()?);
    let (set, _) = sign_in(&server, proxied).await?;
    assert!(set.contains("; Secure"), "{set}");

    // The session opens the pages, not the API: the bearer token is still needed.
    let page = http
        .get(format!("{}/", server.url))
        .header("cookie", &cookie)
        .send()
        .await?;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await?.contains("pgtest1"));
    let api = http
        .get(format!("{}/v1/vms", server.url))
        .header("cookie", &cookie)
        .send()
        .await?;
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);

    // A filter the runs page does not know is refused, saying what it knows.
    let bogus = http
        .get(format!("{}/runs?state=bogus", server.url))
        .header("cookie", &cookie)
        .send()
        .await?;
    assert_eq!(bogus.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let text = bogus.text().await?;
    assert!(
        text.contains("no state `bogus`: choose one of pending"),
        "{text}"
    );

    // A sign-in posted from another site is refused.
    let forged = http
        .post(format!("{}/sign-in", server.url))
        .header("origin", "http://evil.example")
        .form(&[("token", TOKEN)])
        .send()
        .await?;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(forged.headers().get(SET_COOKIE).is_none());

    // Signing out ends the session on the server.
    let token = csrf(&server, &cookie).await?;
    let out = http
        .post(format!("{}/sign-out", server.url))
        .header("cookie", &cookie)
        .form(&[("csrf", token.as_str())])
        .send()
        .await?;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(out.headers()[SET_COOKIE].to_str()?.contains("Max-Age=0"));
    let after = http
        .get(format!("{}/", server.url))
        .header("cookie", &cookie)
        .send()
        .await?;
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    Ok(())
}

/// A forged request: what it is, the headers it carries, its form.
type Forgery<'a> = (&'a str, Vec<(&'a str, String)>, Vec<(&'a str, &'a str)>);

#[tokio::test]
async fn a_forged_post_is_refused_and_changes_nothing() -> TestResult {
    let server = pgtest1().await?;
    let http = http();
    let (_, cookie) = sign_in(&server, HeaderMap::new()).await?;
    let token = csrf(&server, &cookie).await?;
    let own = server.url.clone();
    let url = format!("{}/vms/pgtest1/test-failover", server.url);
    let forgeries: Vec<Forgery> = vec![
        ("no CSRF token", vec![], vec![("confirm", "yes")]),
        (
            "another CSRF token",
            vec![],
            vec![
                ("confirm", "yes"),
                ("csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            ],
        ),
        (
            "a foreign Origin",
            vec![("origin", "http://evil.example".into())],
            vec![("confirm", "yes"), ("csrf", token.as_str())],
        ),
        (
            "another port's Origin",
            vec![("origin", "http://127.0.0.1:1".into())],
            vec![("confirm", "yes"), ("csrf", token.as_str())],
        ),
        (
            "Origin null",
            vec![("origin", "null".into())],
            vec![("confirm", "yes"), ("csrf", token.as_str())],
        ),
        (
            "Sec-Fetch-Site cross-site",
            vec![("sec-fetch-site", "cross-site".into())],
            vec![("confirm", "yes"), ("csrf", token.as_str())],
        ),
        (
            "Sec-Fetch-Site same-site",
            vec![
                ("sec-fetch-site", "same-site".into()),
                ("origin", own.clone()),
            ],
            vec![("confirm", "yes"), ("csrf", token.as_str())],
        ),
    ];
    for (what, headers, form) in forgeries {
        let mut request = http.post(&url).header("cookie", &cookie).form(&form);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        let response = request.send().await?;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what}");
        let body = response.text().await?;
        assert!(
            body.contains("Refused, and nothing was done"),
            "{what}: {body}"
        );
        assert_eq!(run_count(&server).await?, 0, "{what} started nothing");
    }
    let (_, vm) = server.get("/v1/vms/pgtest1").await?;
    assert_eq!(vm["state"], "ready_for_failover");

    // The same form from the console's own page starts the drill.
    let started = http
        .post(&url)
        .header("cookie", &cookie)
        .header("origin", &own)
        .header("sec-fetch-site", "same-origin")
        .form(&[("confirm", "yes"), ("csrf", token.as_str())])
        .send()
        .await?;
    assert_eq!(started.status(), StatusCode::SEE_OTHER);
    let to = started.headers()[LOCATION].to_str()?.to_string();
    assert!(to.starts_with("/runs/"), "{to}");
    assert_eq!(run_count(&server).await?, 1);
    let id = to.trim_start_matches("/runs/");
    server
        .finish(id, std::time::Duration::from_secs(60))
        .await?;

    // The live stream of the ended run sends its last state and ends.
    let events = http
        .get(format!("{}/runs/{id}/events", server.url))
        .header("cookie", &cookie)
        .send()
        .await?;
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let body = events.text().await?;
    assert!(body.starts_with("event: end\n"), "{body}");
    assert!(body.contains("data-run-state=\"done\""), "{body}");
    Ok(())
}

#[tokio::test]
async fn a_live_failover_needs_the_vms_name_typed() -> TestResult {
    let server = pgtest1().await?;
    let http = http();
    let (_, cookie) = sign_in(&server, HeaderMap::new()).await?;
    let token = csrf(&server, &cookie).await?;
    let url = format!("{}/vms/pgtest1/live-failover", server.url);
    for typed in [
        None,
        Some(""),
        Some("pgtest"),
        Some("PGTEST1"),
        Some("pgtest1 x"),
    ] {
        let mut form = vec![("csrf", token.clone()), ("confirm", "yes".into())];
        if let Some(typed) = typed {
            form.push(("vm_name", typed.into()));
        }
        let response = http
            .post(&url)
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .await?;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{typed:?}"
        );
        let page = response.text().await?;
        assert!(page.contains("nothing was started"), "{typed:?}: {page}");
        assert_eq!(run_count(&server).await?, 0, "{typed:?} started nothing");
    }
    let response = http
        .post(&url)
        .header("cookie", &cookie)
        .form(&[("csrf", token.as_str()), ("vm_name", "pgtest1")])
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(run_count(&server).await?, 1);
    Ok(())
}

#[tokio::test]
async fn with_the_console_off_only_the_api_is_served() -> TestResult {
    let server = common::server_configured(cloudsim::world::World::default(), 0.001, |c| {
        c.console(ConsoleSection {
            enabled: false,
            ..ConsoleSection::default()
        })
    })
    .await?;
    let http = http();
    for path in ["/", "/sign-in", "/assets/console.css"] {
        let response = http.get(format!("{}{path}", server.url)).send().await?;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _) = server.get("/v1/vms").await?;
    assert_eq!(status, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn an_open_live_page_does_not_hold_the_shutdown_up() -> TestResult {
    // Slow enough that the drill is still running when the server is stopped.
    let mut server = common::server_configured(cloudsim::world::World::default(), 0.1, |c| {
        c.engine(EngineSection {
            claim_interval_ms: 50,
            ..EngineSection::default()
        })
    })
    .await?;
    server.add_pgtest1().await?;
    let (_, run) = server.post("/v1/vms/pgtest1/test-failover", None).await?;
    let id = run["id"].as_str().unwrap_or_default().to_string();
    let (_, cookie) = sign_in(&server, HeaderMap::new()).await?;
    let mut events = http()
        .get(format!("{}/runs/{id}/events", server.url))
        .header("cookie", &cookie)
        .send()
        .await?;
    assert_eq!(events.status(), StatusCode::OK);
    let first = events.chunk().await?.unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&first).starts_with("event: progress"),
        "{first:?}"
    );
    server.shutdown.cancel();
    let task = server.task.take().expect("the server's task");
    tokio::time::timeout(std::time::Duration::from_secs(20), task)
        .await
        .map_err(|_| anyhow::anyhow!("the server did not stop while a live page was open"))??;
    // The stream ended with the server, before the run did.
    let rest = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut all = Vec::new();
        while let Ok(Some(chunk)) = events.chunk().await {
            all.extend_from_slice(&chunk);
        }
        all
    })
    .await?;
    assert!(!String::from_utf8_lossy(&rest).contains("event: end"));
    Ok(())
}
