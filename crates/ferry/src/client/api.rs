//! A typed client of ferry's REST API (`crates/server/src/api.rs`): one method per
//! route, the server's own model types in and out.
//!
//! Every answer is read as JSON first and only then into its type, so the CLI can
//! print the body exactly as the server sent it (`--output json`) and a server newer
//! than this client, with fields this client does not know, is still understood.
//!
//! A mutation is never re-sent: when a request times out, whether the server carried
//! it out is unknown, and the error says so instead of trying again.

use std::fmt;
use std::time::Duration;

use reqwest::Method;
use secrecy::{ExposeSecret as _, SecretString};
use serde::de::DeserializeOwned;
use serde_json::Value;
use server::model::{
    AddVm, ErrorBody, ErrorDetail, Health, RunDetail, RunSummary, StartTest, TestMode, UpdateVm,
    VmDetail, VmSummary, VmUpdated,
};
use server::plan_model::{AddPlan, PlanDetail, PlanRunView};

/// How long one request may take. Registering a VM asks CloudStack several things, so
/// this is generous; polling a run is far quicker.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request did not give its answer.
#[derive(Debug)]
pub enum ClientError {
    /// The server answered with one of its errors (4xx or 5xx, `{"error": …}`).
    Api { status: u16, body: ErrorBody },
    /// The server could not be reached: nothing was carried out.
    Unreachable { url: String, cause: String },
    /// The request was sent but no answer came in time: it may have been carried out.
    TimedOut {
        url: String,
        method: String,
        after: Duration,
    },
    /// Something answered that is not ferry's API (wrong `--server`, a proxy's page).
    Unexpected {
        url: String,
        status: u16,
        detail: String,
    },
}

impl ClientError {
    /// The HTTP status the server answered with, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Unexpected { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// The error as the API's error body: the server's own for an API error, else one
    /// made here with the codes `unreachable`, `timed_out` or `unexpected_response`.
    pub fn body(&self) -> ErrorBody {
        match self {
            ClientError::Api { body, .. } => body.clone(),
            other => ErrorBody {
                error: ErrorDetail {
                    code: match other {
                        ClientError::Unreachable { .. } => "unreachable",
                        ClientError::TimedOut { .. } => "timed_out",
                        _ => "unexpected_response",
                    }
                    .to_string(),
                    message: other.to_string(),
                    problems: Vec::new(),
                },
            },
        }
    }
}

impl fmt::Display for ClientError {
    /// The message, then each problem of a refused request on its own line as
    /// `  - field: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Api { body, .. } => {
                f.write_str(&body.error.message)?;
                for p in &body.error.problems {
                    write!(f, "\n  - {}: {}", p.field, p.message)?;
                }
                Ok(())
            }
            ClientError::Unreachable { url, cause } => write!(
                f,
                "cannot reach the ferry server at {url}: {cause}. Is `ferry serve` running \
                 there? Set --server or FERRY_SERVER to its URL"
            ),
            ClientError::TimedOut { url, method, after } => write!(
                f,
                "the ferry server at {url} did not answer {method} within {} s; the request \
                 may have been carried out: look with `ferry vm list` or `ferry run list` \
                 before trying again",
                after.as_secs()
            ),
            ClientError::Unexpected {
                url,
                status,
                detail,
            } => write!(
                f,
                "{url} answered HTTP {status} with something that is not ferry's API \
                 ({detail}); check --server or FERRY_SERVER"
            ),
        }
    }
}

// The cause is summed up in the message (its innermost text), so there is no source
// to print again.
impl std::error::Error for ClientError {}

/// A request: its method, its path under the server's URL and its JSON body.
pub(crate) struct Request {
    method: Method,
    path: String,
    body: Option<Value>,
}

impl Request {
    fn get(path: String) -> Request {
        Request {
            method: Method::GET,
            path,
            body: None,
        }
    }

    fn post(path: String, body: Option<Value>) -> Request {
        Request {
            method: Method::POST,
            path,
            body,
        }
    }

    #[allow(dead_code, reason = "used by `Api::health`")]
    pub(crate) fn health() -> Request {
        Request::get("/health".into())
    }

    pub(crate) fn list_vms() -> Request {
        Request::get("/v1/vms".into())
    }

    pub(crate) fn add_vm(request: &AddVm) -> Request {
        Request::post(
            "/v1/vms".into(),
            Some(serde_json::to_value(request).expect("AddVm serializes")),
        )
    }

    pub(crate) fn list_plans() -> Request {
        Request::get("/v1/plans".into())
    }

    pub(crate) fn add_plan(request: &AddPlan) -> Request {
        Request::post(
            "/v1/plans".into(),
            Some(serde_json::to_value(request).expect("AddPlan serializes")),
        )
    }

    pub(crate) fn show_plan(name: &str) -> Request {
        Request::get(format!("/v1/plans/{}", segment(name)))
    }

    pub(crate) fn update_plan(name: &str, request: &server::plan_model::UpdatePlan) -> Request {
        Request {
            method: Method::PUT,
            path: format!("/v1/plans/{}", segment(name)),
            body: Some(serde_json::to_value(request).expect("UpdatePlan serializes")),
        }
    }

    pub(crate) fn remove_plan(name: &str) -> Request {
        Request {
            method: Method::DELETE,
            path: format!("/v1/plans/{}", segment(name)),
            body: None,
        }
    }

    /// `workflow` is the path's last segment: `test-failover`, `cleanup`,
    /// `live-failover`, `rollback` or `commit`.
    pub(crate) fn start_plan(name: &str, workflow: &str) -> Request {
        Request::post(format!("/v1/plans/{}/{workflow}", segment(name)), None)
    }

    pub(crate) fn list_plan_runs(name: &str, limit: u32) -> Request {
        Request::get(format!("/v1/plans/{}/runs?limit={limit}", segment(name)))
    }

    pub(crate) fn show_plan_run(id: &str) -> Request {
        Request::get(format!("/v1/plan-runs/{}", segment(id)))
    }

    pub(crate) fn list_appliances() -> Request {
        Request::get("/v1/appliances".into())
    }

    pub(crate) fn show_appliance(name: &str) -> Request {
        Request::get(format!("/v1/appliances/{}", segment(name)))
    }

    pub(crate) fn show_vm(name: &str) -> Request {
        Request::get(format!("/v1/vms/{}", segment(name)))
    }

    /// POST /v1/vms/{name}/resynced: `replicas` (every diverged one when empty) were
    /// resynchronised from the source.
    pub(crate) fn record_resync(name: &str, replicas: &[String]) -> Request {
        Request::post(
            format!("/v1/vms/{}/resynced", segment(name)),
            Some(serde_json::json!({ "replicas": replicas })),
        )
    }

    pub(crate) fn update_vm(name: &str, request: &UpdateVm) -> Request {
        Request {
            method: Method::PUT,
            path: format!("/v1/vms/{}", segment(name)),
            body: Some(serde_json::to_value(request).expect("UpdateVm serializes")),
        }
    }

    /// `confirm`: remove it even if it has run history (its runs are kept).
    pub(crate) fn remove_vm(name: &str, confirm: bool) -> Request {
        let query = if confirm { "?confirm=true" } else { "" };
        Request {
            method: Method::DELETE,
            path: format!("/v1/vms/{}{query}", segment(name)),
            body: None,
        }
    }

    pub(crate) fn start_test_failover(name: &str, mode: TestMode) -> Request {
        Request::post(
            format!("/v1/vms/{}/test-failover", segment(name)),
            Some(serde_json::to_value(StartTest { mode }).expect("StartTest serializes")),
        )
    }

    /// `workflow` is the path's last segment: `cleanup`, `live-failover`, `rollback` or
    /// `commit`.
    pub(crate) fn start(name: &str, workflow: &str) -> Request {
        Request::post(format!("/v1/vms/{}/{workflow}", segment(name)), None)
    }

    /// The runs whose id starts with `prefix`, at most `limit`, newest first.
    pub(crate) fn runs_by_id_prefix(prefix: &str, limit: i64) -> Request {
        let mut query = form_query();
        query.append_pair("id_prefix", prefix);
        query.append_pair("limit", &limit.to_string());
        Request::get(format!("/v1/runs?{}", query.finish()))
    }

    pub(crate) fn list_runs(vm: Option<&str>, limit: Option<i64>) -> Request {
        let mut query = form_query();
        if let Some(vm) = vm {
            query.append_pair("vm", vm);
        }
        if let Some(limit) = limit {
            query.append_pair("limit", &limit.to_string());
        }
        let query = query.finish();
        if query.is_empty() {
            Request::get("/v1/runs".into())
        } else {
            Request::get(format!("/v1/runs?{query}"))
        }
    }

    pub(crate) fn show_run(id: &str) -> Request {
        Request::get(format!("/v1/runs/{}", segment(id)))
    }

    /// `action` is `cancel`, `retry` or `abandon`.
    pub(crate) fn report(id: &str, format: &str) -> Request {
        Request::get(format!("/v1/reports/{}?format={format}", segment(id)))
    }

    pub(crate) fn run_action(id: &str, action: &str) -> Request {
        Request::post(format!("/v1/runs/{}/{action}", segment(id)), None)
    }
}

fn form_query() -> form_urlencoded::Serializer<'static, String> {
    form_urlencoded::Serializer::new(String::new())
}

/// A name or id as one path segment (a `/` or `?` in it cannot change the route).
fn segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Who the server records as having asked for the runs this client starts
/// (`X-Ferry-Requested-By`): FERRY_REQUESTED_BY, else `$USER@<host name>`.
fn requester() -> String {
    // What the server keeps: text without control characters, at most 200 of them.
    let keepable =
        |who: String| -> String { who.chars().filter(|c| !c.is_control()).take(200).collect() };
    keepable(requester_as_said())
}

fn requester_as_said() -> String {
    if let Ok(who) = std::env::var("FERRY_REQUESTED_BY")
        && !who.trim().is_empty()
    {
        return who.trim().to_string();
    }
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{user}@{host}")
}

/// ferry's REST API at one URL, with its bearer token.
#[derive(Clone)]
pub struct Api {
    base: String,
    token: SecretString,
    http: reqwest::Client,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api").field("base", &self.base).finish()
    }
}

impl Api {
    /// A client of the server at `base_url` (`http://host:port`, a trailing `/` is
    /// ignored) that sends `token` as its bearer token.
    pub fn new(base_url: &str, token: SecretString) -> Api {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(who) = reqwest::header::HeaderValue::from_str(&requester()) {
            headers.insert("x-ferry-requested-by", who);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("ferry-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds with its defaults");
        Api {
            base: base_url.trim_end_matches('/').to_string(),
            token,
            http,
        }
    }
}

// The CLI commands use `typed` to keep each body as it came; these typed calls are
// for the other callers in this binary (`ferry demo`), which may not use all of them.
#[allow(
    dead_code,
    reason = "the typed API is public for `ferry demo` and later callers"
)]
impl Api {
    /// The server's URL, as given.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// GET /health.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call(Request::health()).await
    }

    /// GET /v1/vms: every protected VM, by name.
    pub async fn list_vms(&self) -> Result<Vec<VmSummary>, ClientError> {
        self.call(Request::list_vms()).await
    }

    /// POST /v1/vms: registers a VM from its definition; a refusal (422) carries every
    /// problem.
    pub async fn add_vm(&self, request: &AddVm) -> Result<VmDetail, ClientError> {
        self.call(Request::add_vm(request)).await
    }

    /// GET /v1/vms/{name}.
    pub async fn show_vm(&self, name: &str) -> Result<VmDetail, ClientError> {
        self.call(Request::show_vm(name)).await
    }

    /// PUT /v1/vms/{name}: changes a VM's definition at rest (or, with `dry_run`, says
    /// what it would change); a refusal (409 not at rest, 422 invalid) changes nothing.
    pub async fn update_vm(
        &self,
        name: &str,
        request: &UpdateVm,
    ) -> Result<VmUpdated, ClientError> {
        self.call(Request::update_vm(name, request)).await
    }

    /// DELETE /v1/vms/{name}: ferry forgets the VM; nothing in CloudStack changes. A VM
    /// with run history is only removed with `confirm` (else 409
    /// `confirmation_required`); its runs are kept either way.
    pub async fn remove_vm(&self, name: &str, confirm: bool) -> Result<(), ClientError> {
        self.send(Request::remove_vm(name, confirm))
            .await
            .map(|_| ())
    }

    /// POST /v1/vms/{name}/test-failover.
    pub async fn start_test_failover(
        &self,
        name: &str,
        mode: TestMode,
    ) -> Result<RunSummary, ClientError> {
        self.call(Request::start_test_failover(name, mode)).await
    }

    /// POST /v1/vms/{name}/cleanup.
    pub async fn start_cleanup(&self, name: &str) -> Result<RunSummary, ClientError> {
        self.call(Request::start(name, "cleanup")).await
    }

    /// POST /v1/vms/{name}/live-failover.
    pub async fn start_live_failover(&self, name: &str) -> Result<RunSummary, ClientError> {
        self.call(Request::start(name, "live-failover")).await
    }

    /// POST /v1/vms/{name}/rollback.
    pub async fn start_rollback(&self, name: &str) -> Result<RunSummary, ClientError> {
        self.call(Request::start(name, "rollback")).await
    }

    /// POST /v1/vms/{name}/commit.
    pub async fn start_commit(&self, name: &str) -> Result<RunSummary, ClientError> {
        self.call(Request::start(name, "commit")).await
    }

    /// POST /v1/plans: adds a recovery plan from its file; a refusal (422) carries
    /// every problem.
    pub async fn add_plan(&self, request: &AddPlan) -> Result<PlanDetail, ClientError> {
        self.call(Request::add_plan(request)).await
    }

    /// POST /v1/plans/{name}/{workflow}: starts a run of the plan; `workflow` is
    /// `test-failover`, `cleanup`, `live-failover`, `rollback` or `commit`.
    pub async fn start_plan(&self, name: &str, workflow: &str) -> Result<PlanRunView, ClientError> {
        self.call(Request::start_plan(name, workflow)).await
    }

    /// GET /v1/plan-runs/{id}.
    pub async fn show_plan_run(&self, id: &str) -> Result<PlanRunView, ClientError> {
        self.call(Request::show_plan_run(id)).await
    }

    /// GET /v1/runs: newest first, of one VM when `vm` is given.
    pub async fn list_runs(
        &self,
        vm: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Vec<RunSummary>, ClientError> {
        self.call(Request::list_runs(vm, limit)).await
    }

    /// GET /v1/runs/{id}.
    pub async fn show_run(&self, id: &str) -> Result<RunDetail, ClientError> {
        self.call(Request::show_run(id)).await
    }

    /// POST /v1/runs/{id}/cancel.
    pub async fn cancel_run(&self, id: &str) -> Result<RunSummary, ClientError> {
        self.call(Request::run_action(id, "cancel")).await
    }

    /// POST /v1/runs/{id}/retry.
    pub async fn retry_run(&self, id: &str) -> Result<RunSummary, ClientError> {
        self.call(Request::run_action(id, "retry")).await
    }

    /// POST /v1/runs/{id}/abandon.
    pub async fn abandon_run(&self, id: &str) -> Result<RunSummary, ClientError> {
        self.call(Request::run_action(id, "abandon")).await
    }
}

impl Api {
    /// Sends `request` and reads the answer as `T`.
    async fn call<T: DeserializeOwned>(&self, request: Request) -> Result<T, ClientError> {
        self.typed(request).await.map(|(value, _)| value)
    }

    /// Sends `request` and reads the answer as `T`, keeping the body as it came.
    pub(crate) async fn typed<T: DeserializeOwned>(
        &self,
        request: Request,
    ) -> Result<(T, Raw), ClientError> {
        let url = self.url(&request.path);
        let raw = self.send(request).await?;
        let value = serde_json::from_str(&raw.0).map_err(|e| ClientError::Unexpected {
            url,
            status: 200,
            detail: format!("the answer does not have the expected shape: {e}"),
        })?;
        Ok((value, raw))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `request`; a 2xx answer's JSON body (`null` when empty), or the error.
    pub(crate) async fn send(&self, request: Request) -> Result<Raw, ClientError> {
        let url = self.url(&request.path);
        let (status, text) = self.send_text(request).await?;
        if text.trim().is_empty() {
            return Ok(Raw("null".into()));
        }
        match serde_json::from_str::<serde::de::IgnoredAny>(&text) {
            Ok(_) => Ok(Raw(text)),
            Err(e) => Err(ClientError::Unexpected {
                url,
                status,
                detail: format!("the body is not JSON: {e}"),
            }),
        }
    }

    /// Sends `request`; a 2xx answer's status and body as text (JSON or not), or the
    /// error.
    pub(crate) async fn send_text(&self, request: Request) -> Result<(u16, String), ClientError> {
        let url = self.url(&request.path);
        let method = request.method.to_string();
        let mut builder = self
            .http
            .request(request.method, &url)
            .bearer_auth(self.token.expose_secret());
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| transport_error(&self.base, &method, e))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport_error(&self.base, &method, e))?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if (200..300).contains(&status) {
            return Ok((status, text));
        }
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => Err(ClientError::Api { status, body }),
            Err(_) => Err(ClientError::Unexpected {
                url,
                status,
                detail: format!("body: {}", excerpt(&text)),
            }),
        }
    }
}

/// A JSON body as the server sent it, fields in the server's order.
#[derive(Debug, Clone)]
pub(crate) struct Raw(String);

impl Raw {
    /// The body indented, nothing else changed: same fields, same order.
    pub(crate) fn pretty(&self) -> String {
        let mut out = Vec::new();
        let mut reader = serde_json::Deserializer::from_str(&self.0);
        let mut writer = serde_json::Serializer::pretty(&mut out);
        match serde_transcode::transcode(&mut reader, &mut writer) {
            Ok(()) => String::from_utf8(out).expect("JSON is UTF-8"),
            // Checked to be JSON when it was received.
            Err(_) => self.0.clone(),
        }
    }
}

/// The first line of a body, shortened, for a message.
fn excerpt(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut short: String = line.trim().chars().take(80).collect();
    if short.len() < line.trim().len() {
        short.push('…');
    }
    if short.is_empty() {
        "empty".into()
    } else {
        format!("{short:?}")
    }
}

fn transport_error(base: &str, method: &str, e: reqwest::Error) -> ClientError {
    if e.is_timeout() && !e.is_connect() {
        return ClientError::TimedOut {
            url: base.to_string(),
            method: method.to_string(),
            after: REQUEST_TIMEOUT,
        };
    }
    // The innermost cause says what happened ("Connection refused (os error 111)");
    // the outer ones only repeat the URL.
    let mut cause: &dyn std::error::Error = &e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    ClientError::Unreachable {
        url: base.to_string(),
        cause: cause.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_prints_its_message_then_each_problem() {
        let e = ClientError::Api {
            status: 422,
            body: ErrorBody {
                error: ErrorDetail {
                    code: "invalid".into(),
                    message: "refused: 2 problem(s)".into(),
                    problems: vec![
                        server::model::Problem {
                            field: "disks[0].replica_volume_id".into(),
                            message: "no such volume".into(),
                        },
                        server::model::Problem {
                            field: "nics[0].test_network".into(),
                            message: "no such network".into(),
                        },
                    ],
                },
            },
        };
        assert_eq!(
            e.to_string(),
            "refused: 2 problem(s)\n  - disks[0].replica_volume_id: no such volume\n  - nics[0].test_network: no such network"
        );
    }

    #[test]
    fn names_and_ids_stay_one_path_segment() {
        assert_eq!(Request::show_vm("a/b c?").path, "/v1/vms/a%2Fb%20c%3F");
        assert_eq!(
            Request::list_runs(Some("pg test"), Some(5)).path,
            "/v1/runs?vm=pg+test&limit=5"
        );
        assert_eq!(Request::list_runs(None, None).path, "/v1/runs");
        assert_eq!(
            Request::runs_by_id_prefix("01a&b", 11).path,
            "/v1/runs?id_prefix=01a%26b&limit=11"
        );
    }
}
