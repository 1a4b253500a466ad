//! Batched, idempotent writes of observations and rejections (owned by the persist job).
//!
//! One batch is one transaction: the observations upsert and the rejected_records insert together.
//! Only an error that depends on a row's content is about the rows: SQLSTATE class 22 (a data
//! exception), class 23 (an integrity constraint) and 54000 (an index row too large), the closed list
//! in [`retry::ROW_LEVEL`]. Then the batch is split in halves until the refusing rows are isolated;
//! those are quarantined as `db_rejected` with the server's message and the rest is stored
//! ([`isolate`], which also tells rows refused for their content from a database that refuses every
//! row the same way). Every other failure is an outage, whatever it is: the rows are retried with
//! backoff, never split, never quarantined, until they are stored or the job is stopped, and the
//! outage is reported (`/readyz`, the `weatherflow_persist_outage_seconds` gauge, the log). A
//! rejection row is never dropped: if rejected_records refuses it, that is an outage too.
//!
//! A batch is also cut, before it is written, into transactions of at most [`MAX_TX_BYTES`] of
//! observation and rejection data, so that neither the COPY buffer nor the rejected_records
//! statement comes near PostgreSQL's 1 GB limits.

mod copy;
mod isolate;
mod nodelay;
mod record;
mod rejections;
mod retry;
mod table;
mod unnest;

use std::collections::HashSet;
use std::ops::Range;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::jobs::persist::validate::{Rejection, RejectionClass};

pub(crate) use copy::copy_observations;
// The benchmarks build COPY data of their own, for the COPY the job is measured against.
#[cfg(feature = "bench")]
pub(crate) use copy::{copy_header, copy_trailer, encode_copy_row};
pub use isolate::Streak;
pub use record::{Lineage, Raw, RejectedRecord, ValidRecord};
use rejections::insert_rejections;
pub(crate) use retry::Outage;
use retry::cause_of;
pub(crate) use retry::{Failure, classify};
pub use retry::{Interrupted, Retry};
pub(crate) use table::{OBSERVATIONS, ObservationTable};
pub(crate) use unnest::insert_observations;

/// Sets TCP_NODELAY on the pool's sockets (see the `nodelay` module: a workaround for sqlx 0.9.0).
/// Call it after acquiring a connection, so that the connection is among them.
pub(crate) fn disable_nagle(pool: &PgPool) {
    nodelay::on_new_sockets_to(pool.connect_options().get_port(), pool.size());
}

/// The most observation and rejection bytes (estimated by [`Row::size`]) one transaction carries:
/// a batch holding more is written as several transactions. Far below PostgreSQL's 1 GB limits on a
/// statement, a COPY message and a field, and small enough for the server to hold comfortably.
pub(crate) const MAX_TX_BYTES: usize = 4 * 1024 * 1024;

/// How a writer writes its next batch of observations. One per writer.
#[derive(Debug, Clone, Copy)]
pub struct CopyStrategy {
    /// Run the existence check before the COPY. It starts without: the check costs about as much
    /// as the COPY, and a restart's replayed tail, all duplicates, comes first in its batch, so the
    /// COPY that meets it fails at its first rows and little is lost. It starts checking when a
    /// COPY meets a duplicate, and stops after a batch without any.
    pub check_first: bool,
    /// Batches of at most this many observations go through the UNNEST statement instead of COPY:
    /// [`SMALL_BATCH_ROWS`] by default, 0 to COPY every batch.
    pub unnest_up_to: usize,
}

impl Default for CopyStrategy {
    fn default() -> Self {
        Self {
            check_first: false,
            unnest_up_to: SMALL_BATCH_ROWS,
        }
    }
}

/// What became of one batch.
#[derive(Debug, Default)]
pub struct Stored {
    /// New observation rows.
    pub inserted: u64,
    /// Valid records that were already stored (same location, observation time and source), in the
    /// database or earlier in the same batch.
    pub duplicates: u64,
    /// New rejected_records rows (a replayed rejection is not counted twice).
    pub rejections_inserted: u64,
    /// Valid records PostgreSQL refused; already written to rejected_records, still to be sent to
    /// the dead-letter topic by the caller.
    pub db_rejected: Vec<RejectedRecord>,
    /// Database attempts that failed with an outage and were retried.
    pub retries: u64,
    /// Transactions committed (one unless the batch had to be split).
    pub transactions: u64,
    /// Time the last transaction's COMMIT took (the latency budget's last stage).
    pub commit_time: Duration,
}

/// Stores one batch: the valid records (deduplicated by `(location_key, observed_at, source)`, first
/// wins)
/// and the rejections, in one transaction when nothing goes wrong. Returns only once everything is
/// durably committed, or [`Interrupted`] when stopped during an outage.
pub async fn store_batch(
    pool: &PgPool,
    valid: &[ValidRecord],
    rejected: &[RejectedRecord],
    retry: &Retry,
    strategy: &mut CopyStrategy,
) -> Result<Stored, Interrupted> {
    let (unique, in_batch_duplicates) = dedupe(valid);
    let mut rows: Vec<Row<'_>> = unique.into_iter().map(Row::Valid).collect();
    rows.extend(rejected.iter().map(Row::Rejected));
    let mut stored = Stored::default();
    let refused = write_isolating(pool, rows, retry, strategy, &mut stored).await?;

    let quarantine: Vec<RejectedRecord> = refused
        .into_iter()
        .filter_map(|(row, reason)| match row {
            Row::Valid(record) => Some(RejectedRecord {
                lineage: record.lineage.clone(),
                raw: record.raw.clone(),
                rejection: Rejection::new(RejectionClass::DbRejected, reason),
            }),
            // isolate::judge never quarantines a rejection: its refusal is an outage.
            Row::Rejected(_) => None,
        })
        .collect();
    if !quarantine.is_empty() {
        // Only rejection rows: whatever rejected_records refuses is waited out, never dropped.
        let rows = quarantine.iter().map(Row::Rejected).collect();
        let again = write_isolating(pool, rows, retry, strategy, &mut stored).await?;
        debug_assert!(again.is_empty(), "rejections are never quarantined");
    }
    stored.duplicates += in_batch_duplicates;
    stored.db_rejected = quarantine;
    Ok(stored)
}

/// Valid records with later duplicates of the same `(location_key, observed_at, source)` removed, and
/// how many were removed: a WeatherAPI and a simulated record of one slot are two observations. `ON CONFLICT DO NOTHING` would cope with the duplicates itself; removing them
/// here keeps the statement small and the counts exact.
fn dedupe(valid: &[ValidRecord]) -> (Vec<&ValidRecord>, u64) {
    let mut seen = HashSet::with_capacity_and_hasher(valid.len(), foldhash::fast::RandomState::default());
    let mut unique = Vec::with_capacity(valid.len());
    for record in valid {
        let o = &record.observation;
        if seen.insert((o.location_key.as_str(), o.observed_at, o.source)) {
            unique.push(record);
        }
    }
    let removed = (valid.len() - unique.len()) as u64;
    (unique, removed)
}

/// One row of a transaction: an observation or a rejection.
#[derive(Debug, Clone, Copy)]
enum Row<'a> {
    Valid(&'a ValidRecord),
    Rejected(&'a RejectedRecord),
}

impl Row<'_> {
    /// An upper estimate of the bytes the row adds to the COPY buffer or the rejection statement:
    /// its text and bytea data (bytea doubled, as hex roughly doubles it) plus a fixed overhead for
    /// the numbers, timestamps and framing.
    fn size(&self) -> usize {
        const FIXED: usize = 256;
        match self {
            Row::Valid(v) => {
                let o = &v.observation;
                FIXED
                    + o.location_key.len()
                    + o.location_name.len()
                    + o.region.len()
                    + o.country.len()
                    + o.wind_dir.as_ref().map_or(0, String::len)
                    + o.condition_text.as_ref().map_or(0, String::len)
                    + v.lineage.topic.len()
            }
            Row::Rejected(r) => {
                FIXED
                    + 2 * r.raw.key.as_ref().map_or(0, |k| k.len())
                    + 2 * r.raw.value.as_ref().map_or(0, |v| v.len())
                    + r.rejection.reason.len()
                    + r.lineage.topic.len()
            }
        }
    }
}

/// Consecutive ranges covering `rows`, each of at most `max_bytes` by [`Row::size`] (a single row
/// larger than that is a range of its own).
fn chunks(rows: &[Row<'_>], max_bytes: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let size = row.size();
        if i > start && bytes + size > max_bytes {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < rows.len() {
        out.push(start..rows.len());
    }
    out
}

/// Writes `rows` in transactions of at most [`MAX_TX_BYTES`], splitting on row-level errors: returns
/// the observation rows to quarantine, with the server's reason. Outages are waited out.
async fn write_isolating<'a>(
    pool: &PgPool,
    rows: Vec<Row<'a>>,
    retry: &Retry,
    strategy: &mut CopyStrategy,
    stored: &mut Stored,
) -> Result<Vec<(Row<'a>, String)>, Interrupted> {
    let mut refused = Vec::new();
    for range in chunks(&rows, MAX_TX_BYTES) {
        refused.extend(isolate::write_chunk(pool, &rows[range], retry, strategy, stored).await?);
    }
    Ok(refused)
}

/// One transaction for `rows`, retried while the failure is an outage. The inner result is a
/// row-level refusal.
async fn write_with_retry(
    pool: &PgPool,
    rows: &[Row<'_>],
    retry: &Retry,
    strategy: &mut CopyStrategy,
    stored: &mut Stored,
) -> Result<Result<(), sqlx::Error>, Interrupted> {
    let mut outage = Outage::database(retry);
    loop {
        match write_once(pool, rows, strategy, retry.write_timeout).await {
            Ok((inserted, rejections, commit_time)) => {
                stored.commit_time = commit_time;
                stored.retries += u64::from(outage.attempts());
                outage.end();
                stored.inserted += inserted;
                stored.transactions += 1;
                let valid = rows.iter().filter(|r| matches!(r, Row::Valid(_))).count() as u64;
                stored.duplicates += valid - inserted;
                stored.rejections_inserted += rejections;
                return Ok(Ok(()));
            }
            Err(err) if classify(&err) == Failure::RowLevel => {
                stored.retries += u64::from(outage.attempts());
                return Ok(Err(err));
            }
            Err(err) => outage.wait(cause_of(&err), rows.len()).await?,
        }
    }
}

/// One transaction: observations, then rejections. Returns the rows inserted into each, and the time
/// the COMMIT took.
///
/// Up to [`CopyStrategy::unnest_up_to`] observations go through the UNNEST statement, more through
/// the COPY path. A unique violation means an observation of the batch is already stored: without
/// the existence check, the batch is written again with it; with it (a concurrent writer stored the
/// same observation between the check and the COPY), the batch is written through the UNNEST
/// statement, whose `ON CONFLICT DO NOTHING` cannot collide.
async fn write_once(
    pool: &PgPool,
    rows: &[Row<'_>],
    strategy: &mut CopyStrategy,
    timeout: Duration,
) -> Result<(u64, u64, Duration), sqlx::Error> {
    let (mut valid, mut rejected) = (Vec::new(), Vec::new());
    for row in rows {
        match *row {
            Row::Valid(v) => valid.push(v),
            Row::Rejected(r) => rejected.push(r),
        }
    }
    let mut method = if valid.len() <= strategy.unnest_up_to {
        Method::Unnest
    } else {
        Method::Copy {
            check_first: strategy.check_first,
        }
    };
    loop {
        match write_tx(pool, &valid, &rejected, method, timeout).await {
            Err(e) if is_observation_conflict(&e) => {
                method = match method {
                    Method::Copy { check_first: false } => Method::Copy { check_first: true },
                    Method::Copy { check_first: true } => Method::Unnest,
                    Method::Unnest => return Err(e),
                };
                strategy.check_first = true;
                tracing::debug!(
                    ?method,
                    "a COPY met an already stored observation; writing the batch again"
                );
            }
            Ok((inserted, rejections, commit_time)) => {
                // Keep checking while batches carry duplicates; go optimistic after a clean one.
                strategy.check_first = inserted < valid.len() as u64;
                return Ok((inserted, rejections, commit_time));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Batches of at most this many observations are written with the UNNEST statement instead of
/// COPY. A COPY is two round trips (the statement, answered with CopyInResponse, then the data and
/// CopyDone, answered with CommandComplete), three with the existence check; the prepared UNNEST
/// statement with `ON CONFLICT DO NOTHING` is one, and needs no check. The batches a steady stream
/// makes are this small (one or two records at 2,000 msg/s), so its latency is the round trips.
/// `bench persist` times both writes side by side at 1 to 32 rows (`docs/performance.md`): UNNEST
/// takes 0.86–0.89× COPY's time at 1 row, 1.00–1.04× at 16 and 1.12–1.24× at 32, where COPY's
/// cheaper rows win; a backlog's batches are thousands.
pub const SMALL_BATCH_ROWS: usize = 8;

/// How observations are written.
#[derive(Debug, Clone, Copy)]
enum Method {
    /// [`copy_observations`]: the fast path, with or without the existence check.
    Copy {
        /// Leave out already stored observations first.
        check_first: bool,
    },
    /// [`insert_observations`]: small batches, and the fallback after a race on the unique key.
    Unnest,
}

/// The transaction of [`write_once`]. A batch of observations alone is one statement, which
/// PostgreSQL runs as a transaction of its own and has committed when it answers, so it goes without
/// BEGIN and COMMIT: two round trips fewer per batch, the latency budget's commit stage folded into
/// the COPY (`docs/performance.md`). The existence check before it
/// needs no transaction: a row stored between the check and the COPY makes the COPY fail whole,
/// and the batch is written again (see [`write_once`]).
///
/// The whole exchange is bounded by `timeout` (`persist.write_timeout_secs`): a connection that goes
/// silent without closing (a dead peer behind a proxy, a partition) fails the attempt as an outage
/// instead of hanging the writer, and the connection is closed, not pooled, since its state is
/// unknown. Getting a connection is bounded by the pool's `database.connect_timeout_secs`.
async fn write_tx(
    pool: &PgPool,
    valid: &[&ValidRecord],
    rejected: &[&RejectedRecord],
    method: Method,
    timeout: Duration,
) -> Result<(u64, u64, Duration), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    disable_nagle(pool);
    match tokio::time::timeout(timeout, write_on(&mut conn, valid, rejected, method)).await {
        Ok(result) => result,
        Err(_) => {
            conn.close_on_drop();
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no answer from PostgreSQL within persist.write_timeout_secs ({} s); the connection is closed",
                    timeout.as_secs_f64()
                ),
            )))
        }
    }
}

async fn write_on(
    conn: &mut sqlx::PgConnection,
    valid: &[&ValidRecord],
    rejected: &[&RejectedRecord],
    method: Method,
) -> Result<(u64, u64, Duration), sqlx::Error> {
    if rejected.is_empty() {
        let inserted = write_observations(conn, valid, method).await?;
        return Ok((inserted, 0, Duration::ZERO));
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let inserted = write_observations(&mut tx, valid, method).await?;
    let rejections = insert_rejections(&mut tx, rejected).await?;
    let commit = Instant::now();
    tx.commit().await?;
    Ok((inserted, rejections, commit.elapsed()))
}

async fn write_observations(
    conn: &mut sqlx::PgConnection,
    valid: &[&ValidRecord],
    method: Method,
) -> Result<u64, sqlx::Error> {
    match method {
        Method::Copy { check_first } => copy_observations(conn, &OBSERVATIONS, valid, check_first).await,
        Method::Unnest => insert_observations(conn, &OBSERVATIONS, valid).await,
    }
}

/// How the name of every index of the observations' unique key ends, the parent's constraint and
/// each partition's index alike.
const OBSERVATION_KEY_SUFFIX: &str = "_location_key_observed_at_source_key";

/// A unique violation on `(location_key, observed_at, source)`. `observations` is partitioned by
/// month, and PostgreSQL names the partition's index in the error
/// (`observations_y2026m12_location_key_observed_at_source_key`,
/// `observations_default_location_key_…`), so the check is on the name's shape. The key holds the
/// partition key, so one observation has exactly one partition and the partition's unique index is
/// the table-wide dedup.
fn is_observation_conflict(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("23505")
                && db
                    .constraint()
                    .is_some_and(|c| c.starts_with("observations_") && c.ends_with(OBSERVATION_KEY_SUFFIX))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::sample::record;

    #[test]
    fn transactions_are_cut_by_bytes_in_order() {
        let batch: Vec<ValidRecord> = (0..10).map(|i| record("a", i, i)).collect();
        let rows: Vec<Row<'_>> = batch.iter().map(Row::Valid).collect();
        let size = rows[0].size();
        let whole = 0..rows.len();
        assert_eq!(chunks(&rows, usize::MAX), [whole]);
        assert_eq!(chunks(&rows, 3 * size), [0..3, 3..6, 6..9, 9..10]);
        // A row larger than the bound still gets a transaction of its own.
        assert_eq!(chunks(&rows, 1).len(), 10);
        assert!(chunks(&[], 1).is_empty());
        let ranges = chunks(&rows, 4 * size);
        assert_eq!(ranges.iter().map(|r| r.len()).sum::<usize>(), 10);
    }

    #[test]
    fn dedupe_keeps_the_first_copy() {
        let batch = [
            record("a", 1, 0),
            record("b", 1, 1),
            record("a", 1, 2),
            record("a", 2, 3),
        ];
        let (unique, removed) = dedupe(&batch);
        let offsets: Vec<i64> = unique.iter().map(|r| r.lineage.offset).collect();
        assert_eq!(offsets, [0, 1, 3]);
        assert_eq!(removed, 1);
    }

    #[test]
    fn a_real_and_a_simulated_record_of_one_slot_are_not_duplicates() {
        let mut real = record("a", 1, 0);
        real.observation.source = crate::envelope::Source::Weatherapi;
        let simulated = record("a", 1, 1);
        assert_eq!(simulated.observation.source, crate::envelope::Source::Simulated);
        let batch = [real, simulated, record("a", 1, 2)];
        let (unique, removed) = dedupe(&batch);
        let offsets: Vec<i64> = unique.iter().map(|r| r.lineage.offset).collect();
        assert_eq!(offsets, [0, 1]);
        assert_eq!(removed, 1);
    }
}
