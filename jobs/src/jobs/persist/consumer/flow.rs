//! Flow control: whether fetching should be paused because the writers are behind, or because an
//! operator paused the job (`weatherflow pause persist`: a hold).
//!
//! Fetching pauses while some writer has too many records waiting, or the records held reach
//! `persist.max_buffered_bytes`, and resumes below half of either, so memory stays bounded in
//! records and in bytes. The loop keeps calling `poll` while paused: a consumer that stops polling
//! is thrown out of the group after `max.poll.interval.ms`, which a long database outage would
//! otherwise cause. A hold pauses the whole assignment the same way, without a rebalance and
//! without touching the offsets, until it is lifted. This type decides; the consumer loop (`state.rs`) applies the decision to the
//! client and records it only once the client took it.

/// Records a writer may have waiting on this thread (sealed, not yet handed off) before fetching
/// pauses; fetching resumes below half of it. Pausing makes librdkafka drop what it prefetched and
/// fetch again on resume, so it is kept for real backlogs (a slow or absent database), not for the
/// ordinary jitter of a busy writer: pausing at two waiting batches cost 90 pause/resume cycles and
/// most of the throughput on an 18 k backlog.
const MAX_WAITING_RECORDS: usize = 20_000;

/// The pause state and its bounds.
pub(super) struct FlowControl {
    /// Fetching is paused in the client.
    paused: bool,
    /// Records waiting for one writer that pause fetching.
    max_waiting: usize,
    /// Bytes held that pause fetching (`persist.max_buffered_bytes`).
    max_bytes: usize,
    /// The job is paused by an operator: fetching stays paused whatever the writers do.
    held: bool,
}

impl FlowControl {
    /// Not paused. A writer may always have two full batches waiting, whatever the batch size.
    pub(super) fn new(batch_size: usize, max_bytes: usize) -> Self {
        Self {
            paused: false,
            max_waiting: MAX_WAITING_RECORDS.max(2 * batch_size),
            max_bytes,
            held: false,
        }
    }

    /// An operator's pause was set or lifted; true when that changed it.
    pub(super) fn hold(&mut self, held: bool) -> bool {
        std::mem::replace(&mut self.held, held) != held
    }

    /// The pause state wanted when the most records waiting for one writer are `waiting` and the
    /// records held take `bytes`, if it differs from the current one.
    pub(super) fn change(&self, waiting: usize, bytes: usize) -> Option<bool> {
        let behind = if self.paused {
            waiting > self.max_waiting / 2 || bytes > self.max_bytes / 2
        } else {
            waiting >= self.max_waiting || bytes >= self.max_bytes
        };
        let wanted = behind || self.held;
        (wanted != self.paused).then_some(wanted)
    }

    /// The client applied `paused`.
    pub(super) fn set(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// Whether fetching is paused.
    pub(super) fn paused(&self) -> bool {
        self.paused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_at_the_bounds_and_resumes_below_half_of_them() {
        let mut flow = FlowControl::new(100, 1000);
        assert_eq!(flow.change(MAX_WAITING_RECORDS - 1, 999), None);
        assert_eq!(flow.change(MAX_WAITING_RECORDS, 0), Some(true));
        assert_eq!(flow.change(0, 1000), Some(true));
        flow.set(true);
        assert!(flow.paused());
        // Still above half of one bound: stays paused.
        assert_eq!(flow.change(MAX_WAITING_RECORDS / 2 + 1, 0), None);
        assert_eq!(flow.change(0, 501), None);
        assert_eq!(flow.change(MAX_WAITING_RECORDS / 2, 500), Some(false));
    }

    #[test]
    fn a_hold_pauses_whatever_the_writers_do_until_lifted() {
        let mut flow = FlowControl::new(100, 1000);
        assert!(flow.hold(true) && !flow.hold(true));
        assert_eq!(flow.change(0, 0), Some(true));
        flow.set(true);
        assert_eq!(flow.change(0, 0), None);
        assert!(flow.hold(false));
        assert_eq!(flow.change(0, 0), Some(false));
        // Lifted while the writers are behind: stays paused for them.
        flow.hold(true);
        assert_eq!(flow.change(MAX_WAITING_RECORDS, 0), None);
        flow.hold(false);
        assert_eq!(flow.change(MAX_WAITING_RECORDS, 0), None);
    }

    #[test]
    fn a_writer_may_always_have_two_full_batches_waiting() {
        let flow = FlowControl::new(50_000, usize::MAX);
        assert_eq!(flow.change(99_999, 0), None);
        assert_eq!(flow.change(100_000, 0), Some(true));
    }
}
