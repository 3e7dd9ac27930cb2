//! What a step asks of CloudStack: the async jobs its action submits, how many (once,
//! or once per disk) and on which CloudStack queue they run — declared by each step
//! ([`WorkflowStep::jobs`]), next to what it does, and read by [`crate::cost`] from the
//! same list of steps that builds the workflow's saga ([`saga_of`]).
//!
//! A step that submits no job (a check, a store write, a command on the appliance, the
//! synchronous `deleteVolume`) declares none, the default.

use engine::{Saga, Step, TypedStep};

use crate::env::Env;
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

pub(crate) const fn job(command: &'static str, times: Times, queue: Queue) -> Job {
    Job {
        command,
        times,
        queue,
    }
}

/// A step of a ferry workflow: an engine step that declares the CloudStack jobs its
/// action submits in a run of `mode` (none by default).
pub(crate) trait WorkflowStep: TypedStep<Env> {
    /// The jobs, in the order the action submits them.
    fn jobs(&self, _mode: Mode) -> Vec<Job> {
        Vec::new()
    }

    /// Whether the action waits, after its jobs, for the last disk to appear in the
    /// appliance.
    fn waits_for_device(&self, _mode: Mode) -> bool {
        false
    }
}

/// A workflow step with its type erased, as a workflow lists its steps: what builds the
/// saga ([`saga_of`]) and what [`crate::cost`] reads.
pub(crate) trait AnyStep: Step<Env> {
    /// The step's jobs in a run of `mode`, if it submits any.
    fn cost(&self, mode: Mode) -> Option<StepCost>;
}

impl<S: WorkflowStep> AnyStep for S {
    fn cost(&self, mode: Mode) -> Option<StepCost> {
        let jobs = self.jobs(mode);
        (!jobs.is_empty()).then(|| StepCost {
            step: self.output().name(),
            jobs,
            waits_for_device: self.waits_for_device(mode),
        })
    }
}

/// A workflow's list of steps.
pub(crate) type Steps = Vec<Box<dyn AnyStep>>;

/// The saga that executes a workflow's `steps`, in their order.
pub(crate) fn saga_of(steps: Steps) -> Saga<Env> {
    Saga::new(
        steps
            .into_iter()
            .map(|step| step as Box<dyn Step<Env>>)
            .collect(),
    )
}
