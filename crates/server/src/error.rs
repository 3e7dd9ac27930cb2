//! The API's errors: each maps to one status and one stable code, and says in words
//! what was wrong and what to do. Bad input is never a 500.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::model::{ErrorBody, ErrorDetail, Problem};

#[derive(Debug)]
pub enum ApiError {
    /// 401: no token, or the wrong one.
    Unauthorized,
    /// 404.
    NotFound(String),
    /// 409: the request is valid but the state of things refuses it (a VM with an
    /// active run, a run that is not stuck, …).
    Conflict(String),
    /// 409 too, with its own code: the request would remove or lose something an
    /// operator may want (a VM's run history), so it needs an explicit confirmation;
    /// the message says how to give it.
    ConfirmationRequired(String),
    /// 409 too, with its own code: the VM has replicas diverged from their source, and
    /// fails over only once a resync is recorded.
    Diverged(String),
    /// 422: the request's content is not acceptable; `problems` names the fields.
    Invalid {
        message: String,
        problems: Vec<Problem>,
    },
    /// 400: the request could not be read at all.
    BadRequest(String),
    /// 405.
    MethodNotAllowed,
    /// 413: the body is larger than the server reads.
    TooLarge(String),
    /// 503: a dependency (CloudStack, the database) cannot be reached now; try again.
    Unavailable(String),
    /// 500: ferry's own failure. Logged with its whole chain.
    Internal(String),
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Invalid {
            message: message.into(),
            problems: Vec::new(),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::ConfirmationRequired(_) => (StatusCode::CONFLICT, "confirmation_required"),
            ApiError::Diverged(_) => (StatusCode::CONFLICT, "replica_diverged"),
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl ApiError {
    /// The HTTP status it answers with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// What was wrong and what to do, in words: the JSON's `message`.
    pub fn message(&self) -> String {
        match self {
            ApiError::Unauthorized => {
                "missing or wrong bearer token: send `Authorization: Bearer <token>` with the \
                 server's token (FERRY_TOKEN)"
                    .to_string()
            }
            ApiError::MethodNotAllowed => {
                "this method is not allowed on this path; see docs/openapi.json".to_string()
            }
            ApiError::Invalid { message, .. }
            | ApiError::NotFound(message)
            | ApiError::Conflict(message)
            | ApiError::ConfirmationRequired(message)
            | ApiError::Diverged(message)
            | ApiError::BadRequest(message)
            | ApiError::TooLarge(message)
            | ApiError::Unavailable(message)
            | ApiError::Internal(message) => message.clone(),
        }
    }

    /// For a refused definition or plan: every problem, with its field.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ApiError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = self.message();
        let problems = match self {
            ApiError::Invalid { problems, .. } => problems,
            _ => Vec::new(),
        };
        if status.is_server_error() {
            tracing::error!(%status, %message, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message,
                problems,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The whole chain of an error, `: `-separated.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        match &e {
            store::StoreError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            store::StoreError::Refused(_) | store::StoreError::Constraint { .. } => {
                ApiError::Conflict(e.to_string())
            }
            store::StoreError::Connect { .. }
            | store::StoreError::Unavailable(_)
            | store::StoreError::Busy(_) => ApiError::Unavailable(format!(
                "the database cannot be used now; try again: {}",
                chain(&e)
            )),
            _ => ApiError::Internal(chain(&e)),
        }
    }
}

impl From<engine::EngineError> for ApiError {
    fn from(e: engine::EngineError) -> Self {
        match e {
            engine::EngineError::NoRun(id) => ApiError::NotFound(format!("no run {id}")),
            engine::EngineError::Store(s) => s.into(),
            other => ApiError::Internal(chain(&other)),
        }
    }
}

impl From<workflows::StartError> for ApiError {
    fn from(e: workflows::StartError) -> Self {
        use workflows::StartError as S;
        match e {
            S::NoVm(name) => ApiError::NotFound(format!(
                "no protected VM named `{name}`: `ferry vm list` shows them"
            )),
            S::NotReady { .. }
            | S::WrongState { .. }
            | S::NoPriorRun { .. }
            | S::Busy { .. }
            | S::Changed { .. } => ApiError::Conflict(e.to_string()),
            S::Diverged { .. } => ApiError::Diverged(e.to_string()),
            S::AgentDown { .. } => ApiError::Unavailable(e.to_string()),
            S::Plan(_) => ApiError::invalid(e.to_string()),
            S::Store(s) => s.into(),
        }
    }
}

impl From<inventory::UpdateError> for ApiError {
    fn from(e: inventory::UpdateError) -> Self {
        use inventory::UpdateError as U;
        match e {
            U::NotRegistered(name) => ApiError::NotFound(format!(
                "no protected VM named `{name}` is registered, so there is nothing to update: \
                 `ferry vm add FILE` registers it (`ferry vm list` shows the registered VMs)"
            )),
            U::NotAtRest {
                ref name,
                state,
                active_run: None,
            } => ApiError::Conflict(format!(
                "{e}: {}. Nothing was changed.",
                workflows::what_first(name, state)
            )),
            U::NotAtRest { .. } | U::Refused(_) => {
                ApiError::Conflict(format!("{e}. Nothing was changed."))
            }
            U::Invalid(problems) => ApiError::Invalid {
                message: format!(
                    "the VM definition was refused and nothing was changed: {} problem(s)",
                    problems.len()
                ),
                problems: problems
                    .into_iter()
                    .map(|p| Problem {
                        field: p.field,
                        message: p.message,
                    })
                    .collect(),
            },
            U::CloudStack(e) => ApiError::Unavailable(format!(
                "cannot check the definition against CloudStack, so nothing was changed: {}",
                chain(&e)
            )),
            U::Store(e) => e.into(),
        }
    }
}
