//! What every console page shares: the layout's data (title, navigation, the
//! session's CSRF token for the sign-out form, when the session ends), rendering a
//! template into a response with the console's headers, and the error page.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::assets;
use super::format;
use super::session::Session;
use super::state::Console;
use crate::error::ApiError;

/// Which item of the navigation a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Vms,
    Runs,
    Plans,
    Appliances,
}

/// The layout's data, in every page.
pub struct Layout {
    pub title: String,
    pub nav: Option<Nav>,
    pub csrf: String,
    /// Whether any recovery plan exists (the navigation shows Plans only then).
    pub plans: bool,
    /// When the session ends, in words.
    pub session_ends: String,
    pub version: &'static str,
}

impl Layout {
    pub async fn new(
        console: &Console,
        session: &Session,
        title: impl Into<String>,
        nav: Option<Nav>,
    ) -> Layout {
        // The navigation is no reason to fail a page: without the list, Plans shows.
        let plans = plans::catalog::list(&console.app.env.store)
            .await
            .map_or(true, |p| !p.is_empty());
        Layout {
            title: title.into(),
            nav,
            csrf: session.csrf.clone(),
            plans: plans || nav == Some(Nav::Plans),
            session_ends: chrono::DateTime::from_timestamp_millis(session.expires_at_ms)
                .map(|t| format::when(&t.to_rfc3339()))
                .unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// Where the page loads asset `name` from.
    pub fn asset(&self, name: &str) -> String {
        assets::href(name)
    }

    /// `aria-current="page"` for the navigation item of this page.
    pub fn current(&self, item: &str) -> &'static str {
        let nav = match item {
            "vms" => Nav::Vms,
            "runs" => Nav::Runs,
            "plans" => Nav::Plans,
            _ => Nav::Appliances,
        };
        if self.nav == Some(nav) {
            "page"
        } else {
            "false"
        }
    }
}

/// `template` as an HTML response with `status`.
pub fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(body) => (status, Html(body)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a console template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the console could not draw this page; the server's log says why",
            )
                .into_response()
        }
    }
}

/// `template` as a 200 HTML response.
pub fn ok(template: &impl Template) -> Response {
    render(StatusCode::OK, template)
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    layout: Layout,
    heading: &'a str,
    message: String,
    problems: Vec<(String, String)>,
    back: Option<(&'a str, &'a str)>,
}

/// The page for a refusal or failure `e`, with the same status and words as the
/// API's answer, and a link back to `back` (href, label).
pub async fn error(
    console: &Console,
    session: &Session,
    e: ApiError,
    back: Option<(&str, &str)>,
) -> Response {
    let heading = match e.status() {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::CONFLICT => "Refused",
        StatusCode::UNPROCESSABLE_ENTITY => "Refused",
        StatusCode::SERVICE_UNAVAILABLE => "Unavailable: try again",
        _ => "Failed",
    };
    let page = ErrorPage {
        layout: Layout::new(console, session, heading, None).await,
        heading,
        message: e.message(),
        problems: e
            .problems()
            .iter()
            .map(|p| (p.field.clone(), p.message.clone()))
            .collect(),
        back,
    };
    render(e.status(), &page)
}

/// Adds the headers every console response carries: nothing is cached, nothing is
/// framed, no script, style or picture is loaded from anywhere but the console itself,
/// and no script runs but the console's own file. Inline styles are allowed: the
/// evidence report is one self-contained file with its style inside, and its timeline
/// (an SVG drawn into the run's page) carries its own `<style>`; every value in either
/// is escaped where it is written.
pub async fn headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name, value: &'static str| {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; connect-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "same-origin");
    set(h, header::CACHE_CONTROL, "no-store");
    response
}
