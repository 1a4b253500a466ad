//! What a replay did, per partition and in total: the `job_runs` details and the progress lines.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::range::PartitionRange;
use crate::jobs::persist::store::Stored;
use crate::runs::Report;

/// One partition's part of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReplay {
    /// The offsets read, `[from, to)`.
    pub range: PartitionRange,
    /// Records read.
    pub read: u64,
    /// Observations stored by this replay (they were missing).
    pub stored: u64,
    /// Valid records whose observation was already stored.
    pub present: u64,
    /// Records quarantined: refused by validation, or by the database.
    pub quarantined: u64,
    /// Of the quarantined, those whose rejected_records row was missing and is now written.
    pub rejections_stored: u64,
}

impl PartitionReplay {
    /// Nothing read yet.
    pub(crate) fn new(range: PartitionRange) -> Self {
        Self {
            range,
            read: 0,
            stored: 0,
            present: 0,
            quarantined: 0,
            rejections_stored: 0,
        }
    }
}

/// Why a replay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStop {
    /// Every partition was read to the end of its range.
    Done,
    /// SIGINT/SIGTERM (or the caller's token) before that.
    Shutdown,
    /// Stopped while the database was unavailable: the batch in hand was not stored.
    Outage,
}

impl ReplayStop {
    fn as_str(self) -> &'static str {
        match self {
            ReplayStop::Done => "done",
            ReplayStop::Shutdown => "shutdown",
            ReplayStop::Outage => "stopped during a database outage",
        }
    }
}

/// The outcome of a replay: recorded in its `job_runs` row, completed or not.
#[derive(Debug, Clone, Default)]
pub struct ReplaySummary {
    /// The consumer group the replay read with (it commits nothing).
    pub group: String,
    /// Per partition, in partition order.
    pub partitions: Vec<PartitionReplay>,
    /// Quarantined records by error class.
    pub quarantined: BTreeMap<String, u64>,
    /// Records read but not stored because the replay was stopped during a database outage.
    pub abandoned: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Database attempts retried after an outage.
    pub retries: u64,
    /// From the first range lookup to the last batch stored.
    pub elapsed: Duration,
    /// Why it ended; `None` while it runs.
    pub stop: Option<ReplayStop>,
}

impl ReplaySummary {
    /// Records in the ranges, read or not.
    pub fn to_read(&self) -> u64 {
        self.partitions.iter().map(|p| p.range.len()).sum()
    }

    /// Records read.
    pub fn read(&self) -> u64 {
        self.partitions.iter().map(|p| p.read).sum()
    }

    /// Observations stored by this replay.
    pub fn stored(&self) -> u64 {
        self.partitions.iter().map(|p| p.stored).sum()
    }

    /// Valid records already stored.
    pub fn present(&self) -> u64 {
        self.partitions.iter().map(|p| p.present).sum()
    }

    /// Records quarantined, all classes together.
    pub fn quarantined_total(&self) -> u64 {
        self.quarantined.values().sum()
    }

    /// Adds one stored batch of `partition`'s (at index `i`).
    pub(crate) fn add_stored(&mut self, i: usize, stored: &Stored) {
        let p = &mut self.partitions[i];
        p.stored += stored.inserted;
        p.present += stored.duplicates;
        p.rejections_stored += stored.rejections_inserted;
        p.quarantined += stored.db_rejected.len() as u64;
        for r in &stored.db_rejected {
            *self.quarantined.entry(r.rejection.class.to_string()).or_default() += 1;
        }
        self.batches += stored.transactions;
        self.retries += stored.retries;
    }

    /// What became of the records read so far: the progress line's message.
    pub fn progress_message(&self) -> String {
        format!(
            "records read: {} stored, {} already present, {} quarantined",
            self.stored(),
            self.present(),
            self.quarantined_total()
        )
    }

    /// The progress line ([`crate::progress::line`]): records read of those to read, and what
    /// became of them.
    pub fn progress_line(&self) -> String {
        crate::progress::line("replay", self.read(), Some(self.to_read()), &self.progress_message())
    }
}

impl Report for ReplaySummary {
    fn records_in(&self) -> Option<i64> {
        Some(self.read() as i64)
    }
    fn records_out(&self) -> Option<i64> {
        Some(self.stored() as i64)
    }
    fn details(&self) -> serde_json::Value {
        let partitions: Vec<_> = self
            .partitions
            .iter()
            .map(|p| {
                json!({
                    "partition": p.range.partition,
                    "from_offset": p.range.from,
                    "to_offset": p.range.to,
                    "read": p.read,
                    "stored": p.stored,
                    "already_present": p.present,
                    "quarantined": p.quarantined,
                    "rejections_stored": p.rejections_stored,
                })
            })
            .collect();
        json!({
            "group": self.group,
            "partitions": partitions,
            "to_read": self.to_read(),
            "read": self.read(),
            "stored": self.stored(),
            "already_present": self.present(),
            "quarantined": self.quarantined,
            "abandoned": self.abandoned,
            "batches": self.batches,
            "retries": self.retries,
            "elapsed_ms": self.elapsed.as_millis() as u64,
            "stop": self.stop.map_or("unknown", ReplayStop::as_str),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_details_add_up_the_partitions() {
        let mut s = ReplaySummary {
            group: "g-replay-1".into(),
            ..Default::default()
        };
        for (partition, from, to) in [(0, 0, 10), (1, 5, 5)] {
            s.partitions
                .push(PartitionReplay::new(PartitionRange { partition, from, to }));
        }
        s.partitions[0].read = 4;
        s.add_stored(
            0,
            &Stored {
                inserted: 3,
                duplicates: 1,
                transactions: 1,
                ..Default::default()
            },
        );
        assert_eq!((s.to_read(), s.read(), s.stored(), s.present()), (10, 4, 3, 1));
        assert_eq!(
            s.progress_line(),
            "replay: 4 of 10 (40%) records read: 3 stored, 1 already present, 0 quarantined"
        );
        let d = s.details();
        assert_eq!(d["partitions"][0]["stored"], 3);
        assert_eq!(d["partitions"][1]["to_offset"], 5);
        assert_eq!(d["stop"], "unknown");
        assert_eq!((s.records_in(), s.records_out()), (Some(4), Some(3)));
    }
}
