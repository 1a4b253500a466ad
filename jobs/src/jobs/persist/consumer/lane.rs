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
    /// Its records are in the merged batch in flight (`consumer::merge`): its next batches wait for
    /// that one, which another writer may be storing.
    pub(super) merged: bool,
}

impl Lane {
    /// An empty lane for the writer behind `tx`.
    pub(super) fn new(tx: Sender<Batch>) -> Self {
        Self {
            tx: Some(tx),
            open: Batch::new(),
            sealed: VecDeque::new(),
            in_flight: 0,
            in_flight_bytes: 0,
            merged: false,
        }
    }

    /// Moves the open batch to the sealed ones.
    pub(super) fn seal(&mut self) {
        if !self.open.is_empty() {
            let batch = self.take_open();
            self.sealed.push_back(batch);
        }
    }

    /// Takes the open batch. The next gets room for as many records as this one had, so a
    /// backlog's batches are allocated once instead of grown by doubling (each doubling a copy of
    /// the records so far), and a trickle's stay small.
    pub(super) fn take_open(&mut self) -> Batch {
        let next = Batch::with_capacity(self.open.valid.len(), self.open.rejected.len());
        std::mem::replace(&mut self.open, next)
    }

    /// Records wait in the open batch and the writer has nothing: they can go at once.
    pub(super) fn ready(&self) -> bool {
        !self.open.is_empty() && self.idle()
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

    /// A batch of this lane's was acknowledged.
    pub(super) fn acknowledged(&mut self, bytes: usize) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(bytes);
    }

    /// Records wait in the open batch, and it is the writer's next: the writer has one batch and
    /// none waits before this one. Its acknowledgement is what hands this batch over.
    pub(super) fn next_in_line(&self) -> bool {
        !self.open.is_empty() && self.sealed.is_empty() && self.in_flight == 1
    }

    pub(super) fn busy(&self) -> bool {
        !self.open.is_empty() || !self.idle()
    }
}
