//! `weatherflow run <job>`: one manual run, recorded in job_runs.
//!
//! Manual fetch and analytics runs take the same advisory lock as scheduled ones, so a run by hand
//! never overlaps a scheduled run of the same job on any replica (it fails at once, saying so). A
//! manual run whose lock is lost is cancelled and recorded failed ("lock lost").

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db;
use crate::jobs::analytics::{self, AnalyticsRequest};
use crate::jobs::fetch::{self, FetchRequest};
use crate::jobs::persist::{self, PersistRequest};
use crate::runs::lock::JobLock;
use crate::runs::{self, Trigger};

/// Takes `job`'s advisory lock or fails with a message saying another run holds it.
async fn lock(conn: &sea_orm::DatabaseConnection, job: &str) -> anyhow::Result<JobLock> {
    JobLock::try_acquire(conn, job).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "another {job} run (scheduled or manual) is in progress; try again when it has finished"
        )
    })
}

/// `weatherflow run fetch`.
pub async fn fetch(config: &Config, req: FetchRequest, shutdown: CancellationToken) -> anyhow::Result<()> {
    let conn = db::connect(&config.database).await?;
    let mut lock = lock(&conn, "fetch").await?;
    let cancel = shutdown.child_token();
    let result = runs::recorded(&conn, "fetch", Trigger::Manual, |_| {
        lock.guard(&cancel, fetch::run(config, req, cancel.clone()))
    })
    .await;
    let released = lock.release().await;
    result?;
    Ok(released?)
}

/// `weatherflow run persist` and `weatherflow consumer`.
pub async fn persist(
    config: &Config,
    req: PersistRequest,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let conn = db::connect(&config.database).await?;
    runs::recorded(&conn, "persist", Trigger::Manual, |_| {
        persist::run(config, &conn, req, shutdown)
    })
    .await?;
    Ok(())
}

/// `weatherflow run analytics`.
pub async fn analytics(
    config: &Config,
    req: AnalyticsRequest,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let conn = db::connect(&config.database).await?;
    let mut lock = lock(&conn, "analytics").await?;
    let cancel = shutdown.child_token();
    let result = runs::recorded(&conn, "analytics", Trigger::Manual, |id| {
        lock.guard(&cancel, analytics::run(config, &conn, id, req, cancel.clone()))
    })
    .await;
    let released = lock.release().await;
    result?;
    Ok(released?)
}
