//! `weatherflow replay`: read a range of the observations topic again and store what the database
//! is missing, after a restore from an older backup (owned by the persist job).
//!
//! The replay reads with a consumer group of its own (`<kafka.consumer_group>-replay-<run id>`),
//! assigned its partitions at fixed offsets ([`range`]) rather than subscribed, and never commits:
//! the live group's offsets, and its members, are not touched, so it runs safely beside a running
//! consumer. Records go through the persist job's validation and its idempotent [`store_batch`], in
//! batches of `persist.batch_size` per partition: an observation already stored counts as present,
//! a rejection already in rejected_records (same topic, partition, offset) is not written twice.
//!
//! Invalid records go to rejected_records only, never to the dead-letter topic: they were sent there
//! when the live consumer first read them, and the topic is not restored with the database.

mod range;
mod summary;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rdkafka::Offset;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::TopicPartitionList;
use sea_orm::DatabaseConnection;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::job_error::{JobError, JobErrorKind, JobResultExt};
use crate::jobs::persist::store::{
    CopyStrategy, Lineage, Raw, RejectedRecord, Retry, ValidRecord, store_batch,
};
use crate::jobs::persist::validate::{self, Rules};
pub use range::{PartitionRange, RangeError};
pub use summary::{PartitionReplay, ReplayStop, ReplaySummary};

/// Where a replay starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayFrom {
    /// In every selected partition, at the first record stamped at or after this time.
    Time(DateTime<Utc>),
    /// At these offsets, by partition; only these partitions are read.
    Offsets(BTreeMap<i32, i64>),
}

/// What to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRequest {
    /// Where to start.
    pub from: ReplayFrom,
    /// Stop before the first record stamped at or after this time; default: the end of each
    /// partition when the replay starts.
    pub to_time: Option<DateTime<Utc>>,
    /// Only these partitions (empty: all, or those of [`ReplayFrom::Offsets`]).
    pub partitions: BTreeSet<i32>,
}

/// The group a replay run reads with: the live group's name, so an operator recognises it, made
/// its own by the run id.
pub fn replay_group(live_group: &str, run_id: i64) -> String {
    format!("{live_group}-replay-{run_id}")
}

/// Replays `req` as run `run_id`: reads each partition's range once and stores what is missing.
/// `progress` receives the summary as it grows (after each stored batch). Stopped by `shutdown`, it
/// stores what it read and returns [`JobErrorKind::Interrupted`] carrying what it did.
pub async fn run(
    config: &Config,
    db: &DatabaseConnection,
    run_id: i64,
    req: ReplayRequest,
    shutdown: CancellationToken,
    progress: &watch::Sender<ReplaySummary>,
) -> Result<ReplaySummary, JobError> {
    let started = Instant::now();
    let (k, p) = (&config.kafka, &config.persist);
    if p.batch_size == 0 {
        return Err(JobError::fatal("persist.batch_size must be at least 1"));
    }
    let topic: Arc<str> = Arc::from(k.observations_topic.as_str());
    let ranges = {
        let (k, topic, req) = (k.clone(), topic.clone(), req.clone());
        tokio::task::spawn_blocking(move || range::plan(&k, &topic, &req))
            .await
            .job(JobErrorKind::Fatal, "the range lookup panicked")?
    };
    let ranges = ranges.map_err(|e| {
        let kind = match e {
            RangeError::Setup(_) | RangeError::Kafka { .. } => JobErrorKind::Retryable,
            _ => JobErrorKind::Fatal,
        };
        JobError::new(kind, e).context("working out the offsets to replay")
    })?;

    let group = replay_group(&k.consumer_group, run_id);
    let mut replay = Replay {
        pool: db.get_postgres_connection_pool().clone(),
        topic: topic.clone(),
        rules: Rules::from_config(p),
        batch_size: p.batch_size,
        retry: super::retry(p, &shutdown),
        // A replay's range is partly stored already, often mostly: check before the COPY from the
        // first batch (the write goes back to COPY without a check after a batch with none).
        strategy: CopyStrategy {
            check_first: true,
            ..CopyStrategy::default()
        },
        open: BTreeMap::new(),
        summary: ReplaySummary {
            group: group.clone(),
            ..Default::default()
        },
        progress,
    };
    for (i, r) in ranges.iter().enumerate() {
        replay.summary.partitions.push(PartitionReplay::new(*r));
        if !r.is_empty() {
            replay.open.insert(r.partition, Pending::new(i, r.to));
        }
    }
    tracing::info!(
        topic = %topic,
        group = %group,
        partitions = ranges.len(),
        to_read = replay.summary.to_read(),
        "replay starting"
    );
    progress.send_replace(replay.summary.clone());

    let consumer = consumer(config, &group).job(JobErrorKind::Fatal, "creating the replay consumer")?;
    let mut tpl = TopicPartitionList::new();
    for r in ranges.iter().filter(|r| !r.is_empty()) {
        tpl.add_partition_offset(&topic, r.partition, Offset::Offset(r.from))
            .job(JobErrorKind::Fatal, "building the assignment")?;
    }
    consumer
        .assign(&tpl)
        .job(JobErrorKind::Retryable, "assigning the replay's partitions")?;

    let stop = replay.read(&consumer, &shutdown).await;
    crate::kafka::close_off_task(consumer);
    let stop = stop?;
    let mut summary = replay.summary;
    summary.elapsed = started.elapsed();
    summary.stop = Some(stop);
    progress.send_replace(summary.clone());
    tracing::info!(
        read = summary.read(),
        stored = summary.stored(),
        already_present = summary.present(),
        quarantined = summary.quarantined_total(),
        stop = ?stop,
        "replay finished"
    );
    match stop {
        ReplayStop::Done => Ok(summary),
        ReplayStop::Shutdown => Err(JobError::interrupted(format!(
            "stopped after reading {} of {} records; what was read was stored",
            summary.read(),
            summary.to_read()
        ))
        .with_report(&summary)),
        ReplayStop::Outage => Err(JobError::interrupted(format!(
            "stopped during a database outage: {} records read were not stored; replay the range again",
            summary.abandoned
        ))
        .with_report(&summary)),
    }
}

/// The replay's consumer: assigned, never committing, on the same security settings as every
/// client (`kafka::base_config`).
fn consumer(config: &Config, group: &str) -> Result<StreamConsumer, KafkaError> {
    let mut c = crate::kafka::base_config(&config.kafka);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A partition whose range ends in a gap (records gone to retention, compaction, a
        // transaction marker) is finished by its end-of-partition event.
        .set("enable.partition.eof", "true")
        // A start deleted by retention meanwhile: go on from the earliest record still held.
        .set("auto.offset.reset", "earliest")
        .set(
            "queued.max.messages.kbytes",
            super::prefetch_kbytes(config.persist.max_buffered_bytes).to_string(),
        )
        // As the live consumer (see consumer::run): no second-long stall after each prefetch.
        .set("fetch.queue.backoff.ms", "10");
    c.create()
}

/// One partition still being read: where its range ends and its open batch.
struct Pending {
    /// Index in the summary's partitions.
    index: usize,
    /// First offset not to read.
    end: i64,
    valid: Vec<ValidRecord>,
    rejected: Vec<RejectedRecord>,
}

impl Pending {
    fn new(index: usize, end: i64) -> Self {
        Self {
            index,
            end,
            valid: Vec::new(),
            rejected: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.valid.len() + self.rejected.len()
    }
}

/// The reading side of a run: validates records into per-partition batches and stores them.
/// Batches are per partition so that the counts in `job_runs` are per partition.
struct Replay<'a> {
    pool: PgPool,
    topic: Arc<str>,
    rules: Rules,
    batch_size: usize,
    retry: Retry,
    strategy: CopyStrategy,
    /// Partitions not yet read to their end.
    open: BTreeMap<i32, Pending>,
    summary: ReplaySummary,
    progress: &'a watch::Sender<ReplaySummary>,
}

/// What one record from the consumer carries, copied out of the client's buffer.
struct Record {
    partition: i32,
    offset: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
}

/// What the reading loop does after a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Read on.
    Read,
    /// The partition's batch is full: store it.
    Store(i32),
    /// The partition is read to the end of its range: store its batch and pause it.
    Finished(i32),
}

impl Replay<'_> {
    /// Reads until every partition reached its end, or `shutdown`; stores what was read.
    async fn read(
        &mut self,
        consumer: &StreamConsumer,
        shutdown: &CancellationToken,
    ) -> Result<ReplayStop, JobError> {
        let mut errors = 0u32;
        while !self.open.is_empty() {
            let next = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(self.flush_all().await),
                next = consumer.recv() => next.map(|m| Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(Bytes::copy_from_slice),
                    value: m.payload().map(Bytes::copy_from_slice),
                }),
            };
            let next = match next {
                Ok(record) => {
                    errors = 0;
                    self.accept(record)
                }
                Err(KafkaError::PartitionEOF(partition)) if self.open.contains_key(&partition) => {
                    Next::Finished(partition)
                }
                Err(KafkaError::PartitionEOF(_)) => Next::Read,
                Err(KafkaError::MessageConsumptionFatal(code)) => {
                    return Err(JobError::retryable(format!("fatal Kafka consumer error: {code}"))
                        .with_report(&self.summary));
                }
                Err(e) => {
                    // The client reconnects by itself; pace the loop, as the live consumer does.
                    let delay = self.retry.backoff.delay(errors).min(Duration::from_secs(1));
                    errors = errors.saturating_add(1);
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "kafka consumer error");
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                    Next::Read
                }
            };
            match next {
                Next::Read => {}
                Next::Store(partition) => {
                    if !self.store(partition).await {
                        return Ok(ReplayStop::Outage);
                    }
                }
                Next::Finished(partition) => {
                    if !self.store(partition).await {
                        return Ok(ReplayStop::Outage);
                    }
                    self.open.remove(&partition);
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(&self.topic, partition);
                    // Nothing more is wanted from it; a failed pause only costs some fetching.
                    if let Err(e) = consumer.pause(&tpl) {
                        tracing::debug!(partition, error = %e, "pausing a finished partition failed");
                    }
                }
            }
        }
        Ok(ReplayStop::Done)
    }

    /// Validates `record` into its partition's batch.
    fn accept(&mut self, record: Record) -> Next {
        let Some(pending) = self.open.get_mut(&record.partition) else {
            return Next::Read;
        };
        if record.offset >= pending.end {
            return Next::Finished(record.partition);
        }
        let lineage = Lineage {
            topic: self.topic.clone(),
            partition: record.partition,
            offset: record.offset,
        };
        let raw = Raw {
            key: record.key,
            value: record.value,
        };
        // Against the clock now, like the live consumer when it read the record: time only moves
        // forward, so whatever it stored is valid again.
        match validate::validate(raw.value.as_deref(), Utc::now(), &self.rules) {
            Ok(observation) => pending.valid.push(ValidRecord {
                lineage,
                raw,
                observation,
            }),
            Err(rejection) => {
                *self
                    .summary
                    .quarantined
                    .entry(rejection.class.to_string())
                    .or_default() += 1;
                self.summary.partitions[pending.index].quarantined += 1;
                pending.rejected.push(RejectedRecord {
                    lineage,
                    raw,
                    rejection,
                });
            }
        }
        self.summary.partitions[pending.index].read += 1;
        if record.offset + 1 >= pending.end {
            Next::Finished(record.partition)
        } else if pending.len() >= self.batch_size {
            Next::Store(record.partition)
        } else {
            Next::Read
        }
    }

    /// Stores `partition`'s open batch. False when stopped during a database outage: the batch is
    /// counted as abandoned.
    async fn store(&mut self, partition: i32) -> bool {
        let Some(pending) = self.open.get_mut(&partition) else {
            return true;
        };
        if pending.len() == 0 {
            return true;
        }
        let valid = std::mem::take(&mut pending.valid);
        let rejected = std::mem::take(&mut pending.rejected);
        let index = pending.index;
        match store_batch(&self.pool, &valid, &rejected, &self.retry, &mut self.strategy).await {
            Ok(stored) => {
                self.summary.add_stored(index, &stored);
                self.progress.send_replace(self.summary.clone());
                true
            }
            Err(_interrupted) => {
                self.summary.abandoned += (valid.len() + rejected.len()) as u64;
                false
            }
        }
    }

    /// Stores every open batch (at shutdown). An outage on the way stops it: what is left is
    /// abandoned.
    async fn flush_all(&mut self) -> ReplayStop {
        let partitions: Vec<i32> = self.open.keys().copied().collect();
        for partition in partitions {
            if !self.store(partition).await {
                let left: usize = self.open.values().map(Pending::len).sum();
                self.summary.abandoned += left as u64;
                return ReplayStop::Outage;
            }
        }
        ReplayStop::Shutdown
    }
}
