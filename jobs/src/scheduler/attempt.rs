//! The attempts of one tick: each attempt is its own `job_runs` row, bounded by the job's timeout;
//! attempts that failed with a retryable error ([`JobErrorKind::Retryable`]) or timed out are retried
//! after an exponential backoff, up to the job's `retries`. A fatal error (a bad key, a used-up quota,
//! a bad configuration) ends the tick at its first attempt: another would fail the same way.

use std::time::Duration;

use sea_orm::DbErr;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::job::{RunContext, ScheduledJob};
use super::{Env, Tick, TickOutcome};
use crate::backoff::Backoff;
use crate::job_error::{JobError, JobErrorKind};
use crate::runs::lock::LOCK_LOST;
use crate::runs::{self, RunStatus, StoredReport, Trigger};

/// How an attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Succeeded or skipped: done with this tick.
    Done(RunStatus),
    /// Failed with a retryable error, or timed out: worth another attempt.
    Failed,
    /// Failed with an error another attempt would repeat: no more attempts this tick.
    GaveUp,
    /// Cancelled at shutdown or for a lost lock: no more attempts.
    Cancelled,
}

/// Why the scheduler stopped waiting for a body.
enum Stop {
    /// The body returned.
    Returned(Result<StoredReport, JobError>),
    /// The attempt ran past the job's timeout.
    TimedOut,
    /// The shutdown grace period ran out.
    Shutdown,
    /// The job's lock was lost: another replica may run it now.
    LockLost,
}

/// Runs `tick` of `job`: attempts until one succeeds (or skips), the retries are used up, or shutdown.
/// The caller holds the job's lock.
/// `lost` is cancelled when the lock is lost: the running attempt stops and no other starts.
pub(super) async fn run(
    env: &Env,
    job: &ScheduledJob,
    tick: Tick,
    lost: &CancellationToken,
) -> Result<TickOutcome, DbErr> {
    let retries = job.timing.retries;
    let initial = Duration::from_secs(job.timing.retry_backoff_secs);
    let backoff = Backoff::new(initial, initial.saturating_mul(1 << retries.min(20)));
    let mut run_ids = Vec::new();
    for attempt in 1..=retries.saturating_add(1) {
        if attempt > 1 {
            let delay = backoff.delay(attempt - 2);
            tracing::info!(job = %job.name, attempt, delay_ms = delay.as_millis() as u64, "retrying after backoff");
            tokio::select! {
                _ = env.stopping.cancelled() => {
                    tracing::info!(job = %job.name, "shutting down: no further attempts");
                    break;
                }
                _ = lost.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        let (id, end) = one(env, job, tick, attempt, lost).await?;
        run_ids.push(id);
        match end {
            End::Done(status) => return Ok(TickOutcome::Ran { status, run_ids }),
            End::Cancelled | End::GaveUp => break,
            End::Failed => {}
        }
    }
    Ok(TickOutcome::Ran {
        status: RunStatus::Failed,
        run_ids,
    })
}

/// The `details` every scheduled row starts with: which tick, which attempt, which replica.
pub(super) fn tick_details(env: &Env, tick: Tick, attempt: Option<u32>) -> Map<String, Value> {
    let mut d = Map::new();
    d.insert("tick".into(), runs::tick_text(tick.at).into());
    if let Some(attempt) = attempt {
        d.insert("attempt".into(), attempt.into());
    }
    d.insert("replica".into(), env.replica.clone().into());
    if tick.missed {
        d.insert("missed".into(), true.into());
    }
    d
}

/// The job's own details with the scheduler's keys added: merged into the job's object when it is one
/// (so scheduled and manual runs have the same shape), else beside it under `report`.
fn merged(scheduler: Map<String, Value>, report: Option<Value>) -> Value {
    let mut out = match report {
        Some(Value::Object(job)) => job,
        Some(Value::Null) | None => Map::new(),
        Some(other) => Map::from_iter([("report".to_owned(), other)]),
    };
    out.extend(scheduler);
    Value::Object(out)
}

/// One attempt, recorded in its own row.
async fn one(
    env: &Env,
    job: &ScheduledJob,
    tick: Tick,
    attempt: u32,
    lost: &CancellationToken,
) -> Result<(i64, End), DbErr> {
    let base = tick_details(env, tick, Some(attempt));
    let id = runs::start_with(
        &env.db,
        job.name,
        Trigger::Schedule,
        Some(Value::Object(base.clone())),
    )
    .await?;
    tracing::info!(job = %job.name, run_id = id, tick = %runs::tick_text(tick.at), attempt, missed = tick.missed, "run started");
    let cancel = env.cancel.child_token();
    let ctx = RunContext {
        run_id: id,
        tick: tick.at,
        attempt,
        cancel: cancel.clone(),
    };
    let body = runs::with_progress(job.name, id, (job.body)(ctx));
    tokio::pin!(body);
    let timeout = Duration::from_secs(job.timing.timeout_secs);
    let stop = tokio::select! {
        returned = &mut body => Stop::Returned(returned),
        _ = tokio::time::sleep(timeout) => Stop::TimedOut,
        _ = env.cancel.cancelled() => Stop::Shutdown,
        _ = lost.cancelled() => Stop::LockLost,
    };
    let (end, error, outcome) = match stop {
        Stop::Returned(Ok(outcome)) => (End::Done(outcome.status()), None, Some(outcome)),
        Stop::Returned(Err(e)) => {
            let end = match e.kind() {
                JobErrorKind::Retryable => End::Failed,
                JobErrorKind::Fatal => End::GaveUp,
                JobErrorKind::Interrupted => End::Cancelled,
            };
            if end == End::GaveUp && attempt <= job.timing.retries {
                tracing::warn!(job = %job.name, run_id = id, attempt, "fatal error: not retried");
            }
            (end, Some(e.to_string()), e.report().cloned())
        }
        Stop::TimedOut | Stop::Shutdown | Stop::LockLost => {
            // Ask the body to stop, and give it a moment to wind down cleanly (a partial summary is
            // kept); a body that ignores the token is dropped.
            cancel.cancel();
            let late = tokio::time::timeout(env.cancel_wait, &mut body).await;
            if late.is_err() {
                tracing::warn!(job = %job.name, run_id = id, "run ignored cancellation; dropped");
            }
            let partial = match late {
                Ok(Ok(report)) => Some(report),
                Ok(Err(e)) => e.report().cloned(),
                Err(_) => None,
            };
            if matches!(stop, Stop::TimedOut) {
                let error = format!("timed out after {} s", job.timing.timeout_secs);
                (End::Failed, Some(error), partial)
            } else if matches!(stop, Stop::LockLost) {
                (End::Cancelled, Some(LOCK_LOST.to_owned()), partial)
            } else {
                let error = format!(
                    "cancelled at shutdown (grace period of {} s ran out)",
                    env.grace.as_secs()
                );
                (End::Cancelled, Some(error), partial)
            }
        }
    };
    let status = match end {
        End::Done(status) => status,
        End::Failed | End::GaveUp | End::Cancelled => RunStatus::Failed,
    };
    let row = runs::RunEnd {
        status,
        records: outcome
            .as_ref()
            .map_or((None, None), |o| (o.records_in, o.records_out)),
        error,
        details: Some(merged(base, outcome.map(|o| o.details))),
    };
    runs::finish(&env.db, id, &row).await?;
    match &row.error {
        Some(error) => tracing::error!(job = %job.name, run_id = id, attempt, %error, "run failed"),
        None => {
            tracing::info!(job = %job.name, run_id = id, attempt, status = status.as_str(), "run finished")
        }
    }
    Ok((id, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scheduler_keys_join_the_jobs_details() {
        let keys = Map::from_iter([("tick".to_owned(), json!("2026-01-01T00:00:00Z"))]);
        assert_eq!(
            merged(keys.clone(), Some(json!({"locations": 3}))),
            json!({"locations": 3, "tick": "2026-01-01T00:00:00Z"})
        );
        assert_eq!(
            merged(keys.clone(), Some(json!([1, 2]))),
            json!({"report": [1, 2], "tick": "2026-01-01T00:00:00Z"})
        );
        assert_eq!(
            merged(keys.clone(), None),
            json!({"tick": "2026-01-01T00:00:00Z"})
        );
        // The scheduler's tick wins over a job key of the same name: replicas compare it.
        assert_eq!(
            merged(keys, Some(json!({"tick": "other"}))),
            json!({"tick": "2026-01-01T00:00:00Z"})
        );
    }
}
