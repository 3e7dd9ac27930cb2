//! Black-box tests of cloudsim's CloudStack rules (`shared/reference/cloudstack.md`
//! §1, §2, §4, §6, §8): the simulator is driven only over HTTP, with ferry's real
//! client or, for requests no well-behaved client sends, with raw `reqwest`.
//! Every refusal is checked for CloudStack's exact errorcode and errortext.

// These tests drive cloudsim's volume rules with ferry's real client.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use cloudsim::world::{VolumeDef, ids};
use cloudsim::{SimConfig, World};
use cloudstack::signing::{java_url_encode, sign};
use cloudstack::{
    Client, DeployVm, Error, Firmware, Job, JobOutput, NicRequest, VirtualMachine, VmId, Volume,
    VolumeFilter, VolumeId, VolumeSource, ZoneId,
};
use serde_json::{Value, json};

mod common;

type TestResult = anyhow::Result<()>;

const GIB: i64 = 1024 * 1024 * 1024;

// ---- harness ------------------------------------------------------------------------

struct Sim {
    running: cloudsim::Running,
    client: Client,
    http: reqwest::Client,
}

/// The default world plus `n` detached 1 GiB volumes named `extra-<i>`.
fn world_with_volumes(n: usize) -> World {
    let mut world = World::default();
    for i in 0..n {
        world.volumes.push(VolumeDef {
            id: Some(extra_id(i)),
            name: format!("extra-{i}"),
            size_gb: 1,
            zone: None,
        });
    }
    world
}

fn extra_id(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

async fn start() -> anyhow::Result<Sim> {
    start_with(world_with_volumes(4)).await
}

async fn start_with(world: World) -> anyhow::Result<Sim> {
    let running = cloudsim::start(
        SimConfig {
            world,
            sysfs_root: None,
            time_scale: 0.001,
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let client = client_for(&running, ids::API_KEY, ids::SECRET_KEY)?;
    Ok(Sim {
        running,
        client,
        http: reqwest::Client::new(),
    })
}

fn client_for(running: &cloudsim::Running, key: &str, secret: &str) -> anyhow::Result<Client> {
    common::client(running.endpoint(), key, secret, Duration::from_secs(60))
}

fn pairs(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `params` plus CloudStack's signature over exactly those parameters.
fn signed(params: &[(&str, &str)], secret: &str) -> Vec<(String, String)> {
    let mut all = pairs(params);
    let signature = sign(&all, secret);
    all.push(("signature".into(), signature));
    all
}

/// A valid signature-version-3 expiry ten minutes from now, in CloudStack's form.
fn expires_soon() -> String {
    (chrono::Utc::now() + chrono::Duration::minutes(10))
        .format("%Y-%m-%dT%H:%M:%S%z")
        .to_string()
}

fn encode(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", java_url_encode(k), java_url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// What a raw request got back.
struct Raw {
    status: u16,
    content_type: Option<String>,
    text: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

impl Sim {
    fn endpoint(&self) -> &str {
        self.running.endpoint()
    }

    fn admin(&self) -> &str {
        &self.running.announcement.admin
    }

    async fn raw_get(&self, params: &[(String, String)]) -> anyhow::Result<Raw> {
        let response = self
            .http
            .get(format!("{}?{}", self.endpoint(), encode(params)))
            .send()
            .await?;
        Self::raw(response).await
    }

    async fn raw_post(&self, params: &[(String, String)]) -> anyhow::Result<Raw> {
        let response = self
            .http
            .post(self.endpoint())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(encode(params))
            .send()
            .await?;
        Self::raw(response).await
    }

    async fn raw(response: reqwest::Response) -> anyhow::Result<Raw> {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = response.text().await?;
        Ok(Raw {
            status,
            content_type,
            text,
        })
    }

    /// A correctly signed (version 3) raw GET of `command` with `params`.
    async fn raw_call(&self, command: &str, params: &[(&str, &str)]) -> anyhow::Result<Raw> {
        let expires = expires_soon();
        let mut all: Vec<(&str, &str)> = vec![("command", command)];
        all.extend_from_slice(params);
        all.extend_from_slice(&[
            ("apiKey", ids::API_KEY),
            ("response", "json"),
            ("signatureversion", "3"),
            ("expires", expires.as_str()),
        ]);
        self.raw_get(&signed(&all, ids::SECRET_KEY)).await
    }

    /// The raw `queryAsyncJobResult` response object of `job_id`.
    async fn raw_job(&self, job_id: impl AsRef<str>) -> anyhow::Result<Value> {
        let raw = self
            .raw_call("queryAsyncJobResult", &[("jobid", job_id.as_ref())])
            .await?;
        assert_eq!(raw.status, 200, "{}", raw.text);
        Ok(raw.json()["queryasyncjobresultresponse"].clone())
    }

    async fn admin_post(&self, path: &str, body: Value) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!("{}/{path}", self.admin()))
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "admin {path}: {}",
            response.status()
        );
        Ok(())
    }

    /// `/sim/volumes`: volume id → its simulated content generation.
    async fn generation(&self, volume_id: impl AsRef<str>) -> anyhow::Result<u64> {
        let volume_id = volume_id.as_ref();
        let all: Vec<Value> = self
            .http
            .get(format!("{}/volumes", self.admin()))
            .send()
            .await?
            .json()
            .await?;
        all.iter()
            .find(|v| v["id"] == volume_id)
            .and_then(|v| v["generation"].as_u64())
            .ok_or_else(|| anyhow::anyhow!("no volume {volume_id} in /sim/volumes"))
    }

    async fn run<T: JobOutput>(&self, job: Result<Job<T>, Error>) -> Result<T, Error> {
        let job = job?;
        self.client.wait(&job).await
    }

    async fn attach(
        &self,
        volume: impl AsRef<str>,
        vm: impl AsRef<str>,
        device: Option<i64>,
    ) -> Result<Volume, Error> {
        let (volume, vm) = (VolumeId::from(volume.as_ref()), VmId::from(vm.as_ref()));
        self.run(
            self.client
                .attach_volume(&VolumeId::from(&volume), &VmId::from(&vm), device)
                .await,
        )
        .await
    }

    async fn detach(&self, volume: impl AsRef<str>) -> Result<Volume, Error> {
        let volume = VolumeId::from(volume.as_ref());
        self.run(self.client.detach_volume(&VolumeId::from(&volume)).await)
            .await
    }

    async fn start_vm(&self, vm: impl AsRef<str>) -> Result<VirtualMachine, Error> {
        let vm = VmId::from(vm.as_ref());
        self.run(self.client.start_virtual_machine(&VmId::from(&vm)).await)
            .await
    }

    async fn stop_vm(&self, vm: impl AsRef<str>) -> Result<VirtualMachine, Error> {
        let vm = VmId::from(vm.as_ref());
        self.run(
            self.client
                .stop_virtual_machine(&VmId::from(&vm), false)
                .await,
        )
        .await
    }

    async fn volume(&self, id: impl AsRef<str>) -> anyhow::Result<Volume> {
        let id = VolumeId::from(id.as_ref());
        self.client
            .get_volume(&VolumeId::from(&id))
            .await?
            .ok_or_else(|| anyhow::anyhow!("volume {id} not listed"))
    }

    async fn volumes_of(&self, vm: impl AsRef<str>) -> anyhow::Result<Vec<Volume>> {
        Ok(self
            .client
            .list_volumes(&VolumeFilter {
                virtual_machine_id: Some(VmId::from(vm.as_ref())),
                ..Default::default()
            })
            .await?)
    }

    /// Deploys a Stopped VM on the test network with the custom offering.
    async fn deploy(&self, name: &str) -> anyhow::Result<VirtualMachine> {
        let vm = self
            .run(
                self.client
                    .deploy_virtual_machine(&deploy_request(name))
                    .await,
            )
            .await?;
        assert_eq!(vm.state, "Stopped");
        Ok(vm)
    }

    /// The VM's placeholder ROOT volume (device 0).
    async fn placeholder_root(&self, vm: impl AsRef<str>) -> anyhow::Result<Volume> {
        let vm = vm.as_ref();
        self.volumes_of(vm)
            .await?
            .into_iter()
            .find(|v| v.deviceid == Some(0))
            .ok_or_else(|| anyhow::anyhow!("VM {vm} has no device 0"))
    }

    /// Deploys a Stopped VM and detaches its placeholder ROOT (left detached).
    async fn deploy_without_root(&self, name: &str) -> anyhow::Result<(VirtualMachine, Volume)> {
        let vm = self.deploy(name).await?;
        let root = self.placeholder_root(&vm.id).await?;
        let detached = self.detach(&root.id).await?;
        assert_eq!(detached.volume_type, "DATADISK");
        Ok((vm, root))
    }

    async fn vm_state(&self, vm: impl AsRef<str>) -> anyhow::Result<String> {
        let vm = VmId::from(vm.as_ref());
        Ok(self
            .client
            .get_virtual_machine(&VmId::from(&vm))
            .await?
            .ok_or_else(|| anyhow::anyhow!("VM {vm} not listed"))?
            .state)
    }
}

fn deploy_request(name: &str) -> DeployVm {
    common::deploy_request(name, false)
}

#[track_caller]
fn assert_error(err: &Error, code: u16, text: &str) {
    assert_eq!(err.errorcode(), Some(code), "{err}");
    assert_eq!(err.errortext(), Some(text), "{err}");
}

/// A refusal of the call itself (synchronous), not of a job.
#[track_caller]
fn assert_sync(err: &Error, code: u16, text: &str) {
    assert!(matches!(err, Error::Api { .. }), "not synchronous: {err:?}");
    assert_error(err, code, text);
}

/// A failed async job (`jobstatus` 2).
#[track_caller]
fn assert_job(err: &Error, code: u16, text: &str) {
    assert!(
        matches!(err, Error::JobFailed { .. }),
        "not a job failure: {err:?}"
    );
    assert_error(err, code, text);
}

const UNAUTHORIZED: &str = "unable to verify user credentials and/or request signature";
const NOT_RUNNING_OR_STOPPED: &str = "Please specify a VM that is either running or stopped.";
const ROOT_NEEDS_STOPPED: &str =
    "Root volume detach can happen only when vm is in states: Stopped or Destroyed";
const ATTACHED_ELSEWHERE: &str = "Please specify a volume that is not attached to any VM.";

// ---- 1. authentication, envelopes, synchronous errors ---------------------------------

#[tokio::test]
async fn a_wrong_secret_is_refused_with_401() -> TestResult {
    let sim = start().await?;
    let client = client_for(&sim.running, ids::API_KEY, "not-the-secret")?;
    let err = client.list_zones().await.unwrap_err();
    assert_sync(&err, 401, UNAUTHORIZED);

    // The status line is 401 too.
    let params = signed(
        &[
            ("command", "listZones"),
            ("apiKey", ids::API_KEY),
            ("response", "json"),
            ("signatureversion", "3"),
            ("expires", expires_soon().as_str()),
        ],
        "not-the-secret",
    );
    let raw = sim.raw_get(&params).await?;
    assert_eq!(raw.status, 401);
    assert_eq!(raw.json()["listzonesresponse"]["errortext"], UNAUTHORIZED);
    Ok(())
}

#[tokio::test]
async fn an_unknown_api_key_is_refused_with_401() -> TestResult {
    let sim = start().await?;
    let client = client_for(&sim.running, "someone-else", ids::SECRET_KEY)?;
    let err = client.list_zones().await.unwrap_err();
    assert_sync(&err, 401, UNAUTHORIZED);
    Ok(())
}

#[tokio::test]
async fn an_expired_version_3_signature_is_refused() -> TestResult {
    let sim = start().await?;
    let expired = (chrono::Utc::now() - chrono::Duration::minutes(1))
        .format("%Y-%m-%dT%H:%M:%S%z")
        .to_string();
    let params = signed(
        &[
            ("command", "listZones"),
            ("apiKey", ids::API_KEY),
            ("response", "json"),
            ("signatureversion", "3"),
            ("expires", expired.as_str()),
        ],
        ids::SECRET_KEY,
    );
    let raw = sim.raw_get(&params).await?;
    assert_eq!(raw.status, 401, "{}", raw.text);
    assert_eq!(raw.json()["listzonesresponse"]["errorcode"], 401);
    assert_eq!(raw.json()["listzonesresponse"]["errortext"], UNAUTHORIZED);
    Ok(())
}

#[tokio::test]
async fn a_version_3_signature_without_expires_is_refused() -> TestResult {
    let sim = start().await?;
    let params = signed(
        &[
            ("command", "listZones"),
            ("apiKey", ids::API_KEY),
            ("response", "json"),
            ("signatureversion", "3"),
        ],
        ids::SECRET_KEY,
    );
    let raw = sim.raw_get(&params).await?;
    assert_eq!(raw.status, 401, "{}", raw.text);
    assert_eq!(raw.json()["listzonesresponse"]["errortext"], UNAUTHORIZED);
    Ok(())
}

#[tokio::test]
async fn the_old_signature_form_without_expiry_is_accepted() -> TestResult {
    let sim = start().await?;
    let params = signed(
        &[
            ("command", "listZones"),
            ("apiKey", ids::API_KEY),
            ("response", "json"),
        ],
        ids::SECRET_KEY,
    );
    let raw = sim.raw_get(&params).await?;
    assert_eq!(raw.status, 200, "{}", raw.text);
    assert_eq!(raw.json()["listzonesresponse"]["zone"][0]["id"], ids::ZONE);
    Ok(())
}

#[tokio::test]
async fn parameter_names_in_any_case_are_accepted() -> TestResult {
    let sim = start().await?;
    let expires = expires_soon();
    let params = signed(
        &[
            ("Command", "listZones"),
            ("APIKEY", ids::API_KEY),
            ("response", "json"),
            ("signatureVersion", "3"),
            ("Expires", &expires),
        ],
        ids::SECRET_KEY,
    );
    let raw = sim.raw_get(&params).await?;
    assert_eq!(raw.status, 200, "{}", raw.text);
    assert_eq!(raw.json()["listzonesresponse"]["count"], 1);

    // The case-insensitive names still count: an expired one is refused.
    let params = signed(
        &[
            ("Command", "listZones"),
            ("APIKEY", ids::API_KEY),
            ("response", "json"),
            ("signatureVersion", "3"),
            ("Expires", "2001-01-01T00:00:00+0000"),
        ],
        ids::SECRET_KEY,
    );
    assert_eq!(sim.raw_get(&params).await?.status, 401);
    Ok(())
}

#[tokio::test]
async fn expires_in_rfc_3339_and_plus_0000_forms_are_accepted() -> TestResult {
    let sim = start().await?;
    for expires in ["2030-01-01T00:00:00Z", "2030-01-01T00:00:00+0000"] {
        let params = signed(
            &[
                ("command", "listZones"),
                ("apiKey", ids::API_KEY),
                ("response", "json"),
                ("signatureversion", "3"),
                ("expires", expires),
            ],
            ids::SECRET_KEY,
        );
        let raw = sim.raw_get(&params).await?;
        assert_eq!(raw.status, 200, "expires={expires}: {}", raw.text);
    }
    Ok(())
}

#[tokio::test]
async fn get_query_and_post_form_both_work() -> TestResult {
    let sim = start().await?;
    let params = signed(
        &[
            ("command", "listVolumes"),
            ("apiKey", ids::API_KEY),
            ("response", "json"),
            ("signatureversion", "3"),
            ("expires", expires_soon().as_str()),
            ("id", ids::PGTEST1_DISK_2000),
        ],
        ids::SECRET_KEY,
    );
    for raw in [sim.raw_get(&params).await?, sim.raw_post(&params).await?] {
        assert_eq!(raw.status, 200, "{}", raw.text);
        let body = raw.json();
        assert_eq!(body["listvolumesresponse"]["count"], 1);
        assert_eq!(
            body["listvolumesresponse"]["volume"][0]["id"],
            ids::PGTEST1_DISK_2000
        );
        assert_eq!(body["listvolumesresponse"]["volume"][0]["size"], 107 * GIB);
    }
    Ok(())
}

#[tokio::test]
async fn an_unknown_command_is_432() -> TestResult {
    let sim = start().await?;
    let err = sim
        .client
        .call("frobnicateVolume", cloudstack::Kind::Read, &[])
        .await
        .unwrap_err();
    assert_sync(&err, 432, "Unknown API command: frobnicateVolume");

    let raw = sim.raw_call("frobnicateVolume", &[]).await?;
    assert_eq!(raw.status, 432);
    assert_eq!(
        raw.json()["errorresponse"]["errortext"],
        "Unknown API command: frobnicateVolume"
    );
    Ok(())
}

#[tokio::test]
async fn responses_are_text_javascript_and_an_empty_list_is_an_empty_object() -> TestResult {
    let sim = start().await?;
    let raw = sim.raw_call("listSnapshots", &[]).await?;
    assert_eq!(raw.status, 200);
    assert_eq!(
        raw.content_type.as_deref(),
        Some("text/javascript; charset=UTF-8")
    );
    assert_eq!(raw.text, r#"{"listsnapshotsresponse":{}}"#);

    // Errors carry the same content type.
    let raw = sim.raw_call("attachVolume", &[]).await?;
    assert_eq!(
        raw.content_type.as_deref(),
        Some("text/javascript; charset=UTF-8")
    );
    assert!(sim.client.list_snapshots(None, None).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_missing_required_parameter_is_431_with_the_full_error_body() -> TestResult {
    let sim = start().await?;
    let raw = sim
        .raw_call("attachVolume", &[("virtualmachineid", ids::APPLIANCE_OMA)])
        .await?;
    assert_eq!(raw.status, 431, "{}", raw.text);
    assert_eq!(
        raw.json(),
        json!({"attachvolumeresponse": {
            "uuidList": [],
            "errorcode": 431,
            "cserrorcode": 9999,
            "errortext": "Unable to execute API command attachvolume due to missing parameter id",
        }})
    );

    let err = sim
        .client
        .call(
            "attachVolume",
            cloudstack::Kind::Mutation,
            &pairs(&[("id", ids::PGTEST1_DISK_2001)]),
        )
        .await
        .unwrap_err();
    assert_sync(
        &err,
        431,
        "Unable to execute API command attachvolume due to missing parameter virtualmachineid",
    );
    Ok(())
}

#[tokio::test]
async fn a_nonexistent_uuid_is_431_with_cserrorcode_9999() -> TestResult {
    let sim = start().await?;
    let ghost = "11111111-2222-4333-8444-555555555555";
    let err = sim
        .client
        .attach_volume(
            &VolumeId::from(ghost),
            &VmId::from(ids::APPLIANCE_OMA),
            None,
        )
        .await
        .unwrap_err();
    let text = format!(
        "Unable to execute API command attachvolume due to invalid value. Invalid parameter id value={ghost} due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class."
    );
    assert_sync(&err, 431, &text);
    match &err {
        Error::Api { cserrorcode, .. } => assert_eq!(*cserrorcode, 9999),
        other => panic!("{other:?}"),
    }

    let raw = sim
        .raw_call(
            "attachVolume",
            &[("id", ids::PGTEST1_DISK_2001), ("virtualmachineid", ghost)],
        )
        .await?;
    assert_eq!(raw.status, 431);
    let body = &raw.json()["attachvolumeresponse"];
    assert_eq!(body["uuidList"], json!([]));
    assert_eq!(body["errorcode"], 431);
    assert_eq!(body["cserrorcode"], 9999);
    assert_eq!(
        body["errortext"],
        format!(
            "Unable to execute API command attachvolume due to invalid value. Invalid parameter virtualmachineid value={ghost} due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class."
        )
    );
    Ok(())
}

// ---- 2. async jobs ------------------------------------------------------------------

#[tokio::test]
async fn attach_returns_only_a_jobid_and_the_job_goes_from_pending_to_an_object_result()
-> TestResult {
    let sim = start().await?;
    // Two seconds of simulated work: long enough to see the job pending.
    sim.admin_post("latency", json!({"attachVolume": 2_000_000}))
        .await?;
    let expires = expires_soon();
    let vol = extra_id(0);
    let params = signed(
        &[
            ("command", "attachVolume"),
            ("id", vol.as_str()),
            ("virtualmachineid", ids::APPLIANCE_OMA),
            ("apiKey", ids::API_KEY),
            ("response", "json"),
            ("signatureversion", "3"),
            ("expires", expires.as_str()),
        ],
        ids::SECRET_KEY,
    );
    let raw = sim.raw_post(&params).await?;
    assert_eq!(raw.status, 200, "{}", raw.text);
    let body = raw.json();
    let inner = body["attachvolumeresponse"].as_object().expect("an object");
    assert_eq!(inner.keys().collect::<Vec<_>>(), vec!["jobid"]);
    let job_id = inner["jobid"].as_str().expect("a string").to_string();

    let pending = sim.raw_job(&job_id).await?;
    assert_eq!(pending["jobid"], job_id.as_str());
    assert_eq!(pending["jobstatus"], 0);
    assert!(pending.get("jobresult").is_none(), "{pending}");
    assert!(pending.get("jobresulttype").is_none(), "{pending}");
    assert_eq!(pending["jobinstancetype"], "Volume");
    assert_eq!(pending["jobinstanceid"], vol.as_str());

    let job: Job<Volume> = Job::resume("attachVolume", &job_id, None);
    let attached = sim.client.wait(&job).await?;
    assert_eq!(attached.id, vol);

    let done = sim.raw_job(&job_id).await?;
    assert_eq!(done["jobstatus"], 1);
    assert_eq!(done["jobresultcode"], 0);
    assert_eq!(done["jobresulttype"], "object");
    let result = done["jobresult"].as_object().expect("an object");
    assert_eq!(result.keys().collect::<Vec<_>>(), vec!["volume"]);
    assert_eq!(result["volume"]["id"], vol.as_str());
    assert_eq!(result["volume"]["virtualmachineid"], ids::APPLIANCE_OMA);
    // The appliance has 0 (its root), 1 and 2: the next free id skips 3.
    assert_eq!(result["volume"]["deviceid"], 4);
    Ok(())
}

#[tokio::test]
async fn a_failed_job_carries_only_errorcode_and_errortext() -> TestResult {
    let sim = start().await?;
    let err = sim
        .attach(&extra_id(0), ids::APPLIANCE_OMA, Some(3))
        .await
        .unwrap_err();
    assert_job(&err, 530, "deviceId should be 0,1,2,4-33");
    let job_id = err.job_id().expect("a job id").to_string();

    let failed = sim.raw_job(&job_id).await?;
    assert_eq!(failed["jobstatus"], 2);
    assert_eq!(failed["jobresultcode"], 530);
    assert_eq!(failed["jobresulttype"], "object");
    assert_eq!(
        failed["jobresult"],
        json!({"errorcode": 530, "errortext": "deviceId should be 0,1,2,4-33"})
    );

    // A 431 job failure: jobresultcode follows the errorcode.
    let err = sim
        .attach(ids::PGTEST1_DISK_2001, ids::APPLIANCE_OMA, None)
        .await
        .unwrap_err();
    assert_job(&err, 431, ATTACHED_ELSEWHERE);
    let failed = sim.raw_job(err.job_id().expect("a job id")).await?;
    assert_eq!(failed["jobstatus"], 2);
    assert_eq!(failed["jobresultcode"], 431);
    assert_eq!(
        failed["jobresult"],
        json!({"errorcode": 431, "errortext": ATTACHED_ELSEWHERE})
    );
    Ok(())
}

// ---- 3. device ids and ROOT rules ----------------------------------------------------

#[tokio::test]
async fn automatic_device_ids_go_1_2_4_5() -> TestResult {
    let sim = start().await?;
    let (vm, _) = sim.deploy_without_root("devices-auto").await?;
    let mut got = Vec::new();
    for i in 0..4 {
        let v = sim.attach(&extra_id(i), &vm.id, None).await?;
        assert_eq!(
            v.virtualmachineid.as_ref().map(|id| id.as_str()),
            Some(vm.id.as_str())
        );
        assert_eq!(v.volume_type, "DATADISK");
        got.push(v.deviceid.expect("attached"));
    }
    assert_eq!(got, vec![1, 2, 4, 5]);

    let mut listed: Vec<i64> = sim
        .volumes_of(&vm.id)
        .await?
        .iter()
        .filter_map(|v| v.deviceid)
        .collect();
    listed.sort();
    assert_eq!(listed, vec![1, 2, 4, 5]);

    // A freed slot is reused first.
    sim.detach(&extra_id(1)).await?;
    let v = sim.attach(&extra_id(1), &vm.id, None).await?;
    assert_eq!(v.deviceid, Some(2));
    Ok(())
}

#[tokio::test]
async fn explicit_device_ids_3_and_34_are_refused_in_the_job() -> TestResult {
    let sim = start().await?;
    let vm = sim.deploy("devices-range").await?;
    for device in [3, 34, -1] {
        let err = sim
            .attach(&extra_id(0), &vm.id, Some(device))
            .await
            .unwrap_err();
        assert_job(&err, 530, "deviceId should be 0,1,2,4-33");
    }
    // The volume was left alone, and the edges of the range are fine.
    assert_eq!(sim.volume(&extra_id(0)).await?.virtualmachineid, None);
    assert_eq!(
        sim.attach(&extra_id(0), &vm.id, Some(33)).await?.deviceid,
        Some(33)
    );
    assert_eq!(
        sim.attach(&extra_id(1), &vm.id, Some(4)).await?.deviceid,
        Some(4)
    );
    Ok(())
}

#[tokio::test]
async fn a_device_id_in_use_is_refused_with_the_vms_numeric_id() -> TestResult {
    let sim = start().await?;
    let vm = sim.deploy("devices-used").await?;
    sim.attach(&extra_id(0), &vm.id, Some(5)).await?;
    let err = sim.attach(&extra_id(1), &vm.id, Some(5)).await.unwrap_err();
    assert!(matches!(err, Error::JobFailed { .. }), "{err:?}");
    assert_eq!(err.errorcode(), Some(530));
    let text = err.errortext().expect("a text");
    let number = text
        .strip_prefix("deviceId 5 is used by vm ")
        .unwrap_or_else(|| panic!("unexpected text: {text}"));
    assert!(
        !number.is_empty() && number.chars().all(|c| c.is_ascii_digit()),
        "the VM's internal id is numeric, not its uuid: {text}"
    );
    assert_eq!(sim.volume(&extra_id(1)).await?.virtualmachineid, None);
    Ok(())
}

#[tokio::test]
async fn the_33rd_data_disk_is_refused() -> TestResult {
    let sim = start_with(world_with_volumes(33)).await?;
    let vm = sim.deploy("devices-full").await?;
    // All 32 at once: the VM's queue serializes them and hands out 1, 2, 4 … 33.
    let mut jobs = Vec::new();
    for i in 0..32 {
        jobs.push(
            sim.client
                .attach_volume(&VolumeId::from(&extra_id(i)), &VmId::from(&vm.id), None)
                .await?,
        );
    }
    let mut devices = Vec::new();
    for job in &jobs {
        devices.push(sim.client.wait(job).await?.deviceid.expect("attached"));
    }
    devices.sort();
    let expected: Vec<i64> = (1..=33).filter(|d| *d != 3).collect();
    assert_eq!(devices, expected);

    let err = sim.attach(&extra_id(32), &vm.id, None).await.unwrap_err();
    assert_job(
        &err,
        431,
        "The specified VM already has the maximum number of data disks (32) attached. Please specify another VM.",
    );
    // An explicit id is counted the same way.
    let err = sim
        .attach(&extra_id(32), &vm.id, Some(1))
        .await
        .unwrap_err();
    assert_job(
        &err,
        431,
        "The specified VM already has the maximum number of data disks (32) attached. Please specify another VM.",
    );
    Ok(())
}

#[tokio::test]
async fn root_attach_needs_a_stopped_vm_without_device_0() -> TestResult {
    let sim = start().await?;
    // On a Running VM (the appliance): refused.
    let err = sim
        .attach(&extra_id(0), ids::APPLIANCE_OMA, Some(0))
        .await
        .unwrap_err();
    assert_job(&err, 431, ROOT_NEEDS_STOPPED);

    // On a Stopped VM that still has its placeholder ROOT: refused.
    let vm = sim.deploy("root-rules").await?;
    let err = sim.attach(&extra_id(0), &vm.id, Some(0)).await.unwrap_err();
    assert_job(&err, 431, "Vm already has root volume attached to it");

    // Without a device 0: a DATADISK attached at 0 becomes ROOT …
    let placeholder = sim.placeholder_root(&vm.id).await?;
    assert_eq!(placeholder.volume_type, "ROOT");
    let detached = sim.detach(&placeholder.id).await?;
    assert_eq!(detached.volume_type, "DATADISK");
    assert_eq!(detached.deviceid, None);
    assert_eq!(sim.volume(&extra_id(0)).await?.volume_type, "DATADISK");
    let root = sim.attach(&extra_id(0), &vm.id, Some(0)).await?;
    assert_eq!(root.volume_type, "ROOT");
    assert_eq!(root.deviceid, Some(0));
    let listed = sim.volume(&extra_id(0)).await?;
    assert_eq!(listed.volume_type, "ROOT");
    assert_eq!(listed.deviceid, Some(0));
    let shown = sim
        .client
        .get_virtual_machine(&VmId::from(&vm.id))
        .await?
        .expect("listed");
    assert_eq!(shown.rootdeviceid, Some(0));
    assert_eq!(shown.rootdevicetype.as_deref(), Some("ROOT"));

    // … and turns back into a DATADISK when detached from the Stopped VM.
    let back = sim.detach(&extra_id(0)).await?;
    assert_eq!(back.volume_type, "DATADISK");
    assert_eq!(back.deviceid, None);
    assert_eq!(back.virtualmachineid, None);
    assert_eq!(sim.volume(&extra_id(0)).await?.volume_type, "DATADISK");
    Ok(())
}

#[tokio::test]
async fn root_detach_needs_a_stopped_vm() -> TestResult {
    let sim = start().await?;
    let err = sim.detach(ids::OMA_ROOT).await.unwrap_err();
    assert_job(&err, 431, ROOT_NEEDS_STOPPED);
    let root = sim.volume(ids::OMA_ROOT).await?;
    assert_eq!(root.deviceid, Some(0));
    assert_eq!(root.volume_type, "ROOT");

    // A ROOT attached at 0 on a VM that is then started cannot leave either.
    let (vm, _) = sim.deploy_without_root("root-detach").await?;
    sim.attach(&extra_id(0), &vm.id, Some(0)).await?;
    sim.start_vm(&vm.id).await?;
    let err = sim.detach(&extra_id(0)).await.unwrap_err();
    assert_job(&err, 431, ROOT_NEEDS_STOPPED);
    sim.stop_vm(&vm.id).await?;
    assert_eq!(sim.detach(&extra_id(0)).await?.volume_type, "DATADISK");
    Ok(())
}

#[tokio::test]
async fn a_volume_attached_elsewhere_cannot_be_attached() -> TestResult {
    let sim = start().await?;
    let vm = sim.deploy("attached-elsewhere").await?;
    let err = sim
        .attach(ids::PGTEST1_DISK_2001, &vm.id, None)
        .await
        .unwrap_err();
    assert_job(&err, 431, ATTACHED_ELSEWHERE);
    let err = sim
        .attach(ids::PGTEST1_DISK_2000, &vm.id, Some(4))
        .await
        .unwrap_err();
    assert_job(&err, 431, ATTACHED_ELSEWHERE);
    let replica = sim.volume(ids::PGTEST1_DISK_2001).await?;
    assert_eq!(
        replica.virtualmachineid.as_ref().map(|id| id.as_str()),
        Some(ids::APPLIANCE_OMA)
    );
    assert_eq!(replica.deviceid, Some(2));
    Ok(())
}

/// An attach that passed the API job's checks but waited in its VM's queue while
/// another VM took the volume fails in the work job, with the work job's own text.
#[tokio::test]
async fn a_volume_taken_while_the_attach_waited_in_the_queue_is_refused_in_the_work_job()
-> TestResult {
    let sim = start().await?;
    let a = sim.deploy("queue-a").await?;
    let b = sim.deploy("queue-b").await?;
    // A stop of a stopped VM changes nothing but holds A's queue for a second.
    sim.admin_post("latency", json!({"stopVirtualMachine": 1_000_000}))
        .await?;
    let hold = sim
        .client
        .stop_virtual_machine(&VmId::from(&a.id), false)
        .await?;
    let waiting = sim
        .client
        .attach_volume(&VolumeId::from(&extra_id(0)), &VmId::from(&a.id), None)
        .await?;
    let taken = sim.attach(&extra_id(0), &b.id, None).await?;
    assert_eq!(
        taken.virtualmachineid.as_ref().map(|id| id.as_str()),
        Some(b.id.as_str())
    );
    let err = sim.client.wait(&waiting).await.unwrap_err();
    assert_job(&err, 530, "This volume is already attached to a VM.");
    assert_eq!(sim.client.wait(&hold).await?.state, "Stopped");
    let volume = sim.volume(&extra_id(0)).await?;
    assert_eq!(
        volume.virtualmachineid.as_ref().map(|id| id.as_str()),
        Some(b.id.as_str())
    );
    assert_eq!(volume.deviceid, Some(1));
    Ok(())
}

#[tokio::test]
async fn attach_and_detach_need_a_running_or_stopped_vm() -> TestResult {
    let sim = start().await?;
    let vm = sim.deploy("starting").await?;
    sim.attach(&extra_id(0), &vm.id, None).await?;
    // A start that takes 100 s keeps the VM in Starting for the rest of the test.
    sim.admin_post("latency", json!({"startVirtualMachine": 100_000_000}))
        .await?;
    let start = sim
        .client
        .start_virtual_machine(&VmId::from(&vm.id))
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sim.vm_state(&vm.id).await? != "Starting" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the VM never started starting"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The refusal does not wait behind the start in the VM's queue.
    let err = sim.attach(&extra_id(1), &vm.id, None).await.unwrap_err();
    assert_job(&err, 431, NOT_RUNNING_OR_STOPPED);
    let err = sim.detach(&extra_id(0)).await.unwrap_err();
    assert_job(&err, 431, NOT_RUNNING_OR_STOPPED);

    assert_eq!(sim.volume(&extra_id(1)).await?.virtualmachineid, None);
    assert_eq!(
        sim.volume(&extra_id(0))
            .await?
            .virtualmachineid
            .as_ref()
            .map(|id| id.as_str()),
        Some(vm.id.as_str())
    );
    let still = sim.raw_job(&start.job_id).await?;
    assert_eq!(still["jobstatus"], 0);
    assert_eq!(sim.vm_state(&vm.id).await?, "Starting");
    Ok(())
}

#[tokio::test]
async fn detaching_a_volume_that_is_not_attached_is_refused() -> TestResult {
    let sim = start().await?;
    let err = sim.detach(&extra_id(0)).await.unwrap_err();
    assert_job(&err, 431, "The specified volume is not attached to a VM.");

    // Twice in a row: the second finds it detached.
    sim.detach(ids::PGTEST1_DISK_2001).await?;
    let err = sim.detach(ids::PGTEST1_DISK_2001).await.unwrap_err();
    assert_job(&err, 431, "The specified volume is not attached to a VM.");
    Ok(())
}

// ---- 4. deployVirtualMachine ---------------------------------------------------------

#[tokio::test]
async fn deploy_without_start_gives_a_stopped_vm_with_a_placeholder_root_nics_and_firmware()
-> TestResult {
    let sim = start().await?;
    let mut request = deploy_request("pgtest1-test-1");
    request.cpu_number = Some(4);
    request.cpu_speed = Some(2000);
    request.memory_mb = Some(8192);
    request.firmware = Some(Firmware::Uefi { secure: true });
    request.nics = vec![
        NicRequest {
            network_id: ids::NETWORK_TEST.into(),
            ip: Some("10.10.0.55".into()),
            mac: Some("00:50:56:aa:bb:cc".into()),
        },
        NicRequest {
            network_id: ids::NETWORK_PRODUCTION.into(),
            ip: Some("10.20.0.66".into()),
            mac: Some("00:50:56:aa:bb:dd".into()),
        },
    ];
    let job = sim.client.deploy_virtual_machine(&request).await?;
    let vm_id = job
        .id
        .clone()
        .expect("async-create gives the VM id at once");
    let vm = sim.client.wait(&job).await?;
    assert_eq!(vm.id, vm_id);
    assert_eq!(vm.state, "Stopped");
    assert_eq!(vm.name, "pgtest1-test-1");
    assert_eq!(vm.cpunumber, Some(4));
    assert_eq!(vm.cpuspeed, Some(2000));
    assert_eq!(vm.memory, Some(8192));
    assert_eq!(vm.boottype.as_deref(), Some("UEFI"));
    assert_eq!(vm.bootmode.as_deref(), Some("SECURE"));
    assert_eq!(vm.nic.len(), 2);
    let nic = |network: &str| {
        vm.nic
            .iter()
            .find(|n| n.networkid == network)
            .unwrap_or_else(|| panic!("no NIC on {network}"))
    };
    assert_eq!(
        nic(ids::NETWORK_TEST).macaddress.as_deref(),
        Some("00:50:56:aa:bb:cc")
    );
    assert_eq!(
        nic(ids::NETWORK_TEST).ipaddress.as_deref(),
        Some("10.10.0.55")
    );
    assert!(nic(ids::NETWORK_TEST).isdefault);
    assert_eq!(
        nic(ids::NETWORK_PRODUCTION).macaddress.as_deref(),
        Some("00:50:56:aa:bb:dd")
    );
    assert_eq!(
        nic(ids::NETWORK_PRODUCTION).ipaddress.as_deref(),
        Some("10.20.0.66")
    );

    // listVirtualMachines agrees with the job result.
    let listed = sim
        .client
        .get_virtual_machine(&VmId::from(&vm_id))
        .await?
        .expect("listed");
    assert_eq!(listed.state, "Stopped");
    assert_eq!(listed.boottype.as_deref(), Some("UEFI"));
    assert_eq!(listed.bootmode.as_deref(), Some("SECURE"));
    assert_eq!(listed.nic, vm.nic);

    // The template's placeholder ROOT: device 0, Allocated until the first start.
    let volumes = sim.volumes_of(&vm_id).await?;
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    let root = &volumes[0];
    assert_eq!(root.volume_type, "ROOT");
    assert_eq!(root.deviceid, Some(0));
    assert_eq!(root.state, "Allocated");
    assert_eq!(root.size, 8 * GIB);
    Ok(())
}

#[tokio::test]
async fn custom_offering_and_mac_errors_are_synchronous_431() -> TestResult {
    let sim = start().await?;
    let deploy = |request: DeployVm| {
        let client = sim.client.clone();
        async move { client.deploy_virtual_machine(&request).await }
    };

    let mut no_details = deploy_request("no-details");
    no_details.cpu_number = None;
    no_details.cpu_speed = None;
    no_details.memory_mb = None;
    let err = deploy(no_details).await.unwrap_err();
    assert_sync(
        &err,
        431,
        "Need to specify custom parameter values cpu, cpu speed and memory when using custom offering",
    );

    let mut zero_cpus = deploy_request("zero-cpus");
    zero_cpus.cpu_number = Some(0);
    let err = deploy(zero_cpus).await.unwrap_err();
    assert_sync(
        &err,
        431,
        "Invalid cpu cores value, specify a value between 1 and 64",
    );

    let mut fixed = deploy_request("fixed");
    fixed.service_offering_id = ids::OFFERING_SMALL.into();
    fixed.cpu_speed = None;
    fixed.memory_mb = None;
    let err = deploy(fixed).await.unwrap_err();
    assert_sync(
        &err,
        431,
        &format!(
            "The cpu cores of this offering id:{} is not customizable. This is predefined in the template.",
            ids::OFFERING_SMALL
        ),
    );

    let mut bad_mac = deploy_request("bad-mac");
    bad_mac.nics[0].mac = Some("00:50:56:aa:bb".into());
    let err = deploy(bad_mac).await.unwrap_err();
    assert_sync(&err, 431, "Mac address is not valid: 00:50:56:aa:bb");

    // None of them left a VM behind.
    let vms = sim
        .client
        .list_virtual_machines(&Default::default())
        .await?;
    assert_eq!(vms.len(), 1, "only the appliance: {vms:?}");
    Ok(())
}

#[tokio::test]
async fn starting_a_running_vm_fails_and_stopping_a_stopped_vm_succeeds() -> TestResult {
    let sim = start().await?;
    let vm = sim.deploy("start-stop").await?;

    let stopped = sim.stop_vm(&vm.id).await?;
    assert_eq!(stopped.state, "Stopped");

    let running = sim.start_vm(&vm.id).await?;
    assert_eq!(running.state, "Running");
    // The first start created the placeholder on primary storage.
    assert_eq!(sim.placeholder_root(&vm.id).await?.state, "Ready");

    let err = sim.start_vm(&vm.id).await.unwrap_err();
    assert!(matches!(err, Error::JobFailed { .. }), "{err:?}");
    assert_eq!(err.errorcode(), Some(431));
    let text = err.errortext().expect("a text");
    assert!(text.ends_with(" is already running"), "{text}");
    assert!(text.contains(vm.id.as_str()), "{text}");

    assert_eq!(sim.stop_vm(&vm.id).await?.state, "Stopped");
    assert_eq!(sim.stop_vm(&vm.id).await?.state, "Stopped");
    assert_eq!(sim.vm_state(&vm.id).await?, "Stopped");
    Ok(())
}

// ---- 5. destroyVirtualMachine ---------------------------------------------------------

#[tokio::test]
async fn destroy_with_expunge_removes_the_root_and_detaches_the_data_disks() -> TestResult {
    let sim = start().await?;
    let (vm, placeholder) = sim.deploy_without_root("expunged").await?;
    // extra-0 becomes this VM's ROOT; extra-1 and extra-2 are data disks.
    sim.attach(&extra_id(0), &vm.id, Some(0)).await?;
    sim.attach(&extra_id(1), &vm.id, None).await?;
    sim.attach(&extra_id(2), &vm.id, Some(4)).await?;
    sim.start_vm(&vm.id).await?;

    let destroyed = sim
        .run(
            sim.client
                .destroy_virtual_machine(&VmId::from(&vm.id), true)
                .await,
        )
        .await?;
    assert_eq!(destroyed.id, vm.id);

    assert!(
        sim.client
            .get_virtual_machine(&VmId::from(&vm.id))
            .await?
            .is_none()
    );
    let all = sim
        .client
        .list_virtual_machines(&Default::default())
        .await?;
    assert!(all.iter().all(|v| v.id != vm.id), "{all:?}");

    // The volume that was attached at device 0 went with the VM.
    assert!(
        sim.client
            .get_volume(&VolumeId::from(&extra_id(0)))
            .await?
            .is_none()
    );
    for data in [extra_id(1), extra_id(2)] {
        let v = sim.volume(&data).await?;
        assert_eq!(v.volume_type, "DATADISK");
        assert_eq!(v.deviceid, None);
        assert_eq!(v.virtualmachineid, None);
        assert_eq!(v.vmname, None);
    }
    // The placeholder, detached before, is untouched.
    assert_eq!(sim.volume(&placeholder.id).await?.virtualmachineid, None);
    assert!(sim.volumes_of(&vm.id).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_destroyed_vm_is_recovered_stopped_with_its_root_and_only_while_destroyed() -> TestResult
{
    let sim = start().await?;
    let (vm, _placeholder) = sim.deploy_without_root("recovered").await?;
    sim.attach(&extra_id(0), &vm.id, Some(0)).await?;
    sim.attach(&extra_id(1), &vm.id, None).await?;
    let id = VmId::from(&vm.id);
    let refused = sim.client.recover_virtual_machine(&id).await.unwrap_err();
    assert!(
        refused.to_string().contains("is not in the right state"),
        "a Stopped VM is not recovered: {refused}"
    );

    sim.run(sim.client.destroy_virtual_machine(&id, false).await)
        .await?;
    assert_eq!(sim.vm_state(&vm.id).await?, "Destroyed");
    // The ROOT of a Destroyed VM cannot be detached (CloudStack's boolean bug).
    let job = sim
        .client
        .detach_volume(&VolumeId::from(&extra_id(0)))
        .await?;
    let root = sim.client.wait(&job).await;
    assert!(
        root.as_ref()
            .is_err_and(|e| e.to_string().contains("Root volume detach")),
        "{root:?}"
    );

    let recovered = sim.client.recover_virtual_machine(&id).await?;
    assert_eq!(
        (recovered.id.as_str(), recovered.state.as_str()),
        (vm.id.as_str(), "Stopped")
    );
    let root = sim.volume(&extra_id(0)).await?;
    assert_eq!((root.state.as_str(), root.deviceid), ("Ready", Some(0)));
    assert_eq!(
        sim.volume(&extra_id(1))
            .await?
            .virtualmachineid
            .as_ref()
            .map(|v| v.as_str()),
        Some(vm.id.as_str())
    );
    Ok(())
}

// ---- 6. snapshots ---------------------------------------------------------------------

#[tokio::test]
async fn a_replica_on_the_running_appliance_can_be_snapshotted_by_default() -> TestResult {
    let sim = start().await?;
    let job = sim
        .client
        .create_snapshot(&VolumeId::from(ids::PGTEST1_DISK_2000), Some("pre-test"))
        .await?;
    let snapshot_id = job.id.clone().expect("async-create gives the snapshot id");
    let snapshot = sim.client.wait(&job).await?;
    assert_eq!(snapshot.id, snapshot_id);
    assert_eq!(snapshot.name, "pre-test");
    assert_eq!(
        snapshot.volumeid.as_ref().map(|id| id.as_str()),
        Some(ids::PGTEST1_DISK_2000)
    );
    assert_eq!(snapshot.state.as_deref(), Some("BackedUp"));
    assert_eq!(snapshot.virtualsize, Some(107 * GIB));

    let listed = sim
        .client
        .list_snapshots(Some(&VolumeId::from(ids::PGTEST1_DISK_2000)), None)
        .await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, snapshot_id);
    // The volume is back to Ready, still on the appliance.
    let replica = sim.volume(ids::PGTEST1_DISK_2000).await?;
    assert_eq!(replica.state, "Ready");
    assert_eq!(replica.deviceid, Some(1));
    Ok(())
}

#[tokio::test]
async fn with_kvm_snapshots_disabled_a_running_vms_volume_fails_synchronously_with_530()
-> TestResult {
    let sim = start().await?;
    sim.admin_post(
        "settings",
        json!({"kvm_snapshot_enabled": false, "max_data_volumes": 32, "hotplug_delay_ms": 200}),
    )
    .await?;
    let err = sim
        .client
        .create_snapshot(&VolumeId::from(ids::PGTEST1_DISK_2000), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Api { .. }), "not synchronous: {err:?}");
    assert_eq!(err.errorcode(), Some(530));
    let text = err.errortext().expect("a text");
    assert!(
        text.starts_with("KVM Snapshot is not supported for Running VMs."),
        "{text}"
    );
    assert!(sim.client.list_snapshots(None, None).await?.is_empty());

    // A detached volume is always allowed.
    sim.detach(ids::PGTEST1_DISK_2001).await?;
    let snapshot = sim
        .run(
            sim.client
                .create_snapshot(&VolumeId::from(ids::PGTEST1_DISK_2001), None)
                .await,
        )
        .await?;
    assert_eq!(
        snapshot.volumeid.as_ref().map(|id| id.as_str()),
        Some(ids::PGTEST1_DISK_2001)
    );
    Ok(())
}

#[tokio::test]
async fn revert_needs_the_vm_stopped_or_the_volume_detached_and_restores_the_content() -> TestResult
{
    let sim = start().await?;
    let replica = ids::PGTEST1_DISK_2001;
    let before = sim.generation(replica).await?;
    let snapshot = sim
        .run(
            sim.client
                .create_snapshot(&VolumeId::from(replica), None)
                .await,
        )
        .await?;

    // The replica goes to a test VM, which boots and writes to it.
    sim.detach(replica).await?;
    let vm = sim.deploy("revert").await?;
    assert_eq!(sim.attach(replica, &vm.id, None).await?.deviceid, Some(1));
    sim.start_vm(&vm.id).await?;
    let written = sim.generation(replica).await?;
    assert!(written > before, "a start writes: {before} → {written}");

    let err = sim
        .run(sim.client.revert_snapshot(&snapshot.id).await)
        .await
        .unwrap_err();
    assert_job(
        &err,
        431,
        "The VM the specified disk is attached to is not in the shutdown state.",
    );
    assert_eq!(sim.generation(replica).await?, written);

    // Detached (the VM still Running), the revert works and brings the content back.
    sim.detach(replica).await?;
    let reverted = sim
        .run(sim.client.revert_snapshot(&snapshot.id).await)
        .await?;
    assert_eq!(reverted.id, snapshot.id);
    assert_eq!(sim.generation(replica).await?, before);
    let volume = sim.volume(replica).await?;
    assert_eq!(volume.state, "Ready");
    assert_eq!(volume.size, 10 * GIB);

    // With the VM Stopped, a revert of an attached volume is allowed too.
    sim.attach(replica, &vm.id, None).await?;
    sim.stop_vm(&vm.id).await?;
    sim.run(sim.client.revert_snapshot(&snapshot.id).await)
        .await?;
    assert_eq!(sim.generation(replica).await?, before);
    Ok(())
}

#[tokio::test]
async fn a_volume_from_a_snapshot_is_ready_with_the_snapshots_size() -> TestResult {
    let sim = start().await?;
    let snapshot = sim
        .run(
            sim.client
                .create_snapshot(&VolumeId::from(ids::PGTEST1_DISK_2000), None)
                .await,
        )
        .await?;
    let job = sim
        .client
        .create_volume(
            "pgtest1-disk-2000-clone",
            &ZoneId::from(ids::ZONE),
            &VolumeSource::Snapshot {
                snapshot_id: snapshot.id.clone(),
            },
        )
        .await?;
    let volume_id = job.id.clone().expect("async-create gives the volume id");
    let clone = sim.client.wait(&job).await?;
    assert_eq!(clone.id, volume_id);
    assert_eq!(clone.state, "Ready");
    assert_eq!(clone.size, 107 * GIB);
    assert_eq!(clone.volume_type, "DATADISK");
    assert_eq!(clone.virtualmachineid, None);
    let listed = sim.volume(&volume_id).await?;
    assert_eq!(listed.state, "Ready");
    assert_eq!(listed.size, 107 * GIB);
    assert_eq!(listed.name, "pgtest1-disk-2000-clone");
    // The clone carries the snapshot's content.
    assert_eq!(
        sim.generation(&volume_id).await?,
        sim.generation(ids::PGTEST1_DISK_2000).await?
    );

    // A custom-size volume from the disk offering, for comparison, stays Allocated.
    let blank = sim
        .run(
            sim.client
                .create_volume(
                    "blank",
                    &ZoneId::from(ids::ZONE),
                    &VolumeSource::Offering {
                        disk_offering_id: ids::DISK_OFFERING_CUSTOM.into(),
                        size_gb: Some(5),
                    },
                )
                .await,
        )
        .await?;
    assert_eq!(blank.size, 5 * GIB);
    assert_eq!(blank.state, "Allocated");
    Ok(())
}

#[tokio::test]
async fn deleting_an_attached_volume_is_refused_synchronously() -> TestResult {
    let sim = start().await?;
    let err = sim
        .client
        .delete_volume(&VolumeId::from(ids::PGTEST1_DISK_2001))
        .await
        .unwrap_err();
    assert_sync(&err, 431, ATTACHED_ELSEWHERE);
    assert!(
        sim.client
            .get_volume(&VolumeId::from(ids::PGTEST1_DISK_2001))
            .await?
            .is_some()
    );

    // Detached, it goes.
    sim.client
        .delete_volume(&VolumeId::from(&extra_id(0)))
        .await?;
    assert!(
        sim.client
            .get_volume(&VolumeId::from(&extra_id(0)))
            .await?
            .is_none()
    );
    Ok(())
}

#[tokio::test]
async fn a_deleted_snapshot_vanishes_from_list_snapshots() -> TestResult {
    let sim = start().await?;
    let first = sim
        .run(
            sim.client
                .create_snapshot(&VolumeId::from(ids::PGTEST1_DISK_2000), None)
                .await,
        )
        .await?;
    let second = sim
        .run(
            sim.client
                .create_snapshot(&VolumeId::from(ids::PGTEST1_DISK_2001), None)
                .await,
        )
        .await?;
    assert_eq!(sim.client.list_snapshots(None, None).await?.len(), 2);

    let done = sim.run(sim.client.delete_snapshot(&first.id).await).await?;
    assert!(done.success);
    assert!(
        sim.client
            .list_snapshots(None, Some(&first.id))
            .await?
            .is_empty()
    );
    let left = sim.client.list_snapshots(None, None).await?;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, second.id);

    // The deleted snapshot's id no longer resolves.
    let err = sim.client.revert_snapshot(&first.id).await.unwrap_err();
    assert_eq!(err.errorcode(), Some(431));
    Ok(())
}

#[tokio::test]
async fn a_clients_probes_of_ip_and_nat_lists_answer_empty_and_an_id_is_refused() -> TestResult {
    let sim = start().await?;
    for command in [
        "listPublicIpAddresses",
        "listPortForwardingRules",
        "listIpForwardingRules",
    ] {
        // CloudStack's empty list: the envelope with nothing in it, no count.
        let empty = sim
            .client
            .call(command, cloudstack::Kind::Read, &[])
            .await?;
        assert_eq!(empty, serde_json::json!({}), "{command}");
        let err = sim
            .client
            .call(
                command,
                cloudstack::Kind::Read,
                &[("id".to_string(), extra_id(1))],
            )
            .await
            .unwrap_err();
        assert_sync(
            &err,
            431,
            &format!(
                "Unable to execute API command {} due to invalid value. Invalid parameter id value={} \
                 due to incorrect long value format, or entity does not exist or due to incorrect \
                 parameter annotation for the field in api cmd class.",
                command.to_lowercase(),
                extra_id(1)
            ),
        );
    }
    Ok(())
}
