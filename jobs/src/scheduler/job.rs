//! What the scheduler runs: a named job with its timing and a body. The scheduler is generic over the
//! body, so its mechanics (locks, timeouts, retries, history, missed ticks, shutdown) do not depend on
//! what fetch or analytics do, and can be exercised with any body.

use std::future::Future;
use std::sync::Arc;

pub use crate::executor::{JobBody, RunContext};
use crate::job_error::JobError;
use crate::report::{Report, StoredReport};
use crate::runs::JobName;
use crate::scheduler::schedules::Timing;

/// A job the scheduler runs on its cron schedule.
#[derive(Clone)]
pub struct ScheduledJob {
    /// `job_runs.job`, and the name its advisory lock is derived from.
    pub name: JobName,
    /// When it fires, its timeout, retries and missed-tick policy.
    pub timing: Timing,
    /// What it does.
    pub body: JobBody,
}

impl ScheduledJob {
    /// A job running `body` on `timing`. The body may return any [`Report`].
    pub fn new<F, Fut, R>(name: JobName, timing: Timing, body: F) -> Self
    where
        F: Fn(RunContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, JobError>> + Send + 'static,
        R: Report,
    {
        let body = Arc::new(body);
        Self {
            name,
            timing,
            body: Arc::new(move |ctx| {
                let fut = body(ctx);
                Box::pin(async move { fut.await.map(|report| StoredReport::of(&report)) })
            }),
        }
    }
}

impl std::fmt::Debug for ScheduledJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduledJob")
            .field("name", &self.name)
            .field("cron", &self.timing.cron_expr)
            .field("timezone", &self.timing.timezone)
            .finish_non_exhaustive()
    }
}
