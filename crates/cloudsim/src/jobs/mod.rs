//! Async jobs: CloudStack's per-VM work queue, simulated latency, and accounting.
//!
//! Every job goes to a queue named after the VM it works on (`vm:<id>`), or after the
//! volume or snapshot when no VM is involved. A queue runs its jobs one at a time in
//! submission order — CloudStack's VmWorkJobQueue — while different queues run
//! concurrently. Each job validates when it reaches the head of its queue (so business
//! errors surface through `queryAsyncJobResult`), sleeps its command's latency scaled
//! by the time scale, then applies its effect. The time a queue spends running jobs is
//! its busy time, which `/sim/stats` reports: the busiest queue bounds how fast any
//! client can possibly finish a workload.
//!
//! The files: `op` is the work a job carries (what the API puts on a queue);
//! `queue` runs each queue's worker and a job's three phases — validation at the head
//! of the queue (`begin_*`), the latency, then the effect (`finish_*`) or, when a fault
//! fails the job, the undo of its transitional state (`abort_*`); `stats` is the
//! accounting. This module holds no items of its own.

pub(crate) mod op;
mod queue;
pub(crate) mod stats;
