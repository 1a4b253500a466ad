//! End-to-end latency and its budget: messages produced at a steady rate to a running consumer,
//! each batch's first record stamped at every stage (`persist::probe`), matched to its send time by
//! partition and offset.
//!
//! The topic stamps messages with the broker's append time (`message.timestamp.type=LogAppendTime`),
//! so the budget splits at the broker too: produce → append, append → poll, poll → hand-off to a
//! writer, hand-off → the writer takes it, → COPY done, → COMMIT done. A batch's first record is the
//! one that waited longest in it, so the figures are each batch's worst record.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sea_orm::ConnectionTrait;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::jobs::persist::probe::{Probe, Stamps};
use crate::jobs::persist::{self, PersistRequest};

use super::cpu::{Cpu, CpuUse};
use super::{PLACES, Scratch, envelope_bytes, payload, send};

/// The runs: messages per second, and for how long.
const RATES: [(u64, u64); 2] = [(100, 10), (2000, 5)];

/// Runs the latency measurement at each rate of [`RATES`] and prints the budget.
pub(super) async fn latency(
    s: &Scratch,
    producer: &FutureProducer,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    round_trip(s).await?;
    for (rate, secs) in RATES {
        let c = config_at(&s.config, rate);
        let result = run_at(s, &c, producer, shutdown, rate, secs).await;
        let topics = [c.kafka.observations_topic.as_str(), c.kafka.dlq_topic.as_str()];
        crate::kafka::delete_topics(&c.kafka, &topics).await?;
        result?;
    }
    Ok(())
}

/// Prints the machine's own floor beside the budget: one PostgreSQL round trip over the bench's
/// pool. The budget's database stages are a few of these, so the two read together tell a slow
/// machine from a slow pipeline.
async fn round_trip(s: &Scratch) -> anyhow::Result<()> {
    let mut stage = Stage {
        name: "SELECT 1",
        ms: Vec::with_capacity(500),
    };
    for _ in 0..500 {
        let started = std::time::Instant::now();
        s.db.execute_unprepared("SELECT 1").await?;
        stage.ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    stage.ms.sort_by(f64::total_cmp);
    println!(
        "  this machine's floor: one PostgreSQL round trip ({} over the pool, n=500) p50 {:.3} ms, p99 {:.3} ms",
        stage.name,
        stage.pct(0.50),
        stage.pct(0.99)
    );
    Ok(())
}

/// The bench's configuration for the run at `rate`: topics and group of its own.
fn config_at(base: &Config, rate: u64) -> Config {
    let mut c = base.clone();
    let k = &base.kafka;
    c.kafka.observations_topic = format!("{}-latency-{rate}", k.observations_topic);
    c.kafka.dlq_topic = format!("{}-latency-{rate}.dlq", k.observations_topic);
    c.kafka.consumer_group = format!("{}-latency-{rate}", k.consumer_group);
    c
}

/// Every topic the latency runs may create, for the bench's clean-up.
pub(super) fn topics(base: &Config) -> Vec<String> {
    RATES
        .iter()
        .flat_map(|&(rate, _)| {
            let c = config_at(base, rate);
            [c.kafka.observations_topic, c.kafka.dlq_topic]
        })
        .collect()
}

async fn run_at(
    s: &Scratch,
    c: &Config,
    producer: &FutureProducer,
    shutdown: &CancellationToken,
    rate: u64,
    secs: u64,
) -> anyhow::Result<()> {
    let append_time = [("message.timestamp.type", "LogAppendTime")];
    crate::kafka::ensure_topic_with(
        &c.kafka,
        &c.kafka.observations_topic,
        c.kafka.partitions,
        &append_time,
    )
    .await?;
    s.db.execute_unprepared("TRUNCATE observations").await?;
    let probe = Probe::default();
    let stop = shutdown.child_token();
    let req = PersistRequest { until_idle: false, ..Default::default() };
    let consumer = persist::run_probed(c, &s.db, req, stop.clone(), Some(probe.clone()));
    let measure = async {
        let result = produce(c, producer, &probe, rate, secs).await;
        stop.cancel();
        result
    };
    let (summary, sent) = tokio::join!(consumer, measure);
    summary?;
    let (sent, machine) = sent?;
    report(rate, &sent, &probe.take());
    println!("    {machine}");
    if let Some(caution) = machine.caution() {
        println!("    {caution}");
    }
    Ok(())
}

/// Produces `rate` messages a second for `secs` seconds after a warm-up; returns each message's
/// send time by (partition, offset).
async fn produce(
    c: &Config,
    producer: &FutureProducer,
    probe: &Probe,
    rate: u64,
    secs: u64,
) -> anyhow::Result<(HashMap<(i32, i64), DateTime<Utc>>, Meanwhile)> {
    let topic = c.kafka.observations_topic.as_str();
    let epoch0 = Utc::now().timestamp() - 86_400;
    // Warm-up: one message per partition's worth of places, until the consumer has joined the
    // group and stored a batch; its stamps are dropped.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut i = 10 * PLACES;
    while probe.take().is_empty() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the latency consumer stored nothing within 60 s"
        );
        let (key, body) = payload(i, epoch0);
        i += 1;
        send(producer, topic, &key, &envelope_bytes(body, Utc::now())?).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = probe.take();
    let (cpu0, started) = (Cpu::now(), std::time::Instant::now());

    // Each message is handed to the producer's queue right after its send time is stamped, and its
    // delivery awaited only at the end: a task per message would put the runtime's scheduling
    // between the stamp and the queue, on the workers the writers run on.
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut deliveries = Vec::with_capacity((rate * secs) as usize);
    for i in 0..rate * secs {
        tick.tick().await;
        let (key, body) = payload(i, epoch0);
        let value = envelope_bytes(body, Utc::now())?;
        let sent_at = Utc::now();
        let delivery = producer
            .send_result(FutureRecord::to(topic).key(&key).payload(&value))
            .map_err(|(e, _)| e)
            .context("producing a latency message")?;
        deliveries.push((delivery, sent_at));
    }
    let meanwhile = Meanwhile {
        cpu: Cpu::now().since(&cpu0),
        wall: started.elapsed(),
    };
    let mut sent = HashMap::with_capacity(deliveries.len());
    for (delivery, sent_at) in deliveries {
        let d = delivery
            .await
            .context("the producer went away before a latency message was delivered")?
            .map_err(|(e, _)| e)
            .context("producing a latency message")?;
        sent.insert((d.partition, d.offset), sent_at);
    }
    // Let the consumer store the tail.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok((sent, meanwhile))
}

/// What the machine did while the messages were produced: whose CPU time it was, per second of
/// wall time, and how much the hypervisor stole. A run whose latency is off reads against it: the
/// stages stretch alike when other tenants take the CPUs.
struct Meanwhile {
    cpu: CpuUse,
    wall: Duration,
}

/// Above this, "the rest" (the broker, mostly) used half again its warm share at 2,000 msg/s
/// (0.57–0.69 CPUs, `docs/performance.md`): a broker still compiling its code or finishing other
/// clients' work, or other load.
const REST_CPUS_BUSY: f64 = 0.9;
/// Above this, the hypervisor took enough of the CPUs to stretch every stage.
const STOLEN_CPUS_BUSY: f64 = 0.1;

impl Meanwhile {
    /// CPU-seconds per second of the window.
    fn per_s(&self, d: Duration) -> f64 {
        d.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    /// A line for the reader when the window's figures are more the machine's than the pipeline's.
    fn caution(&self) -> Option<String> {
        let (rest, stolen) = (self.per_s(self.cpu.rest), self.per_s(self.cpu.steal));
        let mut causes = Vec::new();
        if rest > REST_CPUS_BUSY {
            causes.push(format!(
                "the rest of the machine took {rest:.2} CPUs (a broker that started, or served a test run, in the last minutes is still busy with it; run again)"
            ));
        }
        if stolen > STOLEN_CPUS_BUSY {
            causes.push(format!("the hypervisor stole {stolen:.2} CPUs"));
        }
        (!causes.is_empty()).then(|| {
            format!(
                "caution: {}; these figures are the machine's more than the pipeline's",
                causes.join(", and ")
            )
        })
    }
}

impl std::fmt::Display for Meanwhile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        write!(
            f,
            "CPUs busy meanwhile (of {cpus}): weatherflow {:.2}, PostgreSQL {:.2}, the rest {:.2}; stolen by the hypervisor {:.2}",
            self.per_s(self.cpu.own),
            self.per_s(self.cpu.postgres),
            self.per_s(self.cpu.rest),
            self.per_s(self.cpu.steal)
        )
    }
}

/// One stage's share of the budget (or one measured operation): its times in milliseconds, sorted
/// before [`Stage::pct`] reads them.
pub(super) struct Stage {
    pub(super) name: &'static str,
    pub(super) ms: Vec<f64>,
}

impl Stage {
    /// The `p` quantile (0..=1) of the sorted times.
    pub(super) fn pct(&self, p: f64) -> f64 {
        if self.ms.is_empty() {
            return f64::NAN;
        }
        self.ms[((self.ms.len() - 1) as f64 * p).round() as usize]
    }
}

fn report(rate: u64, sent: &HashMap<(i32, i64), DateTime<Utc>>, stamps: &[Stamps]) {
    let mut stages = [
        "produce -> broker append",
        "append -> poll",
        "poll -> handed to a writer",
        "handed -> writer starts",
        "writer -> COPY done",
        "COPY done -> COMMIT done",
        "total: produce -> COMMIT done",
    ]
    .map(|name| Stage { name, ms: Vec::new() });
    let gap = |a: DateTime<Utc>, b: Option<DateTime<Utc>>| {
        b.map(|b| (b - a).num_microseconds().unwrap_or(0) as f64 / 1000.0)
    };
    let (mut batches, mut records) = (0, 0);
    for st in stamps {
        let Some(&sent_at) = sent.get(&(st.partition, st.offset)) else {
            continue;
        };
        batches += 1;
        records += st.records;
        let appended = st.kafka_ms.and_then(DateTime::from_timestamp_millis);
        let points = [
            Some(sent_at),
            appended,
            Some(st.polled),
            st.handed,
            st.writing,
            st.copied,
            st.committed,
        ];
        for (k, pair) in points.windows(2).enumerate() {
            if let [Some(a), b] = pair
                && let Some(ms) = gap(*a, *b)
            {
                stages[k].ms.push(ms);
            }
        }
        if let Some(ms) = gap(sent_at, st.committed) {
            stages[6].ms.push(ms);
        }
    }
    for stage in &mut stages {
        stage.ms.sort_by(f64::total_cmp);
    }
    println!(
        "  latency budget at {rate} msg/s ({} messages, {batches} batches, {records} records in them; each batch's first record):",
        sent.len()
    );
    for stage in &stages {
        println!(
            "    {:<32} p50 {:>6.2} ms   p99 {:>6.2} ms",
            stage.name,
            stage.pct(0.50),
            stage.pct(0.99)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(rest_ms: u64, steal_ms: u64) -> Meanwhile {
        let ms = Duration::from_millis;
        Meanwhile {
            cpu: CpuUse {
                own: ms(580),
                postgres: ms(350),
                rest: ms(rest_ms),
                steal: ms(steal_ms),
            },
            wall: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_warm_quiet_window_has_no_caution() {
        assert_eq!(window(650, 0).caution(), None);
        assert_eq!(window(900, 100).caution(), None);
    }

    #[test]
    fn a_busy_rest_or_a_steal_is_named_with_its_figure() {
        let cold = window(1330, 0)
            .caution()
            .expect("a cold broker's window is flagged");
        assert!(cold.contains("took 1.33 CPUs"), "{cold}");
        assert!(!cold.contains("hypervisor"), "{cold}");
        let stolen = window(600, 190).caution().expect("a stolen window is flagged");
        assert!(stolen.contains("stole 0.19 CPUs"), "{stolen}");
        assert!(!stolen.contains("rest of the machine"), "{stolen}");
        let both = window(1200, 500).caution().expect("both are flagged");
        assert!(both.contains("1.20") && both.contains("0.50"), "{both}");
    }

    #[test]
    fn the_figures_are_per_second_of_the_window() {
        let mut w = window(2600, 0);
        w.wall = Duration::from_secs(2);
        assert!(w.to_string().contains("the rest 1.30"), "{w}");
        assert!(w.caution().is_some());
    }
}
