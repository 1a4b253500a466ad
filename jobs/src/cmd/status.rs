//! `weatherflow status`: last runs, paused jobs, next fire times, data freshness, consumer lag, row counts (observations per
//! source too), write refusals. The reads live below the faces (`runs`, `kafka`, `db`); this
//! command only formats.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::table::{self, Format};
use crate::config::Config;
use crate::db::{self, EXACT_BELOW, SourceCount, TableCount};
use crate::kafka::{self, PartitionLag};
use crate::runs::{self, JobName};
use crate::scheduler::schedules::{Schedules, Timing};

/// What the consumer-lag read found: the partitions, `None` when the topic does not exist yet, or
/// why Kafka could not be read.
type LagRead = Result<Option<Vec<PartitionLag>>, String>;

/// Prints the platform's status. Kafka being unreachable or the schedules file being invalid is shown,
/// not fatal: status is what one runs when something is wrong.
pub async fn run(config: &Config, format: Format) -> anyhow::Result<()> {
    let conn = db::connect(&config.database).await?;
    let now = Utc::now();
    let schedules = crate::scheduler::schedules::load(config, None);
    let latest = runs::latest_per_job(&conn).await?;
    let kcfg = config.kafka.clone();
    let lag: LagRead = tokio::task::spawn_blocking(move || {
        // A refused password or certificate: say so at once instead of after the lag requests' timeout.
        if kafka::is_secured(&kcfg) {
            kafka::probe(&kcfg).map_err(|e| e.to_string())?;
        }
        kafka::consumer_lag(&kcfg).map_err(|e| e.to_string())
    })
    .await?;
    let counts = db::table_counts(&conn).await?;
    let sources = db::source_counts(&conn).await?;
    let refusals = db::write_refusals(&conn).await.map_err(|e| e.to_string());
    let operating = Operating::read(&conn, config, &lag).await?;
    if format != Format::Table {
        let doc = document(config, now, schedules.as_ref(), &latest, &lag, &counts, &sources, &refusals);
        let doc = operating.add_to(doc);
        return match format {
            Format::Csv => table::emit(&table::csv_pairs(&doc)),
            _ => table::print_json(&doc),
        };
    }

    println!("jobs:");
    print!("{}", jobs_table(&latest, schedules.as_ref().ok(), now));
    if let Err(e) = &schedules {
        println!("  (next fire times unknown: {e:#})");
    }
    print!("{}", pauses_text(&operating.pauses, now));
    if let Some(text) = latest
        .iter()
        .find(|r| r.job == JobName::Fetch)
        .and_then(fetch_failures)
    {
        print!("{text}");
    }

    let k = &config.kafka;
    println!(
        "\nconsumer lag (group {}, topic {}):",
        k.consumer_group, k.observations_topic
    );
    match &lag {
        Ok(None) => println!(
            "  topic {} does not exist yet (nothing fetched so far)",
            k.observations_topic
        ),
        Ok(Some(parts)) => print!("{}", lag_table(parts)),
        Err(e) => println!("  kafka unreachable ({}): {e}", k.bootstrap_servers),
    }

    println!("\ndata freshness (what the nightly fit would use):");
    match &operating.freshness {
        Ok(f) => {
            let verdict = if f.stale() { "STALE" } else { "ok" };
            println!("  {verdict}: {}", f.reason());
        }
        Err(e) => println!("  not checked: {e}"),
    }

    println!("\ntables (exact count below {EXACT_BELOW} rows, ~estimate above):");
    print!("{}", counts_table(&counts));
    println!("\nobservations per source (never mixed: docs/schema.md, Provenance):");
    print!("{}", sources_table(&sources));

    println!("\nWeatherAPI calls (every process's, counted in api_calls):");
    match &operating.quota {
        Ok(usage) => println!("  {}", usage.line()),
        Err(e) => println!("  not read: {e}"),
    }

    println!("\ndatabase writes (as this user):");
    match refusals {
        Ok(refusals) if refusals.is_empty() => {
            println!("  ok: observations and rejected_records take inserts")
        }
        Ok(refusals) => {
            for r in refusals {
                println!("  REFUSED: {r}");
            }
            println!(
                "  the persist consumer waits and commits nothing until this is fixed \
                 (docs/operations.md, \"The database refuses writes\")"
            );
        }
        Err(e) => println!("  not checked: {e}"),
    }
    Ok(())
}

/// What status shows of how the platform is operated: the pauses, the data's freshness (with the
/// consumer lag read above), this month's WeatherAPI calls.
struct Operating {
    pauses: Vec<runs::pause::Pause>,
    freshness: Result<crate::jobs::analytics::freshness::Freshness, String>,
    quota: Result<crate::quota::Usage, String>,
}

impl Operating {
    async fn read(conn: &sea_orm::DatabaseConnection, config: &Config, lag: &LagRead) -> anyhow::Result<Self> {
        let lag_total = match lag {
            Ok(Some(parts)) => Some(parts.iter().map(PartitionLag::lag).sum()),
            _ => None,
        };
        let freshness = crate::jobs::analytics::freshness::freshness(conn, config)
            .await
            .map(|mut f| {
                f.lag = lag_total;
                f
            })
            .map_err(|e| e.to_string());
        Ok(Self {
            pauses: runs::pause::all(conn).await?,
            freshness,
            quota: crate::quota::usage(conn, &config.weatherapi)
                .await
                .map_err(|e| e.to_string()),
        })
    }

    /// `paused`, `freshness` and `weatherapi_calls` in the JSON document.
    fn add_to(&self, mut doc: Value) -> Value {
        doc["paused"] = json!(self.pauses);
        doc["freshness"] = match &self.freshness {
            Ok(f) => f.to_json(),
            Err(e) => json!({ "error": e }),
        };
        doc["weatherapi_calls"] = match &self.quota {
            Ok(u) => json!(u),
            Err(e) => json!({ "error": e }),
        };
        doc
    }
}

/// The status as one JSON document (`--format json`; docs/cli-formats.md lists its fields).
#[allow(clippy::too_many_arguments)]
fn document(
    config: &Config,
    now: DateTime<Utc>,
    schedules: Result<&Schedules, &anyhow::Error>,
    latest: &[entity::job_runs::Model],
    lag: &LagRead,
    counts: &[TableCount],
    sources: &[SourceCount],
    refusals: &Result<Vec<String>, String>,
) -> Value {
    let jobs: Vec<Value> = JobName::ALL
        .iter()
        .map(|&job| {
            let last = latest.iter().find(|r| r.job == job).map(|r| {
                json!({
                    "id": r.id, "trigger": r.trigger.to_string(), "status": r.status.to_string(),
                    "started_at": r.started_at, "finished_at": r.finished_at, "error": r.error,
                })
            });
            let timing = match (job, schedules) {
                (JobName::Fetch, Ok(s)) => Some(&s.fetch.timing),
                (JobName::Analytics, Ok(s)) => Some(&s.analytics.timing),
                (JobName::Maintenance, Ok(s)) => Some(&s.maintenance),
                _ => None,
            };
            let (schedule, next) = match (job, timing) {
                (JobName::Persist, _) => ("continuous", None),
                (JobName::Redrive | JobName::Replay, _) => ("on_demand", None),
                (_, None) => ("unknown", None),
                (_, Some(t)) if !t.enabled => ("disabled", None),
                (_, Some(t)) => ("scheduled", crate::scheduler::next_fire(t, now)),
            };
            json!({ "job": job.as_str(), "last_run": last, "schedule": schedule, "next_fire": next })
        })
        .collect();
    let k = &config.kafka;
    let (state, partitions, error) = match lag {
        Ok(None) => ("no_topic", &[][..], None),
        Ok(Some(p)) => ("ok", p.as_slice(), None),
        Err(e) => ("unreachable", &[][..], Some(e)),
    };
    let total: i64 = partitions.iter().map(PartitionLag::lag).sum();
    let partitions: Vec<Value> = partitions
        .iter()
        .map(|p| json!({ "partition": p.partition, "committed": p.committed, "end": p.high, "lag": p.lag() }))
        .collect();
    json!({
        "now": now,
        "jobs": jobs,
        "schedules_error": schedules.err().map(|e| format!("{e:#}")),
        "consumer_lag": {
            "topic": k.observations_topic, "group": k.consumer_group, "state": state,
            "total": total, "partitions": partitions, "error": error,
        },
        "tables": counts.iter().map(|c| json!({ "table": c.table, "rows": c.rows, "estimated": c.estimated })).collect::<Vec<_>>(),
        "sources": sources.iter().map(|c| json!({
            "source": c.source.as_str(), "rows": c.rows, "estimated": c.estimated, "newest": c.newest,
        })).collect::<Vec<_>>(),
        "write_refusals": refusals.as_ref().ok(),
        "write_check_error": refusals.as_ref().err(),
    })
}

fn jobs_table(
    latest: &[entity::job_runs::Model],
    schedules: Option<&Schedules>,
    now: DateTime<Utc>,
) -> String {
    let cells = JobName::ALL
        .iter()
        .map(|&job| {
            let last = latest.iter().find(|r| r.job == job);
            let next = match (job, schedules) {
                (JobName::Persist, _) => "continuous (consumer)".to_owned(),
                (JobName::Redrive | JobName::Replay, _) => "on demand".to_owned(),
                (JobName::Fetch, Some(s)) => next_fire(&s.fetch.timing, now),
                (JobName::Analytics, Some(s)) => next_fire(&s.analytics.timing, now),
                (JobName::Maintenance, Some(s)) => next_fire(&s.maintenance, now),
                (_, None) => "-".to_owned(),
            };
            match last {
                Some(r) => vec![
                    job.to_string(),
                    format!("#{}", r.id),
                    r.trigger.to_string(),
                    r.status.to_string(),
                    r.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    format!("{} ago", age(now - r.started_at)),
                    next,
                ],
                None => vec![
                    job.to_string(),
                    "never".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    next,
                ],
            }
        })
        .collect::<Vec<_>>();
    table::render(
        &[
            "job",
            "last run",
            "trigger",
            "status",
            "started (UTC)",
            "age",
            "next fire (UTC)",
        ],
        &cells,
    )
}

/// The failed locations of the last fetch run, one a line; `None` when none failed. A failed run
/// keeps its per-location outcomes in its error, a finished one in `details.locations`.
fn fetch_failures(run: &entity::job_runs::Model) -> Option<String> {
    if run.status == runs::RunStatus::Failed {
        let error = run.error.as_deref().unwrap_or("no error recorded");
        return Some(format!("  last fetch run #{} failed: {error}\n", run.id));
    }
    let locations = run.details.as_ref()?.get("locations")?.as_array()?;
    let lines: String = locations
        .iter()
        .filter(|l| l["status"] == "failed")
        .map(|l| {
            let query = l["query"].as_str().unwrap_or("?");
            let reason = l["reason"].as_str().unwrap_or("no reason given");
            format!("    {query}: {reason}\n")
        })
        .collect();
    (!lines.is_empty()).then(|| format!("  failed locations of fetch run #{}:\n{lines}", run.id))
}

/// The paused jobs, one a line with who, since when and why; nothing when none is paused.
fn pauses_text(pauses: &[runs::pause::Pause], now: DateTime<Utc>) -> String {
    pauses
        .iter()
        .map(|p| {
            let how = if p.auto { " (auto-paused)" } else { "" };
            format!(
                "  PAUSED {}{how}: {} ({} ago); `weatherflow resume {}` lifts it\n",
                p.job,
                p.describe(),
                age(now - p.paused_at),
                p.job
            )
        })
        .collect()
}

fn next_fire(timing: &Timing, now: DateTime<Utc>) -> String {
    if !timing.enabled {
        return "disabled".into();
    }
    match crate::scheduler::next_fire(timing, now) {
        Some(at) => format!("{} (in {})", runs::tick_text(at), age(at - now)),
        None => "never".into(),
    }
}

/// A duration for humans: the two largest units, e.g. `3m 12s`, `2h 5m`, `4d 1h`.
pub fn age(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, _) => format!("{mins}m {secs}s"),
        (0, _, _) => format!("{hours}h {mins}m"),
        _ => format!("{days}d {hours}h"),
    }
}

fn lag_table(parts: &[PartitionLag]) -> String {
    let mut cells: Vec<Vec<String>> = parts
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                p.committed.map_or_else(|| "none".into(), |c| c.to_string()),
                p.high.to_string(),
                p.lag().to_string(),
            ]
        })
        .collect();
    let total: i64 = parts.iter().map(PartitionLag::lag).sum();
    cells.push(vec![
        "total".into(),
        String::new(),
        String::new(),
        total.to_string(),
    ]);
    table::render(&["partition", "committed", "end offset", "lag"], &cells)
}

fn counts_table(counts: &[TableCount]) -> String {
    let cells: Vec<Vec<String>> = counts
        .iter()
        .map(|c| vec![c.table.to_owned(), approximate(c.rows, c.estimated)])
        .collect();
    table::render(&["table", "rows"], &cells)
}

fn sources_table(counts: &[SourceCount]) -> String {
    let cells: Vec<Vec<String>> = counts
        .iter()
        .map(|c| {
            let newest = c
                .newest
                .map_or_else(|| "-".to_owned(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string());
            vec![
                c.source.as_str().to_owned(),
                approximate(c.rows, c.estimated),
                newest,
            ]
        })
        .collect();
    table::render(&["source", "rows", "newest observation"], &cells)
}

/// A row count as shown: `~` marks the planner's estimate.
fn approximate(rows: i64, estimated: bool) -> String {
    if estimated {
        format!("~{rows}")
    } else {
        rows.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        let s = chrono::Duration::seconds;
        assert_eq!(age(s(42)), "42s");
        assert_eq!(age(s(3 * 60 + 12)), "3m 12s");
        assert_eq!(age(s(2 * 3600 + 5 * 60 + 9)), "2h 5m");
        assert_eq!(age(s(4 * 86_400 + 3600)), "4d 1h");
        assert_eq!(age(s(-5)), "0s");
    }
}
