//! Idle tracking for `--until-idle`: when a run has read and stored everything it was given.
//!
//! A run is done when it has been quiet for `persist.idle_ms` since its last record (or its
//! assignment), nothing is in flight, and every assigned partition was read up to its high
//! watermark. The watermarks are a broker round trip, so they are asked at most twice per quiet
//! period. This type keeps the times; [`drained`] asks the broker.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::PersistConsumer;

/// `--until-idle` without any partition for this long ends the run (more consumers than partitions).
const NO_ASSIGNMENT_LIMIT: Duration = Duration::from_secs(30);

/// What the loop should do about `--until-idle` now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Keep going: not asked to stop when idle, busy, not quiet long enough, or checked lately.
    Working,
    /// Quiet for long enough: ask the broker whether every assigned partition is drained.
    CheckDrained,
    /// No partition was ever assigned within [`NO_ASSIGNMENT_LIMIT`]: stop.
    NoAssignment,
}

/// The times `--until-idle` decides on.
pub(super) struct IdleTracker {
    /// `--until-idle` was asked for.
    until_idle: bool,
    /// Quiet time before the drained check (`persist.idle_ms`).
    idle: Duration,
    /// When the consumer started.
    started: Instant,
    /// When the first record arrived (the summary's active time counts from here).
    first_record_at: Option<Instant>,
    /// When the latest record arrived.
    last_record_at: Option<Instant>,
    /// When the current assignment arrived: a new partition may have records to read.
    assigned_at: Option<Instant>,
    /// When the broker was last asked; a new assignment asks again at once.
    last_drain_check: Option<Instant>,
}

impl IdleTracker {
    /// Started at `now`.
    pub(super) fn new(until_idle: bool, idle: Duration, now: Instant) -> Self {
        Self {
            until_idle,
            idle,
            started: now,
            first_record_at: None,
            last_record_at: None,
            assigned_at: None,
            last_drain_check: None,
        }
    }

    /// A record arrived at `now`.
    pub(super) fn record(&mut self, now: Instant) {
        self.last_record_at = Some(now);
        self.first_record_at.get_or_insert(now);
    }

    /// Partitions were assigned at `now`.
    pub(super) fn assigned(&mut self, now: Instant) {
        self.assigned_at = Some(now);
        self.last_drain_check = None;
    }

    /// Time since the first record: the run's working time, without the group join and the wait.
    pub(super) fn active(&self) -> Duration {
        self.first_record_at.map(|t| t.elapsed()).unwrap_or_default()
    }

    /// What to do at `now`, with work in flight or not (`busy`) and partitions assigned or not.
    /// [`Verdict::CheckDrained`] counts as a check: the next comes half a quiet period later.
    pub(super) fn verdict(&mut self, now: Instant, busy: bool, has_partitions: bool) -> Verdict {
        if !self.until_idle || busy {
            return Verdict::Working;
        }
        let quiet_since = [Some(self.started), self.last_record_at, self.assigned_at]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(self.started);
        if now.saturating_duration_since(quiet_since) < self.idle {
            return Verdict::Working;
        }
        if !has_partitions {
            if now.saturating_duration_since(self.started) >= NO_ASSIGNMENT_LIMIT {
                return Verdict::NoAssignment;
            }
            return Verdict::Working;
        }
        if self
            .last_drain_check
            .is_some_and(|t| now.saturating_duration_since(t) < self.idle / 2)
        {
            return Verdict::Working;
        }
        self.last_drain_check = Some(now);
        Verdict::CheckDrained
    }
}

/// Every partition of `assigned` (of `topic`, listed in `list`) has its position at its high
/// watermark; a partition not fetched yet counts from its committed offset, or its low watermark.
pub(super) fn drained(
    consumer: &PersistConsumer,
    topic: &str,
    assigned: &BTreeSet<i32>,
    list: TopicPartitionList,
    timeout: Duration,
) -> KafkaResult<bool> {
    let positions = consumer.position()?;
    let committed = consumer.committed_offsets(list, timeout)?;
    for &p in assigned {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        let offset_of = |tpl: &TopicPartitionList| match tpl.find_partition(topic, p).map(|e| e.offset()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(2);

    #[test]
    fn checks_after_a_quiet_period_then_at_most_twice_per_period() {
        let start = Instant::now();
        let mut t = IdleTracker::new(true, IDLE, start);
        t.assigned(start);
        t.record(start + IDLE);
        assert_eq!(t.verdict(start + IDLE, false, true), Verdict::Working);
        let quiet = start + 2 * IDLE;
        assert_eq!(t.verdict(quiet, true, true), Verdict::Working, "busy");
        assert_eq!(t.verdict(quiet, false, true), Verdict::CheckDrained);
        assert_eq!(t.verdict(quiet + IDLE / 4, false, true), Verdict::Working);
        assert_eq!(t.verdict(quiet + IDLE / 2, false, true), Verdict::CheckDrained);
        // A new assignment starts a new quiet period, then checks at once.
        t.assigned(quiet + IDLE);
        assert_eq!(t.verdict(quiet + IDLE, false, true), Verdict::Working);
        assert_eq!(t.verdict(quiet + 2 * IDLE, false, true), Verdict::CheckDrained);
    }

    #[test]
    fn without_until_idle_or_any_partition_it_never_checks() {
        let start = Instant::now();
        let mut forever = IdleTracker::new(false, IDLE, start);
        assert_eq!(forever.verdict(start + 10 * IDLE, false, true), Verdict::Working);
        let mut lonely = IdleTracker::new(true, IDLE, start);
        assert_eq!(lonely.verdict(start + IDLE, false, false), Verdict::Working);
        assert_eq!(
            lonely.verdict(start + NO_ASSIGNMENT_LIMIT, false, false),
            Verdict::NoAssignment
        );
    }

    #[test]
    fn active_time_counts_from_the_first_record() {
        let start = Instant::now();
        let mut t = IdleTracker::new(true, IDLE, start);
        assert_eq!(t.active(), Duration::ZERO);
        t.record(Instant::now());
        t.record(Instant::now() + IDLE);
        assert!(t.active() < IDLE);
    }
}
