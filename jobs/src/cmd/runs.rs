//! `weatherflow runs`: the run history as a table.

use crate::config::Config;
use crate::db;

/// Prints the latest runs, newest first.
pub async fn run(config: &Config, job: Option<&str>, last: u64) -> anyhow::Result<()> {
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
                r.job.clone(),
                r.trigger.clone(),
                r.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                took.unwrap_or_else(|| "-".into()),
                r.status.clone(),
                r.records_in.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                r.records_out.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                r.error.clone().unwrap_or_default().chars().take(80).collect(),
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
                "error"
            ],
            &cells
        )
    );
    Ok(())
}
