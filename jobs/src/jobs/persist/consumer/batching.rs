//! Batching: each record validated into its writer's open batch, batches sealed by size, bytes or
//! age and handed to the writers in order, and released when the writers acknowledge them.
//!
//! One lane per writer ([`Lane`]); a partition always goes to the same lane, and a lane has its
//! batches stored in order, which is what lets [`super::offsets`] commit a partition's offsets in
//! order. Small batches of idle lanes may go together ([`super::merge`]).

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rdkafka::message::{BorrowedMessage, Message};
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;

use super::Settings;
use super::arena::Arena;
use super::clock::WallClock;
use super::error::ConsumerError;
use super::lane::Lane;
use super::merge;
use crate::jobs::persist::store::{Lineage, Raw, RejectedRecord, ValidRecord};
use crate::jobs::persist::validate::{self, Rules};
use crate::jobs::persist::writer::{Ack, Batch};

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

/// One record as read, before validation.
pub(super) struct Incoming<'a> {
    /// Its partition.
    pub(super) partition: i32,
    /// Its offset.
    pub(super) offset: i64,
    /// Its key, if any.
    pub(super) key: Option<&'a [u8]>,
    /// Its value, if any.
    pub(super) value: Option<&'a [u8]>,
    /// Its Kafka timestamp, for the probe.
    pub(super) kafka_ms: Option<i64>,
}

/// The lanes and what filling them needs.
pub(super) struct Batching {
    /// One per writer, indexed by writer.
    pub(super) lanes: Vec<Lane>,
    /// Acknowledgements from every writer.
    acks: mpsc::Receiver<Ack>,
    /// The observations topic, each record's lineage.
    topic: Arc<str>,
    /// Validation limits.
    rules: Rules,
    /// Records per batch, at most.
    batch_size: usize,
    /// Longest wait of a record in an open batch.
    batch_timeout: Duration,
    /// A lane's open batch is sealed at this many bytes: its share of the byte bound, so large
    /// records reach the writers in time instead of waiting for the batch timeout behind a pause.
    seal_bytes: usize,
    /// Stamp the stages of each batch's first record (`bench persist`).
    probe: bool,
    /// Where the records' raw bytes are copied to.
    arena: Arena,
    /// The time of day records are validated against.
    clock: WallClock,
}

impl Batching {
    /// A lane for each writer's queue; acknowledgements come back through `acks`.
    pub(super) fn new(s: &Settings, writers: Vec<Sender<Batch>>, acks: mpsc::Receiver<Ack>) -> Self {
        Self {
            seal_bytes: s.max_buffered_bytes / (2 * writers.len().max(1)),
            lanes: writers.into_iter().map(Lane::new).collect(),
            acks,
            topic: s.topic.clone(),
            rules: s.rules,
            batch_size: s.batch_size,
            batch_timeout: s.batch_timeout,
            probe: s.probe,
            arena: Arena::default(),
            clock: WallClock::new(),
        }
    }

    /// Validates a message read from Kafka into its lane's open batch.
    pub(super) fn accept(&mut self, m: &BorrowedMessage<'_>, now: Instant) {
        self.add(
            Incoming {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key(),
                value: m.payload(),
                kafka_ms: m.timestamp().to_millis(),
            },
            now,
        );
    }

    /// Validates one record into its lane's open batch, sealing the batch when it is full.
    pub(super) fn add(&mut self, m: Incoming<'_>, now: Instant) {
        let lineage = Lineage {
            topic: self.topic.clone(),
            partition: m.partition,
            offset: m.offset,
        };
        let raw = Raw {
            key: m.key.map(|k| self.arena.copy(k)),
            value: m.value.map(|v| self.arena.copy(v)),
        };
        let held = RECORD_OVERHEAD
            + raw.key.as_ref().map_or(0, |k| k.len())
            + raw.value.as_ref().map_or(0, |v| v.len());
        let verdict = validate::validate(raw.value.as_deref(), self.clock.at(now), &self.rules);
        let lane_index = m.partition.unsigned_abs() as usize % self.lanes.len();
        let lane = &mut self.lanes[lane_index];
        if lane.open.is_empty() {
            lane.open.opened = now;
            lane.open
                .stamps
                .polled(self.probe, m.partition, m.offset, m.kafka_ms);
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
        if lane.open.len() >= self.batch_size || lane.open.bytes >= self.seal_bytes {
            lane.seal();
        }
    }

    /// Seals the open batches that have waited `batch_timeout`.
    pub(super) fn seal_timed_out(&mut self, now: Instant) {
        for lane in &mut self.lanes {
            if !lane.open.is_empty() && now.saturating_duration_since(lane.open.opened) >= self.batch_timeout
            {
                lane.seal();
            }
        }
    }

    /// Hands the sealed batches to the writers with room for them.
    pub(super) fn hand_off(&mut self) -> Result<(), ConsumerError> {
        // A lane in the merged batch in flight sends nothing until it is acknowledged: another
        // writer may be storing it, and a partition's batches must be stored in order.
        for lane in self.lanes.iter_mut().filter(|l| !l.merged) {
            // A handle of its own (a reference count), so the lane can be updated while it is used.
            let Some(tx) = lane.tx.clone() else {
                return Err(ConsumerError::WriterGone);
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
                        return Err(ConsumerError::WriterGone);
                    }
                }
            }
        }
        Ok(())
    }

    /// Nothing more to read right now: see [`merge::on_quiet`].
    pub(super) fn on_quiet(&mut self) -> Result<(), ConsumerError> {
        merge::on_quiet(&mut self.lanes)
    }

    /// How long the next poll may block, from `now`, for the lanes' sake; `other_work` (a commit
    /// waiting) keeps the busy pace.
    pub(super) fn poll_wait(&self, now: Instant, other_work: bool) -> Duration {
        let holding =
            merge::holding(&self.lanes) || self.lanes.iter().any(|l| l.merged && !l.sealed.is_empty());
        if !holding && self.lanes.iter().any(Lane::ready) {
            return Duration::ZERO;
        }
        let mut wait = if holding || self.lanes.iter().any(Lane::next_in_line) {
            HANDOFF_POLL
        } else if self.lanes.iter().any(Lane::busy) || other_work {
            BUSY_POLL
        } else {
            QUIET_POLL
        };
        for lane in self.lanes.iter().filter(|l| !l.open.is_empty()) {
            let due = (lane.open.opened + self.batch_timeout).saturating_duration_since(now);
            wait = wait.min(due);
        }
        wait
    }

    /// An acknowledgement that has arrived, without waiting.
    pub(super) fn next_ack(&mut self) -> Option<Ack> {
        // Empty or every writer gone: either way, nothing to take now.
        self.acks.try_recv().ok()
    }

    /// The next acknowledgement, waiting for it; `None` once every writer is gone.
    pub(super) fn wait_ack(&mut self) -> Option<Ack> {
        self.acks.recv().ok()
    }

    /// The lanes of an acknowledged batch have it off their hands.
    pub(super) fn release(&mut self, ack: &Ack) {
        if ack.members.is_empty() {
            self.lanes[ack.lane].acknowledged(ack.bytes);
        } else {
            for &(lane, bytes) in &ack.members {
                self.lanes[lane].acknowledged(bytes);
                self.lanes[lane].merged = false;
            }
        }
    }

    /// Records are collected, waiting or in flight.
    pub(super) fn busy(&self) -> bool {
        self.lanes.iter().any(Lane::busy)
    }

    /// A batch is handed off and not yet acknowledged.
    pub(super) fn in_flight(&self) -> bool {
        self.lanes.iter().any(|l| l.in_flight > 0)
    }

    /// The merged batch is in flight.
    pub(super) fn merged_in_flight(&self) -> bool {
        merge::in_flight(&self.lanes)
    }

    /// The most records sealed and waiting for one writer.
    pub(super) fn most_waiting(&self) -> usize {
        self.lanes.iter().map(Lane::waiting).max().unwrap_or(0)
    }

    /// Bytes held between reading and storing, all writers together.
    pub(super) fn buffered_bytes(&self) -> usize {
        self.lanes.iter().map(Lane::buffered_bytes).sum()
    }

    /// Seals every open batch and hands everything to the writers, waiting for room. Blocks: called
    /// from the rebalance callback and at shutdown, never on an async worker. Returns the records
    /// of batches whose writer was gone.
    pub(super) fn send_all_blocking(&mut self) -> u64 {
        let mut lost_records = 0;
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
                        lost_records += lost as u64;
                        tracing::error!("a database writer is gone; the batch stays uncommitted");
                    }
                    None => {}
                }
            }
        }
        lost_records
    }
}
