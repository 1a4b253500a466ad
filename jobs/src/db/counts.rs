//! How many rows the platform's tables hold, for `weatherflow status`, `/api/v1/status` and the
//! dashboard: exact counts on small tables, the planner's estimate on large ones, so the answer
//! stays instant on a large history.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};

use crate::envelope::Source;

/// The tables counted, in the order data flows into them.
pub const COUNTED_TABLES: [&str; 4] = [
    "observations",
    "rejected_records",
    "regression_results",
    "job_runs",
];

/// Tables the planner believes smaller than this are counted exactly (`count(*)`); larger ones show
/// the planner's estimate (`pg_class.reltuples`, refreshed by autovacuum).
pub const EXACT_BELOW: i64 = 1_000_000;

/// The rows of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    /// One of [`COUNTED_TABLES`].
    pub table: &'static str,
    /// The rows: exact, or the planner's estimate when `estimated`.
    pub rows: i64,
    /// Whether `rows` is the planner's estimate (the table holds [`EXACT_BELOW`] rows or more).
    pub estimated: bool,
}

/// The rows of each of [`COUNTED_TABLES`], in that order.
pub async fn table_counts(db: &DatabaseConnection) -> Result<Vec<TableCount>, DbErr> {
    let mut out = Vec::with_capacity(COUNTED_TABLES.len());
    for table in COUNTED_TABLES {
        let (rows, estimated) = match row_estimate(db, table).await? {
            Some(n) if n >= EXACT_BELOW => (n, true),
            _ => (exact(db, table).await?, false),
        };
        out.push(TableCount {
            table,
            rows,
            estimated,
        });
    }
    Ok(out)
}

/// The planner's row estimate of `table`; `None` when the table was never analysed.
pub async fn row_estimate(db: &DatabaseConnection, table: &str) -> Result<Option<i64>, DbErr> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)",
            [table.into()],
        ))
        .await?;
    let n = row.map(|r| r.try_get_by_index::<i64>(0)).transpose()?;
    Ok(n.filter(|n| *n >= 0))
}

async fn exact(db: &DatabaseConnection, table: &'static str) -> Result<i64, DbErr> {
    // `table` is one of COUNTED_TABLES, never input.
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT count(*) FROM {table}"),
        ))
        .await?
        .ok_or_else(|| DbErr::Custom(format!("count of {table} returned no row")))?;
    row.try_get_by_index::<i64>(0)
}

/// The sources `observations` can hold, as stored.
const SOURCES: [Source; 2] = [Source::Weatherapi, Source::Simulated];

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

/// The observations of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceCount {
    /// The source.
    pub source: Source,
    /// Its rows: exact, or the planner's estimate when `estimated`.
    pub rows: i64,
    /// Whether `rows` is the planner's estimate (`observations` holds [`EXACT_BELOW`] rows or more).
    pub estimated: bool,
    /// Its newest observation's time; `None` when it has none.
    pub newest: Option<DateTime<Utc>>,
}

/// The rows of each source in `observations` and its newest observation time: exact counts below
/// [`EXACT_BELOW`] rows (an index-only scan of `(source, observed_at)`), the planner's estimate
/// above; the newest time is one probe of that index per partition.
pub async fn source_counts(db: &DatabaseConnection) -> Result<Vec<SourceCount>, DbErr> {
    let large = row_estimate(db, "observations")
        .await?
        .is_some_and(|n| n >= EXACT_BELOW);
    let mut estimates = std::collections::HashMap::new();
    if large {
        for row in db
            .query_all_raw(Statement::from_string(DbBackend::Postgres, SOURCE_ESTIMATES))
            .await?
        {
            estimates.insert(
                row.try_get_by_index::<String>(0)?,
                row.try_get_by_index::<i64>(1)?,
            );
        }
    }
    let mut out = Vec::with_capacity(SOURCES.len());
    for source in SOURCES {
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT CASE WHEN $2 THEN NULL ELSE (SELECT count(*) FROM observations WHERE source = $1) END, \
                 (SELECT max(observed_at) FROM observations WHERE source = $1)",
                [source.as_str().into(), large.into()],
            ))
            .await?
            .ok_or_else(|| DbErr::Custom("the per-source count returned no row".into()))?;
        let (rows, estimated) = match row.try_get_by_index::<Option<i64>>(0)? {
            Some(n) => (n, false),
            None => (estimates.get(source.as_str()).copied().unwrap_or(0), true),
        };
        out.push(SourceCount {
            source,
            rows,
            estimated,
            newest: row.try_get_by_index::<Option<DateTime<Utc>>>(1)?,
        });
    }
    Ok(out)
}
