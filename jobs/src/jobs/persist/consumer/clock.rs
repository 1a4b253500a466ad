//! The wall clock records are validated against, derived from each record's monotonic clock read.
//!
//! Validation needs the time of day for one rule (an observation at most `max_future` ahead), and
//! reading it per record was a second clock read per message: on a virtual machine whose clock
//! source is not the TSC a clock read is a system call, and the consumer thread's showed in a
//! profile of a catch-up. The wall clock is read once a second instead and advanced by the
//! monotonic clock in between, so it is never off by more than the clock's drift over a second, far
//! inside a rule measured in hours.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

/// How long a reading of the wall clock is advanced by the monotonic clock before it is read again.
const REREAD: Duration = Duration::from_secs(1);

/// The last reading of the wall clock, and when it was taken.
pub(super) struct WallClock {
    read_at: Instant,
    wall: DateTime<Utc>,
}

impl WallClock {
    /// A clock read now.
    pub(super) fn new() -> Self {
        Self {
            read_at: Instant::now(),
            wall: Utc::now(),
        }
    }

    /// The time of day at `now`, a monotonic clock reading taken by the caller.
    pub(super) fn at(&mut self, now: Instant) -> DateTime<Utc> {
        let since = now.saturating_duration_since(self.read_at);
        if since >= REREAD {
            *self = Self::new();
            return self.wall;
        }
        self.wall + TimeDelta::from_std(since).unwrap_or(TimeDelta::zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_wall_clock_between_and_after_readings() {
        let mut clock = WallClock::new();
        let start = clock.wall;
        let later = clock.read_at + Duration::from_millis(400);
        assert_eq!(clock.at(later), start + TimeDelta::milliseconds(400));
        std::thread::sleep(Duration::from_millis(1100));
        let before = Utc::now();
        let read = clock.at(Instant::now());
        let after = Utc::now();
        assert!(before <= read && read <= after, "{before} <= {read} <= {after}");
    }
}
