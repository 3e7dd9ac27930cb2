//! Who asks: the optional `X-Ferry-Requested-By` header of a request that starts a run
//! or a plan run, kept with it for the evidence report ("on whose request"). The CLI
//! sends `$USER@<host>`. It is what the client says of itself — the bearer token is the
//! authentication — and is refused (422) only when it cannot be kept as text: not
//! UTF-8, a control character, or over 200 characters.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::ApiError;

/// The header's name.
pub const HEADER: &str = "x-ferry-requested-by";

/// Its longest accepted value, in characters.
const MAX: usize = 200;

/// The requester a request names, if it names one.
#[derive(Debug, Clone, Default)]
pub struct RequestedBy(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestedBy {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(HEADER) else {
            return Ok(RequestedBy(None));
        };
        let text = std::str::from_utf8(value.as_bytes()).map_err(|_| {
            ApiError::invalid("X-Ferry-Requested-By must be UTF-8 text, e.g. alice@ops-1")
        })?;
        let text = text.trim();
        if text.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "X-Ferry-Requested-By must not hold control characters",
            ));
        }
        if text.chars().count() > MAX {
            return Err(ApiError::invalid(format!(
                "X-Ferry-Requested-By is {} characters; at most {MAX} are kept",
                text.chars().count()
            )));
        }
        Ok(RequestedBy((!text.is_empty()).then(|| text.to_string())))
    }
}
