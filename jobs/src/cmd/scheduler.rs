//! `weatherflow scheduler`: the long-running service. fetch, analytics and maintenance on their
//! schedules, and the persist consumer alongside (unless `--no-consumer`), until SIGTERM or SIGINT.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::alerts::Alerts;
use crate::config::Config;
use crate::db;
use crate::executor::catalog::{self, JobRequest};
use crate::executor::{Executor, Launch};
use crate::jobs::fetch::AutoSource;
use crate::jobs::persist::PersistRequest;
use crate::runs::{JobName, Trigger};
use crate::scheduler::{Scheduler, SchedulerOptions, catalog as pipeline, schedules};

/// Runs the scheduler until shutdown. A failure of either half (scheduler or consumer) stops the other
/// and then the whole service (the process exits non-zero, for the supervisor to restart it); shutdown
/// by signal exits cleanly.
pub async fn run(config: &Config, with_consumer: bool, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Validated before anything starts: a bad schedules file names the job and field and stops here.
    let mut schedules = schedules::load(config, None)?;
    let auto = AutoSource::at_start(config)?;
    schedules.fetch.args.source = auto.apply(schedules.fetch.args.source);
    let conn = db::connect(&config.database).await?;
    let replica = config.scheduler.replica.clone().unwrap_or_else(default_replica);
    tracing::info!(%replica, consumer = with_consumer, "scheduler starting");

    let jobs = pipeline::pipeline_jobs(Arc::new(config.clone()), conn.clone(), &schedules);
    let scheduler = Scheduler::new(
        conn.clone(),
        jobs,
        SchedulerOptions::from_config(&config.scheduler, replica),
    );
    // Webhook alerts (docs/alerts.md) beside the ticks, in tasks of their own: a webhook that is down
    // never delays a tick.
    let alerts = Alerts::start(config, conn.clone(), &shutdown).context("starting the alerts")?;
    let alerting = async {
        if let Some(alerts) = alerts {
            alerts.run(shutdown.clone()).await;
        }
    };
    let consumer = async {
        if !with_consumer {
            return Ok(());
        }
        // The consumer stops at once on shutdown (it commits what it stored); it does not wait for the
        // scheduled jobs' grace period. Rows of persist runs killed earlier are closed by the claim.
        let exec = Executor::from_config(conn.clone(), config);
        let launch = Launch {
            trigger: Trigger::Schedule,
            ..Launch::manual(&shutdown)
        };
        let req = JobRequest::Persist(PersistRequest { until_idle: false, ..Default::default() });
        let result = async {
            let claim = exec.claim(JobName::Persist).await?;
            let outcome = exec
                .run(claim, launch, |ctx| catalog::run(config, &conn, req.clone(), ctx))
                .await?;
            anyhow::Ok(outcome.into_result()?)
        }
        .await;
        if result.is_err() {
            shutdown.cancel();
        }
        result.context("the persist consumer stopped")
    };
    // Either half failing stops the other (cleanly) and then the process, non-zero: a process with
    // only one half alive would look healthy to its supervisor while never ticking (or consuming).
    let scheduled = async {
        let result = scheduler.run(shutdown.clone()).await;
        if result.is_err() {
            shutdown.cancel();
        }
        result.context("the scheduler stopped")
    };
    let (scheduled, consumed, ()) = tokio::join!(scheduled, consumer, alerting);
    if let (Err(e), Ok(())) = (&scheduled, &consumed) {
        tracing::error!(error = %format!("{e:#}"), "scheduler failed; the consumer stopped cleanly");
    }
    scheduled?;
    consumed?;
    tracing::info!("scheduler stopped");
    Ok(())
}

/// `<hostname>:<pid>`: tells replicas apart in the history.
fn default_replica() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}
