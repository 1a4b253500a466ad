//! Stage stamps of stored batches, for the latency budget of `weatherflow bench persist`. Only the
//! benchmark turns it on ([`super::run_probed`]).
//!
//! The consumer and the writers call [`BatchStamps`] and [`Probe`] the same way with or without the
//! `bench` feature. Without it, a batch's stamps are a zero-sized type whose methods do nothing and
//! [`Probe`] has no values (so `Option<Probe>` is always `None`): the shipped binary reads no clock
//! and tests no flag for them.

#[cfg(feature = "bench")]
pub(crate) use on::BatchStamps;
#[cfg(feature = "bench")]
pub use on::{Probe, Stamps};

#[cfg(not(feature = "bench"))]
pub(crate) use off::BatchStamps;
#[cfg(not(feature = "bench"))]
pub use off::Probe;

#[cfg(feature = "bench")]
mod on {
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
        /// The record's Kafka timestamp in milliseconds: CreateTime, or the broker's append time on
        /// a topic with `message.timestamp.type=LogAppendTime`.
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

        /// Keeps a stored batch's stamps, completed with its write's end: the COMMIT returned now,
        /// after `commit_time`.
        pub(crate) fn stored(&self, stamps: BatchStamps, records: usize, commit_time: std::time::Duration) {
            let committed = Utc::now();
            let copied = chrono::Duration::from_std(commit_time)
                .ok()
                .map(|c| committed - c);
            let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
            for (i, mut stamps) in stamps.0.into_iter().enumerate() {
                stamps.records = if i == 0 { records } else { 0 };
                stamps.copied = copied;
                stamps.committed = Some(committed);
                kept.push(stamps);
            }
        }
    }

    /// The stamps a batch carries from the consumer thread to its writer: empty unless probed.
    #[derive(Debug, Default)]
    pub(crate) struct BatchStamps(Vec<Stamps>);

    impl BatchStamps {
        /// Stamps the record at `partition`/`offset` (Kafka timestamp `kafka_ms`), the first of a
        /// batch, as polled now, when the run is `probed`.
        pub(crate) fn polled(&mut self, probed: bool, partition: i32, offset: i64, kafka_ms: Option<i64>) {
            if probed {
                self.0.push(Stamps {
                    partition,
                    offset,
                    kafka_ms,
                    records: 0,
                    polled: Utc::now(),
                    handed: None,
                    writing: None,
                    copied: None,
                    committed: None,
                });
            }
        }

        /// The batch goes to its writer's channel now.
        pub(crate) fn handed(&mut self) {
            self.stamp(|s, now| s.handed = Some(now));
        }

        /// The writer takes the batch now.
        pub(crate) fn writing(&mut self) {
            self.stamp(|s, now| s.writing = Some(now));
        }

        /// Takes on the stamps of a batch merged into this one.
        pub(crate) fn absorb(&mut self, other: BatchStamps) {
            self.0.extend(other.0);
        }

        fn stamp(&mut self, set: impl Fn(&mut Stamps, DateTime<Utc>)) {
            if self.0.is_empty() {
                return;
            }
            let now = Utc::now();
            for stamps in &mut self.0 {
                set(stamps, now);
            }
        }
    }
}

#[cfg(not(feature = "bench"))]
mod off {
    /// No probe can exist without the `bench` feature.
    #[derive(Debug, Clone)]
    pub enum Probe {}

    impl Probe {
        /// Never called: there is no `Probe` to call it on.
        pub(crate) fn stored(&self, _: BatchStamps, _: usize, _: std::time::Duration) {
            match *self {}
        }
    }

    /// Nothing: no batch is stamped without the `bench` feature. (A field, so that it is built with
    /// `default()` as with the feature.)
    #[derive(Debug, Default)]
    pub(crate) struct BatchStamps(());

    impl BatchStamps {
        /// Does nothing, as the methods below.
        #[inline(always)]
        pub(crate) fn polled(&mut self, _: bool, _: i32, _: i64, _: Option<i64>) {}

        #[inline(always)]
        pub(crate) fn handed(&mut self) {}

        #[inline(always)]
        pub(crate) fn writing(&mut self) {}

        #[inline(always)]
        pub(crate) fn absorb(&mut self, _: BatchStamps) {}
    }
}
