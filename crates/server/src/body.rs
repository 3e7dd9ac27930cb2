//! Reading a request's body: the bytes, or the JSON error every other refusal has
//! (axum's own answer to a body over its limit is plain text), and the JSON parsed
//! with a 422 that says what was wrong. A leaf of the crate: the API's routes, in
//! several files, all read bodies through it.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;

use crate::error::ApiError;

type ApiResult<T> = Result<T, ApiError>;

/// The request's body, or the JSON error every other refusal has (axum's own answer to
/// a body over its limit is plain text).
pub(crate) fn read_body(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(format!(
            "the request body is larger than the server reads (2 MiB): {}",
            e.body_text()
        )),
        _ => ApiError::BadRequest(format!(
            "the request body could not be read: {}",
            e.body_text()
        )),
    })
}

/// Parses a JSON body; an empty body is `T::default()` where `default` is given.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(
    body: &Bytes,
    default: Option<T>,
) -> ApiResult<T> {
    let trimmed = body.trim_ascii();
    if (trimmed.is_empty() || trimmed == b"null")
        && let Some(default) = default
    {
        return Ok(default);
    }
    // Every body is a JSON object: serde would read a struct from an array too (`[]`
    // as an empty StartTest), which is no request anyone meant.
    if !trimmed.starts_with(b"{") {
        return Err(ApiError::invalid(
            "the request body must be a JSON object (`{...}`), as docs/openapi.json shows",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the request body is not acceptable JSON: {e}")))
}
