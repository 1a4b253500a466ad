//! `weatherflow run <job>`: one manual run, recorded in job_runs.

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db;
use crate::jobs::analytics::{self, AnalyticsRequest};
use crate::jobs::fetch::{self, FetchRequest};
use crate::jobs::persist::{self, PersistRequest};
use crate::runs::{self, Trigger};

/// `weatherflow run fetch`.
pub async fn fetch(config: &Config, req: FetchRequest, shutdown: CancellationToken) -> anyhow::Result<()> {
    let conn = db::connect(&config.database).await?;
    runs::recorded(&conn, "fetch", Trigger::Manual, |_| {
        fetch::run(config, req, shutdown)
    })
    .await?;
    Ok(())
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
    runs::recorded(&conn, "analytics", Trigger::Manual, |id| {
        analytics::run(config, &conn, id, req, shutdown)
    })
    .await?;
    Ok(())
}
