//! The REST API of `ferry volumed`, in front of any [`VolumeService`].
//!
//! Every route, including unknown ones, needs `Authorization: Bearer <token>`; the
//! token is compared in constant time (both sides are hashed first so that not even
//! the length leaks). Bodies are JSON; errors are
//! `{"error": {"code": "…", "message": "…", …details}}` with the status of
//! [`Error::http_status`] — bad input is 400 (malformed) or 422 (well-formed but
//! wrong), never 500. Mutating calls need an idempotency key: the `Idempotency-Key`
//! header or an `idempotency_key` body field (both must agree when both are given).
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `POST /v1/attach` | `volume_id`, `vm_id`, `device_id`? | [`crate::VolumeInfo`] |
//! | `POST /v1/attach-root` | `volume_id`, `vm_id` | [`crate::VolumeInfo`] |
//! | `POST /v1/detach` | `volume_id` | [`crate::VolumeInfo`] |
//! | `POST /v1/snapshots` | `volume_id`, `name` | [`crate::SnapshotInfo`] |
//! | `POST /v1/snapshots/{id}/revert` | — | [`crate::SnapshotInfo`] |
//! | `DELETE /v1/snapshots/{id}` | — | `{}` |
//! | `POST /v1/volumes` | `snapshot_id`, `name`, `zone_id` | [`crate::VolumeInfo`] |
//! | `DELETE /v1/volumes/{id}` | — | `{}` |
//! | `GET /v1/vms/{vm_id}/volumes` | — | `[VolumeInfo]` |
//! | `GET /v1/appliances/{vm_id}/devices/{volume_id}?presence=appears&timeout_ms=N` | — | `{"device": Device \| null}` |
//! | `POST /v1/guest-prep` | `appliance_vm_id`, `volume_id`, `prep` ([`crate::GuestPrep`]) | [`crate::GuestPrepOutcome`] |
//! | `GET /v1/appliances/{vm_id}/tools?program=P` | — | `{"program": P, "available": bool}` |
//! | `POST /v1/volumes/{id}/vouch` | — | `{}` (the engine vouches that ferry created the volume) |
//! | `GET /v1/hello` | — | [`crate::AgentStatus`] |
//!
//! Every mutating body may also carry `fence: {"run_id", "generation"}`, and
//! `seen: {"volume_id", "vm_id"}` — what the caller read of the operation's volume
//! moments before (see [`crate::Seen`]), so that the daemon need not read it again.
//!
//! # Who may ask
//!
//! Besides the token, an engine sends with every request the agent API revision it
//! speaks (`Ferry-Api-Revision`, with `Ferry-Version`) and the appliance VM it means
//! (`Ferry-Appliance`). A request of another revision is refused with 409
//! `version_mismatch`, one meant for an appliance this daemon does not serve with 421
//! `wrong_appliance` — before anything is done. (Without the headers — `curl`, an
//! operator — only the token is checked.)
//!
//! # TLS
//!
//! [`serve_tls`] serves the same API over TLS (rustls) from a PEM certificate chain
//! and key; plain HTTP ([`serve`]) is for loopback, which `ferry volumed` enforces.

use ids::{SnapshotId, VmId, VolumeId, ZoneId};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::error::Error;
use crate::presence::Presence;
use crate::service::VolumeService;
use crate::types::{API_REVISION, Call, Fence, GuestPrep, Seen, VERSION, appliances_named};

/// The header that carries the idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// The header that names the appliance VM a request is meant for.
pub const APPLIANCE_HEADER: &str = "ferry-appliance";
/// The header that carries the caller's ferry version.
pub const VERSION_HEADER: &str = "ferry-version";
/// The header that carries the agent API revision the caller speaks.
pub const REVISION_HEADER: &str = "ferry-api-revision";

/// Who this daemon is: the appliances it serves and the API revision it speaks.
#[derive(Debug, Clone)]
pub struct Identity {
    /// A request naming another appliance (`Ferry-Appliance`) is refused.
    pub serves: Vec<VmId>,
    /// [`crate::API_REVISION`]; only tests of the refusal change it.
    pub api_revision: u32,
}

impl Identity {
    pub fn new(serves: Vec<VmId>) -> Self {
        Identity {
            serves,
            api_revision: API_REVISION,
        }
    }
}

/// The longest device wait a request may ask for.
pub const MAX_DEVICE_WAIT: Duration = Duration::from_secs(600);

#[derive(Clone)]
struct AppState {
    service: Arc<dyn VolumeService>,
    token_digest: [u8; 20],
    identity: Arc<Identity>,
}

/// Serves the REST API over plain HTTP on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<dyn VolumeService>,
    token: SecretString,
    identity: Identity,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(service, token, identity))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves the REST API over TLS on `listener` until `shutdown` completes: `cert` is a
/// PEM certificate chain (the daemon's first), `key` its PEM private key.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    service: Arc<dyn VolumeService>,
    token: SecretString,
    identity: Identity,
    (cert, key): (&std::path::Path, &std::path::Path),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot use the TLS certificate {} and key {}: {e}",
                    cert.display(),
                    key.display()
                ),
            )
        })?;
    let handle = axum_server::Handle::new();
    let stopping = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    axum_server::from_tcp_rustls(listener.into_std()?, tls)
        .handle(handle)
        .serve(router(service, token, identity).into_make_service())
        .await
}

/// The API as an axum router (for embedding in another server).
pub fn router(service: Arc<dyn VolumeService>, token: SecretString, identity: Identity) -> Router {
    let state = AppState {
        service,
        token_digest: digest(token.expose_secret().as_bytes()),
        identity: Arc::new(identity),
    };
    Router::new()
        .route("/v1/attach", post(attach))
        .route("/v1/attach-root", post(attach_root))
        .route("/v1/detach", post(detach))
        .route("/v1/snapshots", post(snapshot))
        .route("/v1/snapshots/{id}/revert", post(revert))
        .route("/v1/snapshots/{id}", delete(delete_snapshot))
        .route("/v1/volumes", post(create_volume))
        .route("/v1/volumes/{id}", delete(delete_volume))
        .route("/v1/volumes/{id}/vouch", post(vouch_created))
        .route("/v1/hello", get(hello))
        .route("/v1/vms/{vm_id}/volumes", get(list_vm_volumes))
        .route(
            "/v1/appliances/{vm_id}/devices/{volume_id}",
            get(wait_device),
        )
        .route("/v1/guest-prep", post(prepare_guest))
        .route("/v1/appliances/{vm_id}/tools", get(tool_available))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), check_caller))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

fn digest(bytes: &[u8]) -> [u8; 20] {
    // Only to give both sides one length before the constant-time comparison.
    Sha1::digest(bytes).into()
}

async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = presented
        .map(|t| bool::from(digest(t.as_bytes()).ct_eq(&state.token_digest)))
        .unwrap_or(false);
    if ok {
        next.run(request).await
    } else {
        let mut response = error_response(&Error::Unauthorized);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        response
    }
}

/// Refuses a request of another API revision, or meant for another appliance (see
/// the module documentation). Runs after [`authenticate`].
async fn check_caller(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match refusal(&state.identity, request.headers()) {
        Some(e) => error_response(&e),
        None => next.run(request).await,
    }
}

fn refusal(identity: &Identity, headers: &HeaderMap) -> Option<Error> {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("(not ASCII)").to_string())
    };
    if let Some(revision) = header(REVISION_HEADER) {
        let theirs_revision = revision.trim().parse::<u32>().unwrap_or(0);
        if theirs_revision != identity.api_revision {
            return Some(Error::VersionMismatch {
                ours: VERSION.to_string(),
                ours_revision: identity.api_revision,
                theirs: header(VERSION_HEADER).unwrap_or_else(|| "unknown".into()),
                theirs_revision,
            });
        }
    }
    let asked = header(APPLIANCE_HEADER)?;
    if identity.serves.iter().any(|vm| vm.as_str() == asked) {
        return None;
    }
    Some(Error::WrongAppliance {
        serves: appliances_named(&identity.serves),
        asked,
    })
}

/// The JSON error body of `e`.
pub fn error_body(e: &Error) -> Value {
    let mut detail = serde_json::to_value(e).unwrap_or_else(|_| json!({}));
    if let Some(map) = detail.as_object_mut() {
        map.insert("code".into(), json!(e.code()));
        map.insert("message".into(), json!(e.to_string()));
        map.insert("class".into(), json!(e.class()));
    }
    json!({ "error": detail })
}

fn error_response(e: &Error) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(error_body(e))).into_response()
}

struct ApiError(Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.0.http_status() >= 500 {
            tracing::warn!(error = %self.0, "volume daemon request failed");
        }
        error_response(&self.0)
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok<T: serde::Serialize>(value: &T) -> ApiResult {
    Ok((StatusCode::OK, axum::Json(value)).into_response())
}

async fn not_found() -> ApiError {
    ApiError(Error::not_found("no such route"))
}

async fn method_not_allowed() -> Response {
    let mut response = error_response(&Error::bad_request("method not allowed on this route"));
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// Parses a JSON body: a syntax error is 400, a body of the wrong shape 422. An empty
/// body reads as `{}`.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let bytes: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError(Error::Unprocessable {
                detail: format!("the body does not fit this call: {e}"),
            }),
            _ => ApiError(Error::bad_request(format!(
                "the body is not valid JSON: {e}"
            ))),
        }
    })
}

/// The `Call` of a mutating request: the key from the header or the body.
fn call_of(headers: &HeaderMap, meta: CallMeta) -> Result<Call, ApiError> {
    let CallMeta {
        idempotency_key: body_key,
        fence,
        seen,
    } = meta;
    let header_key = match headers.get(IDEMPOTENCY_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Error::bad_request("the Idempotency-Key header is not ASCII"))?
                .to_string(),
        ),
    };
    let key = match (header_key, body_key) {
        (None, None) => return Err(ApiError(Error::MissingIdempotencyKey)),
        (Some(h), Some(b)) if h != b => {
            return Err(ApiError(Error::bad_request(
                "the Idempotency-Key header and the body's idempotency_key differ",
            )));
        }
        (Some(k), _) | (None, Some(k)) => k,
    };
    let call = Call {
        idempotency_key: key,
        fence,
        seen,
    };
    call.validate()?;
    Ok(call)
}

/// What every mutating body carries besides its arguments, all optional: an
/// idempotency key (the header may carry it instead), a fencing token, and what the
/// caller has just seen of the operation's volume.
struct CallMeta {
    idempotency_key: Option<String>,
    fence: Option<Fence>,
    seen: Option<Seen>,
}

trait MutationBody: DeserializeOwned {
    fn take_meta(&mut self) -> CallMeta;
}

/// Declares the JSON body of a mutating call: its arguments, then `idempotency_key`,
/// `fence` and `seen` (in that order, the order serde names the fields in when it
/// refuses an unknown one).
macro_rules! mutation_body {
    ($(#[$doc:meta])* struct $name:ident { $($(#[$attr:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$doc])*
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            $($(#[$attr])* $field: $ty,)*
            #[serde(default)]
            idempotency_key: Option<String>,
            #[serde(default)]
            fence: Option<Fence>,
            #[serde(default)]
            seen: Option<Seen>,
        }

        impl MutationBody for $name {
            fn take_meta(&mut self) -> CallMeta {
                CallMeta {
                    idempotency_key: self.idempotency_key.take(),
                    fence: self.fence.take(),
                    seen: self.seen.take(),
                }
            }
        }
    };
}

mutation_body! {
    struct AttachBody {
        volume_id: VolumeId,
        vm_id: VmId,
        #[serde(default)]
        device_id: Option<i64>,
    }
}

mutation_body! {
    struct AttachRootBody {
        volume_id: VolumeId,
        vm_id: VmId,
    }
}

mutation_body! {
    struct VolumeBody {
        volume_id: VolumeId,
    }
}

mutation_body! {
    struct SnapshotBody {
        volume_id: VolumeId,
        name: String,
    }
}

mutation_body! {
    struct CreateVolumeBody {
        snapshot_id: SnapshotId,
        name: String,
        zone_id: ZoneId,
    }
}

mutation_body! {
    struct GuestPrepBody {
        appliance_vm_id: VmId,
        volume_id: VolumeId,
        prep: GuestPrep,
    }
}

mutation_body! {
    /// The body of a call whose arguments are all in the path.
    struct MetaBody {}
}

/// A mutating request: its [`Call`] (see [`call_of`]) and the arguments of its body
/// (see [`parse`]).
struct Mutation<B>(Call, B);

impl<B: MutationBody> FromRequest<AppState> for Mutation<B> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let headers = request.headers().clone();
        let body = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let mut b: B = parse(&body).map_err(IntoResponse::into_response)?;
        let call = call_of(&headers, b.take_meta()).map_err(IntoResponse::into_response)?;
        Ok(Mutation(call, b))
    }
}

/// A mutating request whose one argument is the id in its path.
struct IdMutation {
    id: String,
    call: Call,
}

impl FromRequest<AppState> for IdMutation {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let Path(id) = Path::<String>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let request = Request::from_parts(parts, body);
        let Mutation(call, MetaBody { .. }) = Mutation::from_request(request, state).await?;
        Ok(IdMutation { id, call })
    }
}

async fn attach(State(s): State<AppState>, Mutation(call, b): Mutation<AttachBody>) -> ApiResult {
    ok(&s
        .service
        .attach(&call, &b.volume_id, &b.vm_id, b.device_id)
        .await?)
}

async fn attach_root(
    State(s): State<AppState>,
    Mutation(call, b): Mutation<AttachRootBody>,
) -> ApiResult {
    ok(&s.service.attach_root(&call, &b.volume_id, &b.vm_id).await?)
}

async fn detach(State(s): State<AppState>, Mutation(call, b): Mutation<VolumeBody>) -> ApiResult {
    ok(&s.service.detach(&call, &b.volume_id).await?)
}

async fn snapshot(
    State(s): State<AppState>,
    Mutation(call, b): Mutation<SnapshotBody>,
) -> ApiResult {
    ok(&s.service.snapshot(&call, &b.volume_id, &b.name).await?)
}

async fn revert(State(s): State<AppState>, m: IdMutation) -> ApiResult {
    ok(&s.service.revert(&m.call, &SnapshotId::from(&m.id)).await?)
}

async fn delete_snapshot(State(s): State<AppState>, m: IdMutation) -> ApiResult {
    s.service
        .delete_snapshot(&m.call, &SnapshotId::from(&m.id))
        .await?;
    ok(&json!({}))
}

async fn create_volume(
    State(s): State<AppState>,
    Mutation(call, b): Mutation<CreateVolumeBody>,
) -> ApiResult {
    ok(&s
        .service
        .create_volume_from_snapshot(&call, &b.snapshot_id, &b.name, &b.zone_id)
        .await?)
}

async fn delete_volume(State(s): State<AppState>, m: IdMutation) -> ApiResult {
    s.service
        .delete_volume(&m.call, &VolumeId::from(&m.id))
        .await?;
    ok(&json!({}))
}

async fn vouch_created(State(s): State<AppState>, m: IdMutation) -> ApiResult {
    s.service
        .vouch_created(&m.call, &VolumeId::from(&m.id))
        .await?;
    ok(&json!({}))
}

async fn hello(State(s): State<AppState>) -> ApiResult {
    let mut status = s.service.status().await?;
    status.api_revision = s.identity.api_revision;
    ok(&status)
}

async fn list_vm_volumes(State(s): State<AppState>, Path(vm_id): Path<VmId>) -> ApiResult {
    ok(&s.service.list_vm_volumes(&vm_id).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    presence: Presence,
    timeout_ms: u64,
}

async fn wait_device(
    State(s): State<AppState>,
    Path((vm_id, volume_id)): Path<(VmId, VolumeId)>,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| {
        Error::bad_request(format!(
            "expected ?presence=appears|disappears&timeout_ms=N: {e}"
        ))
    })?;
    let timeout = Duration::from_millis(q.timeout_ms);
    if timeout > MAX_DEVICE_WAIT {
        return Err(ApiError(Error::bad_request(format!(
            "timeout_ms {} is longer than the {} ms a request may wait",
            q.timeout_ms,
            MAX_DEVICE_WAIT.as_millis()
        ))));
    }
    let device = s
        .service
        .wait_device(&vm_id, &volume_id, q.presence, timeout)
        .await?;
    ok(&json!({ "device": device }))
}

async fn prepare_guest(
    State(s): State<AppState>,
    Mutation(call, b): Mutation<GuestPrepBody>,
) -> ApiResult {
    ok(&s
        .service
        .prepare_guest(&call, &b.appliance_vm_id, &b.volume_id, &b.prep)
        .await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolQuery {
    program: String,
}

async fn tool_available(
    State(s): State<AppState>,
    Path(vm_id): Path<VmId>,
    query: Result<Query<ToolQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) =
        query.map_err(|e| Error::bad_request(format!("expected ?program=NAME_OR_PATH: {e}")))?;
    let available = s.service.tool_available(&vm_id, &q.program).await?;
    ok(&json!({ "program": q.program, "available": available }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_carry_code_message_and_details() {
        let body = error_body(&Error::ReplicaVolume {
            volume_id: "v1".into(),
        });
        assert_eq!(body["error"]["code"], "replica_volume");
        assert_eq!(body["error"]["volume_id"], "v1");
        assert_eq!(body["error"]["class"], "definitive");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("never deletes replica volumes")
        );
        // The body decodes back into the same error (what HttpClient does).
        let back: Error = serde_json::from_value(body["error"].clone()).unwrap();
        assert_eq!(
            back,
            Error::ReplicaVolume {
                volume_id: "v1".into()
            }
        );
    }

    #[test]
    fn token_digests_compare_equal_only_for_equal_tokens() {
        assert!(bool::from(digest(b"secret").ct_eq(&digest(b"secret"))));
        assert!(!bool::from(digest(b"secret").ct_eq(&digest(b"secreT"))));
        assert!(!bool::from(digest(b"").ct_eq(&digest(b"secret"))));
    }
}
