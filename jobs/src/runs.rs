//! Run history: every job run, scheduled or manual, is a `job_runs` row that goes
//! `running` → `succeeded` | `failed` | `skipped`.

use std::future::Future;

use chrono::Utc;
use entity::job_runs;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde_json::Value;

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A cron tick of the scheduler service.
    Schedule,
    /// `weatherflow run …`.
    Manual,
}

impl Trigger {
    /// The value stored in `job_runs.trigger`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
        }
    }
}

/// How a run that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// It did its work.
    Succeeded,
    /// It had nothing it could do (e.g. too little data to fit), said why in `details`.
    Skipped,
}

/// What a job reports about a finished run, stored in its `job_runs` row.
pub trait Report {
    /// Succeeded or skipped.
    fn completion(&self) -> Completion {
        Completion::Succeeded
    }
    /// Records read (fetch: locations asked; persist: messages consumed; analytics: rows read).
    fn records_in(&self) -> Option<i64>;
    /// Records written (fetch: messages produced; persist: rows stored; analytics: results stored).
    fn records_out(&self) -> Option<i64>;
    /// A job-specific summary as JSON (fetch: the per-location outcomes).
    fn details(&self) -> Value;
}

/// Inserts a `running` row and returns its id.
pub async fn start(db: &DatabaseConnection, job: &str, trigger: Trigger) -> Result<i64, DbErr> {
    let row = job_runs::ActiveModel {
        job: Set(job.to_owned()),
        trigger: Set(trigger.as_str().to_owned()),
        started_at: Set(Utc::now()),
        status: Set("running".to_owned()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(row.id)
}

/// Closes a run with its outcome. `details` may be given on failure too (e.g. partial summaries).
pub async fn finish(
    db: &DatabaseConnection,
    id: i64,
    status: &str,
    records: (Option<i64>, Option<i64>),
    error: Option<String>,
    details: Option<Value>,
) -> Result<(), DbErr> {
    job_runs::ActiveModel {
        id: Set(id),
        finished_at: Set(Some(Utc::now())),
        status: Set(status.to_owned()),
        records_in: Set(records.0),
        records_out: Set(records.1),
        error: Set(error),
        details: Set(details),
        ..Default::default()
    }
    .update(db)
    .await?;
    Ok(())
}

/// Runs `body` inside a `job_runs` row: `running` before, the outcome after. The body gets the run's id
/// (analytics links its results to it). A failed body is recorded with its full error chain and
/// returned to the caller unchanged.
pub async fn recorded<T, F, Fut>(
    db: &DatabaseConnection,
    job: &str,
    trigger: Trigger,
    body: F,
) -> anyhow::Result<T>
where
    T: Report,
    F: FnOnce(i64) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let id = start(db, job, trigger).await?;
    tracing::info!(job, run_id = id, trigger = trigger.as_str(), "run started");
    match body(id).await {
        Ok(report) => {
            let status = match report.completion() {
                Completion::Succeeded => "succeeded",
                Completion::Skipped => "skipped",
            };
            finish(
                db,
                id,
                status,
                (report.records_in(), report.records_out()),
                None,
                Some(report.details()),
            )
            .await?;
            tracing::info!(job, run_id = id, status, "run finished");
            Ok(report)
        }
        Err(err) => {
            let message = format!("{err:#}");
            if let Err(db_err) = finish(db, id, "failed", (None, None), Some(message.clone()), None).await {
                tracing::error!(job, run_id = id, error = %db_err, "could not record the failed run");
            }
            tracing::error!(job, run_id = id, error = %message, "run failed");
            Err(err)
        }
    }
}

/// The latest runs, newest first, optionally of one job.
pub async fn history(
    db: &DatabaseConnection,
    job: Option<&str>,
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
