//! The pipeline's scheduled jobs: fetch, analytics and maintenance from `schedules.toml`, bound to
//! their arguments, with their bodies from the executor's catalog ([`crate::executor::catalog`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;

use super::job::ScheduledJob;
use super::schedules::{self, Schedules};
use crate::config::Config;
use crate::executor::catalog::{self, JobRequest};
use crate::jobs::analytics::AnalyticsRequest;
use crate::runs::JobName;

/// The analytics job's request for a run starting at `now`: the last `window_days` days, up to now
/// (without it, the job's default window, `analytics.window_days`). Counted from the run's start, not
/// its tick, so that a catch-up run for a tick missed long ago still fits recent data.
pub fn analytics_request(args: &schedules::AnalyticsArgs, now: DateTime<Utc>) -> AnalyticsRequest {
    AnalyticsRequest {
        since: args
            .window_days
            .map(|days| now - chrono::Duration::days(i64::from(days))),
        all_history: args.all_history,
        min_samples: args.min_samples,
        source: args.source,
        // No window end, and no plots: a scheduled fit only stores its results.
        ..AnalyticsRequest::default()
    }
}

/// fetch, analytics and maintenance as scheduled jobs, disabled ones included (the scheduler leaves
/// those out). The fetch source's `auto` should already be decided for the process
/// ([`crate::jobs::fetch::AutoSource`]); a scheduled fetch is refused like any other when simulated
/// beside real data.
pub fn pipeline_jobs(
    config: Arc<Config>,
    db: DatabaseConnection,
    schedules: &Schedules,
) -> Vec<ScheduledJob> {
    let fetch = schedules.fetch.args.clone();
    let analytics = schedules.analytics.args.clone();
    let body =
        |make: Box<dyn Fn() -> JobRequest + Send + Sync>| catalog::body(config.clone(), db.clone(), make);
    vec![
        ScheduledJob {
            name: JobName::Fetch,
            timing: schedules.fetch.timing.clone(),
            body: body(Box::new(move || JobRequest::Fetch(fetch.clone()))),
        },
        ScheduledJob {
            name: JobName::Analytics,
            timing: schedules.analytics.timing.clone(),
            body: body(Box::new(move || {
                JobRequest::Analytics(analytics_request(&analytics, Utc::now()))
            })),
        },
        ScheduledJob {
            name: JobName::Maintenance,
            timing: schedules.maintenance.clone(),
            body: body(Box::new(|| JobRequest::Maintenance)),
        },
    ]
}
