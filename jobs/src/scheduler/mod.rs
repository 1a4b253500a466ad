//! The scheduler service: runs jobs on their cron schedules, with no overlap across replicas.
//!
//! A tick of a job goes through [`Scheduler::run_tick`], on the run executor ([`crate::executor`]):
//! 1. claim the job: its PostgreSQL advisory lock on a dedicated session, or record the tick
//!    `skipped` ("another run holds the lock");
//! 2. under the lock, close `running` rows a dead process left behind, and skip the tick if a row for
//!    it exists already (another replica ran it: "tick already handled");
//! 3. run the attempts with the schedule's limits: each its own `job_runs` row labelled with the
//!    tick, bounded by the timeout, retried with backoff, cancelled when the lock is lost or the
//!    shutdown grace runs out;
//! 4. let the lock go.
//!
//! Before all that, a paused job's tick is recorded `skipped` ([`runs::REASON_PAUSED`], with who
//! paused it, when and why in `details.pause`), and after a failed run a job with
//! `pause_after_failures` is paused when that many runs in a row failed ([`pause`]).
//!
//! Because a run's row is written before and closed before the lock is released, "lock, then look for
//! the tick's row" can never let two processes run the same tick, however their clocks and start-up
//! times differ. [`Scheduler::run`] adds the clock ([`ticker`]), the start-up catch-up of missed ticks
//! ([`missed`]) and graceful shutdown.

pub mod catalog;
mod firetimes;
pub mod job;
pub mod missed;
pub mod schedules;
pub mod ticker;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbErr};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use firetimes::{next_fire, next_fires};
pub use job::{JobBody, RunContext, ScheduledJob};

use self::missed::CatchUp;
use self::ticker::Ticker;
use crate::config::SchedulerConfig;
use crate::executor::{ExecError, Executor, Gated, Launch, Limits, Stops};
use crate::runs::{lock, pause};
use crate::runs::{self, JobName, RunStatus, Trigger};

/// After cancelling runs at shutdown, how much longer than the cancel wait to give them to record
/// their rows before their tasks are aborted.
const RECORD_MARGIN: Duration = Duration::from_secs(5);

/// Beyond the lock checks and the cancel wait, how long a new lock holder gives a run that lost the
/// lock to record its row.
const LOSER_MARGIN: Duration = Duration::from_secs(1);

/// How a [`Scheduler`] behaves.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// After shutdown is requested, how long running jobs may take to finish before they are cancelled.
    pub shutdown_grace: Duration,
    /// After a run is cancelled, how long it gets to return before it is dropped.
    pub cancel_wait: Duration,
    /// This process's name in the history (`details.replica`).
    pub replica: String,
}

impl SchedulerOptions {
    /// The options of the configuration's `scheduler` section, for the replica named `replica`.
    pub fn from_config(cfg: &SchedulerConfig, replica: String) -> Self {
        Self {
            shutdown_grace: cfg.shutdown_grace(),
            cancel_wait: cfg.cancel_wait(),
            replica,
        }
    }
}

/// One tick to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Its scheduled fire time: the label of its runs (`details.tick`).
    pub at: DateTime<Utc>,
    /// A catch-up run for ticks missed while no scheduler was running (`details.missed`).
    pub missed: bool,
}

/// What became of a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickOutcome {
    /// The job ran: the last attempt's status and every attempt's row, in order.
    Ran {
        /// `succeeded`, `skipped` (the job had nothing to do) or `failed`.
        status: RunStatus,
        /// The `job_runs` ids of the attempts.
        run_ids: Vec<i64>,
    },
    /// The scheduler did not run it; recorded as a `skipped` row.
    Skipped {
        /// [`runs::REASON_LOCK_HELD`], [`runs::REASON_TICK_HANDLED`] or [`runs::REASON_PAUSED`].
        reason: &'static str,
        /// The `skipped` row.
        run_id: i64,
    },
    /// Shutdown had begun; nothing was started or recorded.
    NotStarted,
}

/// What the tick handlers share.
struct Env {
    /// The run history (and the pool the lock sessions come from).
    db: DatabaseConnection,
    /// Runs the ticks' attempts.
    exec: Executor,
    /// `details.replica`.
    replica: String,
    /// Cancelled when shutdown begins: no new ticks or attempts start.
    stopping: CancellationToken,
    /// Cancelled when the grace period runs out: running bodies are asked to stop.
    cancel: CancellationToken,
    /// See [`SchedulerOptions::cancel_wait`].
    cancel_wait: Duration,
    /// See [`SchedulerOptions::shutdown_grace`].
    grace: Duration,
}

/// The scheduler: a set of jobs, the history they are recorded in, and how to stop.
pub struct Scheduler {
    /// Shared with every tick's task.
    env: Arc<Env>,
    /// The jobs, by index (the ticker reports indexes).
    jobs: Vec<Arc<ScheduledJob>>,
}

impl Scheduler {
    /// A scheduler of `jobs` recording into `db`. Job names must be unique.
    pub fn new(db: DatabaseConnection, jobs: Vec<ScheduledJob>, options: SchedulerOptions) -> Self {
        let env = Env {
            exec: Executor::new(db.clone(), options.cancel_wait),
            db,
            replica: options.replica,
            stopping: CancellationToken::new(),
            cancel: CancellationToken::new(),
            cancel_wait: options.cancel_wait,
            grace: options.shutdown_grace,
        };
        Self {
            env: Arc::new(env),
            jobs: jobs.into_iter().map(Arc::new).collect(),
        }
    }

    fn job(&self, name: JobName) -> anyhow::Result<Arc<ScheduledJob>> {
        self.jobs
            .iter()
            .find(|j| j.name == name)
            .cloned()
            .with_context(|| format!("no scheduled job named {name:?}"))
    }

    /// Runs one tick of the job `name` now: lock, tick check, attempts, history.
    pub async fn run_tick(&self, name: JobName, tick: Tick) -> anyhow::Result<TickOutcome> {
        let job = self.job(name)?;
        handle_tick(&self.env, &job, tick).await
    }

    /// What start-up does about ticks missed since each enabled job's last recorded tick.
    pub async fn plan_catch_up(&self, now: DateTime<Utc>) -> Result<Vec<(JobName, CatchUp)>, DbErr> {
        let mut plans = Vec::new();
        for job in self.jobs.iter().filter(|j| j.timing.enabled) {
            let plan = missed::plan(&self.env.db, job.name, &job.timing, now).await?;
            plans.push((job.name, plan));
        }
        Ok(plans)
    }

    /// Runs the enabled jobs on their schedules until `shutdown` is cancelled, then stops gracefully:
    /// no new ticks or retries; running jobs get the grace period to finish, then are cancelled (recorded
    /// failed, "cancelled at shutdown").
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        for job in self.jobs.iter().filter(|j| !j.timing.enabled) {
            tracing::info!(job = %job.name, "disabled in the schedules; not scheduled");
        }
        let mut tasks: JoinSet<(JobName, anyhow::Result<TickOutcome>)> = JoinSet::new();
        self.catch_up(&mut tasks).await?;

        let (tx, mut fires) = mpsc::channel(64);
        let clocks = self
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| j.timing.enabled)
            .map(|(i, j)| (i, j.timing.clone()))
            .collect();
        let ticker = Ticker::start(clocks, tx)
            .await
            .context("starting the cron clock")?;
        for job in self.jobs.iter().filter(|j| j.timing.enabled) {
            let next = next_fire(&job.timing, Utc::now()).map(runs::tick_text);
            tracing::info!(job = %job.name, cron = %job.timing.cron_expr, timezone = %job.timing.timezone,
                next = next.as_deref().unwrap_or("never"), replica = %self.env.replica, "scheduled");
        }

        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(fire) = fires.recv() => {
                    let job = self.jobs[fire.job].clone();
                    spawn_tick(&mut tasks, &self.env, job, Tick { at: fire.at, missed: false });
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => log_done(done),
            }
        }

        ticker.stop().await;
        self.env.stopping.cancel();
        self.wind_down(tasks).await;
        Ok(())
    }

    /// Applies each enabled job's missed-tick policy at start-up; a `run-once` run goes into `tasks`.
    async fn catch_up(
        &self,
        tasks: &mut JoinSet<(JobName, anyhow::Result<TickOutcome>)>,
    ) -> anyhow::Result<()> {
        let plans = self
            .plan_catch_up(Utc::now())
            .await
            .context("reading the run history for missed ticks")?;
        for (name, plan) in plans {
            log_catch_up(name, plan);
            if let CatchUp::RunOnce(m) = plan {
                let tick = Tick {
                    at: m.latest,
                    missed: true,
                };
                spawn_tick(tasks, &self.env, self.job(name)?, tick);
            }
        }
        Ok(())
    }

    /// The shutdown sequence for the ticks still running.
    async fn wind_down(&self, mut tasks: JoinSet<(JobName, anyhow::Result<TickOutcome>)>) {
        if tasks.is_empty() {
            return;
        }
        let grace = self.env.grace;
        tracing::info!(
            running = tasks.len(),
            grace_secs = grace.as_secs(),
            "waiting for running jobs to finish"
        );
        if drain(&mut tasks, grace).await {
            return;
        }
        tracing::warn!(
            running = tasks.len(),
            "grace period over; cancelling running jobs"
        );
        self.env.cancel.cancel();
        if drain(&mut tasks, self.env.cancel_wait + RECORD_MARGIN).await {
            return;
        }
        // Their rows stay `running` until the next tick of the job closes them as abandoned.
        tracing::error!(running = tasks.len(), "jobs did not stop; aborting them");
        tasks.shutdown().await;
    }
}

/// Runs `tick` of `job` in its own task.
fn spawn_tick(
    tasks: &mut JoinSet<(JobName, anyhow::Result<TickOutcome>)>,
    env: &Arc<Env>,
    job: Arc<ScheduledJob>,
    tick: Tick,
) {
    let env = env.clone();
    tasks.spawn(async move {
        let outcome = handle_tick(&env, &job, tick).await;
        (job.name, outcome)
    });
}

/// Waits up to `within` for every task; true when none is left.
async fn drain(tasks: &mut JoinSet<(JobName, anyhow::Result<TickOutcome>)>, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(done)) => log_done(done),
            Ok(None) => break,
            Err(_) => return false,
        }
    }
    true
}

fn log_done(done: Result<(JobName, anyhow::Result<TickOutcome>), tokio::task::JoinError>) {
    match done {
        Ok((_, Ok(_))) => {}
        Ok((job, Err(e))) => tracing::error!(%job, error = %format!("{e:#}"), "tick could not be handled"),
        Err(e) if e.is_cancelled() => {}
        Err(e) => tracing::error!(error = %e, "tick task panicked"),
    }
}

fn log_catch_up(job: JobName, plan: CatchUp) {
    match plan {
        CatchUp::FirstStart => tracing::info!(%job, "no scheduled run recorded yet; nothing missed"),
        CatchUp::NothingMissed => tracing::info!(%job, "no ticks missed"),
        CatchUp::Skip(m) => tracing::warn!(%job, missed = m.count, since = %runs::tick_text(m.last_recorded),
            "ticks missed while no scheduler ran; policy skip: waiting for the next tick"),
        CatchUp::RunOnce(m) => {
            tracing::warn!(%job, missed = m.count, since = %runs::tick_text(m.last_recorded),
            tick = %runs::tick_text(m.latest), "ticks missed while no scheduler ran; policy run-once: running now")
        }
    }
}

/// Claim, tick check, attempts, unlock.
async fn handle_tick(env: &Env, job: &ScheduledJob, tick: Tick) -> anyhow::Result<TickOutcome> {
    if env.stopping.is_cancelled() {
        return Ok(TickOutcome::NotStarted);
    }
    // Read at every tick, before the lock: a paused job takes no lock, and a pause made on any
    // replica (or by HTTP) holds here from the next tick on.
    if let Some(p) = pause::get(&env.db, job.name)
        .await
        .with_context(|| format!("reading whether job {} is paused", job.name))?
    {
        let pause = serde_json::to_value(&p).unwrap_or_default();
        return skip(env, job, tick, runs::REASON_PAUSED, Some(("pause", pause))).await;
    }
    let claim = match env.exec.claim_locked(job.name).await {
        Ok(claim) => claim,
        Err(ExecError::Held(_)) => return skip(env, job, tick, runs::REASON_LOCK_HELD, None).await,
        Err(e) => return Err(e).with_context(|| format!("claiming job {}", job.name)),
    };
    let launch = Launch {
        trigger: Trigger::Schedule,
        limits: Limits {
            timeout: Some(Duration::from_secs(job.timing.timeout_secs)),
            retries: job.timing.retries,
            backoff: Duration::from_secs(job.timing.retry_backoff_secs),
        },
        labels: Some(tick_labels(env, tick)),
        tick: Some(tick.at),
        stops: Stops {
            stopping: env.stopping.clone(),
            cancel: env.cancel.clone(),
            cancelled_as: Some(format!(
                "cancelled at shutdown (grace period of {} s ran out)",
                env.grace.as_secs()
            )),
        },
        started: None,
    };
    let gate = || async { gate(env, job, tick).await.map_err(ExecError::from) };
    let ran = env
        .exec
        .run_gated(claim, launch, gate, |ctx| (job.body)(ctx))
        .await
        .with_context(|| format!("running job {}", job.name))?;
    match ran {
        Gated::Refused(by) => {
            let by = ("handled_by", Value::from(by));
            skip(env, job, tick, runs::REASON_TICK_HANDLED, Some(by)).await
        }
        Gated::Ran(outcome) => {
            if outcome.status == RunStatus::Failed {
                auto_pause(env, job).await;
            }
            Ok(TickOutcome::Ran {
                status: outcome.status,
                run_ids: outcome.run_ids,
            })
        }
    }
}

/// After a failed run: pauses the job when its schedule's `pause_after_failures` runs in a row have
/// failed now. A failure to check is logged; the next failed run checks again.
async fn auto_pause(env: &Env, job: &ScheduledJob) {
    let Some(n) = job.timing.pause_after_failures else {
        return;
    };
    match pause::pause_after_failures(&env.db, job.name, n).await {
        Ok(Some(p)) => {
            tracing::error!(job = %job.name, failures = n, pause = %p.describe(), "job auto-paused after failed runs")
        }
        Ok(None) => {}
        Err(e) => tracing::error!(job = %job.name, error = %e, "could not check the job's failures for auto-pause"),
    }
}

/// The check a tick passes under the job's lock before it runs: rows a dead process left are closed,
/// and a tick another replica already ran answers with that run's id.
async fn gate(env: &Env, job: &ScheduledJob, tick: Tick) -> Result<Option<i64>, DbErr> {
    if runs::has_running(&env.db, job.name).await? {
        // The row may be a live run on a replica whose lock session died: it notices within a check
        // and stops within the cancel wait. Closing its row (and running) only after that long means
        // the two never run at once.
        let wait = 2 * lock::CHECK_EVERY + env.cancel_wait + LOSER_MARGIN;
        tracing::info!(job = %job.name, wait_ms = wait.as_millis() as u64, "a run is recorded running; waiting for it to stop");
        tokio::time::sleep(wait).await;
    }
    let closed = runs::close_abandoned(&env.db, runs::Abandoned::Scheduled(job.name)).await?;
    if closed > 0 {
        tracing::warn!(job = %job.name, rows = closed, "closed runs abandoned by a stopped process");
    }
    runs::tick_taken(&env.db, job.name, tick.at).await
}

/// The keys every row of `tick` starts with: which tick, which replica, whether caught up (the
/// executor adds the attempt).
fn tick_labels(env: &Env, tick: Tick) -> Map<String, Value> {
    let mut d = Map::new();
    d.insert("tick".into(), runs::tick_text(tick.at).into());
    d.insert("replica".into(), env.replica.clone().into());
    if tick.missed {
        d.insert("missed".into(), true.into());
    }
    d
}

/// Records `tick` as skipped for `reason`.
async fn skip(
    env: &Env,
    job: &ScheduledJob,
    tick: Tick,
    reason: &'static str,
    extra: Option<(&str, Value)>,
) -> anyhow::Result<TickOutcome> {
    let mut details = tick_labels(env, tick);
    details.insert("reason".into(), reason.into());
    if let Some((key, value)) = extra {
        details.insert(key.into(), value);
    }
    let run_id = runs::record_skipped(&env.db, job.name, Trigger::Schedule, Value::Object(details)).await?;
    tracing::info!(job = %job.name, tick = %runs::tick_text(tick.at), run_id, reason, "tick skipped");
    Ok(TickOutcome::Skipped { reason, run_id })
}
