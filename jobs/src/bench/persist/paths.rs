//! The write path's alternatives, each alone on the same rows: one binary COPY (the yardstick),
//! the persist job's checked COPY, plain COPY and UNNEST, and SeaORM's `insert_many`.

use std::time::{Duration, Instant};

use anyhow::Context;
use entity::observations;
use sea_orm::{
    ActiveValue::NotSet, ConnectionTrait, DatabaseConnection, EntityTrait, IntoActiveModel, Statement,
    TransactionTrait,
};

use crate::envelope::Source;
use crate::jobs::persist::store::{self, Lineage, Raw, ValidRecord};
use crate::jobs::persist::validate::Observation;

use super::latency::Stage;

/// The scratch table [`copy_rows`] copies into.
const COPY_TABLE: &str = "observations_copy";

/// Binary COPY of `records` into a fresh table partitioned like `observations` (same indexes, same
/// month partitions), in one statement and one transaction (the best case for COPY), encoding
/// included.
pub(super) async fn copy_rows(db: &DatabaseConnection, records: &[ValidRecord]) -> anyhow::Result<Duration> {
    let pool = db.get_postgres_connection_pool();
    // Each round copies into a new table, as the first did.
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {COPY_TABLE}")))
        .execute(pool)
        .await?;
    crate::partitions::create_partitioned_like(pool, COPY_TABLE).await?;
    let table = store::ObservationTable::new(COPY_TABLE);
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    store::disable_nagle(pool);
    let mut copy = conn.copy_in_raw(table.copy_statement()).await?;
    let mut buf = Vec::with_capacity(1 << 20);
    store::copy_header(&mut buf);
    for r in records {
        store::encode_copy_row(&mut buf, &r.observation, &r.lineage);
        if buf.len() >= 1 << 20 {
            copy.send(std::mem::take(&mut buf)).await?;
            buf.reserve(1 << 20);
        }
    }
    store::copy_trailer(&mut buf);
    copy.send(buf).await?;
    let copied = copy.finish().await?;
    let took = started.elapsed();
    anyhow::ensure!(
        copied == records.len() as u64,
        "COPY stored {copied} of {} rows",
        records.len()
    );
    Ok(took)
}

/// A stored row back as the record the persist job wrote, so every write path writes the same rows.
pub(super) fn as_record(r: &observations::Model) -> ValidRecord {
    ValidRecord {
        lineage: Lineage {
            topic: r.kafka_topic.as_deref().unwrap_or_default().into(),
            partition: r.kafka_partition.unwrap_or_default(),
            offset: r.kafka_offset.unwrap_or_default(),
        },
        raw: Raw::default(),
        observation: Observation {
            location_key: r.location_key.clone(),
            location_name: r.location_name.clone(),
            region: r.region.clone(),
            country: r.country.clone(),
            lat: r.lat,
            lon: r.lon,
            observed_at: r.observed_at,
            temp_c: r.temp_c,
            feelslike_c: r.feelslike_c,
            wind_kph: r.wind_kph,
            gust_kph: r.gust_kph,
            pressure_mb: r.pressure_mb,
            precip_mm: r.precip_mm,
            vis_km: r.vis_km,
            uv: r.uv,
            wind_degree: r.wind_degree,
            humidity: r.humidity,
            cloud: r.cloud,
            wind_dir: r.wind_dir.clone(),
            condition_text: r.condition_text.clone(),
            condition_code: r.condition_code,
            is_day: r.is_day,
            source: if r.source == "weatherapi" {
                Source::Weatherapi
            } else {
                Source::Simulated
            },
            fetched_at: r.fetched_at,
        },
    }
}

/// Which write path [`write_path_rows`] measures.
#[derive(Debug, Clone, Copy)]
pub(super) enum WritePath {
    /// The existence check, then COPY.
    CheckedCopy,
    /// COPY alone (the steady state without duplicates).
    Copy,
    /// The UNNEST statement with ON CONFLICT.
    Unnest,
}

/// One of the persist job's observation writes alone (no Kafka, no validation): one connection,
/// one transaction per batch, into the emptied observations table.
pub(super) async fn write_path_rows(
    db: &DatabaseConnection,
    records: &[ValidRecord],
    batch_size: usize,
    path: WritePath,
) -> anyhow::Result<Duration> {
    db.execute_unprepared("TRUNCATE observations").await?;
    let pool = db.get_postgres_connection_pool();
    let started = Instant::now();
    let mut inserted = 0;
    for chunk in records.chunks(batch_size) {
        let refs: Vec<&ValidRecord> = chunk.iter().collect();
        let mut tx = pool.begin().await?;
        store::disable_nagle(pool);
        inserted += write_with(&mut tx, path, &refs).await?;
        tx.commit().await?;
    }
    let took = started.elapsed();
    anyhow::ensure!(
        inserted == records.len() as u64,
        "{path:?} stored {inserted} of {} rows",
        records.len()
    );
    Ok(took)
}

/// One batch into `observations` through `path`, on the caller's connection or transaction;
/// returns the rows inserted.
async fn write_with(
    conn: &mut sqlx::PgConnection,
    path: WritePath,
    refs: &[&ValidRecord],
) -> Result<u64, sqlx::Error> {
    match path {
        WritePath::CheckedCopy => store::copy_observations(conn, &store::OBSERVATIONS, refs, true).await,
        WritePath::Copy => store::copy_observations(conn, &store::OBSERVATIONS, refs, false).await,
        WritePath::Unnest => store::insert_observations(conn, &store::OBSERVATIONS, refs).await,
    }
}

/// Small batches, each autocommitted as the job writes a steady stream's: COPY (without the
/// existence check) against the UNNEST statement, alternating, `rounds` of each at every size of
/// `sizes`, each on rows of its own. Returns per size the two writes' times.
pub(super) async fn small_batch_rows(
    db: &DatabaseConnection,
    records: &[ValidRecord],
    sizes: &[usize],
    rounds: usize,
) -> anyhow::Result<Vec<(usize, Stage, Stage)>> {
    anyhow::ensure!(rounds > 0, "too few rows for the small-batch writes");
    db.execute_unprepared("TRUNCATE observations").await?;
    let pool = db.get_postgres_connection_pool();
    let mut rows = records.iter();
    let mut out = Vec::with_capacity(sizes.len());
    for &size in sizes {
        let mut copy = Stage {
            name: "COPY",
            ms: Vec::with_capacity(rounds),
        };
        let mut unnest = Stage {
            name: "UNNEST",
            ms: Vec::with_capacity(rounds),
        };
        for _ in 0..rounds {
            for (path, stage) in [(WritePath::Copy, &mut copy), (WritePath::Unnest, &mut unnest)] {
                let batch: Vec<&ValidRecord> = rows.by_ref().take(size).collect();
                anyhow::ensure!(batch.len() == size, "too few rows for the small-batch writes");
                let mut conn = pool.acquire().await?;
                store::disable_nagle(pool);
                let started = Instant::now();
                let inserted = write_with(&mut conn, path, &batch).await?;
                stage.ms.push(started.elapsed().as_secs_f64() * 1e3);
                anyhow::ensure!(
                    inserted == size as u64,
                    "{} stored {inserted} of {size} rows",
                    stage.name
                );
            }
        }
        copy.ms.sort_by(f64::total_cmp);
        unnest.ms.sort_by(f64::total_cmp);
        out.push((size, copy, unnest));
    }
    Ok(out)
}

/// SeaORM's `insert_many` with `ON CONFLICT DO NOTHING`, one transaction per batch, each statement
/// kept under PostgreSQL's 65 535 bound parameters.
pub(super) async fn insert_many_rows(
    db: &DatabaseConnection,
    rows: &[observations::Model],
    batch_size: usize,
) -> anyhow::Result<Duration> {
    db.execute_unprepared("TRUNCATE observations").await?;
    let per_statement = (65_535 / observations::WRITTEN_COLUMNS.len()).min(batch_size);
    let started = Instant::now();
    for chunk in rows.chunks(per_statement) {
        let models = chunk.iter().map(|m| {
            let mut am = m.clone().into_active_model();
            am.id = NotSet;
            am.ingested_at = NotSet;
            am
        });
        let txn = db.begin().await?;
        store::disable_nagle(db.get_postgres_connection_pool());
        observations::Entity::insert_many(models)
            .on_conflict_do_nothing_on([
                observations::Column::LocationKey,
                observations::Column::ObservedAt,
                observations::Column::Source,
            ])
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
    }
    let took = started.elapsed();
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*) FROM observations",
        ))
        .await?
        .context("count")?;
    let n: i64 = row.try_get_by_index(0)?;
    anyhow::ensure!(
        n == rows.len() as i64,
        "insert_many stored {n} of {} rows",
        rows.len()
    );
    Ok(took)
}
