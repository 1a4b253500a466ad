//! Ticks missed while no scheduler was running, and what to do about them at start-up.
//!
//! The run history is the memory: the latest tick recorded for a job (`details.tick` of its scheduled
//! rows) is compared with the cron's fire times up to now. Fire times in between were missed; the job's
//! `missed` policy says whether to forget them (`skip`) or run once now (`run-once`). The catch-up run is
//! an ordinary tick labelled with the latest missed fire time, so replicas starting together still run
//! it once: the same lock and tick check as every other tick apply.

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{DatabaseConnection, DbErr};

use crate::runs::{self, JobName};
use crate::scheduler::schedules::{MissedPolicy, Timing};

/// Counting missed ticks stops here: after a long outage a per-second cron has millions, and the number
/// is only for the log.
const COUNT_CAP: usize = 10_000;

/// Fire times that fell between the last recorded tick and now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed {
    /// The last tick the history knows of.
    pub last_recorded: DateTime<Utc>,
    /// The latest fire time at or before now: what a catch-up run is labelled with.
    pub latest: DateTime<Utc>,
    /// How many fire times were missed, at most [`COUNT_CAP`].
    pub count: usize,
}

/// What start-up does for one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// The job was never scheduled before: nothing can have been missed.
    FirstStart,
    /// No fire time fell since the last recorded tick.
    NothingMissed,
    /// Ticks were missed and the policy is `skip`.
    Skip(Missed),
    /// Ticks were missed and the policy is `run-once`: run once now, labelled `missed.latest`.
    RunOnce(Missed),
}

/// The fire times of `timing` in `(last, now]`, if any.
pub fn missed_between(timing: &Timing, last: DateTime<Utc>, now: DateTime<Utc>) -> Option<Missed> {
    let tz = timing.timezone;
    // croner keeps the fraction of a second it is given; fire times are whole seconds.
    let latest = timing
        .cron
        .find_previous_occurrence(&now.trunc_subsecs(0).with_timezone(&tz), true)
        .ok()?
        .with_timezone(&Utc);
    if latest <= last {
        return None;
    }
    let count = timing
        .cron
        .iter_after(last.trunc_subsecs(0).with_timezone(&tz))
        .take_while(|t| t.with_timezone(&Utc) <= now)
        .take(COUNT_CAP)
        .count();
    Some(Missed {
        last_recorded: last,
        latest,
        count,
    })
}

/// Looks up `job`'s last recorded tick and decides what start-up does about the time since.
pub async fn plan(
    db: &DatabaseConnection,
    job: JobName,
    timing: &Timing,
    now: DateTime<Utc>,
) -> Result<CatchUp, DbErr> {
    let Some(last) = runs::last_scheduled_tick(db, job).await? else {
        return Ok(CatchUp::FirstStart);
    };
    Ok(match (missed_between(timing, last, now), timing.missed) {
        (None, _) => CatchUp::NothingMissed,
        (Some(m), MissedPolicy::Skip) => CatchUp::Skip(m),
        (Some(m), MissedPolicy::RunOnce) => CatchUp::RunOnce(m),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::schedules::test_support::{at, timing};

    #[test]
    fn fire_times_after_the_last_tick_are_missed() {
        let t = timing("0 */10 * * * *", "UTC");
        let m = missed_between(&t, at("2026-03-01T10:00:00Z"), at("2026-03-01T10:35:12.5Z")).unwrap();
        assert_eq!(m.latest, at("2026-03-01T10:30:00Z"));
        assert_eq!(m.count, 3);
        // A restart between two fire times misses nothing.
        assert_eq!(
            missed_between(&t, at("2026-03-01T10:30:00Z"), at("2026-03-01T10:39:59Z")),
            None
        );
        // A fire time exactly now counts as missed (the ticker only arms times after now).
        let m = missed_between(&t, at("2026-03-01T10:30:00Z"), at("2026-03-01T10:40:00Z")).unwrap();
        assert_eq!((m.latest, m.count), (at("2026-03-01T10:40:00Z"), 1));
    }

    #[test]
    fn missed_ticks_are_read_in_the_jobs_time_zone() {
        // Noon in Paris is 11:00 UTC in winter and 10:00 UTC from 29 March 2026 (summer time).
        let t = timing("0 0 12 * * *", "Europe/Paris");
        let m = missed_between(&t, at("2026-03-27T11:00:00Z"), at("2026-03-30T12:00:00Z")).unwrap();
        assert_eq!(m.latest, at("2026-03-30T10:00:00Z"));
        assert_eq!(m.count, 3); // 28th at 11:00Z, 29th and 30th at 10:00Z
    }

    #[test]
    fn counting_is_capped() {
        let t = timing("* * * * * *", "UTC");
        let m = missed_between(&t, at("2026-01-01T00:00:00Z"), at("2026-02-01T00:00:00Z")).unwrap();
        assert_eq!(m.count, COUNT_CAP);
        assert_eq!(m.latest, at("2026-02-01T00:00:00Z"));
    }
}
