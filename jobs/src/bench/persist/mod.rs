//! `weatherflow bench persist`: the persist job's throughput against a binary COPY of the same rows,
//! the write path's alternatives, and end-to-end latency at a low rate. Prints figures; asserts
//! nothing.
//!
//! Everything runs in a scratch database `wf_bench_<random>` (created, migrated, dropped) and on
//! scratch topics, so it can be pointed at a shared server.

mod cpu;
mod latency;
mod parse;
mod paths;

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use entity::observations;
use futures::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, QueryOrder};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::ScratchDatabase;
use crate::envelope::{Envelope, SCHEMA_VERSION, Source, location_key};
use crate::jobs::persist::store::{self, ValidRecord};
use crate::jobs::persist::{self, PersistRequest};
use cpu::Cpu;
use latency::latency;
use paths::{WritePath, as_record, copy_rows, insert_many_rows, small_batch_rows, write_path_rows};

/// Distinct places in the generated stream; each gets one observation per 15 minutes.
pub(super) const PLACES: u64 = 1000;

/// Runs the benchmark with `messages` messages.
pub async fn run(
    config: &Config,
    messages: u64,
    rounds: u32,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let id = format!("{:016x}", rand::random::<u64>());
    let scratch = Scratch::create(config, &id).await?;
    let result = tokio::select! {
        r = measure(&scratch, messages, rounds, &shutdown) => r,
        _ = shutdown.cancelled() => Err(anyhow::anyhow!("interrupted")),
    };
    scratch.drop_all().await;
    result
}

/// Rounds 2..=`rounds`: the same backlog drained again, by a consumer group of its own into the
/// emptied table, then the same COPY again. One pair of 2–3 s runs is at the mercy of a neighbour's
/// burst; the median over pairs is not.
async fn more_rounds(
    s: &Scratch,
    records: &[ValidRecord],
    rounds: u32,
    first: f64,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut ratios = vec![first];
    for round in 2..=rounds {
        s.db.execute_unprepared("TRUNCATE observations").await?;
        let mut c = s.config.clone();
        c.kafka.consumer_group = format!("{}-round-{round}", s.config.kafka.consumer_group);
        let req = PersistRequest { until_idle: true, ..Default::default() };
        let summary = persist::run(&c, &s.db, req, shutdown.child_token()).await?;
        anyhow::ensure!(
            summary.stored == records.len() as u64,
            "round {round}: persist stored {} of {} rows",
            summary.stored,
            records.len()
        );
        let persist = summary.stored as f64 / summary.active.as_secs_f64().max(1e-9);
        let copy = records.len() as f64 / copy_rows(&s.db, records).await?.as_secs_f64().max(1e-9);
        ratios.push(persist / copy);
    }
    let by_round: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "  ratio persist / COPY by round    {}; median {:.2}, lowest {:.2}   (target >= 0.90)",
        by_round.join(" "),
        ratios[ratios.len() / 2],
        ratios[0]
    );
    Ok(())
}

/// The scratch database and topics of one run.
pub(super) struct Scratch {
    pub(super) config: Config,
    pub(super) db: DatabaseConnection,
    database: ScratchDatabase,
}

impl Scratch {
    async fn create(base: &Config, id: &str) -> anyhow::Result<Self> {
        let database = ScratchDatabase::create(&base.database, "wf_bench").await?;
        let mut config = base.clone();
        config.database = database.config().clone();
        config.kafka.observations_topic = format!("wf-bench-{id}");
        config.kafka.dlq_topic = format!("wf-bench-{id}.dlq");
        config.kafka.consumer_group = format!("wf-bench-{id}");
        let db = database.conn().clone();
        Ok(Self { config, db, database })
    }

    async fn drop_all(self) {
        self.db.close().await.ok();
        let k = &self.config.kafka;
        let mut names = vec![k.observations_topic.clone(), k.dlq_topic.clone()];
        names.extend(latency::topics(&self.config));
        let topics: Vec<&str> = names.iter().map(String::as_str).collect();
        if let Err(e) = crate::kafka::delete_topics(k, &topics).await {
            eprintln!("warning: could not delete the bench topics: {e}");
        }
        if let Err(e) = self.database.drop_database().await {
            eprintln!("warning: could not drop the bench database: {e}");
        }
    }
}

async fn measure(
    s: &Scratch,
    messages: u64,
    rounds: u32,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
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
    parse::parse_costs()?;
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
    let cpu = Cpu::now();
    let summary = persist::run(
        c,
        &s.db,
        PersistRequest { until_idle: true, ..Default::default() },
        shutdown.child_token(),
    )
    .await?;
    let wall = started.elapsed();
    let persist_cpu = Cpu::now().since(&cpu);
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
    let cpu = Cpu::now();
    let copy_time = copy_rows(&s.db, &records).await?;
    let copy_cpu = Cpu::now().since(&cpu);
    let copy_rate = line("binary COPY, same rows, 1 tx", n, copy_time, "row");
    let mut path_rates = Vec::new();
    for (what, path) in [
        ("write path alone: check + COPY", WritePath::CheckedCopy),
        ("write path alone: COPY", WritePath::Copy),
        ("write path alone: UNNEST", WritePath::Unnest),
    ] {
        path_rates.push(line(
            what,
            n,
            write_path_rows(&s.db, &records, batch, path).await?,
            "row",
        ));
    }
    let [checked_rate, copy_path_rate, unnest_rate] = path_rates[..] else {
        unreachable!("three write paths were measured");
    };
    let many_rate = line(
        "SeaORM insert_many",
        n,
        insert_many_rows(&s.db, &rows, batch).await?,
        "row",
    );
    println!(
        "  ratio persist / COPY             {:>8.2}   (target >= 0.90)",
        persist_rate / copy_rate
    );
    println!(
        "  CPU per million rows, persist:   {}",
        persist_cpu.per_million(summary.stored)
    );
    println!("  CPU per million rows, COPY:      {}", copy_cpu.per_million(n));
    println!(
        "  write paths / COPY               COPY {:.2}, check+COPY {:.2}, UNNEST {:.2}, insert_many {:.2}",
        copy_path_rate / copy_rate,
        checked_rate / copy_rate,
        unnest_rate / copy_rate,
        many_rate / copy_rate
    );
    // 200 of each write at every size, or as many as the backlog's rows allow (`--messages`).
    let small_rounds = (records.len() / (2 * SMALL_SIZES.iter().sum::<usize>())).min(200);
    if small_rounds > 0 {
        for (size, copy, unnest) in small_batch_rows(&s.db, &records, &SMALL_SIZES, small_rounds).await? {
            println!(
                "  {size:>2}-row batch, autocommitted   COPY p50 {:.3} ms p99 {:.3} ms, UNNEST p50 {:.3} ms p99 {:.3} ms, UNNEST / COPY p50 {:.2}{}",
                copy.pct(0.5),
                copy.pct(0.99),
                unnest.pct(0.5),
                unnest.pct(0.99),
                unnest.pct(0.5) / copy.pct(0.5),
                if size <= store::SMALL_BATCH_ROWS {
                    " (the job: UNNEST)"
                } else {
                    " (the job: COPY)"
                }
            );
        }
    }
    drop(rows);
    let first = persist_rate / copy_rate;
    more_rounds(s, &records, rounds, first, shutdown).await?;
    drop(records);

    latency(s, &producer, shutdown).await
}

/// Batch sizes the small-batch writes are compared at: a steady stream's batches and the
/// crossover around [`store::SMALL_BATCH_ROWS`].
const SMALL_SIZES: [usize; 5] = [1, 2, 8, 16, 32];

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
pub(super) fn payload(i: u64, epoch0: i64) -> (String, String) {
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

/// `body` wrapped in an envelope fetched at `fetched_at`, serialized.
pub(super) fn envelope_bytes(body: String, fetched_at: DateTime<Utc>) -> anyhow::Result<Vec<u8>> {
    Ok(Envelope {
        schema_version: SCHEMA_VERSION,
        source: Source::Simulated,
        fetched_at,
        query: "bench".into(),
        payload: RawValue::from_string(body)?,
    }
    .to_bytes())
}

/// Produces one message and waits for its delivery report.
/// Sends one message and waits for its delivery; returns its partition and offset.
pub(super) async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    value: &[u8],
) -> anyhow::Result<(i32, i64)> {
    let delivery = producer
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .context("producing a bench message")?;
    Ok((delivery.partition, delivery.offset))
}

async fn produce_backlog(producer: &FutureProducer, topic: &str, messages: u64) -> anyhow::Result<()> {
    // Far enough in the past that the whole series stays behind the clock.
    let epoch0 = Utc::now().timestamp() - (messages / PLACES + 2) as i64 * 900;
    // A million messages take minutes in a debug build: show how far it is.
    let progress = crate::progress::Progress::stderr("bench persist: producing the backlog", Some(messages));
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
        progress.inc(end - i);
        i = end;
    }
    progress.finish("messages acknowledged");
    Ok(())
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
