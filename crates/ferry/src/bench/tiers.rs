//! `ferry bench --plan TIERS`: the bench's VMs as the boot tiers of one recovery plan
//! (docs/recovery-plans.md), drilled and cleaned up through the API as an operator's
//! `ferry plan test` and `ferry plan cleanup` would, and measured against the bound
//! the tiers impose.
//!
//! A plan's tiers run one after another — the next starts only when every VM of the
//! one before is ready — so no client finishes a plan before the sum of its tiers'
//! bounds, each bounded as the bench bounds VMs failed over at once ([`super::bound`]):
//! the larger of one VM's chain and the busiest queue's head + busy time + tail. An
//! appliance's queue serves VMs of several tiers, one tier after another; cloudsim
//! counts its busy time for the whole phase, and each tier is given its share by how
//! many of the appliance's VMs it holds (every bench VM puts the same jobs on its
//! appliance). A tier's own VMs' queues (their test VMs') count whole. The queue of one
//! volume or snapshot runs one or two jobs of one VM's chain and never binds. The
//! bench's plan has no delays between tiers, and its gates are `running` — the bench's
//! world has no emulated guests — which CloudStack answers at once: neither adds to
//! the bound; what ferry takes between tiers (seeing a tier through, starting the next)
//! is in the makespan, and is reported per tier as `waited_s`.
//!
//! Tiers are timed from the records: a tier ends when its last VM is ready (the plan
//! run's RTO of it after a failover, its run's end after a cleanup), and begins when
//! the tier before it ended (the first, when the plan run was asked for), so the tiers'
//! times add up to the plan's makespan, less what the plan run does after its last
//! tier.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;

use serde::Serialize;
use server::model::{RunDetail, RunSummary};

use super::bound::{BusiestQueue, Chain, Durations, Work, work_between};
use super::figures::{Figures, Percentiles, Settings, Setup, diff, line, percentiles};
use super::run::{PlanObserved, millis, seconds_between};
use super::world::World;

/// The name of the plan the bench adds.
pub(super) const PLAN: &str = "bench";

/// `--plan`: how the bench's VMs are split into the plan's tiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tiers {
    /// `--plan 3`: the VMs in this many tiers, as evenly as they go, the first tiers
    /// taking one more; without `--vms`, one VM per tier.
    Count(u32),
    /// `--plan 2,4,2`: this many VMs in each tier, in order; `--vms` is their sum.
    Sizes(Vec<u32>),
}

/// Reads `--plan`: a number of tiers, or a comma-separated list of VMs per tier.
pub fn parse(text: &str) -> Result<Tiers, String> {
    let numbers = text
        .split(',')
        .map(|part| {
            let part = part.trim();
            part.parse::<u32>().map_err(|_| {
                format!(
                    "`{part}` is not a number: --plan takes a number of tiers (3) or the VMs \
                     of each tier (2,4,2)"
                )
            })
        })
        .collect::<Result<Vec<u32>, String>>()?;
    if numbers.contains(&0) {
        return Err("a plan has at least one tier, and a tier at least one VM".into());
    }
    Ok(match numbers.as_slice() {
        [count] => Tiers::Count(*count),
        _ => Tiers::Sizes(numbers),
    })
}

impl Tiers {
    /// The VMs of each tier, with `vms` VMs in all when `--vms` was given.
    pub(super) fn sizes(&self, vms: Option<u32>) -> anyhow::Result<Vec<u32>> {
        match self {
            Tiers::Count(count) => {
                let vms = vms.unwrap_or(*count);
                anyhow::ensure!(
                    *count <= vms,
                    "--plan {count} needs at least {count} VMs (a tier holds at least one), \
                     and --vms is {vms}"
                );
                let (each, more) = (vms / count, vms % count);
                Ok((0..*count).map(|t| each + u32::from(t < more)).collect())
            }
            Tiers::Sizes(sizes) => {
                let sum: u32 = sizes.iter().sum();
                let list = sizes
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                anyhow::ensure!(
                    vms.is_none_or(|vms| vms == sum),
                    "--plan {list} holds {sum} VMs but --vms is {}: leave --vms out, or make \
                     them agree",
                    vms.unwrap_or_default()
                );
                anyhow::ensure!(
                    sum <= 1000,
                    "--plan {list} holds {sum} VMs; a bench runs at most 1000"
                );
                Ok(sizes.clone())
            }
        }
    }
}

/// The plan file (docs/recovery-plans.md): the world's VMs in tiers of `sizes`, in
/// order; no gates (so `running`), hooks or delays.
pub(super) fn definition(world: &World, sizes: &[u32]) -> String {
    let mut text = format!(
        "name = \"{PLAN}\"\ndescription = \"ferry bench --plan: {} VMs in {} tiers\"\n",
        world.vms.len(),
        sizes.len()
    );
    let mut vms = world.vms.iter();
    for (t, size) in sizes.iter().enumerate() {
        let names: Vec<String> = vms
            .by_ref()
            .take(*size as usize)
            .map(|v| format!("\"{}\"", v.name))
            .collect();
        text.push_str(&format!(
            "\n[[tiers]]\nname = \"tier-{}\"\nvms = [{}]\n",
            t + 1,
            names.join(", ")
        ));
    }
    text
}

/// The report of a plan bench; `--output json` prints it as one line, last.
#[derive(Debug, Serialize)]
pub(super) struct PlanReport {
    #[serde(flatten)]
    settings: Settings,
    /// The VMs of each tier, in the plan's order.
    plan_tiers: Vec<u32>,
    makespan_s: f64,
    lower_bound_s: f64,
    ratio: f64,
    test_failover_makespan_s: f64,
    test_failover_lower_bound_s: f64,
    test_failover_ratio: f64,
    cleanup_makespan_s: f64,
    cleanup_lower_bound_s: f64,
    cleanup_ratio: f64,
    /// The drill's RTO as the plan run records it: its request → its last VM ready.
    rto_s: Option<f64>,
    /// Each VM's RTO: the plan run's request → the VM ready.
    vm_rto_s: Percentiles,
    test_failover: PlanPhase,
    cleanup: PlanPhase,
    #[serde(flatten)]
    figures: Figures,
}

/// One plan run: the drill, or its cleanup.
#[derive(Debug, Serialize)]
struct PlanPhase {
    plan_run: String,
    /// How the plan run ended: `done`, `stopped`, `failed`.
    state: String,
    error: Option<String>,
    /// From just before the plan run was asked for to its end.
    makespan_s: f64,
    /// The sum of its tiers' bounds.
    lower_bound_s: f64,
    ratio: f64,
    /// One VM's chain of jobs.
    chain_s: f64,
    /// In the order the plan run took them (a cleanup takes the last tier first).
    tiers: Vec<TierFigures>,
    /// CloudStack API calls in the phase.
    calls: u64,
    /// With the API rate limit on: the least time those calls take at `max` per
    /// interval.
    rate_bound_s: Option<f64>,
}

#[derive(Debug, Serialize)]
struct TierFigures {
    /// 1 = the first the plan run took.
    tier: i64,
    /// Its name in the plan.
    name: String,
    vms: Vec<String>,
    /// From the end of the tier before (or the plan run's request) to its last VM
    /// ready.
    time_s: f64,
    /// Of which before its first VM's run was created: ferry seeing the tier before
    /// through and starting this one.
    waited_s: f64,
    lower_bound_s: f64,
    ratio: f64,
    /// `queue` or `chain`.
    bound_by: &'static str,
    busiest_queue: BusiestQueue,
}

/// Where each of the world's VMs has its replicas: the appliance's queue.
fn appliance_queues(world: &World) -> HashMap<&str, String> {
    let ids: HashMap<&str, &str> = world
        .appliances
        .iter()
        .map(|a| (a.name.as_str(), a.id.as_str()))
        .collect();
    world
        .all_vms()
        .filter_map(|v| {
            let id = ids.get(v.appliance.as_str())?;
            Some((v.name.as_str(), format!("vm:{id}")))
        })
        .collect()
}

impl PlanReport {
    /// The figures, from the two plan runs and cloudsim's counters read before the
    /// drill, between it and the cleanup, and after the cleanup.
    pub(super) fn new(
        setup: &Setup,
        world: &World,
        sizes: &[u32],
        [before, between, after]: [&cloudsim::Stats; 3],
        tf: &PlanObserved,
        cu: &PlanObserved,
        peak_rss: (f64, Option<f64>),
    ) -> anyhow::Result<PlanReport> {
        let durations = Durations::new(after, setup.time_scale);
        let disks = setup.shape.disks;
        let context = Context {
            queues: appliance_queues(world),
            rate: setup.rate(),
        };
        let test_failover = context.phase(tf, [before, between], durations.test_failover(disks))?;
        let cleanup = context.phase(cu, [between, after], durations.cleanup(disks))?;
        let runs: Vec<&RunSummary> = tf
            .details
            .iter()
            .chain(&cu.details)
            .map(|d| &d.run)
            .collect();
        let figures = Figures::new(
            setup.shape.vms,
            [before, after],
            &runs,
            &tf.details,
            peak_rss,
        );
        let makespan_s = test_failover.makespan_s + cleanup.makespan_s;
        let lower_bound_s = test_failover.lower_bound_s + cleanup.lower_bound_s;
        Ok(PlanReport {
            settings: Settings::of(setup),
            plan_tiers: sizes.to_vec(),
            makespan_s,
            lower_bound_s,
            ratio: ratio(makespan_s, lower_bound_s),
            test_failover_makespan_s: test_failover.makespan_s,
            test_failover_lower_bound_s: test_failover.lower_bound_s,
            test_failover_ratio: test_failover.ratio,
            cleanup_makespan_s: cleanup.makespan_s,
            cleanup_lower_bound_s: cleanup.lower_bound_s,
            cleanup_ratio: cleanup.ratio,
            rto_s: tf.run.rto_ms.map(|ms| ms as f64 / 1000.0),
            vm_rto_s: percentiles(
                tf.run
                    .vms
                    .iter()
                    .filter_map(|v| v.rto_ms)
                    .map(|ms| ms as f64 / 1000.0)
                    .collect(),
            ),
            test_failover,
            cleanup,
            figures,
        })
    }

    /// The report for people.
    pub(super) fn table(&self) -> String {
        let mut out = String::new();
        out.push('\n');
        let sizes: Vec<String> = self.plan_tiers.iter().map(u32::to_string).collect();
        line(
            &mut out,
            "plan",
            format!(
                "{} tiers of {} VMs; gates: running",
                self.plan_tiers.len(),
                sizes.join(", ")
            ),
        );
        for (name, p) in [
            ("plan test failover", &self.test_failover),
            ("plan cleanup", &self.cleanup),
        ] {
            line(
                &mut out,
                name,
                format!(
                    "{:.3} s, bound {:.3} s, ratio {:.3} (plan run {}: {}{})",
                    p.makespan_s,
                    p.lower_bound_s,
                    p.ratio,
                    p.plan_run,
                    p.state,
                    p.error
                        .as_deref()
                        .map(|e| format!(", {e}"))
                        .unwrap_or_default()
                ),
            );
            line(&mut out, "  one VM's chain", format!("{:.3} s", p.chain_s));
            for t in &p.tiers {
                line(
                    &mut out,
                    &format!("  tier {} ({}, {})", t.tier, t.name, vms(t.vms.len())),
                    format!(
                        "{:.3} s, bound {:.3} s ({}), ratio {:.3}; waited {:.3} s",
                        t.time_s, t.lower_bound_s, t.bound_by, t.ratio, t.waited_s
                    ),
                );
                line(&mut out, "    busiest queue", t.busiest_queue.words());
            }
            if let Some(r) = p.rate_bound_s {
                line(
                    &mut out,
                    "  the rate limit's bound",
                    format!("{r:.3} s ({} calls)", p.calls),
                );
            }
        }
        line(
            &mut out,
            "total",
            format!(
                "{:.3} s, bound {:.3} s, ratio {:.3}",
                self.makespan_s, self.lower_bound_s, self.ratio
            ),
        );
        line(
            &mut out,
            "RTO (plan, request → ready)",
            match self.rto_s {
                Some(rto) => format!(
                    "{rto:.3} s; per VM p50 {:.3} s, max {:.3} s",
                    self.vm_rto_s.p50, self.vm_rto_s.max
                ),
                None => "none: not every VM was ready".into(),
            },
        );
        self.figures.table(&self.settings, &mut out);
        out
    }

    /// Success when both plan runs and every VM's run ended done; else exit 1, after
    /// saying on stderr what did not.
    pub(super) fn verdict(&self, vms: &[String], cleanups: &[RunDetail]) -> ExitCode {
        let cleanups: Vec<&RunSummary> = cleanups.iter().map(|d| &d.run).collect();
        let mut ok = self.figures.verdict(vms, &cleanups) == ExitCode::SUCCESS;
        for (what, p) in [("drill", &self.test_failover), ("cleanup", &self.cleanup)] {
            if p.state != "done" {
                ok = false;
                eprintln!(
                    "error: the plan's {what} (plan run {}) ended {}: {}",
                    p.plan_run,
                    p.state,
                    p.error.as_deref().unwrap_or("no reason recorded")
                );
            }
        }
        if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }
}

/// `1 VM`, `3 VMs`.
fn vms(n: usize) -> String {
    format!("{n} VM{}", if n == 1 { "" } else { "s" })
}

fn ratio(makespan: f64, bound: f64) -> f64 {
    if bound > 0.0 { makespan / bound } else { 0.0 }
}

/// What every phase's bound needs: each VM's appliance queue, and the rate limit.
struct Context<'a> {
    queues: HashMap<&'a str, String>,
    rate: Option<(u32, f64)>,
}

impl Context<'_> {
    /// One plan run's figures, between two readings of cloudsim's counters.
    fn phase(
        &self,
        observed: &PlanObserved,
        [before, after]: [&cloudsim::Stats; 2],
        chain: Chain,
    ) -> anyhow::Result<PlanPhase> {
        let plan = &observed.run;
        let created = millis(&plan.created_at)?;
        let details: HashMap<&str, &RunDetail> = observed
            .details
            .iter()
            .map(|d| (d.run.id.as_str(), d))
            .collect();
        // Each VM that ran: its tier, appliance queue, when its run was created, and
        // when it was through (ready after a failover, its run's end otherwise).
        let mut ran = Vec::new();
        for vm in &plan.vms {
            let Some(detail) = vm.run_id.as_deref().and_then(|id| details.get(id)) else {
                continue;
            };
            let ended = detail.run.finished_at.as_deref().map(millis).transpose()?;
            let through = vm.rto_ms.map(|rto| created + rto).or(ended);
            ran.push(Ran {
                name: &vm.name,
                tier: vm.tier,
                queue: self.queues.get(vm.name.as_str()).map(String::as_str),
                created: millis(&detail.run.created_at)?,
                through: through.unwrap_or(created),
            });
        }
        let work = work_between(before, after);
        // How many of the phase's VMs each appliance's queue served.
        let mut served: BTreeMap<&str, usize> = BTreeMap::new();
        for vm in &ran {
            if let Some(queue) = vm.queue {
                *served.entry(queue).or_default() += 1;
            }
        }
        let mut tiers = Vec::new();
        let mut began = observed.started_ms;
        for tier in 1..=plan.tiers {
            let its: Vec<&Ran> = ran.iter().filter(|v| v.tier == tier).collect();
            let name = plan
                .tier_timings
                .iter()
                .find(|t| t.tier == tier)
                .map_or_else(|| format!("tier {tier}"), |t| t.name.clone());
            let through = its.iter().map(|v| v.through).max().unwrap_or(began);
            let first = its.iter().map(|v| v.created).min().unwrap_or(began);
            let busiest = tier_queues(&its, &work, &served, chain);
            let (lower_bound_s, bound_by) = if its.is_empty() {
                (0.0, "chain")
            } else {
                busiest.or_chain(chain.total)
            };
            let time_s = seconds_between(began, through);
            tiers.push(TierFigures {
                tier,
                name,
                vms: its.iter().map(|v| v.name.to_string()).collect(),
                time_s,
                waited_s: seconds_between(began, first),
                lower_bound_s,
                ratio: ratio(time_s, lower_bound_s),
                bound_by,
                busiest_queue: busiest,
            });
            began = through;
        }
        let finished = plan.finished_at.as_deref().map(millis).transpose()?;
        let makespan_s = seconds_between(observed.started_ms, finished.unwrap_or(began));
        let lower_bound_s = tiers.iter().map(|t| t.lower_bound_s).sum();
        let calls: u64 = diff(&before.calls, &after.calls).values().sum();
        Ok(PlanPhase {
            plan_run: plan.id.clone(),
            state: plan.state.clone(),
            error: plan.error.clone(),
            makespan_s,
            lower_bound_s,
            ratio: ratio(makespan_s, lower_bound_s),
            chain_s: chain.total,
            tiers,
            calls,
            rate_bound_s: self
                .rate
                .map(|(max, interval_s)| calls as f64 / f64::from(max) * interval_s),
        })
    }
}

/// A VM that ran in a plan run, as its tier's bound and time need it.
struct Ran<'a> {
    name: &'a str,
    tier: i64,
    /// Its appliance's queue.
    queue: Option<&'a str>,
    created: i64,
    through: i64,
}

/// The busiest queue of a tier: each appliance's queue with the tier's share of its
/// busy time (by how many of the VMs it `served` are the tier's), and the tier's VMs'
/// own test VMs' queues.
fn tier_queues(
    its: &[&Ran],
    work: &[Work],
    served: &BTreeMap<&str, usize>,
    chain: Chain,
) -> BusiestQueue {
    let mut queues = Vec::new();
    for w in work {
        let of_tier = its.iter().filter(|v| v.queue == Some(&w.queue)).count();
        if of_tier > 0 {
            let all = served.get(w.queue.as_str()).copied().unwrap_or(of_tier);
            let share = w.busy_s * of_tier as f64 / all as f64;
            queues.push(BusiestQueue::new(w, share, (chain.head, chain.tail)));
        } else if w.name.as_deref().is_some_and(|queue| {
            its.iter()
                .any(|v| queue.starts_with(&format!("{}-test", v.name)))
        }) {
            queues.push(BusiestQueue::new(w, w.busy_s, (0.0, 0.0)));
        }
    }
    BusiestQueue::of(queues)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::world::Shape;

    #[test]
    fn a_number_is_tiers_and_a_list_is_vms_per_tier() {
        assert_eq!(parse("3"), Ok(Tiers::Count(3)));
        assert_eq!(parse("2,4,2"), Ok(Tiers::Sizes(vec![2, 4, 2])));
        assert_eq!(parse(" 1, 2 "), Ok(Tiers::Sizes(vec![1, 2])));
        assert!(parse("0").is_err());
        assert!(parse("2,0").is_err());
        assert!(parse("two").unwrap_err().contains("`two` is not a number"));
        assert!(parse("").is_err());
    }

    #[test]
    fn tiers_share_the_vms_evenly_the_first_taking_more() {
        assert_eq!(Tiers::Count(3).sizes(None).unwrap(), [1, 1, 1]);
        assert_eq!(Tiers::Count(3).sizes(Some(7)).unwrap(), [3, 2, 2]);
        assert_eq!(Tiers::Count(2).sizes(Some(4)).unwrap(), [2, 2]);
        let e = Tiers::Count(3).sizes(Some(2)).unwrap_err().to_string();
        assert!(e.contains("at least 3 VMs"), "{e}");
        let sizes = Tiers::Sizes(vec![2, 4, 2]);
        assert_eq!(sizes.sizes(None).unwrap(), [2, 4, 2]);
        assert_eq!(sizes.sizes(Some(8)).unwrap(), [2, 4, 2]);
        let e = sizes.sizes(Some(5)).unwrap_err().to_string();
        assert!(e.contains("holds 8 VMs but --vms is 5"), "{e}");
    }

    #[test]
    fn the_plan_puts_the_vms_in_their_tiers_in_order() {
        let shape = Shape {
            vms: 5,
            disks: 1,
            appliances: 2,
        };
        let world = World::new(&shape, false, None);
        let text = definition(&world, &[2, 3]);
        let plan: toml::Value = toml::from_str(&text).expect("TOML");
        assert_eq!(plan["name"].as_str(), Some(PLAN));
        let tiers = plan["tiers"].as_array().expect("tiers");
        let vms = |t: usize| -> Vec<&str> {
            tiers[t]["vms"]
                .as_array()
                .expect("vms")
                .iter()
                .filter_map(|v| v.as_str())
                .collect()
        };
        assert_eq!(vms(0), ["bench-0001", "bench-0002"]);
        assert_eq!(vms(1), ["bench-0003", "bench-0004", "bench-0005"]);
        assert!(tiers.iter().all(|t| t.get("gates").is_none()));
    }

    #[test]
    fn a_shared_appliance_is_split_by_the_vms_each_tier_has_on_it() {
        let chain = Chain {
            total: 2.0,
            head: 0.0,
            tail: 0.5,
        };
        let work = vec![Work {
            queue: "vm:oma".into(),
            name: Some("oma-1".into()),
            busy_s: 6.0,
        }];
        let served = BTreeMap::from([("vm:oma", 3)]);
        let vm = |name, tier| Ran {
            name,
            tier,
            queue: Some("vm:oma"),
            created: 0,
            through: 0,
        };
        let (a, b, c) = (vm("a", 1), vm("b", 1), vm("c", 2));
        let first = tier_queues(&[&a, &b], &work, &served, chain);
        assert!((first.busy_s - 4.0).abs() < 1e-9, "{first:?}");
        assert!((first.bound_s - 4.5).abs() < 1e-9, "{first:?}");
        let second = tier_queues(&[&c], &work, &served, chain);
        assert!((second.busy_s - 2.0).abs() < 1e-9, "{second:?}");
        // Each tier's share, with the tail, is above one VM's chain (2 s).
        assert_eq!(first.or_chain(chain.total), (4.5, "queue"));
        assert_eq!(second.or_chain(chain.total), (2.5, "queue"));
        // A queue that served none of a tier's VMs is not the tier's.
        let other = Ran {
            queue: Some("vm:elsewhere"),
            ..vm("d", 3)
        };
        assert_eq!(tier_queues(&[&other], &work, &served, chain).bound_s, 0.0);
    }
}
