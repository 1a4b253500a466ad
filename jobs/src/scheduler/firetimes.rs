//! Fire times of a cron in a time zone with daylight saving time, as UTC instants.
//!
//! croner walks local wall-clock times: given a time inside the hour repeated at fall-back it can
//! answer with the *first* pass of that hour (in the past), and an interval cron skips the second pass
//! altogether. Here the zone's UTC offset is treated as what it is, a step function of the instant:
//! between two offset changes the zone is a fixed offset, where croner's arithmetic is exact. So the
//! next fire time after `t` is the first match in the fixed offset in force at `t`, unless the offset
//! changes before that match, in which case the search continues from the change. The rules this gives:
//! - every UTC instant whose local time matches the cron fires, once (at fall-back the repeated
//!   `02:30` fires twice, an hour apart; `*/10` fires six times more in the repeated hour);
//! - local times skipped at spring-forward (`02:30` in Paris on the last Sunday of March) fire once,
//!   at the instant the gap ends, unless that instant matches anyway (no burst);
//! - the answer is always strictly after `t` (no spin).

use chrono::{DateTime, Duration, FixedOffset, Offset, SubsecRound, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;

use super::schedules::Timing;

/// The next fire time of `timing` strictly after `after`: the instant the scheduler fires the job
/// (whole seconds), computed in the job's own time zone and correct across its offset changes.
pub fn next_fire(timing: &Timing, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // croner keeps the fraction of a second it is given; fire times are whole seconds.
    next_after(&timing.cron, &timing.timezone, after.trunc_subsecs(0))
}

/// The next `n` fire times of `timing` after `after`, as the scheduler will fire them: what every
/// reader shows (`weatherflow schedules`, `status`, the dashboard and the API).
pub fn next_fires(timing: &Timing, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    std::iter::successors(next_fire(timing, after), |t| next_fire(timing, *t))
        .take(n)
        .collect()
}

/// Offset changes are found by stepping this far and bisecting; zones change offset at most a few
/// times a year, never twice within a day.
const STEP: Duration = Duration::hours(12);

/// How many offset changes one search may cross before giving up on a cron that matches nothing.
const MAX_CHANGES: usize = 16;

/// The zone's UTC offset at instant `t`.
fn offset_at(tz: &Tz, t: DateTime<Utc>) -> FixedOffset {
    tz.offset_from_utc_datetime(&t.naive_utc()).fix()
}

/// The first match of `cron` in fixed offset `off` strictly after `after`.
fn next_in(cron: &Cron, off: FixedOffset, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&after.with_timezone(&off), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The first instant in `(after, until]` where the zone's offset differs from its offset at `after`.
fn next_change(tz: &Tz, after: DateTime<Utc>, until: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let off = offset_at(tz, after);
    let mut lo = after;
    loop {
        let hi = (lo + STEP).min(until);
        if offset_at(tz, hi) != off {
            return Some(bisect(tz, off, lo, hi));
        }
        if hi >= until {
            return None;
        }
        lo = hi;
    }
}

/// The first second in `(lo, hi]` whose offset is not `off`, knowing `hi`'s is not.
fn bisect(tz: &Tz, off: FixedOffset, mut lo: DateTime<Utc>, mut hi: DateTime<Utc>) -> DateTime<Utc> {
    while hi - lo > Duration::seconds(1) {
        let mid = lo + Duration::seconds((hi - lo).num_seconds() / 2);
        if offset_at(tz, mid) == off {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// The next fire time of `cron` in `tz` strictly after `after` (whole seconds).
pub(crate) fn next_after(cron: &Cron, tz: &Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut from = after;
    for _ in 0..MAX_CHANGES {
        let off = offset_at(tz, from);
        let candidate = next_in(cron, off, from);
        // Search for a change up to the candidate, or a year ahead when the fixed offset has none.
        let horizon = candidate.unwrap_or(from + Duration::days(366));
        let Some(change) = next_change(tz, from, horizon) else {
            return candidate;
        };
        let new = offset_at(tz, change);
        if new.local_minus_utc() > off.local_minus_utc() {
            // Spring-forward: the wall times skipped are, in the old offset, the instants
            // [change, change + gap). One of them matching fires once, when the gap ends.
            let gap = Duration::seconds(i64::from(new.local_minus_utc() - off.local_minus_utc()));
            let before_change = change - Duration::seconds(1);
            if next_in(cron, off, before_change).is_some_and(|t| t < change + gap) {
                return Some(change);
            }
        }
        // The change instant itself, in the new offset; after it, the search goes on in that offset.
        if next_in(cron, new, change - Duration::seconds(1)) == Some(change) {
            return Some(change);
        }
        from = change;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::schedules::test_support::{at, timing};

    /// Every fire time from `from` up to `until`, by repeated `next_after`.
    fn fires(cron: &str, tz: &str, from: &str, until: &str) -> Vec<DateTime<Utc>> {
        let timing = timing(cron, tz);
        let (mut t, until) = (at(from), at(until));
        let mut out = Vec::new();
        while let Some(next) = next_fire(&timing, t) {
            assert!(next > t, "{next} is not after {t}");
            if next > until {
                break;
            }
            out.push(next);
            t = next;
        }
        out
    }

    /// Every whole second in `[from, until]` whose local time in `tz` matches `cron`: the definition,
    /// checked instant by instant (minute resolution is enough for these crons).
    fn matching_instants(cron: &str, tz: &str, from: &str, until: &str) -> Vec<DateTime<Utc>> {
        let timing = timing(cron, tz);
        let mut out = Vec::new();
        let mut t = at(from);
        while t <= at(until) {
            if timing
                .cron
                .is_time_matching(&t.with_timezone(&timing.timezone))
                .unwrap()
            {
                out.push(t);
            }
            t += Duration::minutes(1);
        }
        out
    }

    #[test]
    fn every_ten_minutes_fires_through_both_passes_of_the_repeated_hour() {
        // Paris falls back at 01:00Z on 25 October 2026: 02:00-02:59 local happens twice.
        let got = fires(
            "0 */10 * * * *",
            "Europe/Paris",
            "2026-10-24T23:55:00Z",
            "2026-10-25T02:05:00Z",
        );
        let want = matching_instants(
            "0 */10 * * * *",
            "Europe/Paris",
            "2026-10-24T23:56:00Z",
            "2026-10-25T02:05:00Z",
        );
        assert_eq!(got, want);
        // 00:00Z .. 02:00Z inclusive, every ten minutes: 13 fires, none skipped.
        assert_eq!(got.len(), 13);
        assert!(got.contains(&at("2026-10-25T00:30:00Z")), "02:30 CEST");
        assert!(got.contains(&at("2026-10-25T01:30:00Z")), "02:30 CET");
        // New York falls back at 06:00Z on 1 November 2026.
        let got = fires(
            "0 */10 * * * *",
            "America/New_York",
            "2026-11-01T04:55:00Z",
            "2026-11-01T07:05:00Z",
        );
        let want = matching_instants(
            "0 */10 * * * *",
            "America/New_York",
            "2026-11-01T04:56:00Z",
            "2026-11-01T07:05:00Z",
        );
        assert_eq!(got, want);
        assert_eq!(got.len(), 13);
    }

    #[test]
    fn every_ten_minutes_at_spring_forward_has_no_burst() {
        // Paris springs forward at 01:00Z on 29 March 2026: 02:00-02:59 local does not exist.
        let got = fires(
            "0 */10 * * * *",
            "Europe/Paris",
            "2026-03-29T00:35:00Z",
            "2026-03-29T01:25:00Z",
        );
        let want = matching_instants(
            "0 */10 * * * *",
            "Europe/Paris",
            "2026-03-29T00:36:00Z",
            "2026-03-29T01:25:00Z",
        );
        assert_eq!(got, want);
        assert_eq!(
            got,
            ["00:40", "00:50", "01:00", "01:10", "01:20"]
                .map(|m| at(&format!("2026-03-29T{m}:00Z")))
                .to_vec()
        );
        // New York springs forward at 07:00Z on 8 March 2026.
        let got = fires(
            "0 */10 * * * *",
            "America/New_York",
            "2026-03-08T06:35:00Z",
            "2026-03-08T07:25:00Z",
        );
        let want = matching_instants(
            "0 */10 * * * *",
            "America/New_York",
            "2026-03-08T06:36:00Z",
            "2026-03-08T07:25:00Z",
        );
        assert_eq!(got, want);
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn half_past_two_daily_across_both_transitions() {
        // Paris, spring: 02:30 does not exist on the 29th; it fires once when the gap ends (03:00 CEST).
        let got = fires(
            "0 30 2 * * *",
            "Europe/Paris",
            "2026-03-27T12:00:00Z",
            "2026-03-30T12:00:00Z",
        );
        assert_eq!(
            got,
            vec![
                at("2026-03-28T01:30:00Z"),
                at("2026-03-29T01:00:00Z"),
                at("2026-03-30T00:30:00Z")
            ]
        );
        // Paris, autumn: both 02:30s exist and each fires once.
        let got = fires(
            "0 30 2 * * *",
            "Europe/Paris",
            "2026-10-24T12:00:00Z",
            "2026-10-26T12:00:00Z",
        );
        assert_eq!(
            got,
            vec![
                at("2026-10-25T00:30:00Z"),
                at("2026-10-25T01:30:00Z"),
                at("2026-10-26T01:30:00Z")
            ]
        );
        assert_eq!(
            got,
            matching_instants(
                "0 30 2 * * *",
                "Europe/Paris",
                "2026-10-24T12:00:00Z",
                "2026-10-26T12:00:00Z"
            )
        );
        // New York, spring: 02:30 EST does not exist on 8 March; fires at 03:00 EDT (07:00Z).
        let got = fires(
            "0 30 2 * * *",
            "America/New_York",
            "2026-03-06T12:00:00Z",
            "2026-03-09T12:00:00Z",
        );
        assert_eq!(
            got,
            vec![
                at("2026-03-07T07:30:00Z"),
                at("2026-03-08T07:00:00Z"),
                at("2026-03-09T06:30:00Z")
            ]
        );
        // New York, autumn: 02:30 is not in the repeated hour (01:00-01:59) and fires once.
        let got = fires(
            "0 30 2 * * *",
            "America/New_York",
            "2026-10-31T00:00:00Z",
            "2026-11-02T12:00:00Z",
        );
        assert_eq!(
            got,
            vec![
                at("2026-10-31T06:30:00Z"),
                at("2026-11-01T07:30:00Z"),
                at("2026-11-02T07:30:00Z")
            ]
        );
    }

    #[test]
    fn started_inside_the_repeated_hour_the_next_fire_is_ahead_and_close() {
        // A scheduler starting at any second of the second pass of 02:xx (Paris, 01:00Z-02:00Z) must get
        // a fire time after now and at most ten minutes away: never in the past (a spin), never an hour
        // later (a skip).
        for (tz, start) in [
            ("Europe/Paris", "2026-10-25T00:50:00Z"),
            ("America/New_York", "2026-11-01T05:50:00Z"),
        ] {
            let timing = timing("0 */10 * * * *", tz);
            let mut now = at(start);
            for _ in 0..(80 * 60 / 7) {
                let next = next_fire(&timing, now).unwrap();
                assert!(
                    next > now && next - now <= Duration::minutes(10),
                    "{tz}: {now} -> {next}"
                );
                now += Duration::seconds(7);
            }
        }
    }

    #[test]
    fn a_zone_without_changes() {
        let t = timing("0 0 12 * * *", "UTC");
        assert_eq!(
            next_fire(&t, at("2026-01-01T12:00:00Z")),
            Some(at("2026-01-02T12:00:00Z"))
        );
    }
}
