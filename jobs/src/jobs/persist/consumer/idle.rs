//! `--until-idle`: when a run has read and stored everything it was given.

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::PersistConsumer;
use super::lane::Lane;
use super::state::State;

/// `--until-idle` without any partition for this long ends the run (more consumers than partitions).
const NO_ASSIGNMENT_LIMIT: Duration = Duration::from_secs(30);

impl State {
    pub(super) fn busy(&self) -> bool {
        self.lanes.iter().any(Lane::busy) || self.commit_due
    }

    /// `--until-idle`: quiet for `idle` since the last record (or the assignment), nothing in
    /// flight, and every assigned partition read up to its high watermark.
    pub(super) fn idle(&mut self, consumer: &PersistConsumer) -> bool {
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
    pub(super) fn drained(&self, consumer: &PersistConsumer) -> KafkaResult<bool> {
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
