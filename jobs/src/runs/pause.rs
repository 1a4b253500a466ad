//! Paused jobs: `job_pauses` (one row per paused job) and the append-only `job_pause_events`.
//!
//! The state lives in PostgreSQL so that every scheduler replica honours a pause at its next tick
//! and the persist consumer within [`POLL_EVERY`], whoever paused (`weatherflow pause`, `POST
//! /api/v1/jobs/{job}/pause`, or the scheduler's auto-pause after failures). A pause is lifted only
//! by a resume; pausing a paused job changes nothing (the first pause's who, when and why stay).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, QueryResult, Statement};
use serde::Serialize;

use super::JobName;

/// How often a running persist consumer reads its pause state: a pause or resume takes effect within
/// this (one indexed primary-key read per interval).
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// The jobs that can be paused: the scheduled ones and the consumer. Re-drives and replays run
/// only by hand and are simply not started.
pub const PAUSABLE: [JobName; 4] = [
    JobName::Fetch,
    JobName::Persist,
    JobName::Analytics,
    JobName::Maintenance,
];

/// `paused_by` of a pause the scheduler made after failures.
pub const AUTO: &str = "auto";

/// A paused job: who paused it, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Pause {
    /// The job.
    #[serde(serialize_with = "job_text")]
    #[schema(value_type = String)]
    pub job: JobName,
    /// Since when.
    pub paused_at: DateTime<Utc>,
    /// Who: the OS user (CLI, or `--by`), `http (<remote>)`, or [`AUTO`].
    pub paused_by: String,
    /// Why, as given; the last error of an auto-pause.
    pub reason: Option<String>,
    /// Paused by the scheduler after `pause_after_failures` failed runs in a row.
    pub auto: bool,
}

fn job_text<S: serde::Serializer>(job: &JobName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(job.as_str())
}

impl Pause {
    /// One line for messages and logs: `paused by alice at 2026-12-07T15:00:00Z: disk full`.
    pub fn describe(&self) -> String {
        let at = super::tick_text(self.paused_at);
        match &self.reason {
            Some(why) => format!("paused by {} at {at}: {why}", self.paused_by),
            None => format!("paused by {} at {at} (no reason given)", self.paused_by),
        }
    }

    fn from_row(row: &QueryResult) -> Result<Self, DbErr> {
        let job: String = row.try_get_by_index(0)?;
        Ok(Self {
            job: job
                .parse()
                .map_err(|_| DbErr::Custom(format!("job_pauses: unknown job {job:?}")))?,
            paused_at: row.try_get_by_index(1)?,
            paused_by: row.try_get_by_index(2)?,
            reason: row.try_get_by_index(3)?,
            auto: row.try_get_by_index(4)?,
        })
    }
}

/// What a pause request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paused {
    /// The job is paused now.
    Now(Pause),
    /// It was paused already; nothing changed.
    Already(Pause),
}

impl Paused {
    /// The pause in force.
    pub fn pause(&self) -> &Pause {
        match self {
            Paused::Now(p) | Paused::Already(p) => p,
        }
    }
}

fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

const COLUMNS: &str = "job, paused_at, paused_by, reason, auto";

/// Pauses `job` (and records the event), unless it is paused already.
pub async fn pause(
    db: &DatabaseConnection,
    job: JobName,
    by: &str,
    reason: Option<&str>,
    auto: bool,
) -> Result<Paused, DbErr> {
    // One statement: the pause and its event are written together or not at all.
    let sql = format!(
        "WITH ins AS (INSERT INTO job_pauses (job, paused_by, reason, auto) VALUES ($1, $2, $3, $4) \
           ON CONFLICT (job) DO NOTHING RETURNING {COLUMNS}), \
         ev AS (INSERT INTO job_pause_events (job, action, at, by, reason, auto) \
           SELECT job, 'pause', paused_at, paused_by, reason, auto FROM ins) \
         SELECT {COLUMNS} FROM ins"
    );
    let values = vec![
        job.as_str().into(),
        by.into(),
        reason.map(str::to_owned).into(),
        auto.into(),
    ];
    if let Some(row) = db.query_one_raw(stmt(&sql, values)).await? {
        let pause = Pause::from_row(&row)?;
        tracing::warn!(%job, by, reason = reason.unwrap_or(""), auto, "job paused");
        return Ok(Paused::Now(pause));
    }
    match get(db, job).await? {
        Some(p) => Ok(Paused::Already(p)),
        // Resumed between the two statements: pause again.
        None => Box::pin(pause(db, job, by, reason, auto)).await,
    }
}

/// Resumes `job` (and records the event); the pause it lifted, `None` when it was not paused.
pub async fn resume(db: &DatabaseConnection, job: JobName, by: &str) -> Result<Option<Pause>, DbErr> {
    let sql = format!(
        "WITH del AS (DELETE FROM job_pauses WHERE job = $1 RETURNING {COLUMNS}), \
         ev AS (INSERT INTO job_pause_events (job, action, by) SELECT job, 'resume', $2 FROM del) \
         SELECT {COLUMNS} FROM del"
    );
    let row = db
        .query_one_raw(stmt(&sql, vec![job.as_str().into(), by.into()]))
        .await?;
    let lifted = row.as_ref().map(Pause::from_row).transpose()?;
    if lifted.is_some() {
        tracing::info!(%job, by, "job resumed");
    }
    Ok(lifted)
}

/// The pause of `job`, if it is paused.
pub async fn get(db: &DatabaseConnection, job: JobName) -> Result<Option<Pause>, DbErr> {
    let sql = format!("SELECT {COLUMNS} FROM job_pauses WHERE job = $1");
    let row = db.query_one_raw(stmt(&sql, vec![job.as_str().into()])).await?;
    row.as_ref().map(Pause::from_row).transpose()
}

/// Every paused job, by name.
pub async fn all(db: &DatabaseConnection) -> Result<Vec<Pause>, DbErr> {
    let sql = format!("SELECT {COLUMNS} FROM job_pauses ORDER BY job");
    let rows = db.query_all_raw(stmt(&sql, vec![])).await?;
    rows.iter().map(Pause::from_row).collect()
}

/// How many of a job's latest rows the failure streak is looked for in: far more than any
/// `pause_after_failures` with its retries and skipped ticks needs, and a bounded read whatever the
/// history's length.
const STREAK_ROWS: u64 = 2000;

/// Pauses `job` with `paused_by` = [`AUTO`] when its last `n` runs since its last resume all failed,
/// with the last error as the reason; the pause made, `None` otherwise (or when already paused).
///
/// A run is what its caller saw: the last attempt of a scheduled tick (its retries are one run), or
/// one manual run. Skipped rows (paused or lock-held ticks, nothing to do) neither count nor break
/// the streak; a success breaks it.
pub async fn pause_after_failures(
    db: &DatabaseConnection,
    job: JobName,
    n: u32,
) -> Result<Option<Pause>, DbErr> {
    let sql = r#"
        WITH since AS (SELECT COALESCE(max(at), '-infinity'::timestamptz) AS t
                       FROM job_pause_events WHERE job = $1 AND action = 'resume'),
        recent AS (SELECT * FROM job_runs WHERE job = $1 ORDER BY id DESC LIMIT $3),
        runs AS (SELECT DISTINCT ON (CASE WHEN "trigger" = 'schedule'
                                          THEN COALESCE(details->>'tick', id::text) ELSE id::text END)
                        id, status, error
                 FROM recent, since
                 WHERE status IN ('succeeded', 'failed') AND started_at > since.t
                 ORDER BY CASE WHEN "trigger" = 'schedule'
                               THEN COALESCE(details->>'tick', id::text) ELSE id::text END, id DESC)
        SELECT status, error FROM runs ORDER BY id DESC LIMIT $2"#;
    let rows = db
        .query_all_raw(stmt(
            sql,
            vec![
                job.as_str().into(),
                i64::from(n).into(),
                (STREAK_ROWS.max(u64::from(n) * 20) as i64).into(),
            ],
        ))
        .await?;
    let mut last_error = None;
    for row in &rows {
        let status: String = row.try_get_by_index(0)?;
        if status != "failed" {
            return Ok(None);
        }
        if last_error.is_none() {
            last_error = Some(row.try_get_by_index::<Option<String>>(1)?);
        }
    }
    if n == 0 || rows.len() < n as usize {
        return Ok(None);
    }
    let error = last_error.flatten().unwrap_or_else(|| "no error recorded".into());
    let reason = format!("{n} runs in a row failed; the last: {error}");
    match pause(db, job, AUTO, Some(&reason), true).await? {
        Paused::Now(p) => Ok(Some(p)),
        Paused::Already(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_reads_as_one_line() {
        let at = DateTime::parse_from_rfc3339("2026-12-07T15:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut p = Pause {
            job: JobName::Fetch,
            paused_at: at,
            paused_by: "alice".into(),
            reason: Some("quota".into()),
            auto: false,
        };
        assert_eq!(p.describe(), "paused by alice at 2026-12-07T15:00:00Z: quota");
        p.reason = None;
        assert!(p.describe().ends_with("(no reason given)"));
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["job"], "fetch");
        assert_eq!(json["auto"], false);
    }
}
