//! The clock: tells the scheduler when each job's cron fires, on tokio-cron-scheduler.
//!
//! tokio-cron-scheduler 0.15 reads a cron job's time zone once: `Job::new_async_tz` stores the zone's
//! UTC offset *at creation* (`time_offset_seconds`) and computes every later fire time in that fixed
//! offset, so a job in `Europe/Paris` created in winter fires an hour off all summer. Its clock also
//! has whole-second resolution and polls every 500 ms. So the cron arithmetic is done here, with croner
//! in the job's real time zone (DST-correct), and the library only keeps time: each fire time is a
//! one-shot job, which on firing waits out the library's rounding to the exact second, reports the
//! tick, and arms the next one. A tick carries its scheduled time, which labels the run (`details.tick`)
//! the same way on every replica.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tokio_util::sync::CancellationToken;

use super::firetimes::next_fire;
use crate::scheduler::schedules::Timing;

/// A job's cron fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fire {
    /// Index of the job in the list given to [`Ticker::start`].
    pub job: usize,
    /// The scheduled fire time.
    pub at: DateTime<Utc>,
}

/// Running clocks for a set of jobs; stop with [`Ticker::stop`].
pub struct Ticker {
    /// The library's scheduler holding the armed one-shots.
    sched: JobScheduler,
    /// Cancelled by [`Ticker::stop`]: one-shots already firing neither report nor re-arm.
    stop: CancellationToken,
}

/// One job's clock: what a firing one-shot needs to report and re-arm.
struct Clock {
    job: usize,
    timing: Timing,
    tx: mpsc::Sender<Fire>,
    stop: CancellationToken,
}

impl Ticker {
    /// Arms the first fire time after now of each `(index, timing)` and starts the clock. Fires are sent
    /// to `tx`; a job whose cron has no future fire time is never sent.
    pub async fn start(
        jobs: Vec<(usize, Timing)>,
        tx: mpsc::Sender<Fire>,
    ) -> Result<Self, JobSchedulerError> {
        let sched = JobScheduler::new().await?;
        let stop = CancellationToken::new();
        for (job, timing) in jobs {
            let clock = Arc::new(Clock {
                job,
                timing,
                tx: tx.clone(),
                stop: stop.clone(),
            });
            arm(&sched, clock, Utc::now()).await?;
        }
        sched.start().await?;
        Ok(Self { sched, stop })
    }

    /// Stops firing. Ticks already reported are the receiver's business.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Err(e) = self.sched.shutdown().await {
            tracing::warn!(error = %e, "stopping the cron clock");
        }
    }
}

/// Arms `clock`'s next fire time after `after` as a one-shot. Boxed (and declared `Send`) because it
/// recurses through [`fire`].
fn arm(
    sched: &JobScheduler,
    clock: Arc<Clock>,
    after: DateTime<Utc>,
) -> BoxFuture<'_, Result<(), JobSchedulerError>> {
    Box::pin(arm_at(sched, clock, after))
}

async fn arm_at(
    sched: &JobScheduler,
    clock: Arc<Clock>,
    after: DateTime<Utc>,
) -> Result<(), JobSchedulerError> {
    let Some(at) = next_fire(&clock.timing, after) else {
        tracing::warn!(cron = %clock.timing.cron_expr, "cron has no further fire time; the job will not run again");
        return Ok(());
    };
    // The library rounds the wait down to whole seconds and polls every 500 ms, so it can fire up to
    // half a second late. Arming a second early makes it fire before `at`; `fire` then sleeps to the
    // exact second.
    let wait = (at - Utc::now() - chrono::Duration::seconds(1))
        .to_std()
        .unwrap_or_default();
    // The library may call a job more than once; only the first call fires, so a clock never forks.
    let mut once = Some(clock);
    let job = Job::new_one_shot_async(wait, move |_id, sched| {
        let Some(clock) = once.take() else {
            return Box::pin(async {});
        };
        Box::pin(fire(clock, sched, at))
    })?;
    sched.add(job).await?;
    Ok(())
}

/// Runs when a one-shot fires: reports `at` on the second, then arms the next fire time.
async fn fire(clock: Arc<Clock>, sched: JobScheduler, at: DateTime<Utc>) {
    // Armed early on purpose (see `arm_at`).
    let early = (at - Utc::now()).to_std().unwrap_or_default();
    tokio::select! {
        _ = clock.stop.cancelled() => return,
        _ = tokio::time::sleep(early) => {}
    }
    if clock.stop.is_cancelled() || clock.tx.send(Fire { job: clock.job, at }).await.is_err() {
        return;
    }
    // Re-arm from now, not from `at`: fire times that passed while this one was being delivered are
    // dropped rather than fired in a burst.
    let after = at.max(Utc::now());
    if let Err(e) = arm(&sched, clock.clone(), after).await {
        tracing::error!(error = %e, cron = %clock.timing.cron_expr, "cannot arm the next tick; the job stops firing");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::schedules::test_support::{at, timing};

    #[test]
    fn fire_times_follow_daylight_saving_time() {
        // Noon in Paris: 11:00 UTC in winter, 10:00 UTC from 29 March 2026. A fixed offset taken in
        // winter (what tokio-cron-scheduler's new_async_tz does) would say 11:00 UTC on the 29th.
        let t = timing("0 0 12 * * *", "Europe/Paris");
        assert_eq!(
            next_fire(&t, at("2026-03-27T12:00:00Z")),
            Some(at("2026-03-28T11:00:00Z"))
        );
        assert_eq!(
            next_fire(&t, at("2026-03-28T11:00:00Z")),
            Some(at("2026-03-29T10:00:00Z"))
        );
        assert_eq!(
            next_fire(&t, at("2026-10-24T12:00:00Z")),
            Some(at("2026-10-25T11:00:00Z"))
        );
    }

    #[test]
    fn next_fire_is_strictly_after() {
        let t = timing("*/5 * * * * *", "UTC");
        assert_eq!(
            next_fire(&t, at("2026-01-01T00:00:05Z")),
            Some(at("2026-01-01T00:00:10Z"))
        );
        assert_eq!(
            next_fire(&t, at("2026-01-01T00:00:05.2Z")),
            Some(at("2026-01-01T00:00:10Z"))
        );
    }

    #[tokio::test]
    async fn a_per_second_cron_fires_on_consecutive_seconds() {
        let (tx, mut rx) = mpsc::channel(8);
        let ticker = Ticker::start(vec![(3, timing("* * * * * *", "UTC"))], tx)
            .await
            .unwrap();
        let first = rx.recv().await.unwrap();
        let second = rx.recv().await.unwrap();
        ticker.stop().await;
        assert_eq!(first.job, 3);
        assert_eq!(first.at.timestamp_subsec_nanos(), 0);
        assert_eq!(second.at - first.at, chrono::Duration::seconds(1));
        // Reported on time: not before the tick, and not long after it.
        let lag = Utc::now() - second.at;
        assert!(
            lag >= chrono::Duration::zero() && lag < chrono::Duration::seconds(2),
            "{lag}"
        );
    }
}
