//! Stage stamps of stored batches, for the latency budget of `weatherflow bench persist`. Only the
//! benchmark turns it on ([`super::run_probed`]); every other run pays one branch per batch.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// When each stage happened to a batch's first record, on this process's wall clock. A merged
/// batch (`consumer::merge`) has one per lane it holds: each lane's first record.
#[derive(Debug, Clone)]
pub struct Stamps {
    /// Partition of the first record.
    pub partition: i32,
    /// Offset of the first record (with the partition, it names the message the bench sent).
    pub offset: i64,
    /// The record's Kafka timestamp in milliseconds: CreateTime, or the broker's append time on a
    /// topic with `message.timestamp.type=LogAppendTime`.
    pub kafka_ms: Option<i64>,
    /// Records in the batch, on its first stamp; 0 on a merged batch's others, so a sum counts
    /// each record once.
    pub records: usize,
    /// `poll` returned the record.
    pub polled: DateTime<Utc>,
    /// The batch was handed to its writer's channel.
    pub handed: Option<DateTime<Utc>>,
    /// The writer took the batch.
    pub writing: Option<DateTime<Utc>>,
    /// The COPY (and the rest of the transaction's statements) finished; COMMIT is next.
    pub copied: Option<DateTime<Utc>>,
    /// The COMMIT returned: the rows are durable and visible.
    pub committed: Option<DateTime<Utc>>,
}

/// Where the writers leave the stamps of every batch they stored.
#[derive(Debug, Clone, Default)]
pub struct Probe(Arc<Mutex<Vec<Stamps>>>);

impl Probe {
    /// Everything stamped so far, leaving the probe empty.
    pub fn take(&self) -> Vec<Stamps> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn push(&self, stamps: Stamps) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(stamps);
    }
}
