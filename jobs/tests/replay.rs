//! `weatherflow replay` on the real broker and database: a database restored from an older backup
//! (rows deleted after the topic was persisted) gets exactly the missing records back, once; a
//! second replay stores nothing; `--partition`, `--to-time` and `--from-offset` bound what is read;
//! the live group's committed offsets are untouched and the replay's group commits nothing; invalid
//! records are in rejected_records once and not sent to the dead-letter topic again; the run's
//! job_runs row carries the counts; one replay at a time; a signal stops it with what it did
//! recorded.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::stream::*;
use common::{TestContext, exit_within, run_cli, scratch_dir, signal, spawn};
use entity::job_runs;
use nix::sys::signal::Signal;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use weatherflow::jobs::persist::{self, PersistRequest};
use weatherflow::kafka::consumer_lag;
use weatherflow::runs::lock::JobLock;
use weatherflow::runs::{JobName, RunStatus};

/// Places the generated records cycle through: record `i` is observed at `epoch0 + (i / PLACES) *
/// 900`, so a range of `i` is a range of observation times.
const PLACES: usize = 30;

/// A test's topic with records on it and the means to persist, restore and replay.
struct Topic {
    ctx: TestContext,
    producer: FutureProducer,
    epoch0: i64,
    produced: usize,
}

impl Topic {
    async fn new() -> Self {
        let ctx = TestContext::new().await;
        create_topics(&ctx).await;
        let producer = weatherflow::kafka::producer(&ctx.config.kafka).unwrap();
        Self {
            ctx,
            producer,
            epoch0: base_epoch() - 5 * 86_400,
            produced: 0,
        }
    }

    /// Produces the next `n` generated records; returns their (partition, offset).
    async fn produce(&mut self, n: usize) -> Vec<(i32, i64)> {
        let messages: Vec<Generated> = (self.produced..self.produced + n)
            .map(|i| generate(i, PLACES, self.epoch0))
            .collect();
        self.produced += n;
        send_all(
            &self.producer,
            &self.ctx.config.kafka.observations_topic,
            &messages,
        )
        .await
    }

    /// Produces `n` records that are not JSON; returns their (partition, offset).
    async fn produce_invalid(&self, n: usize) -> BTreeSet<(i32, i64)> {
        let topic = &self.ctx.config.kafka.observations_topic;
        let mut out = BTreeSet::new();
        for i in 0..n {
            let value = format!("not json {i}");
            out.insert(send(&self.producer, topic, Some(b"bad"), Some(value.as_bytes()), None).await);
        }
        out
    }

    /// The observation time of generated record `i`.
    fn observed_at(&self, i: usize) -> i64 {
        self.epoch0 + (i / PLACES) as i64 * 900
    }

    /// Runs the live persist consumer (the test's group) until the topic is drained.
    async fn persist_all(&self) {
        let mut config = self.ctx.config.clone();
        config.persist.idle_ms = 1000;
        config.persist.session_timeout_ms = 6000;
        persist::run(
            &config,
            &self.ctx.db,
            PersistRequest {
                until_idle: true,
                ..Default::default()
            },
            CancellationToken::new(),
        )
        .await
        .expect("persist drains the topic");
    }

    /// `weatherflow replay <args>` with this test's settings; (success, stderr).
    async fn replay(&self, args: &[&str]) -> (bool, String) {
        let dir = scratch_dir("replay");
        let argv: Vec<&str> = ["replay"].iter().chain(args).copied().collect();
        let (ok, _, stderr) = run_cli(&dir, &argv, &self.ctx.child_env()).await;
        (ok, stderr)
    }

    /// Like [`Topic::replay`], which must succeed; returns its job_runs row.
    async fn replay_ok(&self, args: &[&str]) -> job_runs::Model {
        let (ok, stderr) = self.replay(args).await;
        assert!(ok, "replay {args:?} fails: {stderr}");
        last_replay(&self.ctx).await
    }

    /// The (partition, offset) of every stored observation.
    async fn stored(&self) -> BTreeSet<(i32, i64)> {
        pairs(
            &self.ctx,
            "SELECT kafka_partition, kafka_offset FROM observations",
        )
        .await
    }

    /// Each partition's committed offset in `group`.
    fn committed(&self, group: &str) -> BTreeMap<i32, Option<i64>> {
        let mut k = self.ctx.config.kafka.clone();
        k.consumer_group = group.to_owned();
        consumer_lag(&k)
            .expect("reading committed offsets")
            .expect("the topic exists")
            .into_iter()
            .map(|p| (p.partition, p.committed))
            .collect()
    }

    /// Messages on the dead-letter topic (high minus low watermark, over its partitions).
    fn dlq_messages(&self) -> i64 {
        let k = &self.ctx.config.kafka;
        let client: BaseConsumer = weatherflow::kafka::base_config(k).create().unwrap();
        let md = client
            .fetch_metadata(Some(&k.dlq_topic), Duration::from_secs(10))
            .unwrap();
        let mut total = 0;
        for p in md.topics()[0].partitions() {
            let (low, high) = client
                .fetch_watermarks(&k.dlq_topic, p.id(), Duration::from_secs(10))
                .unwrap();
            total += high - low;
        }
        total
    }
}

async fn pairs(ctx: &TestContext, sql: &str) -> BTreeSet<(i32, i64)> {
    let rows = ctx
        .db
        .query_all_raw(Statement::from_string(ctx.db.get_database_backend(), sql))
        .await
        .unwrap();
    rows.iter()
        .map(|r| (r.try_get_by_index(0).unwrap(), r.try_get_by_index(1).unwrap()))
        .collect()
}

/// The latest replay run.
async fn last_replay(ctx: &TestContext) -> job_runs::Model {
    weatherflow::runs::history(&ctx.db, Some(JobName::Replay), 1)
        .await
        .unwrap()
        .pop()
        .expect("a replay run in job_runs")
}

fn details(run: &job_runs::Model) -> &Value {
    run.details.as_ref().expect("the run has details")
}

/// A time strictly between the records produced before and after the call (Kafka timestamps are
/// milliseconds), as RFC 3339.
async fn mark() -> (DateTime<Utc>, String) {
    tokio::time::sleep(Duration::from_millis(20)).await;
    let at = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    (at, at.to_rfc3339())
}

fn set(deliveries: &[(i32, i64)]) -> BTreeSet<(i32, i64)> {
    deliveries.iter().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_stores_exactly_what_a_restore_lost_and_nothing_twice() {
    let mut t = Topic::new().await;
    let old = t.produce(150).await;
    let (_, from) = mark().await;
    let new = t.produce(150).await;
    let invalid = t.produce_invalid(5).await;
    t.persist_all().await;
    let everything: Vec<(i32, i64)> = old.iter().chain(&new).copied().collect();
    assert_every_offset_stored_once(&t.ctx, &everything).await;
    let live_group = t.ctx.config.kafka.consumer_group.clone();
    let live_before = t.committed(&live_group);
    assert!(live_before.values().all(Option::is_some), "{live_before:?}");
    let dlq_before = t.dlq_messages();
    assert_eq!(
        dlq_before, 5,
        "the live consumer dead-lettered the invalid records"
    );

    // The restored backup predates the second half: its observations and the rejections are gone.
    let cut = t.observed_at(150);
    assert!(cut > t.observed_at(149));
    t.ctx
        .db
        .execute_unprepared(&format!(
            "DELETE FROM observations WHERE observed_at >= to_timestamp({cut}); DELETE FROM rejected_records"
        ))
        .await
        .unwrap();
    assert_eq!(t.stored().await, set(&old));

    let (ok, stderr) = t.replay(&["--from-time", &from]).await;
    assert!(ok, "replay fails: {stderr}");
    assert!(
        stderr
            .contains("replay: 155 of 155 (100%) records read: 150 stored, 0 already present, 5 quarantined"),
        "the last progress line: {stderr}"
    );
    assert_every_offset_stored_once(&t.ctx, &everything).await;
    let rejected = pairs(
        &t.ctx,
        "SELECT kafka_partition, kafka_offset FROM rejected_records WHERE error_class = 'invalid_json'",
    )
    .await;
    assert_eq!(rejected, invalid, "each invalid record in rejected_records once");
    assert_eq!(t.ctx.scalar_i64("SELECT count(*) FROM rejected_records").await, 5);

    let run = last_replay(&t.ctx).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!((run.records_in, run.records_out), (Some(155), Some(150)));
    let d = details(&run);
    assert_eq!(
        (d["read"].as_u64(), d["to_read"].as_u64()),
        (Some(155), Some(155))
    );
    assert_eq!(
        (d["stored"].as_u64(), d["already_present"].as_u64()),
        (Some(150), Some(0))
    );
    assert_eq!(d["quarantined"]["invalid_json"], 5);
    assert_eq!(d["stop"], "done");
    // Per partition: the range starts at the partition's first record after the mark and ends
    // at its end; its counts are that partition's.
    let parts = d["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    let after_mark: Vec<(i32, i64)> = new.iter().copied().chain(invalid.iter().copied()).collect();
    for part in parts {
        let p = part["partition"].as_i64().unwrap() as i32;
        let offsets: Vec<i64> = after_mark.iter().filter(|d| d.0 == p).map(|d| d.1).collect();
        let valid = new.iter().filter(|d| d.0 == p).count() as u64;
        assert_eq!(
            part["from_offset"].as_i64(),
            offsets.iter().min().copied(),
            "{part}"
        );
        assert_eq!(
            part["to_offset"].as_i64(),
            offsets.iter().max().map(|o| o + 1),
            "{part}"
        );
        assert_eq!(part["read"].as_u64(), Some(offsets.len() as u64), "{part}");
        assert_eq!(part["stored"].as_u64(), Some(valid), "{part}");
        assert_eq!(
            part["quarantined"].as_u64(),
            Some(offsets.len() as u64 - valid),
            "{part}"
        );
    }

    // The live group is untouched; the replay's group committed nothing; nothing was dead-lettered
    // again.
    assert_eq!(t.committed(&live_group), live_before);
    let replay_group = d["group"].as_str().unwrap().to_owned();
    assert_eq!(replay_group, format!("{live_group}-replay-{}", run.id));
    assert!(
        t.committed(&replay_group).values().all(Option::is_none),
        "the replay's group commits nothing"
    );
    assert_eq!(t.dlq_messages(), dlq_before);

    // Again: everything is there already.
    let again = t.replay_ok(&["--from-time", &from]).await;
    assert_ne!(again.id, run.id);
    assert_eq!((again.records_in, again.records_out), (Some(155), Some(0)));
    let d = details(&again);
    assert_eq!(d["already_present"].as_u64(), Some(150));
    assert_eq!(d["partitions"][0]["rejections_stored"].as_u64(), Some(0));
    assert_every_offset_stored_once(&t.ctx, &everything).await;
    assert_eq!(t.ctx.scalar_i64("SELECT count(*) FROM rejected_records").await, 5);
    assert_eq!(t.committed(&live_group), live_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_times_and_offsets_bound_what_is_read() {
    let mut t = Topic::new().await;
    let first = t.produce(90).await;
    let (_, from) = mark().await;
    let middle = t.produce(90).await;
    let (_, to) = mark().await;
    let last = t.produce(90).await;
    t.persist_all().await;
    // A restore from a backup taken before anything was stored.
    t.ctx
        .db
        .execute_unprepared("DELETE FROM observations")
        .await
        .unwrap();
    let all: BTreeSet<(i32, i64)> = first.iter().chain(&middle).chain(&last).copied().collect();
    let in_partition =
        |p: i32| -> BTreeSet<(i32, i64)> { all.iter().filter(|d| d.0 == p).copied().collect() };

    // --partition and --to-time: partition 1's middle third only; what follows --to-time is not read.
    let run = t
        .replay_ok(&["--from-time", &from, "--to-time", &to, "--partition", "1"])
        .await;
    let expected: BTreeSet<(i32, i64)> = middle.iter().filter(|d| d.0 == 1).copied().collect();
    assert!(!expected.is_empty());
    assert_eq!(t.stored().await, expected);
    let d = details(&run);
    assert_eq!(d["partitions"].as_array().unwrap().len(), 1);
    assert_eq!(d["read"].as_u64(), Some(expected.len() as u64));

    // --from-offset P:O: all of partition 2.
    t.replay_ok(&["--from-offset", "2:0"]).await;
    let expected: BTreeSet<_> = expected.union(&in_partition(2)).copied().collect();
    assert_eq!(t.stored().await, expected);

    // A bare offset with --partition: partition 0 from its 10th record on.
    let p0: Vec<i64> = in_partition(0).iter().map(|d| d.1).collect();
    let start = p0[10];
    let run = t
        .replay_ok(&["--from-offset", &start.to_string(), "--partition", "0"])
        .await;
    let expected: BTreeSet<_> = expected
        .iter()
        .copied()
        .chain(p0.iter().filter(|&&o| o >= start).map(|&o| (0, o)))
        .collect();
    assert_eq!(t.stored().await, expected);
    assert_eq!(
        details(&run)["partitions"][0]["from_offset"].as_i64(),
        Some(start)
    );
    let rows = t.ctx.scalar_i64("SELECT count(*) FROM observations").await;
    assert_eq!(rows as usize, expected.len(), "every offset stored once");

    // Nothing at or after --from-time: every partition is done at once.
    let (_, later) = mark().await;
    let run = t.replay_ok(&["--from-time", &later]).await;
    assert_eq!(details(&run)["to_read"].as_u64(), Some(0));
    assert_eq!(run.records_in, Some(0));

    // Ranges that cannot be: a partition the topic does not have, --to-time before --from-time.
    let (ok, stderr) = t.replay(&["--from-time", &from, "--partition", "7"]).await;
    assert!(!ok && stderr.contains("has no partition 7"), "{stderr}");
    let (ok, stderr) = t.replay(&["--from-time", &to, "--to-time", &from]).await;
    assert!(!ok && stderr.contains("is not after --from-time"), "{stderr}");
    assert_eq!(last_replay(&t.ctx).await.status, RunStatus::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_beside_the_running_consumer_stores_each_record_once() {
    let mut t = Topic::new().await;
    let mut config = t.ctx.config.clone();
    config.persist.session_timeout_ms = 6000;
    let (db, stop) = (t.ctx.db.clone(), CancellationToken::new());
    let token = stop.clone();
    let live = tokio::spawn(async move {
        persist::run(
            &config,
            &db,
            PersistRequest {
                until_idle: false,
                ..Default::default()
            },
            token,
        )
        .await
    });
    let first = t.produce(300).await;
    wait_for_rows(&t.ctx, 300, Duration::from_secs(60)).await;
    let cut = t.observed_at(150);
    t.ctx
        .db
        .execute_unprepared(&format!(
            "DELETE FROM observations WHERE observed_at >= to_timestamp({cut})"
        ))
        .await
        .unwrap();

    // The replay reads from the start while new records arrive for the live consumer: both may
    // write the same records.
    let more: Vec<Generated> = (300..600).map(|i| generate(i, PLACES, t.epoch0)).collect();
    let topic = t.ctx.config.kafka.observations_topic.clone();
    let from = [
        "--from-offset",
        "0:0",
        "--from-offset",
        "1:0",
        "--from-offset",
        "2:0",
    ];
    let (run, second) = tokio::join!(t.replay_ok(&from), send_all(&t.producer, &topic, &more));
    wait_for_rows(&t.ctx, 600, Duration::from_secs(60)).await;
    stop.cancel();
    live.await.unwrap().expect("the live consumer stops cleanly");

    let everything: Vec<(i32, i64)> = first.iter().chain(&second).copied().collect();
    assert_every_offset_stored_once(&t.ctx, &everything).await;
    let d = details(&run);
    let (read, stored, present) = (
        d["read"].as_u64().unwrap(),
        d["stored"].as_u64().unwrap(),
        d["already_present"].as_u64().unwrap(),
    );
    assert!((300..=600).contains(&read), "{d}");
    assert_eq!(stored + present, read, "{d}");
    assert!(stored >= 150, "the replay brought back the deleted half: {d}");
    // The live group went on by itself: it committed up to the end of every partition.
    let lag = consumer_lag(&t.ctx.config.kafka).unwrap().unwrap();
    assert!(lag.iter().all(|p| p.committed == Some(p.high)), "{lag:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_replay_runs_at_a_time() {
    let t = Topic::new().await;
    let held = JobLock::try_acquire(&t.ctx.db, JobName::Replay)
        .await
        .unwrap()
        .expect("the replay lock is free");
    let (ok, stderr) = t.replay(&["--from-offset", "0:0"]).await;
    assert!(!ok, "a second replay must not run: {stderr}");
    assert!(stderr.contains("another replay run"), "{stderr}");
    assert!(
        weatherflow::runs::history(&t.ctx.db, Some(JobName::Replay), 1)
            .await
            .unwrap()
            .is_empty(),
        "a replay refused at the lock records no run"
    );
    held.release().await.unwrap();
    let run = t.replay_ok(&["--from-offset", "0:0"]).await;
    assert_eq!(run.status, RunStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signal_stops_a_replay_and_its_run_records_what_was_done() {
    let mut t = Topic::new().await;
    let total = 6000;
    t.produce(total).await;
    // One record per transaction: slow enough to be stopped in the middle.
    let env = t.ctx.child_env_with(&[("WEATHERFLOW_PERSIST_BATCH_SIZE", "1")]);
    let dir = scratch_dir("replay-signal");
    let mut child = spawn(
        &dir,
        "replay",
        &[
            "replay",
            "--from-offset",
            "0:0",
            "--from-offset",
            "1:0",
            "--from-offset",
            "2:0",
        ],
        &env,
    );
    let log = dir.join("replay.log");
    let text = wait_for_log(&log, "records read", Duration::from_secs(60)).await;
    assert!(
        text.contains(&format!(" of {total} (")) && text.contains("records read:"),
        "{text}"
    );
    signal(&child, Signal::SIGINT);
    let status = exit_within(&mut child, Duration::from_secs(20))
        .await
        .expect("the replay stops within 20 s of SIGINT");
    assert!(!status.success(), "an interrupted replay exits non-zero");

    let run = last_replay(&t.ctx).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert!(
        run.error
            .as_deref()
            .unwrap_or_default()
            .contains("stopped after reading"),
        "{run:?}"
    );
    let d = details(&run);
    assert_eq!(d["stop"], "shutdown");
    let (read, stored) = (d["read"].as_u64().unwrap(), d["stored"].as_u64().unwrap());
    assert!(
        read > 0 && read < total as u64,
        "stopped in the middle: {read} of {total}"
    );
    // What was read was stored, and the row says how much.
    assert_eq!(stored, read);
    let rows = t.ctx.scalar_i64("SELECT count(*) FROM observations").await;
    assert_eq!(rows as u64, stored);
    assert_eq!(run.records_out, Some(rows));
}
