//! `weatherflow runs`: the run history as a table. Scheduled rows show their attempt number (`try`),
//! and the note says why a tick was skipped or that a run caught up on missed ticks.

use entity::job_runs;

use crate::config::Config;
use crate::db;
use crate::runs::JobName;

/// Prints the latest runs, newest first.
pub async fn run(config: &Config, job: Option<JobName>, last: u64) -> anyhow::Result<()> {
    let conn = db::connect(&config.database).await?;
    let rows = crate::runs::history(&conn, job, last).await?;
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let took = r
                .finished_at
                .map(|f| format!("{:.1}", (f - r.started_at).num_milliseconds() as f64 / 1000.0));
            vec![
                r.id.to_string(),
                r.job.to_string(),
                r.trigger.to_string(),
                r.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                took.unwrap_or_else(|| "-".into()),
                r.status.to_string(),
                r.records_in.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                r.records_out.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                detail(r, "attempt").unwrap_or_else(|| "-".into()),
                note(r).chars().take(80).collect(),
            ]
        })
        .collect();
    print!(
        "{}",
        super::table::render(
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
                "note"
            ],
            &cells
        )
    );
    Ok(())
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
