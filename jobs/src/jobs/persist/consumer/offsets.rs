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
            (Ok(()), CommitMode::Async) => {}
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
        self.paused = false;
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
        for p in &revoked {
            self.assigned.remove(p);
            self.committable.remove(p);
            self.last_sync_commit.remove(p);
            self.frozen.remove(p);
        }
        self.paused = false;
    }
}
