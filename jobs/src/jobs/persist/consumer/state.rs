//! The state the consumer loop and librdkafka's callbacks share: the lanes, the offsets, the
//! summary; here the intake side (validate, batch, hand off, acknowledgements).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::mpsc::{self, TryRecvError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;

use super::arena::Arena;
use super::clock::WallClock;
use super::lane::Lane;
use super::{PersistConsumer, Settings};
use crate::jobs::persist::PersistSummary;
use crate::jobs::persist::store::{Lineage, Raw, RejectedRecord, ValidRecord};
use crate::jobs::persist::validate;
use crate::jobs::persist::writer::{Ack, Batch};

/// Records a writer may have waiting on this thread (sealed, not yet handed off) before fetching
/// pauses; fetching resumes below half of it. Pausing makes librdkafka drop what it prefetched and
/// fetch again on resume, so it is kept for real backlogs (a slow or absent database), not for the
/// ordinary jitter of a busy writer: pausing at two waiting batches cost 90 pause/resume cycles and
/// most of the throughput on an 18 k backlog.
const MAX_WAITING_RECORDS: usize = 20_000;
/// Memory a record holds besides its key and value: the record structs and the observation's
/// strings (a few hundred bytes for a `current.json`), counted against `persist.max_buffered_bytes`.
const RECORD_OVERHEAD: usize = 512;
/// Poll wait while batches are in flight: short, so acknowledgements are committed promptly.
const BUSY_POLL: Duration = Duration::from_millis(10);
/// Poll wait when nothing is in flight.
const QUIET_POLL: Duration = Duration::from_millis(100);
/// Poll wait while an open batch waits for its writer to finish the one batch before it
/// ([`Lane::next_in_line`]). A writer's acknowledgement does not wake `poll` (librdkafka's queue is
/// not ours to signal, and the client polls again after a yield), so this bounds how long a
/// finished writer waits for the records collected meanwhile. It lasts at most `batch_timeout`
/// per batch: a writer stuck in an outage has its next batch sealed and queued after that, and the
/// loop is back to [`BUSY_POLL`].
const HANDOFF_POLL: Duration = Duration::from_millis(1);

/// Everything the loop and the callbacks share.
pub(super) struct State {
    pub(super) s: Settings,
    pub(super) lanes: Vec<Lane>,
    pub(super) acks: mpsc::Receiver<Ack>,
    /// Partitions currently assigned.
    pub(super) assigned: BTreeSet<i32>,
    /// When the current assignment arrived.
    pub(super) assigned_at: Option<Instant>,
    /// Per partition, the next offset to commit (last stored offset + 1).
    pub(super) committable: BTreeMap<i32, i64>,
    /// What the last successful synchronous commit committed, to skip repeating it.
    pub(super) last_sync_commit: BTreeMap<i32, i64>,
    /// An asynchronous commit is wanted.
    pub(super) commit_due: bool,
    /// Consecutive commit failures, for backoff.
    pub(super) commit_failures: u32,
    /// No asynchronous commit before this instant: `commit_interval` after the last one, or the
    /// backoff after a failure.
    pub(super) next_commit_at: Instant,
    /// Partitions with a batch given up during shutdown: their offsets must not move any more.
    pub(super) frozen: BTreeSet<i32>,
    /// Fetching is paused because writers are behind.
    pub(super) paused: bool,
    /// When the thread started.
    pub(super) started: Instant,
    /// When the first record arrived (the summary's active time counts from here).
    pub(super) first_record_at: Option<Instant>,
    /// When the latest record arrived.
    pub(super) last_record_at: Option<Instant>,
    pub(super) last_drain_check: Option<Instant>,
    /// A writer's open batch is sealed at this many bytes: its share of the byte bound.
    pub(super) seal_bytes: usize,
    /// Where the records' raw bytes are copied to.
    pub(super) arena: Arena,
    /// The time of day records are validated against.
    pub(super) clock: WallClock,
    pub(super) summary: PersistSummary,
}

impl State {
    pub(super) fn new(s: Settings, lanes: Vec<Sender<Batch>>, acks: mpsc::Receiver<Ack>) -> Self {
        let now = Instant::now();
        // Computed once: `accept` runs per record. Sealing at a share of the byte bound too gets
        // large records to the writers in time instead of waiting for the batch timeout behind a
        // pause.
        let seal_bytes = s.max_buffered_bytes / (2 * lanes.len().max(1));
        Self {
            seal_bytes,
            arena: Arena::default(),
            clock: WallClock::new(),
            s,
            lanes: lanes
                .into_iter()
                .map(|tx| Lane {
                    tx: Some(tx),
                    open: Batch::new(),
                    sealed: VecDeque::new(),
                    in_flight: 0,
                    in_flight_bytes: 0,
                    merged: false,
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

    pub(super) fn lane_of(&self, partition: i32) -> usize {
        partition.unsigned_abs() as usize % self.lanes.len()
    }

    /// Validates one record into its lane's open batch.
    pub(super) fn accept(&mut self, m: &BorrowedMessage<'_>) {
        let now = Instant::now();
        let lineage = Lineage {
            topic: self.s.topic.clone(),
            partition: m.partition(),
            offset: m.offset(),
        };
        let raw = Raw {
            key: m.key().map(|k| self.arena.copy(k)),
            value: m.payload().map(|v| self.arena.copy(v)),
        };
        let held = RECORD_OVERHEAD
            + raw.key.as_ref().map_or(0, |k| k.len())
            + raw.value.as_ref().map_or(0, |v| v.len());
        let verdict = validate::validate(raw.value.as_deref(), self.clock.at(now), &self.s.rules);
        let lane_index = self.lane_of(lineage.partition);
        let seal_bytes = self.seal_bytes;
        let probe = self.s.probe;
        let lane = &mut self.lanes[lane_index];
        if lane.open.is_empty() {
            lane.open.opened = now;
            lane.open.stamps.polled(probe, m);
        }
        lane.open.bytes += held;
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
        if lane.open.len() >= self.s.batch_size || lane.open.bytes >= seal_bytes {
            lane.seal();
        }
        self.summary.consumed += 1;
        crate::metrics::persist_consumed(1);
        self.last_record_at = Some(now);
        self.first_record_at.get_or_insert(now);
    }

    /// How long the next poll may block, from `now`.
    pub(super) fn poll_timeout(&self, now: Instant) -> Duration {
        let holding = self.holding() || self.lanes.iter().any(|l| l.merged && !l.sealed.is_empty());
        if !holding && self.lanes.iter().any(Lane::ready) {
            return Duration::ZERO;
        }
        let mut wait = if holding || self.lanes.iter().any(Lane::next_in_line) {
            HANDOFF_POLL
        } else if self.lanes.iter().any(Lane::busy) || self.commit_due {
            BUSY_POLL
        } else {
            QUIET_POLL
        };
        for lane in self.lanes.iter().filter(|l| !l.open.is_empty()) {
            let due = (lane.open.opened + self.s.batch_timeout).saturating_duration_since(now);
            wait = wait.min(due);
        }
        if self.commit_due {
            wait = wait.min(self.next_commit_at.saturating_duration_since(now));
        }
        wait
    }

    /// Acknowledgements, timeouts, hand-offs, flow control, commits. `now` is read once per turn of
    /// the loop, which turns once per record under load: the clock reads per lane were a twentieth
    /// of the consumer thread's time.
    pub(super) fn housekeeping(&mut self, consumer: &PersistConsumer, now: Instant) -> anyhow::Result<()> {
        self.drain_acks();
        for lane in &mut self.lanes {
            if !lane.open.is_empty()
                && now.saturating_duration_since(lane.open.opened) >= self.s.batch_timeout
            {
                lane.seal();
            }
        }
        self.hand_off()?;
        self.flow_control(consumer);
        if self.commit_due && now >= self.next_commit_at {
            self.commit(consumer, CommitMode::Async);
        }
        Ok(())
    }

    pub(super) fn hand_off(&mut self) -> anyhow::Result<()> {
        // A lane in the merged batch in flight sends nothing until it is acknowledged: another
        // writer may be storing it, and a partition's batches must be stored in order.
        for lane in self.lanes.iter_mut().filter(|l| !l.merged) {
            // A handle of its own (a reference count), so the lane can be updated while it is used.
            let Some(tx) = lane.tx.clone() else {
                anyhow::bail!("a database writer stopped unexpectedly");
            };
            while let Some(mut batch) = lane.sealed.pop_front() {
                let bytes = batch.bytes;
                batch.stamps.handed();
                match tx.try_send(batch) {
                    Ok(()) => lane.sent(bytes),
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

    /// Pauses fetching while some writer is behind or the records held reach
    /// `persist.max_buffered_bytes`, so memory stays bounded in records and in bytes, and `poll` keeps
    /// being called (a consumer that stops polling is thrown out of the group after
    /// `max.poll.interval.ms`, which a long database outage would otherwise cause).
    pub(super) fn flow_control(&mut self, consumer: &PersistConsumer) {
        let limit = MAX_WAITING_RECORDS.max(2 * self.s.batch_size);
        let waiting = self.lanes.iter().map(Lane::waiting).max().unwrap_or(0);
        let bytes = self.buffered_bytes();
        let max_bytes = self.s.max_buffered_bytes;
        let behind = if self.paused {
            waiting > limit / 2 || bytes > max_bytes / 2
        } else {
            waiting >= limit || bytes >= max_bytes
        };
        if behind == self.paused || self.assigned.is_empty() {
            return;
        }
        if self.set_client_pause(consumer, behind) {
            self.paused = behind;
            if behind {
                tracing::debug!(waiting, bytes, "fetching paused: the writers are behind");
            } else {
                tracing::debug!(waiting, bytes, "fetching resumed");
            }
        }
    }

    /// Pauses or resumes the whole assignment in the client and reports it in the metrics; false
    /// when the client refused (logged), so the caller keeps its state as it was.
    pub(super) fn set_client_pause(&self, consumer: &PersistConsumer, paused: bool) -> bool {
        let tpl = self.assignment_list();
        let result = if paused {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        };
        match result {
            Ok(()) => {
                crate::metrics::persist_paused_partitions(if paused { tpl.count() as i32 } else { 0 });
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, paused, "could not pause or resume fetching");
                false
            }
        }
    }

    /// Bytes held between reading and storing, all writers together.
    pub(super) fn buffered_bytes(&self) -> usize {
        self.lanes.iter().map(Lane::buffered_bytes).sum()
    }

    pub(super) fn assignment_list(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::with_capacity(self.assigned.len());
        for &p in &self.assigned {
            tpl.add_partition(&self.s.topic, p);
        }
        tpl
    }

    pub(super) fn drain_acks(&mut self) {
        loop {
            match self.acks.try_recv() {
                Ok(ack) => self.on_ack(ack),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }

    pub(super) fn on_ack(&mut self, ack: Ack) {
        if ack.members.is_empty() {
            self.lanes[ack.lane].acknowledged(ack.bytes);
        } else {
            for &(lane, bytes) in &ack.members {
                self.lanes[lane].acknowledged(bytes);
                self.lanes[lane].merged = false;
            }
        }
        crate::metrics::persist_buffered_bytes(self.buffered_bytes());
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
    pub(super) fn flush_and_wait(&mut self) {
        // The merged batch holds its lanes' earlier records; their next batches go after it.
        while self.merged_in_flight() {
            match self.acks.recv() {
                Ok(ack) => self.on_ack(ack),
                Err(_) => break,
            }
        }
        for lane in &mut self.lanes {
            lane.seal();
            while let Some(batch) = lane.sealed.pop_front() {
                let bytes = batch.bytes;
                // Only the lost batch's size is needed, not the batch itself.
                let sent = lane
                    .tx
                    .as_ref()
                    .map(|tx| tx.blocking_send(batch).map_err(|lost| lost.0.len()));
                match sent {
                    Some(Ok(())) => lane.sent(bytes),
                    Some(Err(lost)) => {
                        self.summary.abandoned += lost as u64;
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
}
