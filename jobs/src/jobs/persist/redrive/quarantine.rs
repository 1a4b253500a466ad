//! The `rejected_records` queries of the quarantine: the listings and counts both faces show
//! (`weatherflow rejects`, `GET /api/v1/rejects`), and the reads and writes of a re-drive.
//!
//! Every selection goes through one WHERE clause (`filter!`), so a listing and a re-drive given the
//! same flags mean the same rows.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use entity::rejected_records;
use sea_orm::{DatabaseConnection, DbBackend, DbErr, EntityTrait, FromQueryResult, Statement};
use serde::Serialize;
use sqlx::PgPool;

use crate::jobs::persist::store::{Lineage, Raw};

/// Which rows, by what became of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum State {
    /// Every row.
    #[default]
    Any,
    /// Still quarantined: never stored by a re-drive.
    Pending,
    /// Stored by a re-drive (the row is kept as history).
    Redriven,
}

impl State {
    /// The `$5` parameter of `filter!`: whether `redriven_at` must be set, or either.
    fn redriven(self) -> Option<bool> {
        match self {
            State::Any => None,
            State::Pending => Some(false),
            State::Redriven => Some(true),
        }
    }
}

/// A selection of quarantined records; every condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this `error_class`.
    pub class: Option<String>,
    /// Only rows quarantined at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only rows quarantined before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only these ids (none: any id).
    pub ids: Vec<i64>,
    /// Pending, re-driven or both.
    pub state: State,
}

/// The WHERE clause of every selection, over parameters `$1`–`$5`: class, since, until, ids,
/// redriven. A macro so that the statements are literals (`concat!`), as sqlx asks.
macro_rules! filter {
    () => {
        "($1::text IS NULL OR error_class = $1)
    AND ($2::timestamptz IS NULL OR received_at >= $2)
    AND ($3::timestamptz IS NULL OR received_at < $3)
    AND (cardinality($4::int8[]) = 0 OR id = ANY($4))
    AND ($5::bool IS NULL OR (redriven_at IS NOT NULL) = $5)"
    };
}

impl Selection {
    /// The five parameters of `filter!`, for SeaORM statements.
    fn values(&self) -> Vec<sea_orm::Value> {
        vec![
            self.class.clone().into(),
            self.since.into(),
            self.until.into(),
            self.ids.clone().into(),
            self.state.redriven().into(),
        ]
    }

    /// Binds the five parameters of `filter!` to a sqlx query.
    fn bind<'q, O>(
        &'q self,
        q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        q.bind(self.class.as_deref())
            .bind(self.since)
            .bind(self.until)
            .bind(&self.ids)
            .bind(self.state.redriven())
    }
}

/// One quarantined record as listed: everything but the raw bytes (their size instead).
#[derive(Debug, Clone, Serialize, FromQueryResult)]
pub struct Listed {
    /// Row id (`weatherflow rejects show ID`).
    pub id: i64,
    /// When it was quarantined.
    pub received_at: DateTime<Utc>,
    /// Source topic.
    pub kafka_topic: String,
    /// Source partition.
    pub kafka_partition: i32,
    /// Source offset.
    pub kafka_offset: i64,
    /// Why, as a class (the latest refusal's).
    pub error_class: String,
    /// Why, in words (the latest refusal's).
    pub reason: String,
    /// Payload size in bytes; `None` for a null value.
    pub payload_bytes: Option<i32>,
    /// Re-drives that tried it.
    pub redrive_attempts: i32,
    /// When a re-drive stored it.
    pub redriven_at: Option<DateTime<Utc>>,
    /// The run of the last re-drive that tried it.
    pub redrive_run_id: Option<i64>,
}

/// The newest `last` rows of `sel`, newest first.
pub async fn list(db: &DatabaseConnection, sel: &Selection, last: u64) -> Result<Vec<Listed>, DbErr> {
    let sql = concat!(
        "SELECT id, received_at, kafka_topic, kafka_partition, kafka_offset, error_class, reason,
                octet_length(payload) AS payload_bytes, redrive_attempts, redriven_at, redrive_run_id
         FROM rejected_records WHERE ",
        filter!(),
        " ORDER BY id DESC LIMIT $6"
    );
    let mut values = sel.values();
    values.push((last.min(i64::MAX as u64) as i64).into());
    Listed::find_by_statement(Statement::from_sql_and_values(DbBackend::Postgres, sql, values))
        .all(db)
        .await
}

/// One record, raw bytes included.
pub async fn get(db: &DatabaseConnection, id: i64) -> Result<Option<rejected_records::Model>, DbErr> {
    rejected_records::Entity::find_by_id(id).one(db).await
}

/// The records of one class: how many are still quarantined, how many a re-drive stored.
#[derive(Debug, Clone, Serialize, FromQueryResult, PartialEq, Eq, utoipa::ToSchema)]
pub struct ClassCount {
    /// The class (a re-driven row keeps the class it was quarantined with).
    pub error_class: String,
    /// Rows still quarantined.
    pub quarantined: i64,
    /// Rows a re-drive stored.
    pub redriven: i64,
    /// The latest quarantine time of the class.
    pub latest: DateTime<Utc>,
}

/// Counts per class, most quarantined first: the one read behind `weatherflow rejects counts` and
/// `GET /api/v1/rejects`.
pub async fn counts(db: &DatabaseConnection) -> Result<Vec<ClassCount>, DbErr> {
    let sql = "SELECT error_class,
                      count(*) FILTER (WHERE redriven_at IS NULL)     AS quarantined,
                      count(*) FILTER (WHERE redriven_at IS NOT NULL) AS redriven,
                      max(received_at)                                AS latest
               FROM rejected_records GROUP BY error_class
               ORDER BY quarantined DESC, redriven DESC, error_class";
    ClassCount::find_by_statement(Statement::from_string(DbBackend::Postgres, sql))
        .all(db)
        .await
}

/// A quarantined record read back for a re-drive.
#[derive(Debug, Clone)]
pub(crate) struct Quarantined {
    /// Row id.
    pub id: i64,
    /// Its class before this re-drive.
    pub class: String,
    /// The original Kafka coordinates: a stored observation carries them as its lineage.
    pub lineage: Lineage,
    /// The raw message, byte for byte.
    pub raw: Raw,
}

/// The highest id at the start of a re-drive: rows quarantined later (by a consumer running beside
/// it) are left for the next one, so a run's selection is fixed when it starts.
pub(crate) async fn ceiling(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT coalesce(max(id), 0)::int8 FROM rejected_records")
        .fetch_one(pool)
        .await
}

/// How many rows of `sel` a re-drive up to `ceiling` will read.
pub(crate) async fn count(pool: &PgPool, sel: &Selection, ceiling: i64) -> Result<i64, sqlx::Error> {
    const SQL: &str = concat!(
        "SELECT count(*)::int8 FROM rejected_records WHERE ",
        filter!(),
        " AND id <= $6"
    );
    let (n,): (i64,) = sel
        .bind(sqlx::query_as(SQL))
        .bind(ceiling)
        .fetch_one(pool)
        .await?;
    Ok(n)
}

/// The next page of `sel`: at most `limit` rows with ids in `(after, ceiling]`, in id order
/// (keyset pagination on the primary key: each page is one index range, however far the run got).
pub(crate) async fn page(
    pool: &PgPool,
    sel: &Selection,
    after: i64,
    ceiling: i64,
    limit: usize,
) -> Result<Vec<Quarantined>, sqlx::Error> {
    type Row = (i64, String, String, i32, i64, Option<Vec<u8>>, Option<Vec<u8>>);
    const SQL: &str = concat!(
        "SELECT id, error_class, kafka_topic, kafka_partition, kafka_offset, key, payload
         FROM rejected_records WHERE ",
        filter!(),
        " AND id > $6 AND id <= $7 ORDER BY id LIMIT $8"
    );
    let rows: Vec<Row> = sel
        .bind(sqlx::query_as(SQL))
        .bind(after)
        .bind(ceiling)
        .bind(limit as i64)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, class, topic, partition, offset, key, payload)| Quarantined {
                id,
                class,
                lineage: Lineage {
                    topic: topic.into(),
                    partition,
                    offset,
                },
                raw: Raw {
                    key: key.map(Bytes::from),
                    value: payload.map(Bytes::from),
                },
            },
        )
        .collect())
}

/// What one re-driven page did to its rows.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Rows whose observation is now stored.
    pub stored: Vec<i64>,
    /// Rows refused again: id, new class, new reason.
    pub refused: Vec<(i64, String, String)>,
}

/// Marks `stored` re-driven by run `run_id` and gives the refused rows their new class and reason,
/// in one transaction. Both count an attempt. Returns the refused rows per new class.
pub(crate) async fn record(
    pool: &PgPool,
    outcome: &Outcome,
    run_id: i64,
) -> Result<BTreeMap<String, u64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !outcome.stored.is_empty() {
        sqlx::query(
            "UPDATE rejected_records
             SET redriven_at = now(), last_redrive_at = now(), redrive_attempts = redrive_attempts + 1,
                 redrive_run_id = $2
             WHERE id = ANY($1) AND redriven_at IS NULL",
        )
        .bind(&outcome.stored)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
    }
    let mut by_class = BTreeMap::new();
    if !outcome.refused.is_empty() {
        let ids: Vec<i64> = outcome.refused.iter().map(|r| r.0).collect();
        let classes: Vec<&str> = outcome.refused.iter().map(|r| r.1.as_str()).collect();
        let reasons: Vec<&str> = outcome.refused.iter().map(|r| r.2.as_str()).collect();
        sqlx::query(
            "UPDATE rejected_records r
             SET error_class = u.class, reason = u.reason, last_redrive_at = now(),
                 redrive_attempts = r.redrive_attempts + 1, redrive_run_id = $4
             FROM UNNEST($1::int8[], $2::text[], $3::text[]) AS u(id, class, reason)
             WHERE r.id = u.id AND r.redriven_at IS NULL",
        )
        .bind(&ids)
        .bind(&classes)
        .bind(&reasons)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        for class in classes {
            *by_class.entry(class.to_owned()).or_insert(0) += 1;
        }
    }
    tx.commit().await?;
    Ok(by_class)
}

/// How many of `keys` (location key, observation time, source) are already in `observations`: a dry
/// run's guess of the duplicates, without writing.
pub(crate) async fn already_stored(
    pool: &PgPool,
    keys: &[(&str, DateTime<Utc>, &str)],
) -> Result<u64, sqlx::Error> {
    if keys.is_empty() {
        return Ok(0);
    }
    let locations: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let times: Vec<DateTime<Utc>> = keys.iter().map(|k| k.1).collect();
    let sources: Vec<&str> = keys.iter().map(|k| k.2).collect();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*)::int8 FROM observations o
         JOIN (SELECT DISTINCT * FROM UNNEST($1::text[], $2::timestamptz[], $3::text[])) AS u(k, t, s)
           ON o.location_key = u.k AND o.observed_at = u.t AND o.source = u.s",
    )
    .bind(&locations)
    .bind(&times)
    .bind(&sources)
    .fetch_one(pool)
    .await?;
    Ok(n as u64)
}
