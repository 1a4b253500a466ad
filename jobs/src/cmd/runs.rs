//! `weatherflow runs`: the run history as a table. Scheduled rows show their attempt number (`try`),
//! and the note says why a tick was skipped or that a run caught up on missed ticks.

use chrono::{DateTime, Utc};
use entity::job_runs;
use serde::Serialize;

use super::table::{self, Format};
use crate::config::Config;
use crate::db;
use crate::runs::JobName;

/// One run as `--format json|csv` prints it.
#[derive(Debug, Serialize)]
pub struct RunRecord {
    /// Run id.
    id: i64,
    /// The job.
    job: String,
    /// `schedule` or `manual`.
    trigger: String,
    /// `running`, `succeeded`, `failed` or `skipped`.
    status: String,
    /// Start time (RFC 3339, UTC).
    started_at: DateTime<Utc>,
    /// End time; null while running.
    finished_at: Option<DateTime<Utc>>,
    /// Seconds it took; null while running.
    seconds: Option<f64>,
    /// Records read.
    records_in: Option<i64>,
    /// Records written.
    records_out: Option<i64>,
    /// A scheduled run's attempt number.
    attempt: Option<String>,
    /// Its error, else why a tick was skipped or that it caught up on missed ticks; empty otherwise.
    note: String,
}

/// The field names of [`RunRecord`], the CSV header.
const COLUMNS: [&str; 11] = [
    "id",
    "job",
    "trigger",
    "status",
    "started_at",
    "finished_at",
    "seconds",
    "records_in",
    "records_out",
    "attempt",
    "note",
];

/// Prints the latest runs, newest first.
pub async fn run(config: &Config, job: Option<JobName>, last: u64, format: Format) -> anyhow::Result<()> {
    let conn = db::connect(&config.database).await?;
    let rows = crate::runs::history(&conn, job, last).await?;
    let records: Vec<RunRecord> = rows
        .iter()
        .map(|r| RunRecord {
            id: r.id,
            job: r.job.to_string(),
            trigger: r.trigger.to_string(),
            status: r.status.to_string(),
            started_at: r.started_at,
            finished_at: r.finished_at,
            seconds: r
                .finished_at
                .map(|f| (f - r.started_at).num_milliseconds() as f64 / 1000.0),
            records_in: r.records_in,
            records_out: r.records_out,
            attempt: detail(r, "attempt"),
            note: note(r),
        })
        .collect();
    table::print_records(format, "runs", &COLUMNS, &records, || render(&records))
}

/// The table of `weatherflow runs`.
fn render(records: &[RunRecord]) -> String {
    let dash = || "-".to_owned();
    let cells: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.job.clone(),
                r.trigger.clone(),
                r.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                r.seconds.map_or_else(dash, |s| format!("{s:.1}")),
                r.status.clone(),
                r.records_in.map_or_else(dash, |n| n.to_string()),
                r.records_out.map_or_else(dash, |n| n.to_string()),
                r.attempt.clone().unwrap_or_else(dash),
                r.note.chars().take(80).collect(),
            ]
        })
        .collect();
    table::render(
        &[
            "id",
            "job",
            "trigger",
            "started (UTC)",
            "secs",
            "status",
            "in",
            "out",
            "try",
            "note",
        ],
        &cells,
    )
}

/// A scalar of `details` as text.
fn detail(r: &job_runs::Model, key: &str) -> Option<String> {
    let v = r.details.as_ref()?.get(key)?;
    Some(v.as_str().map_or_else(|| v.to_string(), str::to_owned))
}

/// What to say about a run: its error, else why the scheduler skipped it, else that it caught up on
/// missed ticks.
fn note(r: &job_runs::Model) -> String {
    if let Some(e) = &r.error {
        return e.clone();
    }
    let tick = detail(r, "tick")
        .map(|t| format!(" (tick {t})"))
        .unwrap_or_default();
    if let Some(reason) = detail(r, "reason") {
        return format!("{reason}{tick}");
    }
    if detail(r, "missed").as_deref() == Some("true") {
        return format!("catch-up for missed ticks{tick}");
    }
    String::new()
}
