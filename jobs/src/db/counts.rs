//! How many rows the platform's tables hold, for `weatherflow status`, `/api/v1/status` and the
//! dashboard: exact counts on small tables, the planner's estimate on large ones, so the answer
//! stays instant on a large history. No count here scans a large table: the estimate comes from the
//! planner, which sums the partitions and scales each to its size on disk whether or not it was ever
//! analysed, and an exact count is only tried below [`EXACT_BELOW`] rows and gives up after
//! [`EXACT_BUDGET`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait};

use crate::envelope::Source;

/// The tables counted, in the order data flows into them.
pub const COUNTED_TABLES: [&str; 4] = [
    "observations",
    "rejected_records",
    "regression_results",
    "job_runs",
];

/// Tables the planner believes smaller than this are counted exactly (`count(*)`); larger ones show
/// the planner's estimate.
pub const EXACT_BELOW: i64 = 1_000_000;

/// The longest an exact count may take (a server-side statement timeout); past it the estimate is
/// shown. It bounds the count when the planner's estimate was far too low.
pub const EXACT_BUDGET: Duration = Duration::from_millis(1500);

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
        let estimate = row_estimate(db, table).await?;
        let exact = if estimate < EXACT_BELOW {
            bounded_count(db, &format!("SELECT count(*) FROM {table}"), &[]).await?
        } else {
            None
        };
        let (rows, estimated) = exact.map_or((estimate, true), |n| (n, false));
        out.push(TableCount {
            table,
            rows,
            estimated,
        });
    }
    Ok(out)
}

/// The planner's row estimate of `table` (one of the platform's tables, never input): what it
/// expects a scan of the whole table to return. For a partitioned table it is the sum over the
/// partitions, each from its statistics scaled to its current size on disk, or from its size alone
/// when it was never analysed. A partitioned parent's own `pg_class.reltuples` is no use: autovacuum
/// never refreshes it.
pub async fn row_estimate(db: &DatabaseConnection, table: &str) -> Result<i64, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("EXPLAIN (FORMAT JSON) SELECT 1 FROM {table}"),
        ))
        .await?
        .ok_or_else(|| DbErr::Custom(format!("EXPLAIN of {table} returned no row")))?;
    let plan: serde_json::Value = row.try_get_by_index(0)?;
    let rows = plan[0]["Plan"]["Plan Rows"]
        .as_f64()
        .ok_or_else(|| DbErr::Custom(format!("EXPLAIN of {table} has no row estimate: {plan}")))?;
    Ok(rows.max(0.0).round() as i64)
}

/// The single count `sql` returns, or `None` when it takes longer than [`EXACT_BUDGET`]: the server
/// cancels it (SQLSTATE 57014) and the caller shows the estimate instead.
async fn bounded_count(
    db: &DatabaseConnection,
    sql: &str,
    values: &[sea_orm::Value],
) -> Result<Option<i64>, DbErr> {
    let txn = db.begin().await?;
    txn.execute_unprepared(&format!(
        "SET LOCAL statement_timeout = {}",
        EXACT_BUDGET.as_millis()
    ))
    .await?;
    let stmt = Statement::from_sql_and_values(DbBackend::Postgres, sql, values.iter().cloned());
    match txn.query_one_raw(stmt).await {
        Ok(row) => {
            let n = row
                .map(|r| r.try_get_by_index::<i64>(0))
                .transpose()?
                .ok_or_else(|| DbErr::Custom(format!("{sql} returned no row")))?;
            txn.commit().await?;
            Ok(Some(n))
        }
        Err(e) if is_cancelled(&e) => {
            tracing::debug!(%sql, budget_ms = EXACT_BUDGET.as_millis() as u64, "exact count over budget: showing the estimate");
            txn.rollback().await?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Whether `e` is the server's statement timeout (57014, query_canceled).
fn is_cancelled(e: &DbErr) -> bool {
    let (DbErr::Query(sea_orm::RuntimeErr::SqlxError(err))
    | DbErr::Exec(sea_orm::RuntimeErr::SqlxError(err))) = e
    else {
        return false;
    };
    matches!(
        err.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("57014")
    )
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
    let large = row_estimate(db, "observations").await? >= EXACT_BELOW;
    // A catalog read: wanted when large, or when an exact count runs over its budget.
    let mut estimates = std::collections::HashMap::new();
    for row in db
        .query_all_raw(Statement::from_string(DbBackend::Postgres, SOURCE_ESTIMATES))
        .await?
    {
        estimates.insert(
            row.try_get_by_index::<String>(0)?,
            row.try_get_by_index::<i64>(1)?,
        );
    }
    let mut out = Vec::with_capacity(SOURCES.len());
    for source in SOURCES {
        let exact = if large {
            None
        } else {
            let sql = "SELECT count(*) FROM observations WHERE source = $1";
            bounded_count(db, sql, &[source.as_str().into()]).await?
        };
        let (rows, estimated) = match exact {
            Some(n) => (n, false),
            None => (estimates.get(source.as_str()).copied().unwrap_or(0), true),
        };
        let newest = db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT max(observed_at) FROM observations WHERE source = $1",
                [source.as_str().into()],
            ))
            .await?
            .map(|r| r.try_get_by_index::<Option<DateTime<Utc>>>(0))
            .transpose()?
            .flatten();
        out.push(SourceCount {
            source,
            rows,
            estimated,
            newest,
        });
    }
    Ok(out)
}
