//! The queue workers: one task per queue runs its jobs one at a time in submission
//! order, each in three phases — validation at the head of the queue, the command's
//! latency, then the effect (or, when a fault fails the job, the undo of what the
//! validation began) — and records each job's time for the accounting. An attach to a
//! running appliance, or a detach from it, is shown in its sysfs tree (`hotplug`); a
//! VM's start, stop, reboot or destroy is passed on to its emulated guest (`guests`)
//! before the job is marked done, so that a client that sees the job end finds the
//! guest's ports already closed (or its boot already begun).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::CsError;
use crate::guests::registry::GuestChange;
use crate::hotplug;
use crate::jobs::op::{JobFault, Op, QueuedJob};
use crate::sim::Inner;
use crate::state::entities::{Job, State, now};
use crate::world::default_latency_ms;

impl Inner {
    pub fn latency(&self, command: &str) -> Duration {
        let ms = self
            .latency_ms
            .lock()
            .expect("poisoned")
            .get(command)
            .copied()
            .unwrap_or_else(|| default_latency_ms(command));
        Duration::from_secs_f64(ms as f64 / 1000.0 * self.time_scale)
    }

    /// Creates the job record and puts it on its queue (starting the queue's worker
    /// on first use). Returns the job id.
    pub fn submit(
        self: &Arc<Self>,
        cmd_class: &str,
        instance: (&str, &str),
        queue: String,
        op: Op,
        fault: Option<JobFault>,
    ) -> String {
        let job_id = uuid::Uuid::new_v4().to_string();
        {
            let mut state = self.state.lock().expect("poisoned");
            // CloudStack validates attach and detach in the API's own async job and
            // only then puts the work on the VM's queue: these refusals do not wait
            // behind the VM's other jobs (a start in progress, say).
            let refused = match &op {
                Op::Attach {
                    volume_id,
                    vm_id,
                    device_id,
                } => state.check_attach(volume_id, vm_id, *device_id).err(),
                Op::Detach { volume_id } => state.begin_detach(volume_id).err(),
                _ => None,
            };
            let seq = state.next_seq();
            let now = now();
            let mut record = Job {
                id: job_id.clone(),
                seq,
                cmd: cmd_class.to_string(),
                command: crate::jobs::op::CommandName(op.command()),
                status: 0,
                result_code: 0,
                result: None,
                instance_type: Some(instance.0.to_string()),
                instance_id: Some(instance.1.to_string()),
                created: now.clone(),
                completed: None,
                polls: 0,
                begun: false,
            };
            if let Some(e) = &refused {
                record.status = 2;
                record.result_code = e.code as i64;
                record.result = Some(serde_json::json!({"errorcode": e.code, "errortext": e.text}));
                record.completed = Some(now);
            }
            state.jobs.insert(job_id.clone(), record);
            if matches!(fault, Some(JobFault::Forget)) && refused.is_none() {
                forget(&mut state, &job_id);
                return job_id;
            }
            if refused.is_some() {
                self.stats
                    .lock()
                    .expect("poisoned")
                    .count_error(op.command());
                return job_id;
            }
            if let Some(vm_id) = queue.strip_prefix("vm:")
                && let Some(vm) = state.vms.get(vm_id)
            {
                self.stats
                    .lock()
                    .expect("poisoned")
                    .queue_names
                    .insert(queue.clone(), vm.name.clone());
            }
        }
        let job = QueuedJob {
            job_id: job_id.clone(),
            queue: queue.clone(),
            op,
            fault: match fault {
                Some(JobFault::Fail(e)) => Some(e),
                Some(JobFault::Forget) | None => None,
            },
        };
        let mut queues = self.queues.lock().expect("poisoned");
        let sender = queues.entry(queue).or_insert_with(|| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<QueuedJob>();
            let inner = Arc::clone(self);
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = inner.shutdown.cancelled() => break,
                        job = rx.recv() => match job {
                            Some(job) => inner.run(job).await,
                            None => break,
                        },
                    }
                }
            });
            tx
        });
        sender
            .send(job)
            .expect("queue workers live as long as the simulator");
        job_id
    }

    /// Forgets the job `job_id` (`DELETE /sim/jobs/{id}`): its record goes, so that
    /// CloudStack's API no longer knows it. Its work still runs if it has begun; a job
    /// still waiting in its queue is dropped when it reaches the head (see `run`).
    /// Whether there was such a job.
    pub fn forget_job(&self, job_id: &str) -> bool {
        forget(&mut self.state.lock().expect("poisoned"), job_id)
    }

    async fn run(self: &Arc<Self>, job: QueuedJob) {
        {
            // A job forgotten before it reached the head of its queue never runs (what
            // its submission allocated went when it was forgotten).
            let mut state = self.state.lock().expect("poisoned");
            match state.jobs.get_mut(&job.job_id) {
                Some(record) => record.begun = true,
                None => return,
            }
        }
        let started = Instant::now();
        {
            let mut stats = self.stats.lock().expect("poisoned");
            let running = stats.running.entry(job.queue.clone()).or_default();
            *running += 1;
            let now_running = *running;
            stats.max_concurrency_per_queue = stats.max_concurrency_per_queue.max(now_running);
        }
        let mut guest = None;
        let outcome = self.execute(&job, &mut guest).await;
        if let Some(change) = guest {
            self.guests.apply(change).await;
        }
        let ended = Instant::now();
        {
            let mut stats = self.stats.lock().expect("poisoned");
            *stats.running.get_mut(&job.queue).expect("counted") -= 1;
            let took = (ended - started).as_secs_f64();
            let q = stats.queues.entry(job.queue.clone()).or_default();
            q.jobs += 1;
            q.busy_s += took;
            let c = stats
                .commands
                .entry(job.op.command().to_string())
                .or_default();
            c.min_s = if c.jobs == 0 { took } else { c.min_s.min(took) };
            c.max_s = c.max_s.max(took);
            c.jobs += 1;
            c.busy_s += took;
            if outcome.is_err() {
                stats.count_error(job.op.command());
            }
        }
        let mut state = self.state.lock().expect("poisoned");
        if let Some(record) = state.jobs.get_mut(&job.job_id) {
            record.completed = Some(now());
            match outcome {
                Ok(mut result) => {
                    // The entity in a job's result carries the job that made it, still
                    // pending when the object was built (`BaseResponse.jobid`,
                    // `jobstatus` 0), as the fixtures of deploy, start and stop show.
                    for key in ["virtualmachine", "volume", "snapshot"] {
                        if let Some(entity) = result.get_mut(key).and_then(Value::as_object_mut) {
                            entity.insert("jobid".into(), Value::from(job.job_id.as_str()));
                            entity.insert("jobstatus".into(), Value::from(0));
                        }
                    }
                    record.status = 1;
                    record.result_code = 0;
                    record.result = Some(result);
                }
                Err(e) => {
                    // A failed job's ExceptionResponse carries only these two fields.
                    record.status = 2;
                    record.result_code = e.code as i64;
                    record.result =
                        Some(serde_json::json!({"errorcode": e.code, "errortext": e.text}));
                }
            }
        }
    }

    /// Runs the job's three phases; what it did to a VM's guest is left in `guest`
    /// (the caller applies it, as it cannot be awaited while the state is locked).
    async fn execute(
        self: &Arc<Self>,
        job: &QueuedJob,
        guest: &mut Option<GuestChange>,
    ) -> Result<Value, CsError> {
        let latency = self.latency(job.op.command());
        // Phase 1: validation at the head of the queue.
        let begun: Result<Begun, CsError> = {
            let mut s = self.state.lock().expect("poisoned");
            match &job.op {
                Op::Deploy { vm_id, start } => {
                    if *start {
                        s.begin_start(vm_id).map(|_| Begun::Prior("Stopped".into()))
                    } else {
                        Ok(Begun::Nothing)
                    }
                }
                Op::Start { vm_id } => s.begin_start(vm_id).map(|_| Begun::Prior("Stopped".into())),
                Op::Stop { vm_id } => {
                    let prior = s.vm(vm_id).map(|v| v.state.clone())?;
                    s.begin_stop(vm_id).map(|_| Begun::Prior(prior))
                }
                Op::Reboot { vm_id } => s.begin_reboot(vm_id).map(|_| Begun::Nothing),
                Op::Destroy { vm_id, .. } => s.begin_destroy(vm_id).map(Begun::Prior),
                Op::Attach {
                    volume_id,
                    vm_id,
                    device_id,
                } => s
                    .begin_attach(volume_id, vm_id, *device_id)
                    .map(Begun::Device),
                Op::Detach { volume_id } => s.begin_detach(volume_id).map(Begun::Vm),
                Op::CreateSnapshot { snapshot_id } => {
                    s.begin_snapshot(snapshot_id).map(|_| Begun::Nothing)
                }
                Op::RevertSnapshot { snapshot_id } => {
                    s.begin_revert(snapshot_id).map(|_| Begun::Nothing)
                }
                Op::DeleteSnapshot { snapshot_id } => {
                    s.begin_delete_snapshot(snapshot_id).map(|_| Begun::Nothing)
                }
                Op::CreateVolume { .. } => Ok(Begun::Nothing),
            }
        };
        let begun = match begun {
            Ok(b) => b,
            Err(e) => {
                let mut s = self.state.lock().expect("poisoned");
                match &job.op {
                    Op::CreateSnapshot { snapshot_id } => s.abort_snapshot(snapshot_id),
                    Op::CreateVolume { volume_id, .. } => s.abort_create_volume(volume_id),
                    _ => {}
                }
                return Err(e);
            }
        };
        // A reboot takes the guest down as it begins; it boots again when the job ends.
        if let Op::Reboot { vm_id } = &job.op {
            self.guests.down(vm_id, false).await;
        }
        // Phase 2: the work takes time.
        tokio::select! {
            _ = tokio::time::sleep(latency) => {}
            _ = self.shutdown.cancelled() => return Err(CsError::internal("management server shutting down")),
        }
        // Phase 3: apply, or undo the transitional state if a fault was injected.
        let mut s = self.state.lock().expect("poisoned");
        if let Some(fault) = &job.fault {
            let s: &mut State = &mut s;
            match (&job.op, &begun) {
                (
                    Op::Deploy { vm_id, .. } | Op::Start { vm_id } | Op::Stop { vm_id },
                    Begun::Prior(p),
                ) => s.abort_vm(vm_id, p),
                (Op::Attach { volume_id, .. }, _) => s.abort_volume(volume_id),
                (Op::CreateSnapshot { snapshot_id }, _) => s.abort_snapshot(snapshot_id),
                (Op::RevertSnapshot { snapshot_id }, _) => {
                    if let Some(v) = s.snapshots.get(snapshot_id).map(|x| x.volume_id.clone()) {
                        s.abort_volume(&v)
                    }
                }
                (Op::CreateVolume { volume_id, .. }, _) => s.abort_create_volume(volume_id),
                // The VM still runs: the guest the reboot took down boots again.
                (Op::Reboot { vm_id }, _) => *guest = s.guest_vm(vm_id).map(GuestChange::Boot),
                _ => {}
            }
            return Err(fault.clone());
        }
        *guest = match &job.op {
            Op::Deploy { vm_id, start: true } | Op::Start { vm_id } | Op::Reboot { vm_id } => {
                s.guest_vm(vm_id).map(GuestChange::Boot)
            }
            Op::Stop { vm_id }
            | Op::Destroy {
                vm_id,
                expunge: false,
            } => Some(GuestChange::Down(vm_id.clone())),
            Op::Destroy {
                vm_id,
                expunge: true,
            } => Some(GuestChange::Gone(vm_id.clone())),
            _ => None,
        };
        let result = match (&job.op, begun) {
            (Op::Deploy { vm_id, start }, _) => {
                if *start {
                    s.finish_start(vm_id)
                } else {
                    serde_json::json!({ "virtualmachine": s.vm_json(vm_id) })
                }
            }
            (Op::Start { vm_id }, _) => s.finish_start(vm_id),
            (Op::Stop { vm_id }, _) => s.finish_stop(vm_id),
            (Op::Reboot { vm_id }, _) => s.finish_reboot(vm_id),
            (Op::Destroy { vm_id, expunge }, _) => {
                let attached: Vec<String> = s
                    .volumes
                    .values()
                    .filter(|v| v.vm_id.as_deref() == Some(vm_id.as_str()))
                    .map(|v| v.id.clone())
                    .collect();
                let result = s.finish_destroy(vm_id, *expunge);
                if *expunge {
                    for volume_id in attached {
                        self.unplug(vm_id, &volume_id);
                    }
                }
                result
            }
            (
                Op::Attach {
                    volume_id, vm_id, ..
                },
                Begun::Device(device),
            ) => {
                let result = s.finish_attach(volume_id, vm_id, device);
                let running_appliance = s
                    .vms
                    .get(vm_id)
                    .map(|v| v.appliance && v.state == "Running")
                    .unwrap_or(false);
                drop(s);
                if running_appliance {
                    self.plug_later(vm_id, volume_id);
                }
                result
            }
            (Op::Detach { volume_id }, Begun::Vm(vm_id)) => {
                let result = s.finish_detach(volume_id);
                drop(s);
                self.unplug(&vm_id, volume_id);
                result
            }
            (Op::CreateSnapshot { snapshot_id }, _) => s.finish_snapshot(snapshot_id),
            (Op::RevertSnapshot { snapshot_id }, _) => s.finish_revert(snapshot_id),
            (Op::DeleteSnapshot { snapshot_id }, _) => s.finish_delete_snapshot(snapshot_id),
            (
                Op::CreateVolume {
                    volume_id,
                    from_snapshot,
                },
                _,
            ) => s.finish_create_volume(volume_id, *from_snapshot),
            (op, begun) => unreachable!("{op:?} began as {begun:?}"),
        };
        Ok(result)
    }

    fn plug_later(self: &Arc<Self>, vm_id: &str, volume_id: &str) {
        let serial = hotplug::volume_serial(volume_id);
        if self.hotplug.root_of(vm_id).is_none() {
            return;
        }
        let token = self.hotplug.expect(&serial);
        let delay = Duration::from_secs_f64(
            self.state
                .lock()
                .expect("poisoned")
                .settings
                .hotplug_delay_ms as f64
                / 1000.0
                * self.time_scale,
        );
        let inner = Arc::clone(self);
        let vm_id = vm_id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = inner.hotplug.appear(&vm_id, &serial, token) {
                tracing::error!(error = %e, serial, "hot-plug emulation failed");
            }
        });
    }

    fn unplug(&self, vm_id: &str, volume_id: &str) {
        let serial = hotplug::volume_serial(volume_id);
        if let Err(e) = self.hotplug.remove(vm_id, &serial) {
            tracing::error!(error = %e, serial, "hot-unplug emulation failed");
        }
    }
}

/// Removes the record of job `job_id`; whether there was one. A job that has not
/// begun is as if never submitted: the snapshot or volume its submission allocated
/// goes with it (a VM a deployVirtualMachine allocated stays, as it was allocated).
fn forget(state: &mut State, job_id: &str) -> bool {
    let Some(job) = state.jobs.remove(job_id) else {
        return false;
    };
    if job.status == 0
        && !job.begun
        && let Some(id) = &job.instance_id
    {
        match &*job.command {
            "createsnapshot" => {
                state.snapshots.remove(id);
            }
            // As if never submitted: the id was never given a row of its own.
            "createvolume" => {
                state.volumes.remove(id);
            }
            _ => {}
        }
    }
    true
}

/// What validation at the head of the queue established.
#[derive(Debug)]
enum Begun {
    Nothing,
    /// The VM state to go back to if the job is failed by a fault.
    Prior(String),
    /// The device id an attach will use.
    Device(i64),
    /// The VM a detach takes the volume from.
    Vm(String),
}
