//! Driving the runs, as an operator's script would through the REST API: every VM
//! registered, then one workflow started on every VM at once and waited for until every
//! run has ended — or, with `--plan`, a recovery plan added and run, its drill then its
//! cleanup, each followed to its end — and the runs' records read back for the report.
//!
//! Times come from the runs' own records (the store's clock), so how often this driver
//! looks is not counted in a makespan.

use std::time::Duration;

use anyhow::Context as _;
use server::model::{AddVm, DefinitionFormat, RunDetail, RunSummary, TestMode};
use server::plan_model::{AddPlan, PlanRunView};

use super::world::World;
use crate::client::api::Api;
use crate::client::plans;

/// Registers every VM through the API, a few at a time.
pub(super) async fn register(api: &Api, world: &World) -> anyhow::Result<()> {
    let mut pending = world.all_vms();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.len() < 8 {
            let Some(vm) = pending.next() else { break };
            let api = api.clone();
            let request = AddVm {
                definition: vm.definition(),
                format: DefinitionFormat::Toml,
            };
            let name = vm.name.clone();
            tasks.spawn(async move {
                api.add_vm(&request)
                    .await
                    .map_err(|e| anyhow::anyhow!("registering {name}: {e}"))
            });
        }
        match tasks.join_next().await {
            None => return Ok(()),
            Some(result) => {
                result??;
            }
        }
    }
}

/// Adds the recovery plan `definition` (TOML) through the API, as `ferry plan add` does.
pub(super) async fn add_plan(api: &Api, definition: String) -> anyhow::Result<()> {
    api.add_plan(&AddPlan {
        definition,
        format: DefinitionFormat::Toml,
    })
    .await
    .map(|_| ())
    .map_err(|e| anyhow::anyhow!("adding the bench's recovery plan: {e}"))
}

/// Requests to start runs sent at once.
const STARTS_IN_FLIGHT: usize = 8;

/// The two workflows a bench measures, both in replica mode.
#[derive(Debug, Clone, Copy)]
pub(super) enum Workflow {
    TestFailover,
    Cleanup,
}

/// Starts the workflow on every VM at once, waits until every run has ended, and
/// returns when it started (ms since the epoch, the store's clock) and the runs.
pub(super) async fn phase(
    api: &Api,
    vms: &[String],
    workflow: Workflow,
) -> anyhow::Result<(i64, Vec<RunSummary>)> {
    let started = chrono::Utc::now().timestamp_millis();
    if vms.is_empty() {
        return Ok((started, Vec::new()));
    }
    // Requested as an operator's script would, a few at a time: each request is answered
    // as soon as the run is stored, so all K are active at once all the same, without
    // K connections to the API (whose buffers would count as the engine's memory).
    let requests = std::sync::Arc::new(tokio::sync::Semaphore::new(STARTS_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    for vm in vms {
        let api = api.clone();
        let vm = vm.clone();
        let requests = std::sync::Arc::clone(&requests);
        tasks.spawn(async move {
            let _slot = requests.acquire_owned().await?;
            let run = match workflow {
                Workflow::TestFailover => api.start_test_failover(&vm, TestMode::Replica).await,
                Workflow::Cleanup => api.start_cleanup(&vm).await,
            };
            run.map_err(|e| anyhow::anyhow!("starting the {workflow:?} of {vm}: {e}"))
        });
    }
    let mut ids = std::collections::BTreeSet::new();
    while let Some(run) = tasks.join_next().await {
        ids.insert(run??.id);
    }
    // Looking costs the engine (same process) a little: often enough to end soon after
    // the last run, no more.
    let mut look = Duration::from_millis(20);
    loop {
        tokio::time::sleep(look).await;
        look = (look * 2).min(Duration::from_millis(250));
        let runs: Vec<RunSummary> = api
            .list_runs(None, Some(vms.len() as i64))
            .await
            .map_err(|e| anyhow::anyhow!("listing runs: {e}"))?
            .into_iter()
            .filter(|r| ids.contains(&r.id))
            .collect();
        anyhow::ensure!(
            runs.len() == ids.len(),
            "the API lists {} of the {} runs just started",
            runs.len(),
            ids.len()
        );
        if runs.iter().all(|r| r.finished_at.is_some()) {
            return Ok((started, runs));
        }
    }
}

/// One phase as the driver saw it: when it asked for the runs (ms since the epoch, the
/// store's clock), the runs, and their details.
pub(super) struct Observed {
    pub(super) started_ms: i64,
    pub(super) runs: Vec<RunSummary>,
    pub(super) details: Vec<RunDetail>,
}

impl Observed {
    /// The phase that started at `started_ms` with `runs`, every run's detail (for its
    /// steps' times) read a few at a time.
    pub(super) async fn read(
        api: &Api,
        started_ms: i64,
        runs: Vec<RunSummary>,
    ) -> anyhow::Result<Observed> {
        let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
        let details = details(api, &ids).await?;
        Ok(Observed {
            started_ms,
            runs,
            details,
        })
    }

    /// The runs that ended done.
    pub(super) fn done(&self) -> impl Iterator<Item = &RunSummary> {
        self.runs.iter().filter(|r| r.state == "done")
    }

    /// From the phase's start to the end of its last run.
    pub(super) fn seconds(&self) -> anyhow::Result<f64> {
        // A phase none of whose runs ended (none were started: no test failover ended
        // done, so there is nothing to clean up) took no time, not "until the epoch".
        let end = last_finish(&self.runs)?.unwrap_or(self.started_ms);
        Ok(seconds_between(self.started_ms, end))
    }
}

/// The runs `ids`, each with its steps, read a few at a time.
async fn details(api: &Api, ids: &[String]) -> anyhow::Result<Vec<RunDetail>> {
    let mut details = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(16) {
        let mut tasks = tokio::task::JoinSet::new();
        for id in chunk {
            let api = api.clone();
            let id = id.clone();
            tasks.spawn(async move {
                api.show_run(&id)
                    .await
                    .map_err(|e| anyhow::anyhow!("reading run {id}: {e}"))
            });
        }
        while let Some(detail) = tasks.join_next().await {
            details.push(detail??);
        }
    }
    Ok(details)
}

/// How often a plan run under way is looked at: the server drives it (and looks at its
/// VMs' runs every 200 ms), so looking more often would only cost the engine.
const PLAN_LOOK: Duration = Duration::from_millis(100);

/// A plan run as the driver saw it: when it asked for it (ms since the epoch), the plan
/// run as it ended, and the details of the VMs' runs it started.
pub(super) struct PlanObserved {
    pub(super) started_ms: i64,
    pub(super) run: PlanRunView,
    pub(super) details: Vec<RunDetail>,
}

impl PlanObserved {
    /// From the request to the plan run's end (to its last look, had it not ended).
    pub(super) fn seconds(&self) -> anyhow::Result<f64> {
        let end = match &self.run.finished_at {
            Some(at) => millis(at)?,
            None => chrono::Utc::now().timestamp_millis(),
        };
        Ok(seconds_between(self.started_ms, end))
    }
}

/// Starts a run of `plan` (`workflow` as the API's path says it: `test-failover`,
/// `cleanup`), follows it until it ends, and reads its VMs' runs.
pub(super) async fn plan_phase(
    api: &Api,
    plan: &str,
    workflow: &str,
) -> anyhow::Result<PlanObserved> {
    let started_ms = chrono::Utc::now().timestamp_millis();
    let run = api
        .start_plan(plan, workflow)
        .await
        .map_err(|e| anyhow::anyhow!("starting the {workflow} of plan {plan}: {e}"))?;
    let (run, _) = plans::follow(api, run, PLAN_LOOK, |_| {})
        .await
        .map_err(|e| anyhow::anyhow!("following the {workflow} of plan {plan}: {e}"))?;
    let ids: Vec<String> = run.vms.iter().filter_map(|v| v.run_id.clone()).collect();
    Ok(PlanObserved {
        started_ms,
        details: details(api, &ids).await?,
        run,
    })
}

pub(super) fn millis(at: &str) -> anyhow::Result<i64> {
    Ok(chrono::DateTime::parse_from_rfc3339(at)
        .with_context(|| format!("`{at}` is not an RFC 3339 time"))?
        .timestamp_millis())
}

pub(super) fn seconds_between(from_ms: i64, to_ms: i64) -> f64 {
    (to_ms - from_ms) as f64 / 1000.0
}

/// When the last of `runs` ended, if any did.
fn last_finish(runs: &[RunSummary]) -> anyhow::Result<Option<i64>> {
    let mut last = None;
    for r in runs {
        if let Some(at) = &r.finished_at {
            last = last.max(Some(millis(at)?));
        }
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_with_no_runs_took_no_time() {
        let observed = Observed {
            started_ms: 1_700_000_000_000,
            runs: Vec::new(),
            details: Vec::new(),
        };
        assert_eq!(observed.seconds().unwrap(), 0.0);
    }
}
