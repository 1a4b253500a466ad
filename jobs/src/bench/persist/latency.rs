//! End-to-end latency at a low rate: from a message's send to its row being visible.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::producer::FutureProducer;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::jobs::persist::{self, PersistRequest};

use super::{PLACES, Scratch, envelope_bytes, payload, send};

/// Messages for the latency run, and their rate.
const LATENCY_MESSAGES: u64 = 1000;
const LATENCY_RATE_PER_SEC: u64 = 100;

/// A running consumer on a fresh topic; messages produced at a low rate carry their send time in
/// `fetched_at`; a poller sees each row appear (5 ms polling) and takes the difference.
pub(super) async fn latency(
    s: &Scratch,
    producer: &FutureProducer,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
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
