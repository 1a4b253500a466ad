//! The attempts of one run: each its own `job_runs` row, bounded by the run's timeout; attempts that
//! failed with a retryable error ([`JobErrorKind::Retryable`]) or timed out are tried again after an
//! exponential backoff, up to the run's `retries`. A fatal error (a bad key, a used-up quota, a bad
//! configuration) ends the run at its first attempt: another would fail the same way.

use std::future::Future;

use chrono::Utc;
use serde_json::{Map, Value};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{ExecError, Executor, Launch, Outcome, RunContext};
use crate::backoff::Backoff;
use crate::job_error::{JobError, JobErrorKind};
use crate::report::{Report, StoredReport};
use crate::runs::lock::{LOCK_LOST, RunLease};
use crate::runs::{self, JobName, RunEnd, RunStatus};

/// How an attempt ended, as far as trying again is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Succeeded or skipped: the run is done.
    Done(RunStatus),
    /// Failed with a retryable error, or timed out: worth another attempt.
    Failed,
    /// Failed with an error another attempt would repeat.
    GaveUp,
    /// Stopped on purpose (shutdown, a lost lock): no more attempts.
    Cancelled,
}

/// Why the executor stopped waiting for a body.
enum Stop<R> {
    /// The body returned.
    Returned(Result<R, JobError>),
    /// The attempt ran past the run's timeout.
    TimedOut,
    /// The caller's stop ([`super::Stops::cancelled_as`]).
    Stopped,
    /// The job's lock was lost: another replica may run it now.
    LockLost,
}

/// Every attempt of a run, until one succeeds (or skips), the retries are used up, or it is stopped.
/// `lost` is cancelled when the job's lock is lost: the running attempt stops and no other starts.
pub(super) async fn all<B, Fut, R>(
    exec: &Executor,
    job: JobName,
    mut launch: Launch,
    mut body: B,
    lost: &CancellationToken,
) -> Result<Outcome, ExecError>
where
    B: FnMut(RunContext) -> Fut,
    Fut: Future<Output = Result<R, JobError>>,
    R: Report,
{
    let limits = launch.limits;
    let backoff = Backoff::new(
        limits.backoff,
        limits.backoff.saturating_mul(1 << limits.retries.min(20)),
    );
    let mut run_ids = Vec::new();
    let mut error = None;
    let mut started = launch.started.take();
    for attempt in 1..=limits.retries.saturating_add(1) {
        if attempt > 1 {
            let delay = backoff.delay(attempt - 2);
            tracing::info!(%job, attempt, delay_ms = delay.as_millis() as u64, "retrying after backoff");
            tokio::select! {
                _ = launch.stops.stopping.cancelled() => {
                    tracing::info!(%job, "shutting down: no further attempts");
                    break;
                }
                _ = lost.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        let (id, end, failure) = one(exec, job, &launch, attempt, &mut started, &mut body, lost).await?;
        run_ids.push(id);
        error = failure;
        match end {
            End::Done(status) => {
                return Ok(Outcome {
                    status,
                    run_ids,
                    error: None,
                });
            }
            End::Cancelled | End::GaveUp => break,
            End::Failed => {}
        }
    }
    Ok(Outcome {
        status: RunStatus::Failed,
        run_ids,
        error,
    })
}

/// The job's own details with the caller's labels added: merged into the job's object when it is
/// one (so scheduled and manual runs have the same shape), else beside it under `report`.
fn merged(labels: Map<String, Value>, report: Option<Value>) -> Value {
    let mut out = match report {
        Some(Value::Object(job)) => job,
        Some(Value::Null) | None => Map::new(),
        Some(other) => Map::from_iter([("report".to_owned(), other)]),
    };
    out.extend(labels);
    Value::Object(out)
}

/// The row of one attempt: labelled (the scheduler's), or held by a run lease.
enum Row {
    /// Opened with the scheduler's labels; closed by the scheduler under the job's lock if this
    /// process dies.
    Labelled(Map<String, Value>),
    /// Held by its lease for as long as the attempt goes.
    Leased(RunLease),
}

/// One attempt, recorded in its own row.
async fn one<B, Fut, R>(
    exec: &Executor,
    job: JobName,
    launch: &Launch,
    attempt: u32,
    started: &mut Option<oneshot::Sender<i64>>,
    body: &mut B,
    lost: &CancellationToken,
) -> Result<(i64, End, Option<JobError>), ExecError>
where
    B: FnMut(RunContext) -> Fut,
    Fut: Future<Output = Result<R, JobError>>,
    R: Report,
{
    let (id, row) = match &launch.labels {
        Some(labels) => {
            let mut labels = labels.clone();
            labels.insert("attempt".into(), attempt.into());
            let details = Some(Value::Object(labels.clone()));
            let id = runs::start_with(&exec.db, job, launch.trigger, details).await?;
            (id, Row::Labelled(labels))
        }
        None => {
            let lease = RunLease::start(&exec.db, job, launch.trigger)
                .await
                .map_err(|e| {
                    ExecError::History(sea_orm::DbErr::Custom(format!("opening the run's row: {e}")))
                })?;
            (lease.run_id(), Row::Leased(lease))
        }
    };
    if let Some(tx) = started.take() {
        let _ = tx.send(id);
    }
    tracing::info!(%job, run_id = id, trigger = launch.trigger.as_str(), attempt, "run started");
    let cancel = launch.stops.cancel.child_token();
    let ctx = RunContext {
        run_id: id,
        tick: launch.tick.unwrap_or_else(Utc::now),
        attempt,
        cancel: cancel.clone(),
    };
    // Boxed: a job's future is large (analytics' is tens of KB), and kept inline it would be
    // copied through every layer of the executor's futures on the caller's stack.
    let mut body = Box::pin(runs::with_progress(job, id, body(ctx)));
    let timeout = async {
        match launch.limits.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let stopped = async {
        match &launch.stops.cancelled_as {
            Some(_) => launch.stops.cancel.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let stop = tokio::select! {
        returned = &mut body => Stop::Returned(returned),
        () = timeout => Stop::TimedOut,
        () = stopped => Stop::Stopped,
        _ = lost.cancelled() => Stop::LockLost,
    };
    let result: Result<StoredReport, JobError> = match stop {
        Stop::Returned(returned) => returned.map(|r| StoredReport::of(&r)),
        Stop::TimedOut | Stop::Stopped | Stop::LockLost => {
            // Ask the body to stop, and give it a moment to wind down cleanly (a partial summary is
            // kept); a body that ignores the token is dropped.
            cancel.cancel();
            let late = tokio::time::timeout(exec.cancel_wait, &mut body).await;
            if late.is_err() {
                tracing::warn!(%job, run_id = id, "run ignored cancellation; dropped");
            }
            let partial = match &late {
                Ok(Ok(report)) => Some(StoredReport::of(report)),
                Ok(Err(e)) => e.report().cloned(),
                Err(_) => None,
            };
            let err = match stop {
                Stop::TimedOut => {
                    let secs = launch.limits.timeout.unwrap_or_default().as_secs();
                    JobError::retryable(format!("timed out after {secs} s"))
                }
                Stop::LockLost => JobError::interrupted(LOCK_LOST),
                _ => JobError::interrupted(launch.stops.cancelled_as.clone().unwrap_or_default()),
            };
            Err(match partial {
                Some(report) => err.with_report(&report),
                None => err,
            })
        }
    };
    let (end, row_end) = ending(&result, launch, attempt);
    // The run's last attempt, failed: `details.final` is how readers of the history (the alerts)
    // tell a run that failed after its retries from an attempt that will be retried.
    let last = end == End::GaveUp || (end == End::Failed && attempt > launch.limits.retries);
    let row_end = if last { marked_final(row_end) } else { row_end };
    let (row_end, lease) = match row {
        Row::Labelled(labels) => {
            let details = row_end.details.clone();
            (
                RunEnd {
                    details: Some(merged(labels, details)),
                    ..row_end
                },
                None,
            )
        }
        Row::Leased(lease) => (row_end, Some(lease)),
    };
    let recorded = runs::finish_patiently(&exec.db, id, &row_end).await;
    // The lease goes only once the row is closed: a row is never `running` without a live holder
    // unless its process died.
    if let Some(lease) = lease {
        lease.release().await;
    }
    match &row_end.error {
        Some(error) => tracing::error!(%job, run_id = id, attempt, %error, "run failed"),
        None => tracing::info!(%job, run_id = id, attempt, status = row_end.status.as_str(), "run finished"),
    }
    if let Err(e) = recorded {
        tracing::error!(%job, run_id = id, error = %e, "could not record the run's outcome");
        return Err(e.into());
    }
    Ok((id, end, result.err()))
}

/// `row` with `details.final = true`.
fn marked_final(row: RunEnd) -> RunEnd {
    let labels = Map::from_iter([("final".to_owned(), Value::Bool(true))]);
    RunEnd {
        details: Some(merged(labels, row.details.clone())),
        ..row
    }
}

/// What an attempt's result means for the run, and the row it is recorded as.
fn ending(result: &Result<StoredReport, JobError>, launch: &Launch, attempt: u32) -> (End, RunEnd) {
    match result {
        Ok(report) => (
            End::Done(report.status()),
            RunEnd {
                status: report.status(),
                records: (report.records_in, report.records_out),
                error: None,
                details: Some(report.details.clone()),
            },
        ),
        Err(e) => {
            let end = match e.kind() {
                JobErrorKind::Retryable => End::Failed,
                JobErrorKind::Fatal => End::GaveUp,
                JobErrorKind::Interrupted => End::Cancelled,
            };
            if end == End::GaveUp && attempt <= launch.limits.retries {
                tracing::warn!(attempt, "fatal error: not retried");
            }
            let partial = e.report();
            (
                end,
                RunEnd {
                    status: RunStatus::Failed,
                    records: partial.map_or((None, None), |r| (r.records_in, r.records_out)),
                    error: Some(e.to_string()),
                    details: partial.map(|r| r.details.clone()),
                },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_join_the_jobs_details() {
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

    #[test]
    fn an_error_ends_the_run_by_its_kind() {
        let launch = Launch::manual(&CancellationToken::new());
        let end = |e: JobError| ending(&Err(e), &launch, 1).0;
        assert_eq!(end(JobError::retryable("x")), End::Failed);
        assert_eq!(end(JobError::fatal("x")), End::GaveUp);
        assert_eq!(end(JobError::interrupted(LOCK_LOST)), End::Cancelled);
        let (ok, row) = ending(&Ok(StoredReport::succeeded()), &launch, 1);
        assert_eq!(ok, End::Done(RunStatus::Succeeded));
        assert_eq!(row.error, None);
    }
}
