//! The monthly partitions of `observations` (see docs/schema.md), kept by the maintenance job
//! ([`crate::jobs::maintenance`]): it creates them ahead of time and, when
//! `maintenance.retention_months` is set, drops the old ones.
//!
//! A partition is named `observations_yYYYYmMM` and holds that UTC month. Rows of a month without a
//! partition land in `observations_default`; maintenance moves them into their month's partition as
//! it creates it, so the default partition is a safety net, normally empty.
//!
//! Safe beside the persist writers and idempotent:
//! - Creation runs in one transaction that first takes `SHARE UPDATE EXCLUSIVE` on `observations`
//!   (which writers' `ROW EXCLUSIVE` does not conflict with, but a second maintenance run does, so
//!   runs queue instead of racing), lists the partitions, and builds each missing one as a plain
//!   table, fills it from the default partition, and attaches it. Only the default partition is
//!   locked exclusively, for as long as the move takes; writers to any month partition go on.
//! - Dropping needs `ACCESS EXCLUSIVE` on `observations`, so it is a second, short transaction that
//!   takes that lock first (never upgrading a weaker one, which could deadlock with a writer).
//! - Both wait at most [`LOCK_TIMEOUT`] for their locks, so a long reader cannot make the writers
//!   queue behind a waiting maintenance; a timeout fails the step, and the next run does the work.
//! - A run recomputes what is missing or expired after taking its lock: running it again, or twice
//!   at once, does nothing more.

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{AssertSqlSafe, PgPool, Row};

/// The partitioned table.
const PARENT: &str = "observations";

/// Its default partition, made by the partitioning migration.
pub const DEFAULT_PARTITION: &str = "observations_default";

/// How long maintenance waits for a table lock before it gives up for this run.
pub const LOCK_TIMEOUT: &str = "5s";

/// The partitions of `observations` and their bounds, with the default partition, if any.
const LIST_PARTITIONS: &str = "SELECT c.relname::text AS name, pg_get_expr(c.relpartbound, c.oid) AS bound \
     FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
     WHERE i.inhparent = 'observations'::regclass";

/// The UTC months that rows in the default partition belong to.
const DEFAULT_MONTHS: &str = "SELECT DISTINCT date_trunc('month', observed_at AT TIME ZONE 'UTC')::date AS month \
     FROM observations_default";

/// What one maintenance run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Maintenance {
    /// Partitions created, oldest first.
    pub created: Vec<String>,
    /// Rows moved from the default partition into the partitions created.
    pub moved_from_default: u64,
    /// Partitions dropped for retention, oldest first.
    pub dropped: Vec<String>,
    /// Rows older than the retention deleted from the default partition.
    pub deleted_from_default: u64,
}

/// What maintenance keeps: partitions ahead of time, and how many months of history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Partitions exist for the current month and this many months after it.
    pub months_ahead: u32,
    /// Keep the current month and this many before it; `None` keeps everything.
    pub retention_months: Option<u32>,
}

/// Why maintenance did not complete.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// `observations` is a plain table (the partitioning migration is not applied).
    #[error("observations is not partitioned; run `weatherflow migrate up`")]
    NotPartitioned,
    /// A statement failed, or a lock was not granted within [`LOCK_TIMEOUT`].
    #[error("partition maintenance failed while {step}: {source}")]
    Database {
        /// What was being done.
        step: &'static str,
        /// The server's error.
        source: sqlx::Error,
    },
}

impl From<MaintenanceError> for crate::job_error::JobError {
    fn from(e: MaintenanceError) -> Self {
        match e {
            // Another attempt finds the table just as unpartitioned.
            MaintenanceError::NotPartitioned => Self::fatal(e),
            // A lock not granted in time, or the server away: worth another attempt.
            MaintenanceError::Database { .. } => Self::retryable(e),
        }
    }
}

/// `Result::map_err` helper naming the step.
fn at(step: &'static str) -> impl FnOnce(sqlx::Error) -> MaintenanceError {
    move |source| MaintenanceError::Database { step, source }
}

/// The first day of the UTC month of `t`.
pub fn month_of(t: DateTime<Utc>) -> NaiveDate {
    month_of_date(t.date_naive())
}

/// `observations_yYYYYmMM` for the month starting `month`.
pub fn partition_name(month: NaiveDate) -> String {
    format!("observations_y{:04}m{:02}", month.year(), month.month())
}

/// The month a partition name stands for, if it is a month partition's name.
fn parse_name(name: &str) -> Option<NaiveDate> {
    let rest = name.strip_prefix("observations_y")?;
    let (year, month) = rest.split_once('m')?;
    if year.len() != 4 || month.len() != 2 {
        return None;
    }
    NaiveDate::from_ymd_opt(year.parse().ok()?, month.parse().ok()?, 1)
}

/// `month` plus `n` months (saturating at the calendar's end, which no partition reaches).
fn add_months(month: NaiveDate, n: u32) -> NaiveDate {
    month.checked_add_months(Months::new(n)).unwrap_or(month)
}

/// A month's bounds as timestamptz literals in UTC: `[start, next month's start)`.
fn bounds(month: NaiveDate) -> (String, String) {
    let next = add_months(month, 1);
    (format!("{month} 00:00:00+00"), format!("{next} 00:00:00+00"))
}

/// Runs maintenance for `now`: creates the partitions of the current month and the
/// `policy.months_ahead` months after it, and of every month with rows in the default partition,
/// then applies the retention.
pub async fn maintain(
    pool: &PgPool,
    now: DateTime<Utc>,
    policy: Policy,
) -> Result<Maintenance, MaintenanceError> {
    let this_month = month_of(now);
    let cutoff = policy.retention_months.map(|keep| {
        this_month
            .checked_sub_months(Months::new(keep))
            .unwrap_or(this_month)
    });
    let mut done = Maintenance::default();
    let ahead = (0..=policy.months_ahead)
        .map(|i| add_months(this_month, i))
        .collect();
    create(pool, ahead, cutoff, &mut done).await?;
    if let Some(cutoff) = cutoff {
        drop_before(pool, cutoff, &mut done).await?;
    }
    if !done.created.is_empty() || !done.dropped.is_empty() || done.deleted_from_default > 0 {
        tracing::info!(
            created = ?done.created,
            moved_from_default = done.moved_from_default,
            dropped = ?done.dropped,
            deleted_from_default = done.deleted_from_default,
            "observations partitions maintained"
        );
    }
    Ok(done)
}

/// The existing month partitions (sorted) and whether the default partition exists. Fails with
/// [`MaintenanceError::NotPartitioned`] on a plain table.
async fn list(conn: &mut sqlx::PgConnection) -> Result<(Vec<NaiveDate>, bool), MaintenanceError> {
    let partitioned: bool =
        sqlx::query_scalar("SELECT relkind = 'p' FROM pg_class WHERE oid = 'observations'::regclass")
            .fetch_one(&mut *conn)
            .await
            .map_err(at("reading the table kind"))?;
    if !partitioned {
        return Err(MaintenanceError::NotPartitioned);
    }
    let rows = sqlx::query(LIST_PARTITIONS)
        .fetch_all(&mut *conn)
        .await
        .map_err(at("listing partitions"))?;
    let mut months = Vec::new();
    let mut has_default = false;
    for row in rows {
        let name: String = row.try_get("name").map_err(at("listing partitions"))?;
        let bound: String = row.try_get("bound").map_err(at("listing partitions"))?;
        if bound == "DEFAULT" {
            has_default = true;
        } else if let Some(month) = parse_name(&name) {
            months.push(month);
        }
    }
    months.sort();
    Ok((months, has_default))
}

/// `SET LOCAL ROLE` to the owner of `observations` when the session's user is not the owner but
/// may become it; no row otherwise.
const SET_OWNER_ROLE: &str = "SELECT format('SET LOCAL ROLE %I', pg_get_userbyid(c.relowner)) \
     FROM pg_class c WHERE c.oid = 'observations'::regclass \
     AND pg_get_userbyid(c.relowner) <> current_user AND pg_has_role(c.relowner, 'MEMBER')";

/// Starts a transaction with [`LOCK_TIMEOUT`] and takes `lock` on `observations`.
async fn begin_locked(
    pool: &PgPool,
    lock: &'static str,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, MaintenanceError> {
    let mut tx = pool.begin().await.map_err(at("opening a transaction"))?;
    sqlx::query(AssertSqlSafe(format!(
        "SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"
    )))
    .execute(&mut *tx)
    .await
    .map_err(at("setting lock_timeout"))?;
    // Only the owner may create, attach and drop partitions. A service role (the scheduler's, see
    // db::grants) is a member of the owner without inheriting its rights: this transaction, and no
    // other, acts as the owner.
    let become_owner: Option<(String,)> = sqlx::query_as(SET_OWNER_ROLE)
        .fetch_optional(&mut *tx)
        .await
        .map_err(at("finding the owner of observations"))?;
    if let Some((set_role,)) = become_owner {
        sqlx::query(AssertSqlSafe(set_role))
            .execute(&mut *tx)
            .await
            .map_err(at("acting as the owner of observations"))?;
    }
    sqlx::query(AssertSqlSafe(format!("LOCK TABLE {PARENT} IN {lock} MODE")))
        .execute(&mut *tx)
        .await
        .map_err(at("locking observations"))?;
    Ok(tx)
}

/// Creates the partitions of the months from `first` to `last` (first days of months) that are
/// missing, as maintenance does (moving any rows of theirs out of the default partition). For
/// loading history into months maintenance would not make, as `weatherflow bench analytics
/// --history-rows` does.
pub async fn create_months(
    pool: &PgPool,
    first: NaiveDate,
    last: NaiveDate,
) -> Result<Maintenance, MaintenanceError> {
    let (mut months, mut m) = (Vec::new(), month_of_date(first));
    while m <= last {
        months.push(m);
        m = add_months(m, 1);
    }
    let mut done = Maintenance::default();
    create(pool, months, None, &mut done).await?;
    Ok(done)
}

/// The first day of `d`'s month.
fn month_of_date(d: NaiveDate) -> NaiveDate {
    NaiveDate::from_ymd_opt(d.year(), d.month(), 1).unwrap_or(d)
}

/// Creates the missing partitions among `wanted` and those of the months found in the default
/// partition (not older than `cutoff`), moving their rows over.
async fn create(
    pool: &PgPool,
    mut wanted: Vec<NaiveDate>,
    cutoff: Option<NaiveDate>,
    done: &mut Maintenance,
) -> Result<(), MaintenanceError> {
    let mut tx = begin_locked(pool, "SHARE UPDATE EXCLUSIVE").await?;
    let (existing, has_default) = list(&mut tx).await?;
    if has_default {
        let stray: Vec<NaiveDate> = sqlx::query_scalar(DEFAULT_MONTHS)
            .fetch_all(&mut *tx)
            .await
            .map_err(at("reading the default partition"))?;
        wanted.extend(stray.into_iter().filter(|m| cutoff.is_none_or(|c| *m >= c)));
    }
    wanted.sort();
    wanted.dedup();
    wanted.retain(|m| !existing.contains(m));
    if wanted.is_empty() {
        return Ok(());
    }
    if has_default {
        // ATTACH takes this lock anyway; taking it first makes the move and the attach one step for
        // writers, who cannot add rows of the month to the default partition in between.
        sqlx::query(AssertSqlSafe(format!(
            "LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE"
        )))
        .execute(&mut *tx)
        .await
        .map_err(at("locking the default partition"))?;
    }
    for month in wanted {
        let name = partition_name(month);
        let (from, to) = bounds(month);
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )))
        .execute(&mut *tx)
        .await
        .map_err(at("creating a partition"))?;
        if has_default {
            let moved = sqlx::query(AssertSqlSafe(format!(
                "WITH moved AS (DELETE FROM {DEFAULT_PARTITION} \
                 WHERE observed_at >= '{from}' AND observed_at < '{to}' RETURNING *) \
                 INSERT INTO {name} SELECT * FROM moved"
            )))
            .execute(&mut *tx)
            .await
            .map_err(at("moving rows out of the default partition"))?;
            done.moved_from_default += moved.rows_affected();
        }
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES FROM ('{from}') TO ('{to}')"
        )))
        .execute(&mut *tx)
        .await
        .map_err(at("attaching a partition"))?;
        done.created.push(name);
    }
    tx.commit().await.map_err(at("committing the new partitions"))
}

/// Drops the month partitions before `cutoff` and deletes the default partition's rows before it.
async fn drop_before(
    pool: &PgPool,
    cutoff: NaiveDate,
    done: &mut Maintenance,
) -> Result<(), MaintenanceError> {
    // Cheap look first: the exclusive lock is taken only when there is something to drop.
    let mut conn = pool.acquire().await.map_err(at("opening a connection"))?;
    let (months, has_default) = list(&mut conn).await?;
    let old_default_rows = has_default
        && sqlx::query_scalar::<_, bool>(AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {DEFAULT_PARTITION} WHERE observed_at < '{cutoff} 00:00:00+00')"
        )))
        .fetch_one(&mut *conn)
        .await
        .map_err(at("reading the default partition"))?;
    drop(conn);
    if !old_default_rows && months.first().is_none_or(|m| *m >= cutoff) {
        return Ok(());
    }
    let mut tx = begin_locked(pool, "ACCESS EXCLUSIVE").await?;
    let (months, has_default) = list(&mut tx).await?;
    for month in months.into_iter().filter(|m| *m < cutoff) {
        let name = partition_name(month);
        sqlx::query(AssertSqlSafe(format!("DROP TABLE {name}")))
            .execute(&mut *tx)
            .await
            .map_err(at("dropping a partition"))?;
        done.dropped.push(name);
    }
    if has_default {
        let deleted = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {DEFAULT_PARTITION} WHERE observed_at < '{cutoff} 00:00:00+00'"
        )))
        .execute(&mut *tx)
        .await
        .map_err(at("deleting old rows from the default partition"))?;
        done.deleted_from_default = deleted.rows_affected();
    }
    tx.commit().await.map_err(at("committing the retention"))
}

/// Creates `name` as an empty copy of `observations`: the same columns, indexes and partition bounds
/// (partitions `<name>_y2026m12`, …, `<name>_default`). `weatherflow bench persist` compares the
/// persist job against a binary COPY into it, so both write a partitioned table of the same shape.
/// `name` is a plain lower-case name chosen by the code.
#[cfg(feature = "bench")]
pub async fn create_partitioned_like(pool: &PgPool, name: &str) -> Result<(), MaintenanceError> {
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "{name:?} is not a plain table name"
    );
    let mut tx = pool.begin().await.map_err(at("opening a transaction"))?;
    list(&mut tx).await?;
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE {name} (LIKE {PARENT} INCLUDING ALL) PARTITION BY RANGE (observed_at)"
    )))
    .execute(&mut *tx)
    .await
    .map_err(at("creating the copy"))?;
    let rows = sqlx::query(LIST_PARTITIONS)
        .fetch_all(&mut *tx)
        .await
        .map_err(at("listing partitions"))?;
    for row in rows {
        let part: String = row.try_get("name").map_err(at("listing partitions"))?;
        // A bound as PostgreSQL prints it: `FOR VALUES FROM (…) TO (…)` or `DEFAULT`.
        let bound: String = row.try_get("bound").map_err(at("listing partitions"))?;
        let suffix = part.strip_prefix("observations_").unwrap_or(&part);
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {name}_{suffix} PARTITION OF {name} {bound}"
        )))
        .execute(&mut *tx)
        .await
        .map_err(at("creating a partition of the copy"))?;
    }
    tx.commit().await.map_err(at("committing the copy"))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn names_and_bounds_are_utc_months() {
        let t = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        let m = month_of(t);
        assert_eq!(partition_name(m), "observations_y2026m12");
        assert_eq!(
            bounds(m),
            ("2026-12-01 00:00:00+00".into(), "2027-01-01 00:00:00+00".into())
        );
        assert_eq!(parse_name("observations_y2026m12"), Some(m));
        assert_eq!(parse_name("observations_default"), None);
        assert_eq!(parse_name("observations_y2026m13"), None);
        assert_eq!(add_months(m, 2), NaiveDate::from_ymd_opt(2027, 2, 1).unwrap());
    }
}
