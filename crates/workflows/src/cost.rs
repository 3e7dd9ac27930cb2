//! What each workflow asks of CloudStack, step by step: the async jobs a step submits,
//! how many (once, or once per disk) and on which CloudStack queue they run.
//!
//! CloudStack runs one VM's jobs one at a time, and a volume's or snapshot's own jobs
//! on their own queue. `ferry bench` computes a workflow's lower bound — the chain of
//! jobs one VM needs, and the part of it spent on the appliance's queue — from these
//! declarations, so the bound cannot drift from what the workflows do.
//!
//! TODO-correctness (issue 11): the declarations are listed here by workflow; they are
//! to move onto the steps themselves, so that `declared` walks the same step list that
//! builds the saga.

use store::Workflow;

use crate::run::Mode;

/// The CloudStack queue a job runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// The appliance VM's queue (a replica attached to it, or being attached to it).
    Appliance,
    /// The target VM's queue.
    Target,
    /// Its own queue (a detached volume's revert, a snapshot's delete): the jobs of
    /// several disks run at once.
    Own,
}

/// How many jobs of a command a step submits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    Once,
    PerDisk,
}

/// One kind of job a step submits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    /// CloudStack's command, as spelled in its API (`attachVolume`).
    pub command: &'static str,
    pub times: Times,
    pub queue: Queue,
}

/// The jobs of one step, in the order it submits them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepCost {
    pub step: &'static str,
    pub jobs: Vec<Job>,
    /// The step waits, after its jobs, for the last disk to appear in the appliance.
    pub waits_for_device: bool,
}

const fn job(command: &'static str, times: Times, queue: Queue) -> Job {
    Job {
        command,
        times,
        queue,
    }
}

fn step(step: &'static str, jobs: &[Job], waits_for_device: bool) -> StepCost {
    StepCost {
        step,
        jobs: jobs.to_vec(),
        waits_for_device,
    }
}

/// The steps of `workflow` (in `mode`, for a test failover or its cleanup) that submit
/// CloudStack jobs, in order.
pub fn declared(workflow: Workflow, mode: Mode) -> Vec<StepCost> {
    use Queue::*;
    use Times::*;
    match (workflow, mode) {
        (Workflow::TestFailover, Mode::Replica) => vec![
            step(
                "snapshot",
                &[job("createSnapshot", PerDisk, Appliance)],
                false,
            ),
            step(
                "create-vm",
                &[job("deployVirtualMachine", Once, Target)],
                false,
            ),
            step(
                "remove-placeholder-root",
                &[job("detachVolume", Once, Target)],
                false,
            ),
            step(
                "detach-replicas",
                &[job("detachVolume", PerDisk, Appliance)],
                false,
            ),
            step(
                "attach-replicas",
                &[job("attachVolume", PerDisk, Target)],
                false,
            ),
            step(
                "start-vm",
                &[job("startVirtualMachine", Once, Target)],
                false,
            ),
        ],
        (Workflow::Cleanup, Mode::Replica) => vec![
            step(
                "stop-test-vm",
                &[job("stopVirtualMachine", Once, Target)],
                false,
            ),
            step(
                "detach-from-test-vm",
                &[job("detachVolume", PerDisk, Target)],
                false,
            ),
            step(
                "revert-replicas",
                &[job("revertSnapshot", PerDisk, Own)],
                false,
            ),
            step(
                "reattach-replicas",
                &[job("attachVolume", PerDisk, Appliance)],
                true,
            ),
            step(
                "delete-snapshots",
                &[job("deleteSnapshot", PerDisk, Own)],
                false,
            ),
            step(
                "destroy-test-vm",
                &[job("destroyVirtualMachine", Once, Target)],
                false,
            ),
        ],
        _ => Vec::new(),
    }
}
