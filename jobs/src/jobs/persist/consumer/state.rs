//! The consumer's state, composed of its named parts, and the one place they meet: the loop in
//! `mod.rs` and librdkafka's callbacks (which run on the same thread, inside `poll`) call only this.
//!
//! - [`Batching`]: records into batches, batches to the writers, acknowledgements back.
//! - [`Offsets`]: what may be committed, and when.
//! - [`FlowControl`]: whether fetching is paused.
//! - [`IdleTracker`]: when `--until-idle` is done.
//!
//! Each part decides from its own fields; the client calls (commit, pause, watermarks) and the
//! partitions assigned are here, so an event that concerns several parts (an acknowledgement, a
//! revocation) is handled in one function that says what each part does.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc::Sender;

use super::batching::Batching;
use super::error::ConsumerError;
use super::flow::FlowControl;
use super::idle::{self, IdleTracker, Verdict};
use super::offsets::{Mode, Offsets};
use super::{PersistConsumer, Settings};
use crate::jobs::persist::PersistSummary;
use crate::jobs::persist::writer::{Ack, Batch};

/// Everything the loop and the callbacks share.
pub(super) struct State {
    /// The observations topic.
    topic: std::sync::Arc<str>,
    /// Timeout of metadata and offset requests.
    kafka_timeout: Duration,
    /// The operator's pause, as the pause watcher last read it.
    held: Arc<AtomicBool>,
    /// Partitions currently assigned: what is paused, committed and checked for drain.
    assigned: BTreeSet<i32>,
    /// Records into batches, batches to the writers.
    pub(super) batching: Batching,
    /// What may be committed, and when.
    pub(super) offsets: Offsets,
    /// Whether fetching is paused.
    flow: FlowControl,
    /// When `--until-idle` is done.
    idle: IdleTracker,
    /// The run's counts so far.
    pub(super) summary: PersistSummary,
}

impl State {
    /// The parts for `s`, with a lane for each writer's queue.
    pub(super) fn new(s: Settings, writers: Vec<Sender<Batch>>, acks: mpsc::Receiver<Ack>) -> Self {
        let now = Instant::now();
        Self {
            batching: Batching::new(&s, writers, acks),
            offsets: Offsets::new(s.commit_interval, s.backoff, now),
            flow: FlowControl::new(s.batch_size, s.max_buffered_bytes),
            idle: IdleTracker::new(s.until_idle, s.idle, now),
            topic: s.topic,
            kafka_timeout: s.kafka_timeout,
            held: s.held,
            assigned: BTreeSet::new(),
            summary: PersistSummary::default(),
        }
    }

    /// A record read from Kafka.
    pub(super) fn accept(&mut self, m: &BorrowedMessage<'_>) {
        let now = Instant::now();
        self.batching.accept(m, now);
        self.summary.consumed += 1;
        crate::metrics::persist_consumed(1);
        self.idle.record(now);
    }

    /// Nothing more to read right now.
    pub(super) fn on_quiet(&mut self) -> Result<(), ConsumerError> {
        self.batching.on_quiet()
    }

    /// How long the next poll may block, from `now`: the lanes' pace, bounded by a waiting commit.
    pub(super) fn poll_timeout(&self, now: Instant) -> Duration {
        let wait = self.batching.poll_wait(now, self.offsets.pending());
        self.offsets.wait(now).map_or(wait, |commit| wait.min(commit))
    }

    /// Acknowledgements, timeouts, hand-offs, flow control, commits. `now` is read once per turn of
    /// the loop, which turns once per record under load: the clock reads per lane were a twentieth
    /// of the consumer thread's time.
    pub(super) fn housekeeping(
        &mut self,
        consumer: &PersistConsumer,
        now: Instant,
    ) -> Result<(), ConsumerError> {
        while let Some(ack) = self.batching.next_ack() {
            self.on_ack(ack);
        }
        self.batching.seal_timed_out(now);
        self.batching.hand_off()?;
        self.flow_control(consumer);
        if self.offsets.async_due(now) {
            self.commit(consumer, Mode::Async);
        }
        Ok(())
    }

    /// A writer acknowledged a batch: its lanes are free, its counts are the run's, and its offsets
    /// committable if it was stored.
    pub(super) fn on_ack(&mut self, ack: Ack) {
        self.batching.release(&ack);
        crate::metrics::persist_buffered_bytes(self.batching.buffered_bytes());
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
                s.active = self.idle.active();
                self.offsets.stored(&ack.last_offsets);
            }
            Err(_) => {
                self.summary.abandoned += ack.records;
                self.offsets.abandoned(ack.last_offsets.keys().copied());
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
        while self.batching.merged_in_flight() {
            match self.batching.wait_ack() {
                Some(ack) => self.on_ack(ack),
                None => break,
            }
        }
        self.summary.abandoned += self.batching.send_all_blocking();
        while self.batching.in_flight() {
            match self.batching.wait_ack() {
                Some(ack) => self.on_ack(ack),
                None => break,
            }
        }
    }

    /// Commits the committable offsets of the assigned partitions.
    pub(super) fn commit(&mut self, consumer: &PersistConsumer, mode: Mode) {
        let Some(offsets) = self.offsets.take_commit(&self.assigned, mode) else {
            return;
        };
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for (&p, &o) in &offsets {
            if let Err(e) = tpl.add_partition_offset(&self.topic, p, Offset::Offset(o)) {
                tracing::error!(error = %e, partition = p, "invalid offset to commit");
            }
        }
        let client_mode = match mode {
            Mode::Sync => CommitMode::Sync,
            Mode::Async => CommitMode::Async,
        };
        match consumer.commit(&tpl, client_mode) {
            Ok(()) => self.offsets.sent(offsets, mode, Instant::now()),
            Err(e) => self.on_commit_result(Err(e)),
        }
    }

    /// The result of a commit, from the commit callback or a refused request.
    pub(super) fn on_commit_result(&mut self, result: KafkaResult<()>) {
        match result {
            Ok(()) => self.offsets.confirmed(),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                let delay = self.offsets.failed(Instant::now());
                tracing::warn!(
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "offset commit failed; the data is stored, the commit is retried"
                );
            }
        }
    }

    /// `--until-idle`: quiet long enough, nothing in flight, every assigned partition drained.
    pub(super) fn idle(&mut self, consumer: &PersistConsumer) -> bool {
        let busy = self.batching.busy() || self.offsets.pending();
        match self.idle.verdict(Instant::now(), busy, !self.assigned.is_empty()) {
            Verdict::Working => false,
            Verdict::NoAssignment => {
                tracing::warn!("no partition was assigned to this consumer; stopping");
                true
            }
            Verdict::CheckDrained => {
                let list = self.assignment_list();
                match idle::drained(consumer, &self.topic, &self.assigned, list, self.kafka_timeout) {
                    Ok(drained) => drained,
                    Err(e) => {
                        tracing::debug!(error = %e, "could not check whether the partitions are drained");
                        false
                    }
                }
            }
        }
    }

    /// Pauses fetching while the writers are behind and resumes once they caught up
    /// ([`FlowControl`]).
    fn flow_control(&mut self, consumer: &PersistConsumer) {
        let held = self.held.load(Ordering::Relaxed);
        if self.flow.hold(held) {
            if held {
                tracing::warn!(partitions = ?self.assigned, "job paused: fetching stops, the partitions and offsets are kept");
            } else {
                tracing::info!(partitions = ?self.assigned, "job resumed: fetching again");
            }
        }
        let waiting = self.batching.most_waiting();
        let bytes = self.batching.buffered_bytes();
        let Some(paused) = self.flow.change(waiting, bytes) else {
            return;
        };
        if self.assigned.is_empty() || !self.set_client_pause(consumer, paused) {
            return;
        }
        self.flow.set(paused);
        if paused {
            tracing::debug!(waiting, bytes, "fetching paused: the writers are behind");
        } else {
            tracing::debug!(waiting, bytes, "fetching resumed");
        }
    }

    /// Pauses or resumes the whole assignment in the client and reports it in the metrics; false
    /// when the client refused (logged), so the caller keeps its state as it was.
    fn set_client_pause(&self, consumer: &PersistConsumer, paused: bool) -> bool {
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

    fn assignment_list(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::with_capacity(self.assigned.len());
        for &p in &self.assigned {
            tpl.add_partition(&self.topic, p);
        }
        tpl
    }

    /// Partitions were assigned: they are read from now on, and `--until-idle` waits for them.
    pub(super) fn on_assign(&mut self, tpl: &TopicPartitionList) {
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        tracing::info!(?partitions, "partitions assigned");
        self.assigned.extend(partitions);
        self.idle.assigned(Instant::now());
    }

    /// After every rebalance, makes the client's pause state match [`FlowControl::paused`] on the
    /// whole assignment. librdkafka keeps an application pause on a partition across revocation and
    /// re-assignment, so a flag reset without this could leave re-assigned partitions paused for
    /// good (and `--until-idle` waiting on them forever); a partition newly assigned while the
    /// writers are behind is paused like the others.
    pub(super) fn resync_pause(&mut self, consumer: &PersistConsumer) {
        if self.assigned.is_empty() {
            crate::metrics::persist_paused_partitions(0);
            return;
        }
        // A held job stays paused on whatever it is assigned now.
        let paused = self.flow.paused() || self.held.load(Ordering::Relaxed);
        if self.set_client_pause(consumer, paused) {
            self.flow.set(paused);
            tracing::debug!(
                paused,
                partitions = self.assigned.len(),
                "pause state applied after the rebalance"
            );
        }
    }

    /// Partitions are being revoked: what was read from them is stored and committed before the
    /// rebalance goes on, so their next owner starts exactly after the last stored record.
    pub(super) fn on_revoke(&mut self, consumer: &PersistConsumer, tpl: &TopicPartitionList) {
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
        self.commit(consumer, Mode::Sync);
        // A revoked partition leaves without our pause on it, so that it is fetched again if it
        // comes back; everything read was just stored, so nothing is waiting and the rest resumes
        // too (applied to the new assignment in `resync_pause`).
        if let Err(e) = consumer.resume(tpl) {
            tracing::debug!(error = %e, "could not resume the revoked partitions");
        }
        for p in &revoked {
            self.assigned.remove(p);
        }
        self.offsets.revoked(&revoked);
        self.flow.set(false);
    }
}
