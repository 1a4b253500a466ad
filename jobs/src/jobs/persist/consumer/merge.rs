//! Small batches of several writers' lanes, written as one transaction.
//!
//! At a steady rate each lane's batches are one or two records, and each would be a transaction of
//! its own: at 2,000 msg/s three writers commit about 1,400 transactions a second, and on a host
//! whose cores are nearly busy that CPU lengthens every stage of the latency (one writer against
//! three: `docs/performance.md`). So at most one small batch is in flight at a time. While it is,
//! the records of idle lanes wait, and when it is acknowledged they go together, as one batch, to
//! one of those lanes' writers. A lane still has at most one batch in flight, so each partition's
//! batches are stored, and its offsets committed, in order. Once more than
//! [`SMALL_BATCH_ROWS`] records wait, the lanes go to their own writers in parallel, as a backlog
//! needs.

use tokio::sync::mpsc::error::TrySendError;

use super::state::State;
use crate::jobs::persist::store::SMALL_BATCH_ROWS;
use crate::jobs::persist::writer::Batch;

impl State {
    /// The lanes whose records can go at once (`Lane::ready`).
    fn ready_lanes(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.lanes.len()).filter(|&i| self.lanes[i].ready())
    }

    /// Records of ready lanes.
    fn ready_records(&self) -> usize {
        self.ready_lanes().map(|i| self.lanes[i].open.len()).sum()
    }

    /// A merged batch is in flight: some lane's records are in it. There is at most one.
    pub(super) fn merged_in_flight(&self) -> bool {
        self.lanes.iter().any(|l| l.merged)
    }

    /// Records of idle lanes wait for the small batch in flight, to go when it is acknowledged.
    /// Called on every turn of the loop, so it counts without collecting.
    pub(super) fn holding(&self) -> bool {
        if !self.merged_in_flight() {
            return false;
        }
        let records = self.ready_records();
        records > 0 && records <= SMALL_BATCH_ROWS
    }

    /// Nothing more to read right now: idle writers get what there is, without waiting for the
    /// batch timeout; a few records as one merged batch, more lane by lane. Under load the
    /// writers are busy and batches fill up instead.
    pub(super) fn on_quiet(&mut self) -> anyhow::Result<()> {
        let ready: Vec<usize> = self.ready_lanes().collect();
        let records: usize = ready.iter().map(|&i| self.lanes[i].open.len()).sum();
        if ready.is_empty() || (records <= SMALL_BATCH_ROWS && self.merged_in_flight()) {
            return Ok(());
        }
        // An idle writer's queue is empty, but it is checked: only this thread sends.
        let target = ready[0];
        let has_room = self.lanes[target].tx.as_ref().is_some_and(|tx| tx.capacity() > 0);
        if records > SMALL_BATCH_ROWS || !has_room {
            for &i in &ready {
                self.lanes[i].seal();
            }
            return Ok(());
        }
        self.send_merged(target, &ready)
    }

    /// The open batches of `lanes`, as one batch to `target`'s writer.
    fn send_merged(&mut self, target: usize, lanes: &[usize]) -> anyhow::Result<()> {
        let mut merged = Batch::new();
        for &i in lanes {
            let part = self.lanes[i].take_open();
            merged.opened = merged.opened.min(part.opened);
            merged.members.push((i, part.bytes));
            merged.bytes += part.bytes;
            merged.valid.extend(part.valid);
            merged.rejected.extend(part.rejected);
            merged.last_offsets.extend(part.last_offsets);
            merged.stamps.absorb(part.stamps);
        }
        merged.stamps.handed();
        let Some(tx) = self.lanes[target].tx.clone() else {
            anyhow::bail!("a database writer stopped unexpectedly");
        };
        let members = merged.members.clone();
        match tx.try_send(merged) {
            Ok(()) => {
                for (i, bytes) in members {
                    self.lanes[i].sent(bytes);
                    self.lanes[i].merged = true;
                }
                Ok(())
            }
            Err(TrySendError::Closed(_)) => {
                self.lanes[target].tx = None;
                anyhow::bail!("a database writer stopped unexpectedly")
            }
            Err(TrySendError::Full(_)) => {
                anyhow::bail!("an idle database writer's queue was full")
            }
        }
    }
}
