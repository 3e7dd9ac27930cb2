//! The console's stylesheet, script and icon, compiled into the binary: the console
//! loads nothing from the network. Each is served under a name that carries a digest
//! of its content (`/assets/console.css?v=…`), so a browser may keep it for a year
//! and still gets a changed one after an upgrade.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");
const ICON: &str = include_str!("assets/favicon.svg");

/// Each asset: its name, content type and content.
const ASSETS: &[(&str, &str, &str)] = &[
    ("console.css", "text/css; charset=utf-8", CSS),
    ("console.js", "text/javascript; charset=utf-8", JS),
    ("favicon.svg", "image/svg+xml", ICON),
];

/// The path pages link an asset by: its name and a digest of all the assets.
pub fn href(name: &str) -> String {
    static VERSION: LazyLock<String> = LazyLock::new(|| {
        let mut hash = Sha256::new();
        for (_, _, content) in ASSETS {
            hash.update(content.as_bytes());
        }
        hash.finalize()
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect()
    });
    format!("/assets/{name}?v={}", *VERSION)
}

pub async fn serve(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, content)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            *content,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
