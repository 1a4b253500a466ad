//! Offsets: which offset of each partition may be committed, and when the next commit goes.
//!
//! The rule is that an offset never moves ahead of the database: a partition's offset becomes
//! committable only when a writer acknowledges the batch holding its records, after their
//! transaction committed ([`Offsets::stored`]). Acknowledgements of a partition arrive in offset
//! order (one writer, one batch in flight per partition), and the offset only ever grows.
//!
//! While running, commits are asynchronous and paced by `persist.commit_interval_ms`: one commit
//! carries every acknowledgement since the last. A rebalance and a shutdown commit synchronously at
//! once. This type decides; the consumer loop (`state.rs`) talks to the client.
//!
//! Why not librdkafka's own offset store and auto-commit timer (`store_offsets` with
//! `enable.auto.commit=true`): its timer first fires one interval after the assignment, where this
//! one commits the first acknowledgement at once (`persist_flow`'s paced-commit test pins that), and
//! it retries a failed commit on its next tick rather than with the job's backoff. Storing offsets
//! in the client while keeping this timer would only move the map below into librdkafka, out of
//! reach of a unit test.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::backoff::Backoff;

/// The committable offsets and the commit timer.
pub(super) struct Offsets {
    /// Shortest time between two asynchronous commits (`persist.commit_interval_ms`).
    interval: Duration,
    /// Delays of commit retries.
    backoff: Backoff,
    /// Per partition, the next offset to commit (last stored offset + 1).
    committable: BTreeMap<i32, i64>,
    /// What the last successful synchronous commit committed, to skip repeating it.
    last_sync: BTreeMap<i32, i64>,
    /// Partitions with a batch given up during shutdown: their offsets must not move any more, or
    /// a later batch's acknowledgement would commit past the records that were not stored.
    frozen: BTreeSet<i32>,
    /// An asynchronous commit is wanted.
    due: bool,
    /// Consecutive commit failures, for the backoff.
    failures: u32,
    /// No asynchronous commit before this instant: `interval` after the last one, or the backoff
    /// after a failure.
    next_at: Instant,
}

/// How a commit is sent, as the loop decides: the two cases keep different books.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Paced, while running; the result comes later through the commit callback.
    Async,
    /// At once and waited for: a rebalance or a shutdown.
    Sync,
}

impl Offsets {
    /// Nothing committable; the first commit may go at once.
    pub(super) fn new(interval: Duration, backoff: Backoff, now: Instant) -> Self {
        Self {
            interval,
            backoff,
            committable: BTreeMap::new(),
            last_sync: BTreeMap::new(),
            frozen: BTreeSet::new(),
            due: false,
            failures: 0,
            next_at: now,
        }
    }

    /// A batch covering `last_offsets` (per partition, its highest offset) is stored.
    pub(super) fn stored(&mut self, last_offsets: &BTreeMap<i32, i64>) {
        for (&partition, &offset) in last_offsets {
            if self.frozen.contains(&partition) {
                continue;
            }
            let next = self.committable.entry(partition).or_insert(offset + 1);
            *next = (*next).max(offset + 1);
            self.due = true;
        }
    }

    /// A batch of these partitions was given up (stopped during an outage): they stay where they
    /// are, whatever is acknowledged after.
    pub(super) fn abandoned(&mut self, partitions: impl IntoIterator<Item = i32>) {
        self.frozen.extend(partitions);
    }

    /// A commit is waiting for its time: the loop is not idle.
    pub(super) fn pending(&self) -> bool {
        self.due
    }

    /// How long until the waiting commit may go, when one waits.
    pub(super) fn wait(&self, now: Instant) -> Option<Duration> {
        self.due.then(|| self.next_at.saturating_duration_since(now))
    }

    /// An asynchronous commit should go now.
    pub(super) fn async_due(&self, now: Instant) -> bool {
        self.due && now >= self.next_at
    }

    /// The offsets a commit in `mode` should send, of the partitions `assigned` holds; `None` when
    /// there is nothing to send (nothing stored, or a synchronous commit would repeat the last).
    /// Taking them settles the waiting commit, whatever comes of it.
    pub(super) fn take_commit(&mut self, assigned: &BTreeSet<i32>, mode: Mode) -> Option<BTreeMap<i32, i64>> {
        self.due = false;
        let offsets: BTreeMap<i32, i64> = self
            .committable
            .iter()
            .filter(|(p, _)| assigned.contains(p))
            .map(|(&p, &o)| (p, o))
            .collect();
        if offsets.is_empty() || (mode == Mode::Sync && offsets == self.last_sync) {
            return None;
        }
        Some(offsets)
    }

    /// The client took the commit of `offsets` (a synchronous one is done; an asynchronous one's
    /// result comes through [`Offsets::confirmed`] or [`Offsets::failed`]).
    pub(super) fn sent(&mut self, offsets: BTreeMap<i32, i64>, mode: Mode, now: Instant) {
        match mode {
            Mode::Sync => {
                self.last_sync = offsets;
                self.failures = 0;
            }
            // Until the interval has passed, acknowledgements only move `committable`, and the one
            // commit that follows carries them all.
            Mode::Async => self.next_at = now + self.interval,
        }
    }

    /// A commit succeeded.
    pub(super) fn confirmed(&mut self) {
        self.failures = 0;
    }

    /// A commit failed: it is retried after the backoff, which is returned. The data is stored,
    /// only its offsets wait.
    pub(super) fn failed(&mut self, now: Instant) -> Duration {
        let delay = self.backoff.delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        self.due = true;
        self.next_at = now + delay;
        delay
    }

    /// These partitions went to another consumer, after their synchronous commit: nothing of theirs
    /// is kept, so that if one comes back it starts from what the group committed.
    pub(super) fn revoked(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.committable.remove(p);
            self.last_sync.remove(p);
            self.frozen.remove(p);
        }
    }

    /// The next offset to commit of `partition`, when it has one.
    #[cfg(test)]
    pub(super) fn committable(&self, partition: i32) -> Option<i64> {
        self.committable.get(&partition).copied()
    }

    /// Forces the timer, for tests of the loop's pace.
    #[cfg(test)]
    pub(super) fn set_due(&mut self, next_at: Instant) {
        self.due = true;
        self.next_at = next_at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(100);

    fn offsets(now: Instant) -> Offsets {
        Offsets::new(
            INTERVAL,
            Backoff::new(Duration::from_millis(10), Duration::from_secs(1)),
            now,
        )
    }

    fn assigned(partitions: &[i32]) -> BTreeSet<i32> {
        partitions.iter().copied().collect()
    }

    #[test]
    fn a_stored_batch_makes_its_next_offsets_committable_and_they_only_grow() {
        let now = Instant::now();
        let mut o = offsets(now);
        assert_eq!(o.take_commit(&assigned(&[0, 1]), Mode::Async), None);
        o.stored(&BTreeMap::from([(0, 4), (1, 9)]));
        o.stored(&BTreeMap::from([(0, 2)]));
        assert!(o.pending() && o.async_due(now));
        assert_eq!(
            o.take_commit(&assigned(&[0, 1]), Mode::Async),
            Some(BTreeMap::from([(0, 5), (1, 10)]))
        );
        assert!(!o.pending());
        // Only assigned partitions are committed.
        o.stored(&BTreeMap::from([(1, 10)]));
        assert_eq!(
            o.take_commit(&assigned(&[0]), Mode::Async),
            Some(BTreeMap::from([(0, 5)]))
        );
    }

    #[test]
    fn asynchronous_commits_are_paced_by_the_interval() {
        let now = Instant::now();
        let mut o = offsets(now);
        o.stored(&BTreeMap::from([(0, 0)]));
        // The first goes at once.
        let first = o.take_commit(&assigned(&[0]), Mode::Async).unwrap();
        o.sent(first, Mode::Async, now);
        o.stored(&BTreeMap::from([(0, 1)]));
        assert!(!o.async_due(now + INTERVAL / 2));
        assert_eq!(o.wait(now + INTERVAL / 2), Some(INTERVAL / 2));
        assert!(o.async_due(now + INTERVAL));
    }

    #[test]
    fn a_failed_commit_is_retried_after_the_backoff() {
        let now = Instant::now();
        let mut o = offsets(now);
        o.stored(&BTreeMap::from([(0, 0)]));
        let sent = o.take_commit(&assigned(&[0]), Mode::Async).unwrap();
        o.sent(sent, Mode::Async, now);
        let delay = o.failed(now);
        assert!(o.pending() && delay > Duration::ZERO);
        assert!(!o.async_due(now) && o.async_due(now + delay));
        assert_eq!(
            o.take_commit(&assigned(&[0]), Mode::Async),
            Some(BTreeMap::from([(0, 1)]))
        );
    }

    #[test]
    fn a_synchronous_commit_is_not_repeated_unchanged() {
        let now = Instant::now();
        let mut o = offsets(now);
        o.stored(&BTreeMap::from([(0, 0)]));
        let sent = o.take_commit(&assigned(&[0]), Mode::Sync).unwrap();
        o.sent(sent, Mode::Sync, now);
        assert_eq!(o.take_commit(&assigned(&[0]), Mode::Sync), None);
        o.stored(&BTreeMap::from([(0, 1)]));
        assert!(o.take_commit(&assigned(&[0]), Mode::Sync).is_some());
    }

    #[test]
    fn an_abandoned_partition_never_moves_again_until_it_is_revoked() {
        let now = Instant::now();
        let mut o = offsets(now);
        o.stored(&BTreeMap::from([(0, 3)]));
        o.abandoned([0]);
        // A later batch of the same partition, stored after the abandoned one was given up.
        o.stored(&BTreeMap::from([(0, 8), (1, 0)]));
        assert_eq!((o.committable(0), o.committable(1)), (Some(4), Some(1)));
        o.revoked(&[0]);
        assert_eq!(o.committable(0), None);
        o.stored(&BTreeMap::from([(0, 9)]));
        assert_eq!(o.committable(0), Some(10));
    }
}
