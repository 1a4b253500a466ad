//! The catalog: each pipeline job's body, by its request, and how each [`JobName`] is claimed. The
//! one place that knows what fetch, persist, analytics and maintenance are; the executor, the
//! scheduler, the CLI and HTTP all take their bodies from here.

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use super::{JobBody, RunContext};
use crate::config::Config;
use crate::job_error::JobError;
use crate::jobs::analytics::{self, AnalyticsRequest};
use crate::jobs::fetch::{self, FetchRequest};
use crate::jobs::maintenance;
use crate::jobs::persist::{self, PersistRequest};
use crate::report::StoredReport;
use crate::runs::JobName;

/// A pipeline job and what to run it with.
#[derive(Debug, Clone)]
pub enum JobRequest {
    /// Fetch current weather into Kafka (refused when simulated beside real data).
    Fetch(FetchRequest),
    /// Consume Kafka into PostgreSQL.
    Persist(PersistRequest),
    /// Fit the regressions.
    Analytics(AnalyticsRequest),
    /// Keep the monthly partitions (its settings are the configuration's `[maintenance]`).
    Maintenance,
}

impl JobRequest {
    /// The job it runs.
    pub fn job(&self) -> JobName {
        match self {
            JobRequest::Fetch(_) => JobName::Fetch,
            JobRequest::Persist(_) => JobName::Persist,
            JobRequest::Analytics(_) => JobName::Analytics,
            JobRequest::Maintenance => JobName::Maintenance,
        }
    }
}

/// Whether `job` takes its advisory lock, so that it never runs twice at once on any replica. Persist
/// runs in many processes at once (a consumer group shares the partitions) and takes none.
pub fn exclusive(job: JobName) -> bool {
    !matches!(job, JobName::Persist)
}

/// Whether a claim of `job` first closes the rows its killed runs left `running`, found by their
/// free run leases. The jobs that run only by hand or continuously; scheduled rows hold no lease and
/// are closed by the scheduler under the job's lock instead.
pub fn closes_dead(job: JobName) -> bool {
    matches!(job, JobName::Persist | JobName::Redrive | JobName::Replay)
}

/// Runs one attempt of `req`.
pub async fn run(
    config: &Config,
    db: &DatabaseConnection,
    req: JobRequest,
    ctx: RunContext,
) -> Result<StoredReport, JobError> {
    let stored = |r: &dyn crate::report::Report| StoredReport::of(r);
    match req {
        JobRequest::Fetch(req) if req.history.is_some() => {
            fetch::run_history(config, db, Some(ctx.run_id), req, ctx.cancel)
                .await
                .map(|s| stored(&s))
        }
        JobRequest::Fetch(req) => fetch::run_checked(config, db, req, ctx.cancel)
            .await
            .map(|s| stored(&s)),
        JobRequest::Persist(req) => persist::run(config, db, req, ctx.cancel)
            .await
            .map(|s| stored(&s)),
        // Checked here, before the fit, for every run the executor starts (CLI, scheduler, HTTP).
        JobRequest::Analytics(req) => match analytics::freshness::gate(config, db, &req).await? {
            Some(stale) => Ok(stored(&stale)),
            None => analytics::run(config, db, ctx.run_id, req, ctx.cancel)
                .await
                .map(|s| stored(&s)),
        },
        JobRequest::Maintenance => maintenance::run(config, db).await.map(|s| stored(&s)),
    }
}

/// The body that runs the request `make` gives at each attempt (made per attempt so that, e.g., a
/// scheduled analytics window is counted from the attempt's start).
pub fn body<M>(config: Arc<Config>, db: DatabaseConnection, make: M) -> JobBody
where
    M: Fn() -> JobRequest + Send + Sync + 'static,
{
    Arc::new(move |ctx: RunContext| {
        let config = config.clone();
        let db = db.clone();
        let req = make();
        Box::pin(async move { run(&config, &db, req, ctx).await })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_persist_runs_beside_itself() {
        for job in JobName::ALL {
            assert_eq!(exclusive(*job), *job != JobName::Persist, "{job}");
        }
        assert!(closes_dead(JobName::Persist) && !closes_dead(JobName::Maintenance));
        assert_eq!(JobRequest::Maintenance.job(), JobName::Maintenance);
    }
}
