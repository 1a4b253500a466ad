//! The consumer thread: poll, validate, batch, hand off, commit.
//!
//! It owns the Kafka consumer, and with it every offset decision. Offsets are committed only for
//! batches a writer has acknowledged, that is, after their transaction committed. Because one
//! partition always goes to the same writer, whose batches are written in order, acknowledgements
//! for a partition arrive in offset order and the committed offset never passes a record that is
//! not stored.
//!
//! On revocation (rebalance or close) the rebalance callback, which librdkafka runs on this thread
//! inside `poll`, seals and hands off the open batches, blocks until the writers have acknowledged
//! everything, and commits synchronously; only then does the rebalance proceed, so the next owner
//! of a partition starts exactly after the last stored record.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use super::writer::{Ack, Batch};
use super::{PersistSummary, StopReason};
use crate::backoff::Backoff;
use crate::jobs::persist::store::{Lineage, Raw, RejectedRecord, ValidRecord};
use crate::jobs::persist::validate::{self, Rules};

/// What the consumer thread needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The observations topic (the only subscription).
    pub topic: Arc<str>,
    /// Records per batch, at most.
    pub batch_size: usize,
    /// Longest wait of a record in an open batch.
    pub batch_timeout: Duration,
    /// Stop once drained.
    pub until_idle: bool,
    /// Quiet time before the drained check.
    pub idle: Duration,
    /// Validation limits.
    pub rules: Rules,
    /// Delays for broker error and commit retries.
    pub backoff: Backoff,
    /// Timeout of metadata and offset requests.
    pub kafka_timeout: Duration,
}

/// Records a writer may have waiting on this thread (sealed, not yet handed off) before fetching
/// pauses; fetching resumes below half of it. Pausing makes librdkafka drop what it prefetched and
/// fetch again on resume, so it is kept for real backlogs (a slow or absent database), not for the
/// ordinary jitter of a busy writer: pausing at two waiting batches cost 90 pause/resume cycles and
/// most of the throughput on an 18 k backlog.
const MAX_WAITING_RECORDS: usize = 20_000;
/// Poll wait while batches are in flight: short, so acknowledgements are committed promptly.
const BUSY_POLL: Duration = Duration::from_millis(10);
/// Poll wait when nothing is in flight.
const QUIET_POLL: Duration = Duration::from_millis(100);
/// `--until-idle` without any partition for this long ends the run (more consumers than partitions).
const NO_ASSIGNMENT_LIMIT: Duration = Duration::from_secs(30);

type PersistConsumer = BaseConsumer<PersistContext>;

/// Creates the consumer, runs the loop until stopped, stores and commits what was read, leaves the
/// group.
pub fn run(
    mut kafka: ClientConfig,
    group: &str,
    session_timeout_ms: u64,
    settings: Settings,
    lanes: Vec<Sender<Batch>>,
    acks: mpsc::Receiver<Ack>,
    shutdown: CancellationToken,
) -> anyhow::Result<PersistSummary> {
    let topic = settings.topic.clone();
    let backoff = settings.backoff;
    let context = PersistContext {
        state: Mutex::new(State::new(settings, lanes, acks)),
    };
    let consumer: PersistConsumer = kafka
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (session_timeout_ms / 3).max(100).to_string(),
        )
        // librdkafka prefetches up to queued.max.messages.kbytes (64 MB) and, once over, waits
        // fetch.queue.backoff.ms (1 s by default) before fetching again. A backlog drains faster
        // than that, so the default left the whole pipeline idle for about half a second after
        // every 64 MB (`bench persist`: 82 k rows/s with the default, 126–142 k with 10 ms).
        .set("fetch.queue.backoff.ms", "10")
        .create_with_context(context)
        .context("creating the Kafka consumer")?;
    consumer
        .subscribe(&[&topic])
        .with_context(|| format!("subscribing to {topic}"))?;

    let mut poll_errors = 0u32;
    let stop = loop {
        let timeout = {
            let mut st = consumer.context().lock();
            st.housekeeping(&consumer)?;
            if shutdown.is_cancelled() {
                break StopReason::Shutdown;
            }
            if st.idle(&consumer) {
                break StopReason::Idle;
            }
            st.poll_timeout()
        };
        match consumer.poll(timeout) {
            Some(Ok(message)) => {
                poll_errors = 0;
                consumer.context().lock().accept(&message);
            }
            None => consumer.context().lock().on_quiet(),
            Some(Err(KafkaError::MessageConsumptionFatal(code))) => {
                anyhow::bail!("fatal Kafka consumer error: {code}");
            }
            Some(Err(e)) => {
                let delay = backoff.delay(poll_errors).min(Duration::from_secs(1));
                poll_errors = poll_errors.saturating_add(1);
                tracing::warn!(
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "kafka consumer error; the client reconnects by itself, offsets are not advanced"
                );
                sleep_unless(&shutdown, delay);
            }
        }
    };
    tracing::info!(
        reason = ?stop,
        "stopping: storing the in-flight batches and committing their offsets"
    );
    let summary = {
        let mut st = consumer.context().lock();
        st.flush_and_wait();
        st.commit(&consumer, CommitMode::Sync);
        st.summary.stop = Some(stop);
        std::mem::take(&mut st.summary)
    };
    // Dropping the consumer closes it: the group gets our partitions back at once instead of after
    // the session timeout. Closing runs the revocation callback once more, with nothing left to do.
    drop(consumer);
    Ok(summary)
}

fn sleep_unless(shutdown: &CancellationToken, total: Duration) {
    let until = Instant::now() + total;
    while !shutdown.is_cancelled() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// The consumer's context: the loop's state, shared with the callbacks librdkafka runs on this same
/// thread (inside `poll`, while the loop holds no lock).
pub struct PersistContext {
    state: Mutex<State>,
}

impl PersistContext {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock ends the thread anyway; the state is still consistent
        // enough to stop without committing anything new.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ClientContext for PersistContext {}

impl ConsumerContext for PersistContext {
    fn pre_rebalance(&self, consumer: &PersistConsumer, rebalance: &Rebalance<'_>) {
        let mut st = self.lock();
        match rebalance {
            Rebalance::Revoke(tpl) => st.on_revoke(consumer, tpl),
            Rebalance::Assign(tpl) => st.on_assign(tpl),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        self.lock().on_commit_result(result);
    }
}

/// One writer's queue on this thread.
struct Lane {
    /// To the writer; `None` once the writer is gone.
    tx: Option<Sender<Batch>>,
    /// Records being collected.
    open: Batch,
    /// Full or timed-out batches not yet handed off.
    sealed: VecDeque<Batch>,
    /// Handed off, not yet acknowledged.
    in_flight: usize,
}

impl Lane {
    fn seal(&mut self) {
        if !self.open.is_empty() {
            self.sealed
                .push_back(std::mem::replace(&mut self.open, Batch::new()));
        }
    }

    fn idle(&self) -> bool {
        self.in_flight == 0 && self.sealed.is_empty()
    }

    /// Records sealed but not yet handed off.
    fn waiting(&self) -> usize {
        self.sealed.iter().map(Batch::len).sum()
    }

    fn busy(&self) -> bool {
        !self.open.is_empty() || !self.idle()
    }
}

/// Everything the loop and the callbacks share.
struct State {
    s: Settings,
    lanes: Vec<Lane>,
    acks: mpsc::Receiver<Ack>,
    /// Partitions currently assigned.
    assigned: BTreeSet<i32>,
    /// When the current assignment arrived.
    assigned_at: Option<Instant>,
    /// Per partition, the next offset to commit (last stored offset + 1).
    committable: BTreeMap<i32, i64>,
    /// What the last successful synchronous commit committed, to skip repeating it.
    last_sync_commit: BTreeMap<i32, i64>,
    /// An asynchronous commit is wanted.
    commit_due: bool,
    /// Consecutive commit failures, for backoff.
    commit_failures: u32,
    /// No commit before this instant (backoff after a failure).
    next_commit_at: Instant,
    /// Partitions with a batch given up during shutdown: their offsets must not move any more.
    frozen: BTreeSet<i32>,
    /// Fetching is paused because writers are behind.
    paused: bool,
    /// When the thread started.
    started: Instant,
    /// When the first record arrived (the summary's active time counts from here).
    first_record_at: Option<Instant>,
    /// When the latest record arrived.
    last_record_at: Option<Instant>,
    last_drain_check: Option<Instant>,
    summary: PersistSummary,
}

impl State {
    fn new(s: Settings, lanes: Vec<Sender<Batch>>, acks: mpsc::Receiver<Ack>) -> Self {
        let now = Instant::now();
        Self {
            s,
            lanes: lanes
                .into_iter()
                .map(|tx| Lane {
                    tx: Some(tx),
                    open: Batch::new(),
                    sealed: VecDeque::new(),
                    in_flight: 0,
                })
                .collect(),
            acks,
            assigned: BTreeSet::new(),
            assigned_at: None,
            committable: BTreeMap::new(),
            last_sync_commit: BTreeMap::new(),
            commit_due: false,
            commit_failures: 0,
            next_commit_at: now,
            frozen: BTreeSet::new(),
            paused: false,
            started: now,
            first_record_at: None,
            last_record_at: None,
            last_drain_check: None,
            summary: PersistSummary::default(),
        }
    }

    fn lane_of(&self, partition: i32) -> usize {
        partition.unsigned_abs() as usize % self.lanes.len()
    }

    /// Validates one record into its lane's open batch.
    fn accept(&mut self, m: &BorrowedMessage<'_>) {
        let now = Instant::now();
        let lineage = Lineage {
            topic: self.s.topic.clone(),
            partition: m.partition(),
            offset: m.offset(),
        };
        let raw = Raw {
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
        };
        let verdict = validate::validate(raw.value.as_deref(), Utc::now(), &self.s.rules);
        let lane_index = self.lane_of(lineage.partition);
        let lane = &mut self.lanes[lane_index];
        if lane.open.is_empty() {
            lane.open.opened = now;
        }
        lane.open.last_offsets.insert(lineage.partition, lineage.offset);
        match verdict {
            Ok(observation) => lane.open.valid.push(ValidRecord {
                lineage,
                raw,
                observation,
            }),
            Err(rejection) => {
                tracing::debug!(
                    partition = lineage.partition,
                    offset = lineage.offset,
                    class = rejection.class.as_str(),
                    reason = %rejection.reason,
                    "record rejected"
                );
                lane.open.rejected.push(RejectedRecord {
                    lineage,
                    raw,
                    rejection,
                })
            }
        }
        if lane.open.len() >= self.s.batch_size {
            lane.seal();
        }
        self.summary.consumed += 1;
        self.last_record_at = Some(now);
        self.first_record_at.get_or_insert(now);
    }

    /// Nothing more to read right now: an idle writer gets what there is, without waiting for the
    /// batch timeout. Under load the writers are busy and batches fill up instead.
    fn on_quiet(&mut self) {
        for lane in &mut self.lanes {
            if !lane.open.is_empty() && lane.idle() {
                lane.seal();
            }
        }
    }

    /// How long the next poll may block.
    fn poll_timeout(&self) -> Duration {
        if self.lanes.iter().any(|l| !l.open.is_empty() && l.idle()) {
            return Duration::ZERO;
        }
        let mut wait = if self.lanes.iter().any(Lane::busy) || self.commit_due {
            BUSY_POLL
        } else {
            QUIET_POLL
        };
        for lane in self.lanes.iter().filter(|l| !l.open.is_empty()) {
            let due = (lane.open.opened + self.s.batch_timeout).saturating_duration_since(Instant::now());
            wait = wait.min(due);
        }
        wait
    }

    /// Acknowledgements, timeouts, hand-offs, flow control, commits.
    fn housekeeping(&mut self, consumer: &PersistConsumer) -> anyhow::Result<()> {
        self.drain_acks();
        for lane in &mut self.lanes {
            if !lane.open.is_empty() && lane.open.opened.elapsed() >= self.s.batch_timeout {
                lane.seal();
            }
        }
        self.hand_off()?;
        self.flow_control(consumer);
        if self.commit_due && Instant::now() >= self.next_commit_at {
            self.commit(consumer, CommitMode::Async);
        }
        Ok(())
    }

    fn hand_off(&mut self) -> anyhow::Result<()> {
        for lane in &mut self.lanes {
            let Some(tx) = &lane.tx else {
                anyhow::bail!("a database writer stopped unexpectedly");
            };
            while let Some(batch) = lane.sealed.pop_front() {
                match tx.try_send(batch) {
                    Ok(()) => lane.in_flight += 1,
                    Err(TrySendError::Full(batch)) => {
                        lane.sealed.push_front(batch);
                        break;
                    }
                    Err(TrySendError::Closed(batch)) => {
                        lane.sealed.push_front(batch);
                        lane.tx = None;
                        anyhow::bail!("a database writer stopped unexpectedly");
                    }
                }
            }
        }
        Ok(())
    }

    /// Pauses fetching while some writer is behind, so memory stays bounded and `poll` keeps being
    /// called (a consumer that stops polling is thrown out of the group after
    /// `max.poll.interval.ms`, which a long database outage would otherwise cause).
    fn flow_control(&mut self, consumer: &PersistConsumer) {
        let limit = MAX_WAITING_RECORDS.max(2 * self.s.batch_size);
        let waiting = self.lanes.iter().map(Lane::waiting).max().unwrap_or(0);
        let behind = if self.paused {
            waiting > limit / 2
        } else {
            waiting >= limit
        };
        if behind == self.paused || self.assigned.is_empty() {
            return;
        }
        let tpl = self.assignment_list();
        let result = if behind {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        };
        match result {
            Ok(()) => {
                self.paused = behind;
                tracing::debug!(paused = behind, "fetching paused while the writers catch up");
            }
            Err(e) => tracing::warn!(error = %e, "could not pause or resume fetching"),
        }
    }

    fn assignment_list(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::with_capacity(self.assigned.len());
        for &p in &self.assigned {
            tpl.add_partition(&self.s.topic, p);
        }
        tpl
    }

    fn drain_acks(&mut self) {
        loop {
            match self.acks.try_recv() {
                Ok(ack) => self.on_ack(ack),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }

    fn on_ack(&mut self, ack: Ack) {
        let lane = &mut self.lanes[ack.lane];
        lane.in_flight = lane.in_flight.saturating_sub(1);
        match ack.outcome {
            Ok(outcome) => {
                let s = &mut self.summary;
                s.stored += outcome.inserted;
                s.duplicates += outcome.duplicates;
                s.retries += outcome.retries;
                s.batches += outcome.transactions;
                for (class, n) in outcome.rejected {
                    *s.rejected.entry(class.to_owned()).or_default() += n;
                }
                s.active = self.first_record_at.map(|t| t.elapsed()).unwrap_or_default();
                for (partition, offset) in ack.last_offsets {
                    if self.frozen.contains(&partition) {
                        continue;
                    }
                    let next = self.committable.entry(partition).or_insert(offset + 1);
                    *next = (*next).max(offset + 1);
                    self.commit_due = true;
                }
            }
            Err(_) => {
                self.summary.abandoned += ack.records;
                self.frozen.extend(ack.last_offsets.keys());
                tracing::warn!(
                    records = ack.records,
                    partitions = ?ack.last_offsets.keys().collect::<Vec<_>>(),
                    "stopped during an outage: batch not stored, its offsets stay uncommitted and it is read again next time"
                );
            }
        }
    }

    /// Hands off everything collected and waits until the writers have acknowledged all of it.
    /// Blocks: called from the rebalance callback and at shutdown, never on an async worker.
    fn flush_and_wait(&mut self) {
        for lane in &mut self.lanes {
            lane.seal();
            while let Some(batch) = lane.sealed.pop_front() {
                let sent = lane.tx.as_ref().map(|tx| tx.blocking_send(batch));
                match sent {
                    Some(Ok(())) => lane.in_flight += 1,
                    Some(Err(lost)) => {
                        self.summary.abandoned += lost.0.len() as u64;
                        tracing::error!("a database writer is gone; the batch stays uncommitted");
                    }
                    None => {}
                }
            }
        }
        while self.lanes.iter().any(|l| l.in_flight > 0) {
            match self.acks.recv() {
                Ok(ack) => self.on_ack(ack),
                Err(_) => break,
            }
        }
    }

    /// Commits the committable offsets of the assigned partitions.
    fn commit(&mut self, consumer: &PersistConsumer, mode: CommitMode) {
        self.commit_due = false;
        let offsets: BTreeMap<i32, i64> = self
            .committable
            .iter()
            .filter(|(p, _)| self.assigned.contains(p))
            .map(|(&p, &o)| (p, o))
            .collect();
        if offsets.is_empty() || (matches!(mode, CommitMode::Sync) && offsets == self.last_sync_commit) {
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for (&p, &o) in &offsets {
            if let Err(e) = tpl.add_partition_offset(&self.s.topic, p, Offset::Offset(o)) {
                tracing::error!(error = %e, partition = p, "invalid offset to commit");
            }
        }
        match (consumer.commit(&tpl, mode), mode) {
            (Ok(()), CommitMode::Sync) => {
                self.last_sync_commit = offsets;
                self.commit_failures = 0;
            }
            (Ok(()), CommitMode::Async) => {}
            (Err(e), _) => self.on_commit_result(Err(e)),
        }
    }

    fn on_commit_result(&mut self, result: KafkaResult<()>) {
        match result {
            Ok(()) => self.commit_failures = 0,
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                let delay = self.s.backoff.delay(self.commit_failures);
                self.commit_failures = self.commit_failures.saturating_add(1);
                self.commit_due = true;
                self.next_commit_at = Instant::now() + delay;
                tracing::warn!(
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "offset commit failed; the data is stored, the commit is retried"
                );
            }
        }
    }

    fn on_assign(&mut self, tpl: &TopicPartitionList) {
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        tracing::info!(?partitions, "partitions assigned");
        self.assigned.extend(partitions);
        self.assigned_at = Some(Instant::now());
        self.last_drain_check = None;
        self.paused = false;
    }

    fn on_revoke(&mut self, consumer: &PersistConsumer, tpl: &TopicPartitionList) {
        let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        if revoked.is_empty() {
            return;
        }
        tracing::info!(
            partitions = ?revoked,
            "partitions revoked: storing and committing what was read from them first"
        );
        self.flush_and_wait();
        if consumer.assignment_lost() {
            tracing::warn!(
                "assignment lost (session timed out); the next owner re-reads the uncommitted tail"
            );
        }
        self.commit(consumer, CommitMode::Sync);
        for p in &revoked {
            self.assigned.remove(p);
            self.committable.remove(p);
            self.last_sync_commit.remove(p);
            self.frozen.remove(p);
        }
        self.paused = false;
    }

    fn busy(&self) -> bool {
        self.lanes.iter().any(Lane::busy) || self.commit_due
    }

    /// `--until-idle`: quiet for `idle` since the last record (or the assignment), nothing in
    /// flight, and every assigned partition read up to its high watermark.
    fn idle(&mut self, consumer: &PersistConsumer) -> bool {
        if !self.s.until_idle || self.busy() {
            return false;
        }
        let quiet_since = [Some(self.started), self.last_record_at, self.assigned_at]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(self.started);
        if quiet_since.elapsed() < self.s.idle {
            return false;
        }
        if self.assigned.is_empty() {
            if self.started.elapsed() >= NO_ASSIGNMENT_LIMIT {
                tracing::warn!("no partition was assigned to this consumer; stopping");
                return true;
            }
            return false;
        }
        if self
            .last_drain_check
            .is_some_and(|t| t.elapsed() < self.s.idle / 2)
        {
            return false;
        }
        self.last_drain_check = Some(Instant::now());
        match self.drained(consumer) {
            Ok(drained) => drained,
            Err(e) => {
                tracing::debug!(error = %e, "could not check whether the partitions are drained");
                false
            }
        }
    }

    /// Every assigned partition's position is at its high watermark.
    fn drained(&self, consumer: &PersistConsumer) -> KafkaResult<bool> {
        let positions = consumer.position()?;
        let committed = consumer.committed_offsets(self.assignment_list(), self.s.kafka_timeout)?;
        for &p in &self.assigned {
            let (low, high) = consumer.fetch_watermarks(&self.s.topic, p, self.s.kafka_timeout)?;
            let offset_of =
                |tpl: &TopicPartitionList| match tpl.find_partition(&self.s.topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                };
            let next = offset_of(&positions)
                .or_else(|| offset_of(&committed))
                .unwrap_or(low);
            if next < high {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
