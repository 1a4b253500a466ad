//! One writer's queue on the consumer thread.

use std::collections::VecDeque;

use tokio::sync::mpsc::Sender;

use crate::jobs::persist::writer::Batch;

/// One writer's queue on this thread.
pub(super) struct Lane {
    /// To the writer; `None` once the writer is gone.
    pub(super) tx: Option<Sender<Batch>>,
    /// Records being collected.
    pub(super) open: Batch,
    /// Full or timed-out batches not yet handed off.
    pub(super) sealed: VecDeque<Batch>,
    /// Handed off, not yet acknowledged.
    pub(super) in_flight: usize,
    /// Bytes of the batches handed off and not yet acknowledged.
    pub(super) in_flight_bytes: usize,
}

impl Lane {
    pub(super) fn seal(&mut self) {
        if !self.open.is_empty() {
            self.sealed
                .push_back(std::mem::replace(&mut self.open, Batch::new()));
        }
    }

    pub(super) fn idle(&self) -> bool {
        self.in_flight == 0 && self.sealed.is_empty()
    }

    /// Records sealed but not yet handed off.
    pub(super) fn waiting(&self) -> usize {
        self.sealed.iter().map(Batch::len).sum()
    }

    /// Bytes held for this writer: open, waiting and in flight.
    pub(super) fn buffered_bytes(&self) -> usize {
        self.open.bytes + self.sealed.iter().map(|b| b.bytes).sum::<usize>() + self.in_flight_bytes
    }

    /// Hands a batch to the writer's channel: it is now in flight.
    pub(super) fn sent(&mut self, bytes: usize) {
        self.in_flight += 1;
        self.in_flight_bytes += bytes;
    }

    pub(super) fn busy(&self) -> bool {
        !self.open.is_empty() || !self.idle()
    }
}
