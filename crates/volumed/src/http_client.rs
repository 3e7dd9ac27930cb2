//! [`HttpClient`]: the [`VolumeService`] of a `ferry volumed` server elsewhere (on an
//! appliance).
//!
//! It returns what [`crate::Local`] would: answers decode into the same types, and
//! error bodies decode back into the same [`Error`] (the server sends each error's
//! serde form). A request that got no answer is sent again, a bounded number of times,
//! with the same idempotency key — that is exactly what the key is for: the daemon
//! returns the first result or waits for it, and never acts twice.

use ids::{SnapshotId, VmId, VolumeId, ZoneId};
use std::time::Duration;

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::device::Device;
use crate::error::{Error, Result, chain};
use crate::presence::Presence;
use crate::server::{APPLIANCE_HEADER, IDEMPOTENCY_HEADER, REVISION_HEADER, VERSION_HEADER};
use crate::service::VolumeService;
use crate::types::{
    API_REVISION, AgentStatus, Call, GuestPrep, GuestPrepOutcome, SnapshotInfo, VERSION,
    VolumeInfo, appliances_named, non_empty, to_json,
};

/// How to reach a `ferry volumed` server.
#[derive(Clone)]
pub struct HttpClientConfig {
    /// `https://host:port` (or `http://` on loopback; no trailing path).
    pub base_url: String,
    pub token: SecretString,
    /// The appliance the daemon serves, by name (for messages: "waiting for the volume
    /// agent on NAME") and by VM id (sent with every request as `Ferry-Appliance`; the
    /// daemon refuses a request meant for another appliance).
    pub appliance: Option<(String, VmId)>,
    /// PEM file of the certificate authority (or the self-signed certificate itself)
    /// the daemon's TLS certificate must chain to; only it is trusted. `None`: the
    /// platform's usual roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Time allowed for one request. A call lasts as long as its CloudStack job, so
    /// this is long.
    pub request_timeout: Duration,
    /// Attempts for a request that got no answer (the first included).
    pub attempts: u32,
}

impl HttpClientConfig {
    pub fn new(base_url: impl Into<String>, token: SecretString) -> Self {
        HttpClientConfig {
            base_url: base_url.into(),
            token,
            appliance: None,
            ca_file: None,
            request_timeout: Duration::from_secs(3600),
            attempts: 3,
        }
    }
}

impl std::fmt::Debug for HttpClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClientConfig")
            .field("base_url", &self.base_url)
            .field("token", &"[redacted]")
            .field("appliance", &self.appliance)
            .field("ca_file", &self.ca_file)
            .field("request_timeout", &self.request_timeout)
            .field("attempts", &self.attempts)
            .finish()
    }
}

/// A client of the volume daemon's REST API.
#[derive(Debug, Clone)]
pub struct HttpClient {
    config: HttpClientConfig,
    http: reqwest::Client,
}

impl HttpClient {
    pub fn new(config: HttpClientConfig) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(Duration::from_secs(10));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                Error::bad_request(format!(
                    "cannot read the volume agent's CA file {}: {e}",
                    path.display()
                ))
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::bad_request(format!(
                    "the volume agent's CA file {} holds no PEM certificate: {e}",
                    path.display()
                ))
            })?;
            if certificates.is_empty() {
                return Err(Error::bad_request(format!(
                    "the volume agent's CA file {} holds no PEM certificate",
                    path.display()
                )));
            }
            builder = builder.tls_built_in_root_certs(false);
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .map_err(|e| Error::internal(format!("cannot build an HTTP client: {e}")))?;
        Ok(HttpClient { config, http })
    }

    /// The daemon's version, API revision, appliances and backlog, checked against
    /// this build's: a daemon of another API revision is
    /// [`Error::VersionMismatch`], one that does not serve the configured appliance
    /// [`Error::WrongAppliance`].
    pub async fn hello(&self) -> Result<AgentStatus> {
        let status: AgentStatus = self.send(Method::GET, "/v1/hello", None, None).await?;
        if status.api_revision != API_REVISION {
            return Err(Error::VersionMismatch {
                ours: VERSION.to_string(),
                ours_revision: API_REVISION,
                theirs: status.version,
                theirs_revision: status.api_revision,
            });
        }
        if let Some((_, vm_id)) = &self.config.appliance
            && !status.appliances.iter().any(|a| &a.vm_id == vm_id)
        {
            return Err(Error::WrongAppliance {
                serves: appliances_named(status.appliances.iter().map(|a| &a.vm_id)),
                asked: vm_id.to_string(),
            });
        }
        Ok(status)
    }

    fn transport(&self, url: &str, maybe_sent: bool, detail: String) -> Error {
        Error::Transport {
            url: url.to_string(),
            maybe_sent,
            detail,
            appliance: self.config.appliance.as_ref().map(|(name, _)| name.clone()),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url.trim_end_matches('/'))
    }

    /// Sends one call; resends it (same key) when no answer came back.
    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        call: Option<&Call>,
        body: Option<Value>,
    ) -> Result<T> {
        let url = self.url(path);
        let mut backoff = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(self.config.token.expose_secret())
                .header(VERSION_HEADER, VERSION)
                .header(REVISION_HEADER, API_REVISION.to_string());
            if let Some((_, vm_id)) = &self.config.appliance {
                request = request.header(APPLIANCE_HEADER, vm_id.as_str());
            }
            if let Some(call) = call {
                request = request.header(IDEMPOTENCY_HEADER, &call.idempotency_key);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let error = match request.send().await {
                Ok(response) => match self.answer(&url, response).await {
                    Err(e @ Error::Transport { .. }) => e,
                    other => return other,
                },
                Err(e) => self.transport(&url, !e.is_connect(), chain(&e)),
            };
            // Only a mutation with a key, or a read, is safe to send again.
            if attempt >= self.config.attempts.max(1) {
                return Err(error);
            }
            tracing::debug!(url, attempt, error = %error, "no answer from the volume daemon; sending again");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            attempt += 1;
        }
    }

    async fn answer<T: DeserializeOwned>(
        &self,
        url: &str,
        response: reqwest::Response,
    ) -> Result<T> {
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport(url, true, format!("reading the answer: {}", chain(&e))))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                self.transport(
                    url,
                    true,
                    format!("the answer is not what was expected: {e}"),
                )
            });
        }
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        match body
            .as_ref()
            .and_then(|b| b.get("error"))
            .map(|e| serde_json::from_value::<Error>(e.clone()))
        {
            Some(Ok(e)) => Err(e),
            _ => Err(self.transport(
                url,
                true,
                format!(
                    "HTTP {status} without an error body: {}",
                    String::from_utf8_lossy(&bytes)
                        .chars()
                        .take(200)
                        .collect::<String>()
                ),
            )),
        }
    }

    async fn mutate<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        call: &Call,
        mut body: Value,
    ) -> Result<T> {
        call.validate()?;
        if let Some(map) = body.as_object_mut() {
            if let Some(fence) = &call.fence {
                map.insert("fence".into(), to_json(fence));
            }
            if let Some(seen) = &call.seen {
                map.insert("seen".into(), to_json(seen));
            }
        }
        self.send(method, path, Some(call), Some(body)).await
    }
}

/// A path segment, percent-encoded.
fn seg(s: &(impl AsRef<str> + ?Sized)) -> String {
    let s = s.as_ref();
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(serde::Deserialize)]
struct DeviceAnswer {
    device: Option<Device>,
}

#[derive(serde::Deserialize)]
struct ToolAnswer {
    available: bool,
}

#[async_trait::async_trait]
impl VolumeService for HttpClient {
    async fn attach(
        &self,
        call: &Call,
        volume_id: &VolumeId,
        vm_id: &VmId,
        device_id: Option<i64>,
    ) -> Result<VolumeInfo> {
        let mut body = json!({"volume_id": volume_id, "vm_id": vm_id});
        if let Some(d) = device_id {
            body["device_id"] = json!(d);
        }
        self.mutate(Method::POST, "/v1/attach", call, body).await
    }

    async fn attach_root(
        &self,
        call: &Call,
        volume_id: &VolumeId,
        vm_id: &VmId,
    ) -> Result<VolumeInfo> {
        let body = json!({"volume_id": volume_id, "vm_id": vm_id});
        self.mutate(Method::POST, "/v1/attach-root", call, body)
            .await
    }

    async fn detach(&self, call: &Call, volume_id: &VolumeId) -> Result<VolumeInfo> {
        let body = json!({ "volume_id": volume_id });
        self.mutate(Method::POST, "/v1/detach", call, body).await
    }

    async fn snapshot(
        &self,
        call: &Call,
        volume_id: &VolumeId,
        name: &str,
    ) -> Result<SnapshotInfo> {
        let body = json!({"volume_id": volume_id, "name": name});
        self.mutate(Method::POST, "/v1/snapshots", call, body).await
    }

    async fn revert(&self, call: &Call, snapshot_id: &SnapshotId) -> Result<SnapshotInfo> {
        let path = format!("/v1/snapshots/{}/revert", seg(snapshot_id));
        self.mutate(Method::POST, &path, call, json!({})).await
    }

    async fn delete_snapshot(&self, call: &Call, snapshot_id: &SnapshotId) -> Result<()> {
        let path = format!("/v1/snapshots/{}", seg(snapshot_id));
        let _: Value = self.mutate(Method::DELETE, &path, call, json!({})).await?;
        Ok(())
    }

    async fn create_volume_from_snapshot(
        &self,
        call: &Call,
        snapshot_id: &SnapshotId,
        name: &str,
        zone_id: &ZoneId,
    ) -> Result<VolumeInfo> {
        let body = json!({"snapshot_id": snapshot_id, "name": name, "zone_id": zone_id});
        self.mutate(Method::POST, "/v1/volumes", call, body).await
    }

    async fn delete_volume(&self, call: &Call, volume_id: &VolumeId) -> Result<()> {
        let path = format!("/v1/volumes/{}", seg(volume_id));
        let _: Value = self.mutate(Method::DELETE, &path, call, json!({})).await?;
        Ok(())
    }

    async fn vouch_created(&self, call: &Call, volume_id: &VolumeId) -> Result<()> {
        let path = format!("/v1/volumes/{}/vouch", seg(volume_id));
        let _: Value = self.mutate(Method::POST, &path, call, json!({})).await?;
        Ok(())
    }

    async fn status(&self) -> Result<AgentStatus> {
        self.hello().await
    }

    async fn list_vm_volumes(&self, vm_id: &VmId) -> Result<Vec<VolumeInfo>> {
        non_empty("vm_id", vm_id)?;
        let path = format!("/v1/vms/{}/volumes", seg(vm_id));
        self.send(Method::GET, &path, None, None).await
    }

    async fn wait_device(
        &self,
        appliance_vm_id: &VmId,
        volume_id: &VolumeId,
        presence: Presence,
        timeout: Duration,
    ) -> Result<Option<Device>> {
        non_empty("vm_id", appliance_vm_id)?;
        non_empty("volume_id", volume_id)?;
        let presence = match presence {
            Presence::Appears => "appears",
            Presence::Disappears => "disappears",
        };
        let path = format!(
            "/v1/appliances/{}/devices/{}?presence={presence}&timeout_ms={}",
            seg(appliance_vm_id),
            seg(volume_id),
            timeout.as_millis()
        );
        let answer: DeviceAnswer = self.send(Method::GET, &path, None, None).await?;
        Ok(answer.device)
    }

    async fn tool_available(&self, appliance_vm_id: &VmId, program: &str) -> Result<bool> {
        non_empty("appliance_vm_id", appliance_vm_id)?;
        non_empty("program", program)?;
        // `seg` encodes everything but unreserved characters: valid in a query too.
        let path = format!(
            "/v1/appliances/{}/tools?program={}",
            seg(appliance_vm_id),
            seg(program)
        );
        let answer: ToolAnswer = self.send(Method::GET, &path, None, None).await?;
        Ok(answer.available)
    }

    async fn prepare_guest(
        &self,
        call: &Call,
        appliance_vm_id: &VmId,
        volume_id: &VolumeId,
        prep: &GuestPrep,
    ) -> Result<GuestPrepOutcome> {
        let body = json!({
            "appliance_vm_id": appliance_vm_id,
            "volume_id": volume_id,
            "prep": prep,
        });
        self.mutate(Method::POST, "/v1/guest-prep", call, body)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("a9ce27b6-89b3"), "a9ce27b6-89b3");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
    }
}
