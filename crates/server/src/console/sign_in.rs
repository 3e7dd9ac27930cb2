//! Signing in with the API token, and out.
//!
//! The sign-in form takes the server's API token (the one `ferry` and the REST API
//! use), compares it as the API does (`AppState::token_matches`), and on a match
//! starts a session (`session`) whose id goes to the browser in a cookie. The token
//! is never stored, echoed, logged or put in the cookie. A wrong token is answered
//! 401 with the form again.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::assets;
use super::guard::{cross_site, over_tls, session_of};
use super::page;
use super::session::{clear_cookie, set_cookie};
use super::state::Console;

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage {
    next: String,
    note: Option<&'static str>,
    error: Option<&'static str>,
    version: &'static str,
}

impl SignInPage {
    fn asset(&self, name: &str) -> String {
        assets::href(name)
    }
}

#[derive(Debug, Deserialize)]
pub struct SignInQuery {
    next: Option<String>,
    signed_out: Option<String>,
}

/// Where to go after signing in: a path of this console, nothing else (no other
/// host, no `//host`, nothing a `Location` header cannot carry as it is), else the VM
/// list.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.starts_with("/\\")
                && p.chars().all(|c| c.is_ascii_graphic())
                && !p.starts_with("/sign-") =>
        {
            p.to_string()
        }
        _ => "/".to_string(),
    }
}

pub async fn form(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(query): Query<SignInQuery>,
) -> Response {
    let next = local_path(query.next.as_deref());
    if session_of(&console, &headers).is_some() {
        return Redirect::to(&next).into_response();
    }
    let note = if query.signed_out.is_some() {
        Some("You signed out.")
    } else if query.next.as_deref().is_some_and(|n| n != "/") {
        Some("Sign in to see that page.")
    } else {
        None
    };
    page::ok(&SignInPage {
        next,
        note,
        error: None,
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// The longest name a session keeps, in characters.
const MAX_NAME: usize = 100;

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    token: String,
    /// Who signs in, for the record of who started what (optional).
    #[serde(default)]
    name: String,
    #[serde(default)]
    next: Option<String>,
}

pub async fn sign_in(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    if let Some(why) = cross_site(&headers) {
        tracing::warn!(%why, "console: a cross-site sign-in was refused");
        return (
            StatusCode::FORBIDDEN,
            format!("Refused, and nothing was done: {why}.\n"),
        )
            .into_response();
    }
    let next = local_path(form.next.as_deref());
    let token = form.token.trim();
    let name = form.name.trim();
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        let page = SignInPage {
            next,
            note: None,
            error: Some(
                "Your name is kept with the runs you start: at most 100 characters, no control characters.",
            ),
            version: env!("CARGO_PKG_VERSION"),
        };
        return page::render(StatusCode::UNPROCESSABLE_ENTITY, &page);
    }
    if token.is_empty() || !console.app.token_matches(token) {
        tracing::warn!("console: a sign-in with a wrong token was refused");
        let page = SignInPage {
            next,
            note: None,
            error: Some(if token.is_empty() {
                "Enter the server's API token."
            } else {
                "That is not this server's API token: nothing was signed in."
            }),
            version: env!("CARGO_PKG_VERSION"),
        };
        return page::render(StatusCode::UNAUTHORIZED, &page);
    }
    let who = (!name.is_empty()).then(|| name.to_string());
    let (value, _) = match console.sessions.create(who) {
        Ok(created) => created,
        Err(e) => {
            tracing::error!(error = %e, "console: cannot start a session");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot start a session: the server's random number generator failed",
            )
                .into_response();
        }
    };
    tracing::info!(sessions = console.sessions.len(), "console: signed in");
    let cookie = set_cookie(&value, console.sessions.lifetime(), over_tls(&headers));
    let mut response = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// Ends the session (the guard has checked it and its CSRF token).
pub async fn sign_out(State(console): State<Console>, headers: HeaderMap) -> Response {
    if let Some((value, _)) = session_of(&console, &headers) {
        console.sessions.remove(&value);
        tracing::info!("console: signed out");
    }
    let mut response = Redirect::to("/sign-in?signed_out=1").into_response();
    if let Ok(v) = HeaderValue::from_str(&clear_cookie(over_tls(&headers))) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn after_signing_in_only_a_path_of_the_console_is_followed() {
        use super::local_path;
        assert_eq!(local_path(Some("/runs/abc?x=1")), "/runs/abc?x=1");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/sign-out")), "/");
        assert_eq!(local_path(Some("/runs\r\nSet-Cookie: x=1")), "/");
        assert_eq!(local_path(Some("/vms/é")), "/");
        assert_eq!(local_path(Some("/a b")), "/");
        assert_eq!(local_path(None), "/");
    }
}
