//! `weatherflow status`: last runs, next fire times, consumer lag, row counts (observations per
//! source too).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};

use super::table;
use crate::config::{Config, KafkaConfig};
use crate::runs::JobName;
use crate::scheduler::schedules::{Schedules, Timing};
use crate::{db, kafka, runs};

/// The tables `status` counts, in the order data flows into them.
const TABLES: [&str; 4] = [
    "observations",
    "rejected_records",
    "regression_results",
    "job_runs",
];

/// Tables the planner believes smaller than this are counted exactly (`count(*)`); larger ones show the
/// planner's estimate (`pg_class.reltuples`, refreshed by autovacuum), so `status` stays instant on a
/// large history.
const EXACT_BELOW: i64 = 1_000_000;

/// Prints the platform's status. Kafka being unreachable or the schedules file being invalid is shown,
/// not fatal: status is what one runs when something is wrong.
pub async fn run(config: &Config) -> anyhow::Result<()> {
    let conn = db::connect(&config.database).await?;
    let now = Utc::now();
    let schedules = crate::scheduler::schedules::load(config, None);

    println!("jobs:");
    print!("{}", jobs_table(&conn, schedules.as_ref().ok(), now).await?);
    if let Err(e) = &schedules {
        println!("  (next fire times unknown: {e:#})");
    }
    let latest = runs::latest_per_job(&conn).await?;
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
    let kcfg = k.clone();
    let lag = tokio::task::spawn_blocking(move || {
        // A refused password or certificate: say so at once instead of after the lag requests' timeout.
        if crate::kafka_security::is_secured(&kcfg) {
            crate::kafka_security::probe(&kcfg).map_err(|e| e.to_string())?;
        }
        consumer_lag(&kcfg).map_err(|e| e.to_string())
    });
    match lag.await? {
        Ok(None) => println!(
            "  topic {} does not exist yet (nothing fetched so far)",
            k.observations_topic
        ),
        Ok(Some(parts)) => print!("{}", lag_table(&parts)),
        Err(e) => println!("  kafka unreachable ({}): {e}", k.bootstrap_servers),
    }

    println!("\ntables (exact count below {EXACT_BELOW} rows, ~estimate above):");
    print!("{}", counts_table(&conn).await?);
    println!("\nobservations per source (never mixed: docs/schema.md, Provenance):");
    print!("{}", sources_table(&conn).await?);

    println!("\ndatabase writes (as this user):");
    match write_refusals(&conn).await {
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

/// What keeps the persist writers' inserts from landing, as the server sees it for this user: a
/// read-only node, a missing INSERT grant, a lock that makes inserts wait. The consumer, a process of
/// its own, reports its outage on `/readyz` and the `weatherflow_persist_outage_seconds` gauge; this
/// is the same diagnosis from wherever `status` runs.
const WRITE_REFUSALS: &str = "\
SELECT r FROM (
  SELECT 1 AS o, 'the server is a standby in recovery (read-only)' AS r WHERE pg_is_in_recovery()
  UNION ALL SELECT 2, 'new transactions are read-only (default_transaction_read_only = on)'
    WHERE current_setting('default_transaction_read_only') = 'on'
  UNION ALL SELECT 3, format('no INSERT privilege on %s', t) FROM unnest(ARRAY['observations', 'rejected_records']) t
    WHERE to_regclass(t) IS NOT NULL AND NOT has_table_privilege(t, 'INSERT')
  UNION ALL SELECT 4, format('%s is locked %s by session %s for %s s: inserts wait', l.relation::regclass, l.mode,
      l.pid, round(extract(epoch FROM now() - a.xact_start)))
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.granted AND l.locktype = 'relation' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.relation IN (to_regclass('observations'), to_regclass('rejected_records'))
      AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
) x ORDER BY o, r";

async fn write_refusals(conn: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    let rows = conn
        .query_all_raw(Statement::from_string(DbBackend::Postgres, WRITE_REFUSALS))
        .await?;
    rows.iter().map(|r| r.try_get_by_index::<String>(0)).collect()
}

async fn jobs_table(
    conn: &DatabaseConnection,
    schedules: Option<&Schedules>,
    now: DateTime<Utc>,
) -> anyhow::Result<String> {
    let latest = runs::latest_per_job(conn).await?;
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
    Ok(table::render(
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
    ))
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

/// One partition of the observations topic, seen from the persist consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Partition id.
    pub partition: i32,
    /// The group's committed offset; `None` when it never committed on this partition.
    pub committed: Option<i64>,
    /// The oldest offset still on the partition.
    pub low: i64,
    /// The offset the next message will get.
    pub high: i64,
}

impl PartitionLag {
    /// Messages the group has still to consume (from the oldest kept one when it never committed).
    pub fn lag(&self) -> i64 {
        (self.high - self.committed.unwrap_or(self.low).max(self.low)).max(0)
    }
}

/// The persist group's lag on each partition of the observations topic; `None` when the topic does not
/// exist yet. Blocking: run it on a blocking thread. Metadata is asked for all topics, because asking
/// for one by name may create it on brokers with auto-creation on.
pub fn consumer_lag(cfg: &KafkaConfig) -> Result<Option<Vec<PartitionLag>>, KafkaError> {
    let consumer: BaseConsumer = kafka::base_config(cfg)
        .set("group.id", &cfg.consumer_group)
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(cfg.request_timeout_secs);
    let md = consumer.fetch_metadata(None, timeout)?;
    let Some(topic) = md.topics().iter().find(|t| t.name() == cfg.observations_topic) else {
        return Ok(None);
    };
    let mut tpl = TopicPartitionList::new();
    for p in topic.partitions() {
        tpl.add_partition(topic.name(), p.id());
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let mut parts = Vec::new();
    for elem in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(topic.name(), elem.partition(), timeout)?;
        let committed = match elem.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
        parts.push(PartitionLag {
            partition: elem.partition(),
            committed,
            low,
            high,
        });
    }
    parts.sort_by_key(|p| p.partition);
    Ok(Some(parts))
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

async fn counts_table(conn: &DatabaseConnection) -> Result<String, DbErr> {
    let mut cells = Vec::new();
    for t in TABLES {
        let count = match estimate(conn, t).await? {
            Some(n) if n >= EXACT_BELOW => format!("~{n}"),
            _ => exact(conn, t).await?.to_string(),
        };
        cells.push(vec![t.to_owned(), count]);
    }
    Ok(table::render(&["table", "rows"], &cells))
}

/// The sources `observations` can hold, as stored.
const SOURCES: [crate::envelope::Source; 2] = [
    crate::envelope::Source::Weatherapi,
    crate::envelope::Source::Simulated,
];

/// Rows of each source per the planner: each month partition's row estimate times the source's
/// frequency in that partition's statistics (a partitioned parent has no statistics of its own
/// unless analysed by hand; autovacuum analyses the partitions).
const SOURCE_ESTIMATES: &str = "\
SELECT s.source, sum(c.reltuples * s.freq)::int8
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_stats st ON st.schemaname = current_schema() AND st.tablename = c.relname
                AND st.attname = 'source' AND NOT st.inherited
CROSS JOIN LATERAL unnest(st.most_common_vals::text::text[], st.most_common_freqs) AS s(source, freq)
WHERE i.inhparent = to_regclass('observations') AND c.reltuples > 0
GROUP BY s.source";

/// The rows of each source in `observations` and its newest observation time: exact counts below
/// [`EXACT_BELOW`] rows (an index-only scan of `(source, observed_at)`), the planner's estimate
/// above; the newest time is one probe of that index per partition.
async fn sources_table(conn: &DatabaseConnection) -> Result<String, DbErr> {
    let large = estimate(conn, "observations")
        .await?
        .is_some_and(|n| n >= EXACT_BELOW);
    let mut estimates = std::collections::HashMap::new();
    if large {
        for row in conn
            .query_all_raw(Statement::from_string(DbBackend::Postgres, SOURCE_ESTIMATES))
            .await?
        {
            estimates.insert(
                row.try_get_by_index::<String>(0)?,
                row.try_get_by_index::<i64>(1)?,
            );
        }
    }
    let mut cells = Vec::new();
    for source in SOURCES {
        let row = conn
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT CASE WHEN $2 THEN NULL ELSE (SELECT count(*) FROM observations WHERE source = $1) END, \
                 (SELECT max(observed_at) FROM observations WHERE source = $1)",
                [source.as_str().into(), large.into()],
            ))
            .await?
            .ok_or_else(|| DbErr::Custom("the per-source count returned no row".into()))?;
        let rows = match row.try_get_by_index::<Option<i64>>(0)? {
            Some(n) => n.to_string(),
            None => format!("~{}", estimates.get(source.as_str()).copied().unwrap_or(0)),
        };
        let newest = row
            .try_get_by_index::<Option<DateTime<Utc>>>(1)?
            .map_or_else(|| "-".to_owned(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string());
        cells.push(vec![source.as_str().to_owned(), rows, newest]);
    }
    Ok(table::render(&["source", "rows", "newest observation"], &cells))
}

/// The planner's row estimate; `None` when the table was never analysed.
async fn estimate(conn: &DatabaseConnection, table: &str) -> Result<Option<i64>, DbErr> {
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)",
            [table.into()],
        ))
        .await?;
    let n = row.map(|r| r.try_get_by_index::<i64>(0)).transpose()?;
    Ok(n.filter(|n| *n >= 0))
}

async fn exact(conn: &DatabaseConnection, table: &str) -> Result<i64, DbErr> {
    // `table` is one of TABLES, never user input.
    let row = conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT count(*) FROM {table}"),
        ))
        .await?
        .ok_or_else(|| DbErr::Custom(format!("count of {table} returned no row")))?;
    row.try_get_by_index::<i64>(0)
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

    #[test]
    fn lag_counts_from_the_commit_or_the_oldest_message() {
        let p = |committed, low, high| PartitionLag {
            partition: 0,
            committed,
            low,
            high,
        };
        assert_eq!(p(Some(7), 0, 10).lag(), 3);
        assert_eq!(p(None, 4, 10).lag(), 6);
        // A commit older than retention keeps counts from what is still there.
        assert_eq!(p(Some(1), 4, 10).lag(), 6);
    }
}
