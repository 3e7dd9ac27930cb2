//! The console's door: every page but the sign-in page and its assets needs a live
//! session, and every state-changing request (every POST) must come from the
//! console's own pages.
//!
//! Cross-site request forgery is refused three times over:
//! - the session cookie is `SameSite=Strict`, so a browser does not send it with a
//!   request another *site* starts;
//! - a POST whose `Sec-Fetch-Site` is anything but `same-origin`, or whose `Origin`
//!   is not the console's own (`null` included), is refused before its body is read.
//!   The two headers are set by the browser, not by the page: another *origin* on the
//!   same site (another port of the same host, which `SameSite` lets the cookie go to)
//!   cannot hide where its form came from. The console's own origin is the request's
//!   `Host` (or, behind a proxy, `X-Forwarded-Host`);
//! - every POST carries the session's CSRF token in its form (`csrf`), which only the
//!   console's pages know; a POST without it, or with another, is refused.
//!
//! A refusal changes nothing: it is answered before any handler runs.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::session::{COOKIE, Session, cookie_value};
use super::state::Console;

/// The largest form the console reads.
const FORM_LIMIT: usize = 64 * 1024;

/// The session a request's cookie names, if it lives.
pub fn session_of(console: &Console, headers: &HeaderMap) -> Option<(String, Session)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| cookie_value(v, COOKIE))
        .find_map(|value| console.sessions.get(value).map(|s| (value.to_string(), s)))
}

/// Whether the browser reached the console over TLS. `ferry serve` speaks plain
/// HTTP, so TLS ends at a reverse proxy in front of it, which says so with
/// `X-Forwarded-Proto: https` (or `Forwarded: proto=https`).
pub fn over_tls(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .next()
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
        });
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split([';', ','])
                .any(|part| part.trim().eq_ignore_ascii_case("proto=https"))
        });
    forwarded_proto || forwarded
}

/// Why a state-changing request does not come from the console's own pages, if it
/// does not (see the module docs).
pub fn cross_site(headers: &HeaderMap) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site")
        && site != "same-origin"
    {
        return Some(format!(
            "the request came from another site or page (Sec-Fetch-Site: {site})"
        ));
    }
    if let Some(origin) = header("origin") {
        let own: Vec<&str> = [header("x-forwarded-host"), header("host")]
            .into_iter()
            .flatten()
            .flat_map(|h| h.split(','))
            .map(str::trim)
            .collect();
        let authority = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'));
        match authority {
            Some(a) if own.iter().any(|h| h.eq_ignore_ascii_case(a)) => {}
            _ => {
                return Some(format!(
                    "the request came from another origin (Origin: {origin})"
                ));
            }
        }
    }
    None
}

/// A plain refusal: what was refused and why, nothing done.
fn refused(status: StatusCode, why: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("Refused, and nothing was done: {why}.\n"),
    )
        .into_response()
}

/// Lets a request through with its session (in its extensions) — a POST only when
/// it comes from the console's own pages with the session's CSRF token. Without a
/// session a page is redirected to the sign-in page, which returns to it after.
pub async fn require_session(
    State(console): State<Console>,
    request: Request,
    next: Next,
) -> Response {
    let Some((_, session)) = session_of(&console, request.headers()) else {
        if request.method() == Method::GET || request.method() == Method::HEAD {
            let path = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            // The live streams are not pages: a browser cannot follow a redirect there.
            if path.contains("/events") {
                return refused(StatusCode::UNAUTHORIZED, "sign in first");
            }
            let next = form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>();
            return Redirect::to(&format!("/sign-in?next={next}")).into_response();
        }
        return refused(
            StatusCode::FORBIDDEN,
            "this browser is not signed in to the console (its session ended, or the request \
             came from another site); sign in at /sign-in and try again",
        );
    };
    let request = if request.method() == Method::POST {
        if let Some(why) = cross_site(request.headers()) {
            tracing::warn!(path = %request.uri().path(), %why, "console: a cross-site POST was refused");
            return refused(StatusCode::FORBIDDEN, &why);
        }
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
            return refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the form is larger than the console reads (64 KiB)",
            );
        };
        let presented = form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned());
        if !session.csrf_matches(presented.as_deref()) {
            tracing::warn!(path = %parts.uri.path(), "console: a POST without this session's CSRF token was refused");
            return refused(
                StatusCode::FORBIDDEN,
                "the form did not carry this session's CSRF token (reload the page and try again)",
            );
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        request
    };
    let mut request = request;
    request.extensions_mut().insert(session);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_post_from_the_consoles_own_page_passes() {
        assert_eq!(cross_site(&headers(&[("host", "127.0.0.1:8470")])), None);
        assert_eq!(
            cross_site(&headers(&[
                ("host", "127.0.0.1:8470"),
                ("origin", "http://127.0.0.1:8470"),
                ("sec-fetch-site", "same-origin"),
            ])),
            None
        );
        // Behind a proxy: the browser's origin is the proxy's host.
        assert_eq!(
            cross_site(&headers(&[
                ("host", "127.0.0.1:8470"),
                ("x-forwarded-host", "ferry.example.com"),
                ("origin", "https://ferry.example.com"),
            ])),
            None
        );
    }

    #[test]
    fn a_post_from_another_origin_or_site_is_refused() {
        for h in [
            headers(&[("host", "127.0.0.1:8470"), ("sec-fetch-site", "cross-site")]),
            // Another port of the same host: same site, another origin.
            headers(&[("host", "127.0.0.1:8470"), ("sec-fetch-site", "same-site")]),
            headers(&[
                ("host", "127.0.0.1:8470"),
                ("origin", "http://127.0.0.1:9999"),
            ]),
            headers(&[
                ("host", "127.0.0.1:8470"),
                ("origin", "http://evil.example"),
            ]),
            headers(&[("host", "127.0.0.1:8470"), ("origin", "null")]),
            headers(&[("origin", "http://127.0.0.1:8470")]),
        ] {
            assert!(cross_site(&h).is_some(), "{h:?}");
        }
    }

    #[test]
    fn tls_is_what_the_proxy_says() {
        assert!(!over_tls(&headers(&[])));
        assert!(over_tls(&headers(&[("x-forwarded-proto", "https")])));
        assert!(!over_tls(&headers(&[("x-forwarded-proto", "http")])));
        assert!(over_tls(&headers(&[(
            "forwarded",
            "for=1.2.3.4;proto=https"
        )])));
    }
}
