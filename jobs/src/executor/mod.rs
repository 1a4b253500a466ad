//! The run executor: the one way a job runs, whoever asks for it (`weatherflow run`, the scheduler,
//! `POST /api/v1/runs/{job}`, the consumer, `rejects redrive`, `replay`).
//!
//! A run goes through two steps:
//! 1. [`Executor::claim`]: the job's advisory lock ([`crate::runs::lock::JobLock`]) for the jobs that
//!    never run twice at once ([`catalog::exclusive`]), refused with [`ExecError::Held`] when another
//!    run holds it; rows left `running` by a killed process are closed first for the jobs whose rows
//!    hold run leases ([`catalog::closes_dead`]);
//! 2. [`Executor::run`]: while the lock's session is watched (a lost lock cancels the run, recorded
//!    failed "lock lost"), the attempts: each its own `job_runs` row (held by a run lease, or labelled
//!    with the scheduler's tick), bounded by the timeout, retried with backoff when retryable, and
//!    cancelled-and-waited-for when it times out, loses its lock or is stopped at shutdown. The lock
//!    goes when the last row is closed.
//!
//! Callers differ only in the [`Launch`] they give: a manual run has no timeout and no retries, and
//! its body stops itself at shutdown; a scheduled tick has the schedule's limits, its tick labels,
//! and a grace period after which the executor stops it.

mod attempt;
pub mod catalog;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, DbErr};
use serde_json::{Map, Value};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::job_error::JobError;
use crate::report::{Report, StoredReport};
use crate::runs::lock::JobLock;
use crate::runs::{self, JobName, RunStatus, Trigger};

/// What one attempt of a run is given.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Its `job_runs` row (analytics links its results to it).
    pub run_id: i64,
    /// The scheduled fire time this run belongs to; a run not scheduled has its start time.
    pub tick: DateTime<Utc>,
    /// 1 for the first attempt, then 2, 3, ... for retries.
    pub attempt: u32,
    /// Cancelled when the attempt times out, loses its lock, or is stopped at shutdown: the body
    /// should finish its unit of work and return. A body that does not is dropped after the cancel
    /// wait.
    pub cancel: CancellationToken,
}

/// A job body as the scheduler keeps it: one attempt, from its context to its stored outcome. Its
/// error's kind decides whether another attempt follows.
pub type JobBody =
    std::sync::Arc<dyn Fn(RunContext) -> BoxFuture<'static, Result<StoredReport, JobError>> + Send + Sync>;

/// Why a run could not be started or recorded.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Another run of the job holds its lock.
    #[error("another {0} run (scheduled or manual) is in progress; try again when it has finished")]
    Held(JobName),
    /// The job is paused; a manual run needs `--force` (`?force=true` over HTTP).
    #[error(
        "job {} is {}; resume it (`weatherflow resume {}`) or run it anyway with --force (HTTP: ?force=true)",
        .0.job, .0.describe(), .0.job
    )]
    Paused(Box<runs::pause::Pause>),
    /// The job's lock could not be asked for.
    #[error("taking the advisory lock of job {job}: {source}")]
    Lock {
        /// The job.
        job: JobName,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// A run's row could not be opened (with its lease) or closed.
    #[error("recording the run in job_runs: {0}")]
    History(#[from] DbErr),
    /// The run failed ([`Executor::run_by_hand`], which hands back the failure as an error).
    #[error(transparent)]
    Failed(#[from] JobError),
}

/// A run's limits: how long an attempt may take and how often a failed one is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// An attempt past this is cancelled and recorded failed (retryable); `None`: no bound.
    pub timeout: Option<Duration>,
    /// Extra attempts after a retryable failure.
    pub retries: u32,
    /// The first delay between attempts, doubled per attempt.
    pub backoff: Duration,
}

impl Limits {
    /// One attempt, unbounded: a run by hand, which a person watches.
    pub const ONCE: Limits = Limits {
        timeout: None,
        retries: 0,
        backoff: Duration::ZERO,
    };
}

/// How a run is stopped from outside.
#[derive(Debug, Clone)]
pub struct Stops {
    /// Cancelled when no further attempt may start (shutdown has begun).
    pub stopping: CancellationToken,
    /// The parent of every attempt's token: cancelling it asks the running body to stop.
    pub cancel: CancellationToken,
    /// Set: when `cancel` fires, the executor stops the attempt itself (waiting the cancel wait for
    /// it) and records this error: the scheduler's grace period ran out. Unset: the body's own
    /// result is recorded (a run by hand, a consumer stopping at shutdown).
    pub cancelled_as: Option<String>,
}

impl Stops {
    /// Stopped by `shutdown` alone: no new attempt after it, and the body decides how it ends.
    pub fn on(shutdown: &CancellationToken) -> Self {
        Self {
            stopping: shutdown.clone(),
            cancel: shutdown.clone(),
            cancelled_as: None,
        }
    }
}

/// What a run is asked to be.
#[derive(Debug)]
pub struct Launch {
    /// Why it runs.
    pub trigger: Trigger,
    /// Its timeout and retries.
    pub limits: Limits,
    /// The scheduler's keys for every attempt's row (`tick`, `replica`, `missed`; the executor adds
    /// `attempt`). A labelled row is opened with them and holds no run lease: the scheduler closes
    /// such rows under the job's lock. Unlabelled rows hold a lease ([`runs::lock::RunLease`]).
    pub labels: Option<Map<String, Value>>,
    /// The scheduled fire time (`RunContext::tick`); unset: the attempt's start.
    pub tick: Option<DateTime<Utc>>,
    /// How it is stopped.
    pub stops: Stops,
    /// Told the first attempt's row id as soon as the row exists (the HTTP answer carries it).
    pub started: Option<oneshot::Sender<i64>>,
}

impl Launch {
    /// A run by hand: trigger `manual`, one unbounded attempt, stopped by `shutdown`.
    pub fn manual(shutdown: &CancellationToken) -> Self {
        Self {
            trigger: Trigger::Manual,
            limits: Limits::ONCE,
            labels: None,
            tick: None,
            stops: Stops::on(shutdown),
            started: None,
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// The last attempt's status.
    pub status: RunStatus,
    /// Every attempt's row, in order.
    pub run_ids: Vec<i64>,
    /// The last attempt's failure, when it failed.
    pub error: Option<JobError>,
}

impl Outcome {
    /// `Ok` unless the run failed, then its last error: for callers that only pass it on.
    pub fn into_result(self) -> Result<(), JobError> {
        self.error.map_or(Ok(()), Err)
    }
}

/// A claimed job: its lock when it takes one, held until [`Executor::run`] ends.
#[derive(Debug)]
pub struct Claim {
    /// The job.
    job: JobName,
    /// The job's lock; `None` for a job that may run many times at once (persist).
    lock: Option<JobLock>,
}

impl Claim {
    /// The claimed job.
    pub fn job(&self) -> JobName {
        self.job
    }

    /// Awaits `work` while the lock holds; when its session is lost, cancels `lost` (the attempts
    /// stop and none starts) and goes on awaiting `work`, which records how the run ended.
    async fn watch<F: Future>(&mut self, lost: &CancellationToken, work: F) -> F::Output {
        let Some(lock) = self.lock.as_mut() else {
            return work.await;
        };
        tokio::pin!(work);
        let watch = lock.lost();
        tokio::pin!(watch);
        loop {
            tokio::select! {
                out = &mut work => return out,
                () = &mut watch, if !lost.is_cancelled() => {
                    tracing::error!(job = %self.job, "the job's lock was lost; cancelling the run");
                    lost.cancel();
                }
            }
        }
    }

    /// Lets the lock go, logging a failure (its session is closed then, which frees it anyway).
    pub async fn release(mut self) {
        let Some(lock) = self.lock.take() else {
            return;
        };
        if let Err(e) = lock.release().await {
            tracing::warn!(job = %self.job, error = %e, "releasing the advisory lock (its session is closed anyway)");
        }
    }
}

/// What [`Executor::run_gated`] did.
#[derive(Debug)]
pub enum Gated<T> {
    /// The gate said no, with this answer; nothing ran.
    Refused(T),
    /// The run went ahead.
    Ran(Outcome),
}

/// Runs jobs: see the module documentation.
#[derive(Debug, Clone)]
pub struct Executor {
    /// The run history, and the pool the lock and lease sessions come from.
    db: DatabaseConnection,
    /// After an attempt is cancelled, how long it gets to return before it is dropped.
    cancel_wait: Duration,
}

impl Executor {
    /// An executor recording into `db`, waiting `cancel_wait` for a cancelled attempt.
    pub fn new(db: DatabaseConnection, cancel_wait: Duration) -> Self {
        Self { db, cancel_wait }
    }

    /// An executor with the configuration's cancel wait (`scheduler.cancel_wait_secs`).
    pub fn from_config(db: DatabaseConnection, config: &Config) -> Self {
        Self::new(db, config.scheduler.cancel_wait())
    }

    /// The run history's connection.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Claims `job` for a run: see the module documentation.
    pub async fn claim(&self, job: JobName) -> Result<Claim, ExecError> {
        self.claim_with(job, catalog::exclusive(job)).await
    }

    /// Claims `job` for a run asked for by hand (CLI, HTTP): refused with [`ExecError::Paused`]
    /// while the job is paused, unless `force`.
    pub async fn claim_unpaused(&self, job: JobName, force: bool) -> Result<Claim, ExecError> {
        match runs::pause::get(&self.db, job).await? {
            Some(p) if !force => return Err(ExecError::Paused(Box::new(p))),
            Some(p) => tracing::warn!(%job, pause = %p.describe(), "the job is paused; running it anyway (forced)"),
            None => {}
        }
        self.claim(job).await
    }

    /// Claims `job` under its lock, whatever the job: the scheduler's tick bookkeeping (which rows
    /// are abandoned, which tick was handled) is sound only under the lock.
    pub async fn claim_locked(&self, job: JobName) -> Result<Claim, ExecError> {
        self.claim_with(job, true).await
    }

    async fn claim_with(&self, job: JobName, locked: bool) -> Result<Claim, ExecError> {
        let lock = if locked {
            let lock = JobLock::try_acquire(&self.db, job)
                .await
                .map_err(|source| ExecError::Lock { job, source })?;
            Some(lock.ok_or(ExecError::Held(job))?)
        } else {
            None
        };
        let claim = Claim { job, lock };
        if catalog::closes_dead(job) {
            // Under the job's lock when it has one, so no live run of this process is among them.
            runs::close_dead(&self.db, job).await?;
        }
        Ok(claim)
    }

    /// Runs `body` as `launch` says, under `claim`; releases the claim when done.
    pub async fn run<B, Fut, R>(&self, claim: Claim, launch: Launch, body: B) -> Result<Outcome, ExecError>
    where
        B: FnMut(RunContext) -> Fut,
        Fut: Future<Output = Result<R, JobError>>,
        R: Report,
    {
        let gate = || async { Ok::<Option<()>, ExecError>(None) };
        match self.run_gated(claim, launch, gate, body).await? {
            Gated::Ran(outcome) => Ok(outcome),
            Gated::Refused(()) => unreachable!("the gate never refuses"),
        }
    }

    /// Claims `job` and runs `body` once by hand (trigger `manual`, stopped by `shutdown`); hands
    /// back the run's id and the body's own summary, or the run's failure as [`ExecError::Failed`].
    /// For callers that print what the job did (a re-drive, the benchmarks).
    pub async fn run_by_hand<B, Fut, R>(
        &self,
        job: JobName,
        shutdown: &CancellationToken,
        mut body: B,
    ) -> Result<(i64, R), ExecError>
    where
        B: FnMut(RunContext) -> Fut,
        Fut: Future<Output = Result<R, JobError>>,
        R: Report + Clone,
    {
        let claim = self.claim(job).await?;
        let kept = std::sync::Mutex::new(None);
        let outcome = self
            .run(claim, Launch::manual(shutdown), |ctx| {
                let (id, run, kept) = (ctx.run_id, body(ctx), &kept);
                async move {
                    let summary = run.await?;
                    if let Ok(mut slot) = kept.lock() {
                        *slot = Some((id, summary.clone()));
                    }
                    Ok(summary)
                }
            })
            .await?;
        outcome.into_result()?;
        let kept = kept.into_inner().ok().flatten();
        kept.ok_or_else(|| ExecError::Failed(JobError::interrupted("the run ended without its summary")))
    }

    /// Like [`Executor::run`], with `gate` checked first under the claim (and its lock watch): when
    /// it answers `Some`, nothing runs and the answer is returned (the scheduler's "tick already
    /// handled").
    pub async fn run_gated<G, GF, T, B, Fut, R>(
        &self,
        mut claim: Claim,
        launch: Launch,
        gate: G,
        body: B,
    ) -> Result<Gated<T>, ExecError>
    where
        G: FnOnce() -> GF,
        GF: Future<Output = Result<Option<T>, ExecError>>,
        B: FnMut(RunContext) -> Fut,
        Fut: Future<Output = Result<R, JobError>>,
        R: Report,
    {
        let job = claim.job;
        let lost = CancellationToken::new();
        let work = async {
            if let Some(answer) = gate().await? {
                return Ok(Gated::Refused(answer));
            }
            attempt::all(self, job, launch, body, &lost).await.map(Gated::Ran)
        };
        let result = claim.watch(&lost, work).await;
        claim.release().await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_launch_is_one_unbounded_attempt_stopped_by_the_body() {
        let shutdown = CancellationToken::new();
        let l = Launch::manual(&shutdown);
        assert_eq!(l.limits, Limits::ONCE);
        assert_eq!(l.trigger, Trigger::Manual);
        assert!(l.labels.is_none() && l.stops.cancelled_as.is_none());
        shutdown.cancel();
        assert!(l.stops.stopping.is_cancelled() && l.stops.cancel.is_cancelled());
    }
}
