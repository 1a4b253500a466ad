//! Offset commits and rebalances: offsets move only for stored batches, and a revoked partition is
//! stored and committed before it goes.

use std::collections::BTreeMap;
use std::time::Instant;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

use super::PersistConsumer;
use super::state::State;

impl State {
    /// Commits the committable offsets of the assigned partitions.
    pub(super) fn commit(&mut self, consumer: &PersistConsumer, mode: CommitMode) {
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
            // The next asynchronous commit waits `commit_interval`: until then, acknowledgements
            // only move `committable`, and the one commit that follows carries them all.
            (Ok(()), CommitMode::Async) => self.next_commit_at = Instant::now() + self.s.commit_interval,
            (Err(e), _) => self.on_commit_result(Err(e)),
        }
    }

    pub(super) fn on_commit_result(&mut self, result: KafkaResult<()>) {
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

    pub(super) fn on_assign(&mut self, tpl: &TopicPartitionList) {
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        tracing::info!(?partitions, "partitions assigned");
        self.assigned.extend(partitions);
        self.assigned_at = Some(Instant::now());
        self.last_drain_check = None;
    }

    /// After every rebalance, makes the client's pause state match [`State::paused`] on the whole
    /// assignment. librdkafka keeps an application pause on a partition across revocation and
    /// re-assignment, so a flag reset without this could leave re-assigned partitions paused for good
    /// (and `--until-idle` waiting on them forever); a partition newly assigned while the writers
    /// are behind is paused like the others.
    pub(super) fn resync_pause(&mut self, consumer: &PersistConsumer) {
        if self.assigned.is_empty() {
            crate::metrics::persist_paused_partitions(0);
            return;
        }
        if self.set_client_pause(consumer, self.paused) {
            tracing::debug!(
                paused = self.paused,
                partitions = self.assigned.len(),
                "pause state applied after the rebalance"
            );
        }
    }

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
        self.commit(consumer, CommitMode::Sync);
        // A revoked partition leaves without our pause on it, so that it is fetched again if it
        // comes back; everything read was just stored, so nothing is waiting and the rest resumes
        // too (applied to the new assignment in `resync_pause`).
        if let Err(e) = consumer.resume(tpl) {
            tracing::debug!(error = %e, "could not resume the revoked partitions");
        }
        for p in &revoked {
            self.assigned.remove(p);
            self.committable.remove(p);
            self.last_sync_commit.remove(p);
            self.frozen.remove(p);
        }
        self.paused = false;
    }
}
