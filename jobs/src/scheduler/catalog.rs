//! The pipeline's scheduled jobs: fetch and analytics from `schedules.toml`, bound to their arguments.
//! The scheduler runs them like any other [`ScheduledJob`]; this is the only place that knows what they
//! are.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;

use super::job::{RunContext, ScheduledJob};
use crate::config::Config;
use crate::jobs::analytics::{self, AnalyticsRequest};
use crate::jobs::fetch;
use crate::runs::JobName;
use crate::schedules::{self, Schedules};

/// The analytics job's request for a run starting at `now`: the last `window_days` days, up to now
/// (without it, the job's default window, `analytics.window_days`), after the partition maintenance
/// step. Counted from the run's start, not its tick, so that a catch-up run for a tick missed long ago
/// still fits recent data.
pub fn analytics_request(args: &schedules::AnalyticsArgs, now: DateTime<Utc>) -> AnalyticsRequest {
    AnalyticsRequest {
        since: args
            .window_days
            .map(|days| now - chrono::Duration::days(i64::from(days))),
        all_history: args.all_history,
        // The nightly run is the pipeline's daily step, so it also keeps the partitions.
        maintenance: true,
        min_samples: args.min_samples,
        source: args.source,
        // No window end, and no plots: a scheduled fit only stores its results.
        ..AnalyticsRequest::default()
    }
}

/// fetch and analytics as scheduled jobs, disabled ones included (the scheduler leaves those out).
/// The fetch source's `auto` should already be decided for the process ([`fetch::AutoSource`]);
/// a scheduled fetch is refused like any other when simulated beside real data.
pub fn pipeline_jobs(
    config: Arc<Config>,
    db: DatabaseConnection,
    schedules: &Schedules,
) -> Vec<ScheduledJob> {
    let fetch_job = {
        let config = config.clone();
        let db = db.clone();
        let req = schedules.fetch.args.clone();
        ScheduledJob::new(
            JobName::Fetch,
            schedules.fetch.timing.clone(),
            move |ctx: RunContext| {
                let config = config.clone();
                let db = db.clone();
                let req = req.clone();
                async move { fetch::run_checked(&config, &db, req, ctx.cancel).await }
            },
        )
    };
    let analytics_job = {
        let args = schedules.analytics.args.clone();
        ScheduledJob::new(
            JobName::Analytics,
            schedules.analytics.timing.clone(),
            move |ctx: RunContext| {
                let config = config.clone();
                let db = db.clone();
                let req = analytics_request(&args, Utc::now());
                async move { analytics::run(&config, &db, ctx.run_id, req, ctx.cancel).await }
            },
        )
    };
    vec![fetch_job, analytics_job]
}
