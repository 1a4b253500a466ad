//! Run history: every job run, scheduled or manual, is a `job_runs` row that goes
//! `running` → `succeeded` | `failed` | `skipped`. A row left `running` by a process that died is
//! closed as `failed` ([`ABANDONED`]) by the next start that can prove it dead ([`close_abandoned`]).
//!
//! This module owns the `job_runs` queries, including the ones the scheduler needs to keep runs from
//! overlapping (which ticks were handled, which rows were abandoned by a dead process).

pub mod lock;
pub mod pause;

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use entity::job_runs;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
};
use serde_json::Value;

pub use entity::job_runs::{JobName, RunStatus, Trigger};

pub use crate::report::{Completion, Report, StoredReport};

/// How often a long run logs that it is still going.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// `details.reason` of a scheduled tick that found the job's advisory lock taken.
pub const REASON_LOCK_HELD: &str = "another run holds the lock";

/// `details.reason` of a scheduled tick of a paused job (`details.pause` says who paused it, when
/// and why).
pub const REASON_PAUSED: &str = "job paused";

/// `details.reason` of a scheduled tick that another replica (or an earlier firing) already ran.
pub const REASON_TICK_HANDLED: &str = "tick already handled";

/// Inserts a `running` row with `details` already set (the scheduler's tick and attempt, so that other
/// replicas see which tick is being run) and returns its id.
pub async fn start_with(
    db: &DatabaseConnection,
    job: JobName,
    trigger: Trigger,
    details: Option<Value>,
) -> Result<i64, DbErr> {
    let row = job_runs::ActiveModel {
        job: Set(job),
        trigger: Set(trigger),
        started_at: Set(Utc::now()),
        status: Set(RunStatus::Running),
        details: Set(details),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(row.id)
}

/// Inserts a row that is `skipped` from the start (a tick the scheduler did not run), returning its id.
pub async fn record_skipped(
    db: &DatabaseConnection,
    job: JobName,
    trigger: Trigger,
    details: Value,
) -> Result<i64, DbErr> {
    let now = Utc::now();
    let row = job_runs::ActiveModel {
        job: Set(job),
        trigger: Set(trigger),
        started_at: Set(now),
        finished_at: Set(Some(now)),
        status: Set(RunStatus::Skipped),
        details: Set(Some(details)),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(row.id)
}

/// How a run ended, as its `job_runs` row records it.
#[derive(Debug, Clone)]
pub struct RunEnd {
    /// The final status.
    pub status: RunStatus,
    /// `records_in` and `records_out`, when the job counts them.
    pub records: (Option<i64>, Option<i64>),
    /// The error chain of a failed run.
    pub error: Option<String>,
    /// The job's report; given on failure too (e.g. partial summaries).
    pub details: Option<Value>,
}

/// Closes run `id` with its outcome.
pub async fn finish(db: &DatabaseConnection, id: i64, end: &RunEnd) -> Result<(), DbErr> {
    job_runs::ActiveModel {
        id: Set(id),
        finished_at: Set(Some(Utc::now())),
        status: Set(end.status),
        records_in: Set(end.records.0),
        records_out: Set(end.records.1),
        error: Set(end.error.clone()),
        details: Set(end.details.clone()),
        ..Default::default()
    }
    .update(db)
    .await?;
    Ok(())
}

/// Replaces the `details` of run `id` while it is still `running`: long runs (the history backfill)
/// show their progress in their row before they finish, and [`finish`] writes the final report.
pub async fn record_progress(db: &DatabaseConnection, id: i64, details: &Value) -> Result<(), DbErr> {
    db.execute_raw(stmt(
        "UPDATE job_runs SET details = $2 WHERE id = $1 AND status = 'running'",
        vec![id.into(), details.clone().into()],
    ))
    .await?;
    Ok(())
}

/// How often, and how far apart, a run tries to close its row: a run that ended in a database
/// outage (a persist run stopped during one) records its outcome if the database is back within
/// about 5 s, rather than leaving its row to be closed as abandoned.
const FINISH_TRIES: u32 = 10;
const FINISH_PAUSE: Duration = Duration::from_millis(500);

/// [`finish`], tried up to [`FINISH_TRIES`] times.
pub(crate) async fn finish_patiently(db: &DatabaseConnection, id: i64, end: &RunEnd) -> Result<(), DbErr> {
    let mut tries = 1;
    loop {
        match finish(db, id, end).await {
            Err(e) if tries < FINISH_TRIES => {
                tracing::warn!(run_id = id, error = %e, "recording the run's outcome failed; trying again");
                tries += 1;
                tokio::time::sleep(FINISH_PAUSE).await;
            }
            done => return done,
        }
    }
}

/// Awaits `body`, logging every [`PROGRESS_EVERY`] that run `run_id` of `job` is still going, so a
/// long run shows signs of life in the log.
pub async fn with_progress<F: Future>(job: JobName, run_id: i64, body: F) -> F::Output {
    let started = Instant::now();
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    tokio::pin!(body);
    loop {
        tokio::select! {
            out = &mut body => return out,
            _ = beat.tick() => {
                tracing::info!(job = job.as_str(), run_id, elapsed_secs = started.elapsed().as_secs(), "run in progress");
            }
        }
    }
}

/// The canonical text of a tick time in `details.tick`: RFC 3339, whole seconds, `Z`. One spelling, so
/// that replicas compare ticks as strings.
pub fn tick_text(tick: DateTime<Utc>) -> String {
    tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// The id of a run of `job` that already took the scheduled `tick` (any status but `skipped`). Called
/// under the job's advisory lock, so the answer cannot change before the caller inserts its own row.
pub async fn tick_taken(
    db: &DatabaseConnection,
    job: JobName,
    tick: DateTime<Utc>,
) -> Result<Option<i64>, DbErr> {
    let row = db
        .query_one_raw(stmt(
            r#"SELECT id FROM job_runs
               WHERE job = $1 AND "trigger" = 'schedule' AND status <> 'skipped' AND details->>'tick' = $2
               ORDER BY id LIMIT 1"#,
            vec![job.as_str().into(), tick_text(tick).into()],
        ))
        .await?;
    row.map(|r| r.try_get_by_index::<i64>(0)).transpose()
}

/// The latest tick of `job` the scheduler handled (ran or skipped), from `details.tick`, else the
/// row's start time. `None` when the job was never scheduled.
pub async fn last_scheduled_tick(
    db: &DatabaseConnection,
    job: JobName,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    let row = db
        .query_one_raw(stmt(
            r#"SELECT max(COALESCE((details->>'tick')::timestamptz, started_at))
               FROM job_runs WHERE job = $1 AND "trigger" = 'schedule'"#,
            vec![job.as_str().into()],
        ))
        .await?;
    match row {
        Some(r) => r.try_get_by_index::<Option<DateTime<Utc>>>(0),
        None => Ok(None),
    }
}

/// Whether `job` has `running` scheduled rows (what [`close_abandoned`] would close).
pub async fn has_running(db: &DatabaseConnection, job: JobName) -> Result<bool, DbErr> {
    let row = db
        .query_one_raw(stmt(
            r#"SELECT EXISTS (SELECT 1 FROM job_runs
               WHERE job = $1 AND "trigger" = 'schedule' AND status = 'running')"#,
            vec![job.as_str().into()],
        ))
        .await?;
    row.map_or(Ok(false), |r| r.try_get_by_index::<bool>(0))
}

/// The error of a `running` row closed because the process running it is gone.
pub const ABANDONED: &str = "abandoned: the process running it stopped without closing the run";

/// Which `running` rows [`close_abandoned`] closes: the two ways of knowing that a row's process died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abandoned {
    /// Every `running` scheduled row of the job. Only sound under the job's advisory lock: a scheduled
    /// run holds the lock until its row is closed, so a `running` row found while holding the lock
    /// belongs to a process that died.
    Scheduled(JobName),
    /// The row with this id, whose run lock was found free ([`close_dead`]).
    Run(i64),
}

/// Closes the rows `which` names as failed ([`ABANDONED`]) if they are still `running`. Returns how
/// many rows were closed.
pub async fn close_abandoned(db: &DatabaseConnection, which: Abandoned) -> Result<u64, DbErr> {
    let (filter, key) = match which {
        Abandoned::Scheduled(job) => (r#"job = $2 AND "trigger" = 'schedule'"#, job.as_str().into()),
        Abandoned::Run(id) => ("id = $2", id.into()),
    };
    let sql = format!(
        "UPDATE job_runs SET status = 'failed', finished_at = now(), error = $1 \
         WHERE status = 'running' AND {filter}"
    );
    let res = db.execute_raw(stmt(&sql, vec![ABANDONED.into(), key])).await?;
    Ok(res.rows_affected())
}

/// Closes the `running` rows of `job` whose process is gone, found by their free run locks
/// ([`lock::RunLease`]). For jobs whose rows hold leases (persist, which runs in many processes at
/// once and has no job lock); a scheduled fetch or analytics row holds no run lock,
/// and is closed by the scheduler under the job's lock instead. Returns how many rows were closed.
pub async fn close_dead(db: &DatabaseConnection, job: JobName) -> Result<u64, DbErr> {
    let dead = lock::dead_runs(db, job)
        .await
        .map_err(|e| DbErr::Custom(format!("probing the run locks of {job}: {e}")))?;
    let mut closed = 0;
    for id in dead {
        closed += close_abandoned(db, Abandoned::Run(id)).await?;
    }
    if closed > 0 {
        tracing::warn!(
            job = job.as_str(),
            rows = closed,
            "closed runs abandoned by a stopped process"
        );
    }
    Ok(closed)
}

/// The latest run of each job, leaving out ticks the scheduler skipped because another run had them
/// (those say nothing about the job, only about replicas).
pub async fn latest_per_job(db: &DatabaseConnection) -> Result<Vec<job_runs::Model>, DbErr> {
    job_runs::Entity::find()
        .from_raw_sql(stmt(
            r#"SELECT DISTINCT ON (job) * FROM job_runs
               WHERE NOT (status = 'skipped' AND COALESCE(details->>'reason', '') IN ($1, $2))
               ORDER BY job, id DESC"#,
            vec![REASON_LOCK_HELD.into(), REASON_TICK_HANDLED.into()],
        ))
        .all(db)
        .await
}

/// The latest runs, newest first, optionally of one job.
pub async fn history(
    db: &DatabaseConnection,
    job: Option<JobName>,
    last: u64,
) -> Result<Vec<job_runs::Model>, DbErr> {
    let mut q = job_runs::Entity::find()
        .order_by_desc(job_runs::Column::Id)
        .limit(last);
    if let Some(job) = job {
        q = q.filter(job_runs::Column::Job.eq(job));
    }
    q.all(db).await
}
