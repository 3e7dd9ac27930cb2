//! Sending an operation to CloudStack: look first when its outcome may be known
//! already, refuse what ferry never does (deleting a replica, or a volume it did not
//! create), submit with bounded retries of what did nothing, and after an unknown
//! outcome look before sending again.

use super::*;

impl Inner {
    pub(super) async fn submit_and_wait(
        &self,
        op: &OpRecord,
        request: &OpRequest,
        origin: Origin,
    ) -> Result<Value> {
        // One resubmission is allowed after looking showed that an unknown outcome was
        // "nothing happened"; a recovered operation spends it on its first submission.
        let mut may_resubmit = true;
        if origin != Origin::New {
            match self.look_settled(op, request).await? {
                Some(done) => return done,
                None => may_resubmit = false,
            }
        }
        self.may_submit(request).await?;
        let mut transient_failures = 0;
        let mut backoff = self.config.submit_backoff;
        loop {
            let error = match commands::submit(&self.client, request).await {
                Ok(Submitted::Done(value)) => return Ok(value),
                Ok(Submitted::Job { job_id, entity_id }) => {
                    tracing::Span::current().record("job_id", job_id.as_str());
                    tracing::debug!(%job_id, entity_id, "submitted");
                    self.journal
                        .set_job(&op.id, &job_id, entity_id.as_deref())
                        .await
                        .map_err(Error::journal)?;
                    self.note_entity(op, request, entity_id.as_deref()).await?;
                    let waited = commands::wait_job(&self.client, op, &job_id, entity_id).await;
                    let lost = match &waited {
                        Err(e) if commands::lost_job(e, &job_id).is_some() => e.clone(),
                        _ => return waited,
                    };
                    // CloudStack cannot tell what the job did (a restart cut it short,
                    // or it no longer knows the job): look, as after a lost answer.
                    tracing::warn!(%job_id, error = %lost, "CloudStack cannot tell what the job did; looking at CloudStack");
                    match self.look_settled(op, request).await? {
                        Some(done) => return done,
                        None if may_resubmit => {
                            tracing::info!(
                                "nothing happened and nothing is pending; resubmitting once"
                            );
                            may_resubmit = false;
                            continue;
                        }
                        None => {
                            return Err(Error::OutcomeUnknown {
                                op_id: op.id.clone(),
                                detail: format!(
                                    "{} was sent again after CloudStack could not tell what its job did, and again CloudStack cannot tell ({lost}); it shows nothing done",
                                    command_of(op.kind),
                                ),
                                unreachable: None,
                            });
                        }
                    }
                }
                Err(e) => e,
            };
            match error.class() {
                ErrorClass::Definitive => return Err(Error::cloudstack(&error)),
                ErrorClass::Transient => {
                    transient_failures += 1;
                    if transient_failures >= self.config.submit_attempts.max(1) {
                        return Err(Error::cloudstack(&error));
                    }
                    tracing::info!(error = %error, attempt = transient_failures, "submission failed transiently; resubmitting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                ErrorClass::Unknown => {
                    tracing::warn!(error = %error, "submission of unknown outcome; looking at CloudStack");
                    match self.look_settled(op, request).await? {
                        Some(done) => return done,
                        None if may_resubmit => {
                            tracing::info!(
                                "nothing happened and nothing is pending; resubmitting once"
                            );
                            may_resubmit = false;
                        }
                        None => {
                            return Err(Error::OutcomeUnknown {
                                op_id: op.id.clone(),
                                detail: format!(
                                    "{} was sent again after an unknown outcome and again got no answer ({}); CloudStack shows nothing yet",
                                    command_of(op.kind),
                                    chain(&error)
                                ),
                                unreachable: error.unreachable(),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Looks, and settles the operation if looking can: `Some(outcome)` when it is done,
    /// failed, or pending (then waited on); `None` when nothing happened.
    pub(super) async fn look_settled(
        &self,
        op: &OpRecord,
        request: &OpRequest,
    ) -> Result<Option<Result<Value>>> {
        let failed = |e: cloudstack::Error| Error::OutcomeUnknown {
            op_id: op.id.clone(),
            detail: format!("looking at CloudStack failed: {}", chain(&e)),
            unreachable: e.unreachable(),
        };
        let seen = look::look(&self.client, op, request)
            .await
            .map_err(failed)?;
        Ok(match seen {
            Look::Done(value) => {
                tracing::info!("looking showed the operation done");
                Some(Ok(value))
            }
            Look::Pending { job_id, entity_id } => {
                tracing::info!(
                    %job_id,
                    "looking found the operation's job pending; adopting it"
                );
                tracing::Span::current().record("job_id", job_id.as_str());
                self.journal
                    .set_job(&op.id, &job_id, entity_id.as_deref())
                    .await
                    .map_err(Error::journal)?;
                self.note_entity(op, request, entity_id.as_deref()).await?;
                Some(commands::wait_job(&self.client, op, &job_id, entity_id).await)
            }
            Look::Failed(e) => Some(Err(e)),
            Look::Unresolved(detail) => Some(Err(Error::OutcomeUnknown {
                op_id: op.id.clone(),
                detail,
                unreachable: None,
            })),
            Look::NotDone => None,
        })
    }

    /// The checks made before anything is sent: ferry deletes only volumes it created,
    /// and never a replica. They run inside the operation, so the refusal is recorded
    /// and is the answer to every request with the key.
    pub(super) async fn may_submit(&self, request: &OpRequest) -> Result<()> {
        if let OpRequest::DeleteVolume { volume_id } = request {
            deletion::may_delete(self.journal.as_ref(), volume_id).await?;
        }
        Ok(())
    }
}
