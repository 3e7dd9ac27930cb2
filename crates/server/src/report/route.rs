//! `GET /v1/reports/{id}`: the evidence report of a run or a plan run, as JSON (the
//! default) or as one self-contained HTML file (`?format=html`), as an attachment with
//! `?download=1`.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::ApiError;
use crate::model::ErrorBody;
use crate::state::AppState;

/// The report's query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// `json` (the default) or `html`.
    pub format: Option<String>,
    /// `1` (or `true`): answer as an attachment, `ferry-report-<id>.<json|html>`.
    pub download: Option<String>,
}

#[utoipa::path(get, path = "/v1/reports/{id}", tag = "runs",
    params(("id" = String, Path, description = "A run's id or a plan run's id"), ReportQuery),
    responses((status = 200, description = "The evidence report (docs/report.md): JSON by default (its schema is docs/report.schema.json), or one self-contained HTML file with `format=html`",
               content((String = "application/json"), (String = "text/html"))),
              (status = 404, description = "No run or plan run of that id", body = ErrorBody),
              (status = 422, description = "A bad query parameter", body = ErrorBody)))]
pub(crate) async fn show_report(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::invalid(format!("bad query: {}", e.body_text())))?;
    let html = match query.format.as_deref() {
        None | Some("json") => false,
        Some("html") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "format must be json or html (got `{other}`)"
            )));
        }
    };
    let download = match query.download.as_deref() {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "download must be 1 or 0 (got `{other}`)"
            )));
        }
    };
    let report = super::build(&state, &id).await?;
    let (content_type, ext, body) = if html {
        ("text/html; charset=utf-8", "html", super::to_html(&report))
    } else {
        (
            "application/json",
            "json",
            serde_json::to_string_pretty(&report).expect("a report serializes"),
        )
    };
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    if download {
        // The id is a run's or plan run's, found in the store: letters, digits and
        // dashes; anything else is left out of the file name all the same.
        let safe: String = report
            .subject
            .id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let value = format!("attachment; filename=\"ferry-report-{safe}.{ext}\"");
        if let Ok(value) = header::HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert(header::CONTENT_DISPOSITION, value);
        }
    }
    Ok(response)
}
