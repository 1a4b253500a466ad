//! `weatherflow bench persist`: the persist job's throughput against a binary COPY of the same rows,
//! the write path's alternatives, and end-to-end latency at a low rate. Prints figures; asserts
//! nothing.
//!
//! Everything runs in a scratch database `wf_bench_<random>` (created, migrated, dropped) and on
//! scratch topics, so it can be pointed at a shared server.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use entity::observations;
use futures::future::join_all;
use migration::{Migrator, MigratorTrait};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sea_orm::{
    ActiveValue::NotSet, ConnectionTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryOrder,
    Statement, TransactionTrait,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::envelope::{Envelope, SCHEMA_VERSION, Source, location_key};
use crate::jobs::persist::store::{self, Lineage, Raw, ValidRecord};
use crate::jobs::persist::validate::Observation;
use crate::jobs::persist::{self, PersistRequest};

/// Distinct places in the generated stream; each gets one observation per 15 minutes.
const PLACES: u64 = 1000;
/// Messages for the latency run, and their rate.
const LATENCY_MESSAGES: u64 = 1000;
const LATENCY_RATE_PER_SEC: u64 = 100;

/// Runs the benchmark with `messages` messages.
pub async fn run(config: &Config, messages: u64, shutdown: CancellationToken) -> anyhow::Result<()> {
    let id = format!("{:016x}", rand::random::<u64>());
    let scratch = Scratch::create(config, &id).await?;
    let result = tokio::select! {
        r = measure(&scratch, messages, &shutdown) => r,
        _ = shutdown.cancelled() => Err(anyhow::anyhow!("interrupted")),
    };
    scratch.drop_all(config).await;
    result
}

/// The scratch database and topics of one run.
struct Scratch {
    config: Config,
    db: DatabaseConnection,
    db_name: String,
}

impl Scratch {
    async fn create(base: &Config, id: &str) -> anyhow::Result<Self> {
        let db_name = format!("wf_bench_{id}");
        let admin = crate::db::connect(&base.database).await?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {db_name}"))
            .await
            .with_context(|| format!("creating database {db_name}"))?;
        admin.close().await.ok();
        let mut config = base.clone();
        let mut url = url::Url::parse(base.database.url.expose_secret()).context("DATABASE_URL")?;
        url.set_path(&format!("/{db_name}"));
        config.database.url = SecretString::from(url.to_string());
        config.kafka.observations_topic = format!("wf-bench-{id}");
        config.kafka.dlq_topic = format!("wf-bench-{id}.dlq");
        config.kafka.consumer_group = format!("wf-bench-{id}");
        let db = crate::db::connect(&config.database).await?;
        Migrator::up(&db, None)
            .await
            .context("migrating the bench database")?;
        Ok(Self { config, db, db_name })
    }

    async fn drop_all(self, base: &Config) {
        self.db.close().await.ok();
        let k = &self.config.kafka;
        let latency_topic = format!("{}-latency", k.observations_topic);
        let latency_dlq = format!("{}-latency.dlq", k.observations_topic);
        let topics = [
            k.observations_topic.as_str(),
            k.dlq_topic.as_str(),
            latency_topic.as_str(),
            latency_dlq.as_str(),
        ];
        if let Err(e) = crate::kafka::delete_topics(k, &topics).await {
            eprintln!("warning: could not delete the bench topics: {e}");
        }
        match crate::db::connect(&base.database).await {
            Ok(admin) => {
                let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db_name);
                if let Err(e) = admin.execute_unprepared(&sql).await {
                    eprintln!("warning: could not drop {}: {e}", self.db_name);
                }
                admin.close().await.ok();
            }
            Err(e) => eprintln!("warning: could not drop {}: {e}", self.db_name),
        }
    }
}

async fn measure(s: &Scratch, messages: u64, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let c = &s.config;
    println!(
        "weatherflow bench persist: {messages} messages, {} partitions, batch_size {}, writers {}, {} build",
        c.kafka.partitions,
        c.persist.batch_size,
        c.persist.writers,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    crate::kafka::ensure_topic(&c.kafka, &c.kafka.observations_topic, c.kafka.partitions).await?;
    let producer = crate::kafka::producer(&c.kafka)?;

    let started = Instant::now();
    produce_backlog(&producer, &c.kafka.observations_topic, messages).await?;
    line(
        "produce (idempotent, acks=all)",
        messages,
        started.elapsed(),
        "msg",
    );

    let started = Instant::now();
    let summary = persist::run(
        c,
        &s.db,
        PersistRequest { until_idle: true },
        shutdown.child_token(),
    )
    .await?;
    let wall = started.elapsed();
    anyhow::ensure!(
        summary.stored == messages && summary.rejected_total() == 0,
        "persist stored {} of {messages} rows ({} rejected)",
        summary.stored,
        summary.rejected_total()
    );
    let persist_rate = line("persist, end to end", summary.stored, summary.active, "row");
    println!(
        "  {:<32} {:>8.1} s (group join and idle wait included)",
        "wall time of the run",
        wall.as_secs_f64()
    );

    let rows = observations::Entity::find()
        .order_by_asc(observations::Column::Id)
        .all(&s.db)
        .await?;
    let records: Vec<ValidRecord> = rows.iter().map(as_record).collect();
    let n = records.len() as u64;
    let batch = c.persist.batch_size;
    let copy_rate = line(
        "binary COPY, same rows, 1 tx",
        n,
        copy_rows(&s.db, &records).await?,
        "row",
    );
    let checked_rate = line(
        "write path alone: check + COPY",
        n,
        write_path_rows(&s.db, &records, batch, WritePath::CheckedCopy).await?,
        "row",
    );
    let copy_path_rate = line(
        "write path alone: COPY",
        n,
        write_path_rows(&s.db, &records, batch, WritePath::Copy).await?,
        "row",
    );
    let unnest_rate = line(
        "write path alone: UNNEST",
        n,
        write_path_rows(&s.db, &records, batch, WritePath::Unnest).await?,
        "row",
    );
    let many_rate = line(
        "SeaORM insert_many",
        n,
        insert_many_rows(&s.db, &rows, batch).await?,
        "row",
    );
    println!(
        "  ratio persist / COPY             {:>8.2}   (target >= 0.70)",
        persist_rate / copy_rate
    );
    println!(
        "  write paths / COPY               COPY {:.2}, check+COPY {:.2}, UNNEST {:.2}, insert_many {:.2}",
        copy_path_rate / copy_rate,
        checked_rate / copy_rate,
        unnest_rate / copy_rate,
        many_rate / copy_rate
    );
    drop((rows, records));

    latency(s, &producer, shutdown).await
}

/// Prints one throughput line; returns the rate per second.
fn line(what: &str, n: u64, took: Duration, unit: &str) -> f64 {
    let rate = n as f64 / took.as_secs_f64().max(1e-9);
    println!(
        "  {what:<32} {n:>8} {unit}s in {:>6.2} s = {:>8.0} {unit}s/s",
        took.as_secs_f64(),
        rate
    );
    rate
}

// ---------------------------------------------------------------- generated messages

/// A realistic `current.json` body (the shape of weatherapi.md §4.4's London recording) for message
/// `i`: the place cycles through [`PLACES`], the observation time advances 15 minutes per cycle, the
/// measurements vary, so every message is a distinct row.
fn payload(i: u64, epoch0: i64) -> (String, String) {
    let place = i % PLACES;
    let (name, region, country) = (
        format!("Bench Town {place}"),
        format!("Region {}", place % 37),
        ["United Kingdom", "France", "India", "Brazil", "Japan"][(place % 5) as usize],
    );
    let epoch = epoch0 + (i / PLACES) as i64 * 900;
    let lat = (place as f64 * 0.173) % 170.0 - 85.0;
    let lon = (place as f64 * 0.359) % 350.0 - 175.0;
    let temp = ((i * 37) % 700) as f64 / 10.0 - 30.0;
    let wind = ((i * 11) % 900) as f64 / 10.0;
    let humidity = (i * 7) % 101;
    let body = format!(
        r#"{{"location":{{"name":"{name}","region":"{region}","country":"{country}","lat":{lat:.4},"lon":{lon:.4},"tz_id":"Europe/London","localtime_epoch":{local},"localtime":"2026-01-05 17:14"}},"current":{{"last_updated_epoch":{epoch},"last_updated":"2026-01-05 17:00","temp_c":{temp:.1},"temp_f":{temp_f:.1},"is_day":{is_day},"condition":{{"text":"Partly cloudy","icon":"//cdn.weatherapi.com/weather/64x64/day/116.png","code":1003}},"wind_mph":{wind_mph:.1},"wind_kph":{wind:.1},"wind_degree":{deg},"wind_dir":"NW","pressure_mb":{pressure:.1},"pressure_in":29.97,"precip_mm":0.0,"precip_in":0.0,"humidity":{humidity},"cloud":{cloud},"feelslike_c":{feels:.1},"feelslike_f":25.0,"windchill_c":-4.0,"windchill_f":24.8,"heatindex_c":0.0,"heatindex_f":32.0,"dewpoint_c":-6.1,"dewpoint_f":21.1,"vis_km":10.0,"vis_miles":6.0,"uv":1.5,"gust_mph":13.1,"gust_kph":21.1,"short_rad":0,"diff_rad":0,"dni":0,"gti":0}}}}"#,
        local = epoch + 840,
        temp_f = temp * 1.8 + 32.0,
        is_day = i % 2,
        wind_mph = wind / 1.609,
        deg = (i * 13) % 361,
        pressure = 980.0 + (i % 60) as f64,
        cloud = (i * 3) % 101,
        feels = temp - 2.5,
    );
    (location_key(&name, &region, country), body)
}

fn envelope_bytes(body: String, fetched_at: DateTime<Utc>) -> anyhow::Result<Vec<u8>> {
    Ok(Envelope {
        schema_version: SCHEMA_VERSION,
        source: Source::Simulated,
        fetched_at,
        query: "bench".into(),
        payload: RawValue::from_string(body)?,
    }
    .to_bytes())
}

async fn send(producer: &FutureProducer, topic: &str, key: &str, value: &[u8]) -> anyhow::Result<()> {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .context("producing a bench message")?;
    Ok(())
}

async fn produce_backlog(producer: &FutureProducer, topic: &str, messages: u64) -> anyhow::Result<()> {
    // Far enough in the past that the whole series stays behind the clock.
    let epoch0 = Utc::now().timestamp() - (messages / PLACES + 2) as i64 * 900;
    let mut i = 0;
    while i < messages {
        let end = (i + 10_000).min(messages);
        let chunk: Vec<(String, Vec<u8>)> = (i..end)
            .map(|n| {
                let (key, body) = payload(n, epoch0);
                envelope_bytes(body, Utc::now()).map(|v| (key, v))
            })
            .collect::<anyhow::Result<_>>()?;
        for r in join_all(chunk.iter().map(|(k, v)| send(producer, topic, k, v))).await {
            r?;
        }
        i = end;
    }
    Ok(())
}

// ---------------------------------------------------------------- write-path comparisons

/// Binary COPY of `records` into a fresh `LIKE observations INCLUDING ALL` table, in one statement
/// and one transaction (the best case for COPY), encoding included.
async fn copy_rows(db: &DatabaseConnection, records: &[ValidRecord]) -> anyhow::Result<Duration> {
    db.execute_unprepared("CREATE TABLE observations_copy (LIKE observations INCLUDING ALL)")
        .await?;
    let statement = store::COPY_OBSERVATIONS.replacen("COPY observations ", "COPY observations_copy ", 1);
    let pool = db.get_postgres_connection_pool();
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    store::disable_nagle(pool);
    let mut copy = conn.copy_in_raw(&statement).await?;
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

fn as_record(r: &observations::Model) -> ValidRecord {
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
enum WritePath {
    /// The existence check, then COPY.
    CheckedCopy,
    /// COPY alone (the steady state without duplicates).
    Copy,
    /// The UNNEST statement with ON CONFLICT.
    Unnest,
}

/// One of the persist job's observation writes alone (no Kafka, no validation): one connection,
/// one transaction per batch, into the emptied observations table.
async fn write_path_rows(
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
        inserted += match path {
            WritePath::CheckedCopy => store::copy_observations(&mut tx, &refs, true).await?,
            WritePath::Copy => store::copy_observations(&mut tx, &refs, false).await?,
            WritePath::Unnest => store::insert_observations(&mut tx, &refs).await?,
        };
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

/// SeaORM's `insert_many` with `ON CONFLICT DO NOTHING`, one transaction per batch, each statement
/// kept under PostgreSQL's 65 535 bound parameters.
async fn insert_many_rows(
    db: &DatabaseConnection,
    rows: &[observations::Model],
    batch_size: usize,
) -> anyhow::Result<Duration> {
    db.execute_unprepared("TRUNCATE observations").await?;
    let per_statement = (65_535 / store::OBSERVATION_COLUMNS.len()).min(batch_size);
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

// ---------------------------------------------------------------- latency

/// A running consumer on a fresh topic; messages produced at a low rate carry their send time in
/// `fetched_at`; a poller sees each row appear (5 ms polling) and takes the difference.
async fn latency(s: &Scratch, producer: &FutureProducer, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let mut c = s.config.clone();
    c.kafka.observations_topic = format!("{}-latency", s.config.kafka.observations_topic);
    c.kafka.dlq_topic = format!("{}-latency.dlq", s.config.kafka.observations_topic);
    c.kafka.consumer_group = format!("{}-latency", s.config.kafka.consumer_group);
    crate::kafka::ensure_topic(&c.kafka, &c.kafka.observations_topic, c.kafka.partitions).await?;
    s.db.execute_unprepared("TRUNCATE observations").await?;
    let stop = shutdown.child_token();
    let consumer = persist::run(&c, &s.db, PersistRequest { until_idle: false }, stop.clone());
    let measure = async {
        let result = measure_latency(&c, &s.db, producer).await;
        stop.cancel();
        result
    };
    let (summary, latencies) = tokio::join!(consumer, measure);
    summary?;
    let mut latencies = latencies?;
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "  latency at {LATENCY_RATE_PER_SEC} msg/s, produce -> row committed (n={}): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(pct(1.0))
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn measure_latency(
    c: &Config,
    db: &DatabaseConnection,
    producer: &FutureProducer,
) -> anyhow::Result<Vec<Duration>> {
    let topic = &c.kafka.observations_topic;
    let epoch0 = Utc::now().timestamp() - 86_400;
    // Warm-up: wait until the consumer has joined the group and stored one row.
    // Place 0, one step after the measured messages' time: a row of its own.
    let (key, body) = payload(PLACES, epoch0);
    send(producer, topic, &key, &envelope_bytes(body, Utc::now())?).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let warm_up = loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the latency consumer stored nothing within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Some((id, _)) = new_rows(db, 0).await?.last() {
            break *id;
        }
    };

    let produce = async {
        let mut tick = tokio::time::interval(Duration::from_millis(1000 / LATENCY_RATE_PER_SEC));
        for i in 0..LATENCY_MESSAGES {
            tick.tick().await;
            let (key, body) = payload(i, epoch0);
            // Stamped just before the send; millisecond precision like every fetched_at.
            let now = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_else(Utc::now);
            send(producer, topic, &key, &envelope_bytes(body, now)?).await?;
        }
        anyhow::Ok(())
    };
    let poll = async {
        // Writers commit out of id order, so rows are remembered by id rather than by a high-water
        // mark; the table holds only this run's rows.
        let mut seen = std::collections::HashSet::new();
        let mut latencies = Vec::with_capacity(LATENCY_MESSAGES as usize);
        let deadline = Instant::now() + Duration::from_secs(LATENCY_MESSAGES / LATENCY_RATE_PER_SEC + 30);
        while (latencies.len() as u64) < LATENCY_MESSAGES && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let now = Utc::now();
            for (id, fetched_at) in new_rows(db, warm_up).await? {
                if seen.insert(id) {
                    latencies.push((now - fetched_at).to_std().unwrap_or_default());
                }
            }
        }
        anyhow::ensure!(
            latencies.len() as u64 == LATENCY_MESSAGES,
            "only {} of {LATENCY_MESSAGES} latency rows arrived",
            latencies.len()
        );
        Ok(latencies)
    };
    let (produced, latencies) = tokio::join!(produce, poll);
    produced?;
    latencies
}

async fn new_rows(db: &DatabaseConnection, after: i64) -> anyhow::Result<Vec<(i64, DateTime<Utc>)>> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT id, fetched_at FROM observations WHERE id > $1 ORDER BY id",
            [after.into()],
        ))
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get_by_index(0)?, r.try_get_by_index(1)?)))
        .collect::<Result<_, sea_orm::DbErr>>()
        .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::persist::validate::{Rules, validate};

    #[test]
    fn generated_messages_are_valid_and_distinct() {
        let epoch0 = Utc::now().timestamp() - 86_400;
        let mut seen = std::collections::HashSet::new();
        for i in 0..3 * PLACES {
            let (key, body) = payload(i, epoch0);
            let bytes = envelope_bytes(body, Utc::now()).unwrap();
            let o = validate(Some(&bytes), Utc::now(), &Rules::default())
                .unwrap_or_else(|r| panic!("message {i}: {}", r.reason));
            assert_eq!(o.location_key, key);
            assert!(
                seen.insert((o.location_key, o.observed_at)),
                "message {i} repeats a row"
            );
        }
    }
}
