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

    pub(super) fn busy(&self) -> bool {
        !self.open.is_empty() || !self.idle()
    }
}
