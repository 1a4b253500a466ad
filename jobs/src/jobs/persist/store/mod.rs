//! Batched, idempotent writes of observations and rejections (owned by the persist job).
//!
//! One batch is one transaction: the observations upsert and the rejected_records insert together.
//! When PostgreSQL refuses a batch because of some of its rows (SQLSTATE class 22 data exception or
//! 23 constraint violation), the batch is split in halves until the refusing rows are isolated; those
//! are quarantined as `db_rejected` and the rest is stored. Any other failure (connection lost, server
//! shutting down, database not accepting connections...) is an outage: the whole batch is retried
//! with backoff, never split, until it succeeds or the job is stopped.

mod copy;
mod nodelay;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::jobs::persist::validate::{ErrorClass, Observation, Rejection};

pub use copy::{COPY_OBSERVATIONS, copy_header, copy_observations, copy_trailer, encode_copy_row};

/// Sets TCP_NODELAY on the pool's sockets (see the `nodelay` module: a workaround for sqlx 0.9.0).
/// Call it after acquiring a connection, so that the connection is among them.
pub fn disable_nagle(pool: &PgPool) {
    nodelay::on_sockets_to(pool.connect_options().get_port());
}

/// Whether the next batch's COPY looks up already-stored observations first. It starts by checking
/// (a restart replays the uncommitted tail, all duplicates), stops after a batch without
/// duplicates, and starts again when a COPY hits one. One per writer.
#[derive(Debug, Clone, Copy)]
pub struct CopyStrategy {
    /// Run the existence check before the COPY.
    pub check_first: bool,
}

impl Default for CopyStrategy {
    fn default() -> Self {
        Self { check_first: true }
    }
}

/// Where a record was read from; stored as lineage on both tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    /// Kafka topic.
    pub topic: Arc<str>,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
}

/// The record as it arrived, kept so that a refusal can be quarantined byte for byte.
#[derive(Debug, Clone, Default)]
pub struct Raw {
    /// The message key.
    pub key: Option<Vec<u8>>,
    /// The message value.
    pub value: Option<Vec<u8>>,
}

/// A record that passed validation.
#[derive(Debug, Clone)]
pub struct ValidRecord {
    /// Where it came from.
    pub lineage: Lineage,
    /// The raw message, in case the database refuses the row.
    pub raw: Raw,
    /// The typed observation.
    pub observation: Observation,
}

/// A record refused by validation or by the database.
#[derive(Debug, Clone)]
pub struct RejectedRecord {
    /// Where it came from.
    pub lineage: Lineage,
    /// The complete raw message.
    pub raw: Raw,
    /// Why it was refused.
    pub rejection: Rejection,
}

/// How a database error is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Caused by the data of some rows (SQLSTATE class 22 or 23, or a value the driver cannot
    /// encode): split the batch to find them.
    RowLevel,
    /// Anything else (connection, outage, deadlock, server shutdown): retry the whole batch.
    Outage,
}

/// Tells row-level errors from outages.
pub fn classify(err: &sqlx::Error) -> Failure {
    match err {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) if code.starts_with("22") || code.starts_with("23") => Failure::RowLevel,
            _ => Failure::Outage,
        },
        sqlx::Error::Encode(_) => Failure::RowLevel,
        _ => Failure::Outage,
    }
}

/// The job was stopped while the database was unavailable; the batch was not stored and its offsets
/// must not be committed.
#[derive(Debug, thiserror::Error)]
#[error("stopped while waiting for the database; the batch was not stored")]
pub struct Interrupted;

/// How outages are retried.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Delays between attempts.
    pub backoff: Backoff,
    /// Cancelled on shutdown: a retry wait ends early and the batch is given up (not committed).
    pub shutdown: CancellationToken,
}

/// What became of one batch.
#[derive(Debug, Default)]
pub struct Stored {
    /// New observation rows.
    pub inserted: u64,
    /// Valid records that were already stored (same location and observation time), in the database
    /// or earlier in the same batch.
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
}

/// Stores one batch: the valid records (deduplicated by `(location_key, observed_at)`, first wins)
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

    let mut quarantine = Vec::new();
    for (row, reason) in refused {
        match row {
            Row::Valid(record) => quarantine.push(RejectedRecord {
                lineage: record.lineage.clone(),
                raw: record.raw.clone(),
                rejection: Rejection::new(ErrorClass::DbRejected, reason),
            }),
            // rejected_records holds bytes and sanitized text, so this is not expected; the record
            // is already on its way to the dead-letter topic, so say so loudly rather than stall.
            Row::Rejected(record) => tracing::error!(
                topic = %record.lineage.topic,
                partition = record.lineage.partition,
                offset = record.lineage.offset,
                %reason,
                "rejected_records refused a rejection row; it is kept in the dead-letter topic only"
            ),
        }
    }
    if !quarantine.is_empty() {
        let rows = quarantine.iter().map(Row::Rejected).collect();
        for (_, reason) in write_isolating(pool, rows, retry, strategy, &mut stored).await? {
            tracing::error!(%reason, "rejected_records refused a db_rejected row");
        }
    }
    stored.duplicates += in_batch_duplicates;
    stored.db_rejected = quarantine;
    Ok(stored)
}

/// Valid records with later duplicates of the same `(location_key, observed_at)` removed, and how
/// many were removed. `ON CONFLICT DO NOTHING` would cope with the duplicates itself; removing them
/// here keeps the statement small and the counts exact.
fn dedupe(valid: &[ValidRecord]) -> (Vec<&ValidRecord>, u64) {
    let mut seen = HashSet::with_capacity(valid.len());
    let mut unique = Vec::with_capacity(valid.len());
    for record in valid {
        let o = &record.observation;
        if seen.insert((o.location_key.as_str(), o.observed_at)) {
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

/// Writes `rows`, splitting on row-level errors: returns the rows PostgreSQL refused one by one, with
/// its error. Outages are retried with backoff on the same rows.
async fn write_isolating<'a>(
    pool: &PgPool,
    rows: Vec<Row<'a>>,
    retry: &Retry,
    strategy: &mut CopyStrategy,
    stored: &mut Stored,
) -> Result<Vec<(Row<'a>, String)>, Interrupted> {
    let mut refused = Vec::new();
    // Ranges still to write; the left half is popped first so rows are written in offset order.
    let mut pending = Vec::new();
    pending.push(0..rows.len());
    while let Some(range) = pending.pop() {
        if range.is_empty() {
            continue;
        }
        let slice = &rows[range.clone()];
        match write_with_retry(pool, slice, retry, strategy, stored).await? {
            Ok(()) => {}
            Err(err) if slice.len() == 1 => refused.push((slice[0], err.to_string())),
            Err(err) => {
                tracing::debug!(rows = slice.len(), error = %err, "batch refused for row-level reasons; splitting");
                let mid = range.start + slice.len() / 2;
                pending.push(mid..range.end);
                pending.push(range.start..mid);
            }
        }
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
    let mut attempt = 0u32;
    loop {
        match write_once(pool, rows, strategy).await {
            Ok((inserted, rejections)) => {
                if attempt > 0 {
                    tracing::info!(retries = attempt, "database is back; batch stored");
                }
                stored.inserted += inserted;
                stored.transactions += 1;
                let valid = rows.iter().filter(|r| matches!(r, Row::Valid(_))).count() as u64;
                stored.duplicates += valid - inserted;
                stored.rejections_inserted += rejections;
                return Ok(Ok(()));
            }
            Err(err) if classify(&err) == Failure::RowLevel => return Ok(Err(err)),
            Err(err) => {
                let delay = retry.backoff.delay(attempt);
                tracing::warn!(
                    error = %err,
                    attempt = attempt + 1,
                    retry_in_ms = delay.as_millis() as u64,
                    rows = rows.len(),
                    "database unavailable; retrying the whole batch (offsets are not committed)"
                );
                attempt = attempt.saturating_add(1);
                stored.retries += 1;
                sleep_or_stop(delay, &retry.shutdown).await?;
            }
        }
    }
}

async fn sleep_or_stop(delay: Duration, shutdown: &CancellationToken) -> Result<(), Interrupted> {
    tokio::select! {
        _ = tokio::time::sleep(delay) => Ok(()),
        _ = shutdown.cancelled() => Err(Interrupted),
    }
}

/// One transaction: observations, then rejections. Returns the rows inserted into each.
///
/// The observations go through the COPY path. A unique violation means an observation of the batch
/// is already stored: without the existence check, the batch is written again with it; with it (a
/// concurrent writer stored the same observation between the check and the COPY), the batch is
/// written through the UNNEST statement, whose `ON CONFLICT DO NOTHING` cannot collide.
async fn write_once(
    pool: &PgPool,
    rows: &[Row<'_>],
    strategy: &mut CopyStrategy,
) -> Result<(u64, u64), sqlx::Error> {
    let valid: Vec<&ValidRecord> = rows
        .iter()
        .filter_map(|r| match r {
            Row::Valid(v) => Some(*v),
            Row::Rejected(_) => None,
        })
        .collect();
    let rejected: Vec<&RejectedRecord> = rows
        .iter()
        .filter_map(|r| match r {
            Row::Rejected(v) => Some(*v),
            Row::Valid(_) => None,
        })
        .collect();
    let mut method = Method::Copy {
        check_first: strategy.check_first,
    };
    loop {
        match write_tx(pool, &valid, &rejected, method).await {
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
            Ok((inserted, rejections)) => {
                // Keep checking while batches carry duplicates; go optimistic after a clean one.
                strategy.check_first = inserted < valid.len() as u64;
                return Ok((inserted, rejections));
            }
            Err(e) => return Err(e),
        }
    }
}

/// How observations are written.
#[derive(Debug, Clone, Copy)]
enum Method {
    /// [`copy_observations`]: the fast path, with or without the existence check.
    Copy {
        /// Leave out already stored observations first.
        check_first: bool,
    },
    /// [`insert_observations`]: the fallback after a race on the unique key.
    Unnest,
}

async fn write_tx(
    pool: &PgPool,
    valid: &[&ValidRecord],
    rejected: &[&RejectedRecord],
    method: Method,
) -> Result<(u64, u64), sqlx::Error> {
    let mut tx = pool.begin().await?;
    disable_nagle(pool);
    let inserted = match method {
        Method::Copy { check_first } => copy_observations(&mut tx, valid, check_first).await?,
        Method::Unnest => insert_observations(&mut tx, valid).await?,
    };
    let rejections = insert_rejections(&mut tx, rejected).await?;
    tx.commit().await?;
    Ok((inserted, rejections))
}

/// A unique violation on `(location_key, observed_at)`.
fn is_observation_conflict(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("23505")
                && db.constraint() == Some("observations_location_key_observed_at_key")
        }
        _ => false,
    }
}

/// The columns the persist job writes, in the order of [`INSERT_OBSERVATIONS`]'s arrays. `id` and
/// `ingested_at` take their defaults.
pub const OBSERVATION_COLUMNS: [&str; 27] = [
    "location_key",
    "location_name",
    "region",
    "country",
    "lat",
    "lon",
    "observed_at",
    "temp_c",
    "feelslike_c",
    "wind_kph",
    "gust_kph",
    "pressure_mb",
    "precip_mm",
    "vis_km",
    "uv",
    "wind_degree",
    "humidity",
    "cloud",
    "wind_dir",
    "condition_text",
    "condition_code",
    "is_day",
    "source",
    "fetched_at",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
];

/// The fallback observations write: one statement per batch, every column bound as one array and
/// unnested server-side, with `ON CONFLICT (location_key, observed_at) DO NOTHING` (see
/// [`copy_observations`] for the figures and the choice).
pub const INSERT_OBSERVATIONS: &str = "\
INSERT INTO observations (location_key, location_name, region, country, lat, lon, observed_at, temp_c, \
feelslike_c, wind_kph, gust_kph, pressure_mb, precip_mm, vis_km, uv, wind_degree, humidity, cloud, \
wind_dir, condition_text, condition_code, is_day, source, fetched_at, kafka_topic, kafka_partition, \
kafka_offset) \
SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::float8[], \
$7::timestamptz[], $8::float8[], $9::float8[], $10::float8[], $11::float8[], $12::float8[], \
$13::float8[], $14::float8[], $15::float8[], $16::int4[], $17::int4[], $18::int4[], $19::text[], \
$20::text[], $21::int4[], $22::bool[], $23::text[], $24::timestamptz[], $25::text[], $26::int4[], \
$27::int8[]) \
ON CONFLICT (location_key, observed_at) DO NOTHING";

/// Inserts observations with [`INSERT_OBSERVATIONS`]; returns how many rows are new.
pub async fn insert_observations(
    conn: &mut sqlx::PgConnection,
    records: &[&ValidRecord],
) -> Result<u64, sqlx::Error> {
    if records.is_empty() {
        return Ok(0);
    }
    let n = records.len();
    let mut c = ObservationColumns::with_capacity(n);
    for r in records {
        c.push(&r.observation, &r.lineage);
    }
    let result = sqlx::query(INSERT_OBSERVATIONS)
        .bind(c.location_key)
        .bind(c.location_name)
        .bind(c.region)
        .bind(c.country)
        .bind(c.lat)
        .bind(c.lon)
        .bind(c.observed_at)
        .bind(c.temp_c)
        .bind(c.feelslike_c)
        .bind(c.wind_kph)
        .bind(c.gust_kph)
        .bind(c.pressure_mb)
        .bind(c.precip_mm)
        .bind(c.vis_km)
        .bind(c.uv)
        .bind(c.wind_degree)
        .bind(c.humidity)
        .bind(c.cloud)
        .bind(c.wind_dir)
        .bind(c.condition_text)
        .bind(c.condition_code)
        .bind(c.is_day)
        .bind(c.source)
        .bind(c.fetched_at)
        .bind(c.kafka_topic)
        .bind(c.kafka_partition)
        .bind(c.kafka_offset)
        .execute(conn)
        .await?;
    Ok(result.rows_affected())
}

/// A batch of observations turned inside out: one vector per column, borrowing the records.
#[derive(Default)]
struct ObservationColumns<'a> {
    location_key: Vec<&'a str>,
    location_name: Vec<&'a str>,
    region: Vec<&'a str>,
    country: Vec<&'a str>,
    lat: Vec<f64>,
    lon: Vec<f64>,
    observed_at: Vec<DateTime<Utc>>,
    temp_c: Vec<f64>,
    feelslike_c: Vec<Option<f64>>,
    wind_kph: Vec<f64>,
    gust_kph: Vec<Option<f64>>,
    pressure_mb: Vec<Option<f64>>,
    precip_mm: Vec<Option<f64>>,
    vis_km: Vec<Option<f64>>,
    uv: Vec<Option<f64>>,
    wind_degree: Vec<Option<i32>>,
    humidity: Vec<Option<i32>>,
    cloud: Vec<Option<i32>>,
    wind_dir: Vec<Option<&'a str>>,
    condition_text: Vec<Option<&'a str>>,
    condition_code: Vec<Option<i32>>,
    is_day: Vec<Option<bool>>,
    source: Vec<&'static str>,
    fetched_at: Vec<DateTime<Utc>>,
    kafka_topic: Vec<&'a str>,
    kafka_partition: Vec<i32>,
    kafka_offset: Vec<i64>,
}

impl<'a> ObservationColumns<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            location_key: Vec::with_capacity(n),
            location_name: Vec::with_capacity(n),
            region: Vec::with_capacity(n),
            country: Vec::with_capacity(n),
            lat: Vec::with_capacity(n),
            lon: Vec::with_capacity(n),
            observed_at: Vec::with_capacity(n),
            temp_c: Vec::with_capacity(n),
            feelslike_c: Vec::with_capacity(n),
            wind_kph: Vec::with_capacity(n),
            gust_kph: Vec::with_capacity(n),
            pressure_mb: Vec::with_capacity(n),
            precip_mm: Vec::with_capacity(n),
            vis_km: Vec::with_capacity(n),
            uv: Vec::with_capacity(n),
            wind_degree: Vec::with_capacity(n),
            humidity: Vec::with_capacity(n),
            cloud: Vec::with_capacity(n),
            wind_dir: Vec::with_capacity(n),
            condition_text: Vec::with_capacity(n),
            condition_code: Vec::with_capacity(n),
            is_day: Vec::with_capacity(n),
            source: Vec::with_capacity(n),
            fetched_at: Vec::with_capacity(n),
            kafka_topic: Vec::with_capacity(n),
            kafka_partition: Vec::with_capacity(n),
            kafka_offset: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, o: &'a Observation, l: &'a Lineage) {
        self.location_key.push(&o.location_key);
        self.location_name.push(&o.location_name);
        self.region.push(&o.region);
        self.country.push(&o.country);
        self.lat.push(o.lat);
        self.lon.push(o.lon);
        self.observed_at.push(o.observed_at);
        self.temp_c.push(o.temp_c);
        self.feelslike_c.push(o.feelslike_c);
        self.wind_kph.push(o.wind_kph);
        self.gust_kph.push(o.gust_kph);
        self.pressure_mb.push(o.pressure_mb);
        self.precip_mm.push(o.precip_mm);
        self.vis_km.push(o.vis_km);
        self.uv.push(o.uv);
        self.wind_degree.push(o.wind_degree);
        self.humidity.push(o.humidity);
        self.cloud.push(o.cloud);
        self.wind_dir.push(o.wind_dir.as_deref());
        self.condition_text.push(o.condition_text.as_deref());
        self.condition_code.push(o.condition_code);
        self.is_day.push(o.is_day);
        self.source.push(o.source.as_str());
        self.fetched_at.push(o.fetched_at);
        self.kafka_topic.push(&l.topic);
        self.kafka_partition.push(l.partition);
        self.kafka_offset.push(l.offset);
    }
}

/// The rejected_records write. `ON CONFLICT DO NOTHING` on the source offset: a rejection replayed
/// after a crash is stored once.
pub const INSERT_REJECTIONS: &str = "\
INSERT INTO rejected_records (kafka_topic, kafka_partition, kafka_offset, key, payload, error_class, reason) \
SELECT * FROM UNNEST($1::text[], $2::int4[], $3::int8[], $4::bytea[], $5::bytea[], $6::text[], $7::text[]) \
ON CONFLICT (kafka_topic, kafka_partition, kafka_offset) DO NOTHING";

/// Inserts rejections with [`INSERT_REJECTIONS`]; returns how many rows are new.
pub async fn insert_rejections(
    conn: &mut sqlx::PgConnection,
    records: &[&RejectedRecord],
) -> Result<u64, sqlx::Error> {
    if records.is_empty() {
        return Ok(0);
    }
    let topic: Vec<&str> = records.iter().map(|r| &*r.lineage.topic).collect();
    let partition: Vec<i32> = records.iter().map(|r| r.lineage.partition).collect();
    let offset: Vec<i64> = records.iter().map(|r| r.lineage.offset).collect();
    let key: Vec<Option<&[u8]>> = records.iter().map(|r| r.raw.key.as_deref()).collect();
    let payload: Vec<Option<&[u8]>> = records.iter().map(|r| r.raw.value.as_deref()).collect();
    let class: Vec<&str> = records.iter().map(|r| r.rejection.class.as_str()).collect();
    let reason: Vec<&str> = records.iter().map(|r| r.rejection.reason.as_str()).collect();
    let result = sqlx::query(INSERT_REJECTIONS)
        .bind(topic)
        .bind(partition)
        .bind(offset)
        .bind(key)
        .bind(payload)
        .bind(class)
        .bind(reason)
        .execute(conn)
        .await?;
    Ok(result.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{IdenStatic, Iterable};

    #[test]
    fn written_columns_exist_in_the_entity_and_in_the_statement() {
        let entity: Vec<&str> = entity::observations::Column::iter().map(|c| c.as_str()).collect();
        for column in OBSERVATION_COLUMNS {
            assert!(entity.contains(&column), "{column} is not an observations column");
        }
        let list = INSERT_OBSERVATIONS
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(cols, _)| cols)
            .unwrap();
        let listed: Vec<&str> = list.split(',').map(str::trim).collect();
        assert_eq!(listed, OBSERVATION_COLUMNS);
        assert!(INSERT_OBSERVATIONS.contains(&format!("${}::", OBSERVATION_COLUMNS.len())));
        let copied = COPY_OBSERVATIONS
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(cols, _)| cols.split(',').map(str::trim).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(copied, OBSERVATION_COLUMNS);
        let rejected: Vec<&str> = entity::rejected_records::Column::iter()
            .map(|c| c.as_str())
            .collect();
        for column in [
            "kafka_topic",
            "kafka_partition",
            "kafka_offset",
            "key",
            "payload",
            "error_class",
            "reason",
        ] {
            assert!(rejected.contains(&column), "{column}");
        }
    }

    fn db_error(code: &str) -> sqlx::Error {
        #[derive(Debug)]
        struct Fake(String);
        impl std::fmt::Display for Fake {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "fake {}", self.0)
            }
        }
        impl std::error::Error for Fake {}
        impl sqlx::error::DatabaseError for Fake {
            fn message(&self) -> &str {
                "fake"
            }
            fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
                Some(self.0.as_str().into())
            }
            fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
                self
            }
            fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
                self
            }
            fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
                self
            }
            fn kind(&self) -> sqlx::error::ErrorKind {
                sqlx::error::ErrorKind::Other
            }
        }
        sqlx::Error::Database(Box::new(Fake(code.to_owned())))
    }

    #[test]
    fn data_errors_split_and_outages_retry() {
        // 22021 invalid byte sequence (NUL in text), 22003 numeric out of range, 23505 unique, 23514 check.
        for code in ["22021", "22003", "23505", "23514", "23502"] {
            assert_eq!(classify(&db_error(code)), Failure::RowLevel, "{code}");
        }
        // 57P01 admin shutdown, 08006 connection failure, 55000 database not accepting connections,
        // 40P01 deadlock, 53300 too many connections, 42P01 missing table (fixable, so retried).
        for code in ["57P01", "08006", "55000", "40P01", "53300", "42P01"] {
            assert_eq!(classify(&db_error(code)), Failure::Outage, "{code}");
        }
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), Failure::Outage);
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(classify(&sqlx::Error::Io(io)), Failure::Outage);
    }

    fn record(key: &str, at: i64, offset: i64) -> ValidRecord {
        let observed_at = DateTime::from_timestamp(at, 0).unwrap();
        ValidRecord {
            lineage: Lineage {
                topic: "t".into(),
                partition: 0,
                offset,
            },
            raw: Raw::default(),
            observation: Observation {
                location_key: key.into(),
                location_name: key.into(),
                region: String::new(),
                country: "c".into(),
                lat: 0.0,
                lon: 0.0,
                observed_at,
                temp_c: 1.0,
                feelslike_c: None,
                wind_kph: 1.0,
                gust_kph: None,
                pressure_mb: None,
                precip_mm: None,
                vis_km: None,
                uv: None,
                wind_degree: None,
                humidity: None,
                cloud: None,
                wind_dir: None,
                condition_text: None,
                condition_code: None,
                is_day: None,
                source: crate::envelope::Source::Simulated,
                fetched_at: observed_at,
            },
        }
    }

    #[test]
    fn copy_tuples_have_one_field_per_column() {
        let r = record("a|b|c", 1_767_632_400, 42);
        let mut buf = Vec::new();
        copy_header(&mut buf);
        let start = buf.len();
        encode_copy_row(&mut buf, &r.observation, &r.lineage);
        let tuple = &buf[start..];
        assert_eq!(
            i16::from_be_bytes([tuple[0], tuple[1]]) as usize,
            OBSERVATION_COLUMNS.len()
        );
        let (mut at, mut fields) = (2, Vec::new());
        while at < tuple.len() {
            let len = i32::from_be_bytes(tuple[at..at + 4].try_into().unwrap());
            at += 4;
            let width = usize::try_from(len).unwrap_or(0);
            fields.push((len, &tuple[at..at + width]));
            at += width;
        }
        assert_eq!(fields.len(), OBSERVATION_COLUMNS.len());
        assert_eq!(fields[0].1, b"a|b|c");
        // observed_at: 2026-01-05T17:00:00Z in microseconds since 2000-01-01.
        let micros = i64::from_be_bytes(fields[6].1.try_into().unwrap());
        assert_eq!(micros, (1_767_632_400 - 946_684_800) * 1_000_000);
        assert_eq!(fields[8].0, -1, "feelslike_c is NULL");
        assert_eq!(i64::from_be_bytes(fields[26].1.try_into().unwrap()), 42);
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
}
