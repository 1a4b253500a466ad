//! `weatherflow run <job>` and `weatherflow consumer`: one manual run on the run executor
//! ([`crate::executor`]), recorded in job_runs.
//!
//! Manual fetch, analytics and maintenance runs take the same advisory lock as scheduled ones, so a
//! run by hand never overlaps a scheduled run of the same job on any replica (it fails at once,
//! saying so). A manual run whose lock is lost is cancelled and recorded failed ("lock lost").

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db;
use crate::executor::catalog::{self, JobRequest};
use crate::executor::{Executor, Launch};
use crate::jobs::analytics::{AnalyticsRequest, FitSource};
use crate::jobs::fetch::{self, AutoSource, FetchRequest, HistoryRange, SourceChoice};
use crate::jobs::persist::PersistRequest;
use crate::scheduler::schedules;

/// `weatherflow run <job>`.
#[derive(Debug, Subcommand)]
pub enum RunJob {
    /// Fetch current weather and produce it to Kafka.
    Fetch(FetchFlags),
    /// Consume Kafka into PostgreSQL.
    Persist(PersistFlags),
    /// Fit temp_c ~ wind_kph and store the results.
    Analytics(AnalyticsFlags),
    /// Keep the monthly partitions of observations (settings: the configuration's `[maintenance]`).
    Maintenance,
}

/// Flags of `weatherflow run fetch`; what is not given comes from the schedule's `[fetch.args]`.
#[derive(Debug, Args)]
pub struct FetchFlags {
    /// A location (repeatable); default: the fetch job's list in schedules.toml.
    #[arg(long = "location")]
    pub locations: Vec<String>,
    /// Data source; default: the schedule's, else auto (WeatherAPI.com with a key, simulated without).
    #[arg(long, value_enum)]
    pub source: Option<SourceChoice>,
    /// Seed for the simulated source.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Requests in flight at once.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Simulated source only: also produce every 15-minute observation of the last N hours.
    #[arg(long)]
    pub backfill_hours: Option<u32>,
    /// Fetch simulated weather even into a database that holds WeatherAPI observations (this run's
    /// `fetch.allow_simulated_beside_real = true`).
    #[arg(long)]
    pub allow_simulated_beside_real: bool,
    /// Backfill from WeatherAPI's history.json (hourly) instead of fetching the current weather;
    /// needs --from. Resumes where an earlier, stopped backfill of the same days stopped.
    #[arg(long, requires = "from", conflicts_with = "backfill_hours")]
    pub history: bool,
    /// With --history: the first local day (YYYY-MM-DD), at most weatherapi.history_days back.
    #[arg(long, requires = "history", value_name = "DATE")]
    pub from: Option<NaiveDate>,
    /// With --history: the last local day (YYYY-MM-DD); default today (UTC).
    #[arg(long, requires = "history", value_name = "DATE")]
    pub to: Option<NaiveDate>,
    /// With --history: print the number of API calls the backfill would make, and call nothing.
    #[arg(long, requires = "history")]
    pub dry_run: bool,
}

impl FetchFlags {
    /// Whether the schedule's arguments are needed to complete the request.
    fn needs_schedule(&self) -> bool {
        self.locations.is_empty() || self.source.is_none()
    }

    /// The job's request: these flags first, then the schedule's arguments.
    pub fn into_request(self, schedule: Option<&FetchRequest>) -> FetchRequest {
        let from_schedule = schedule.cloned().unwrap_or_default();
        FetchRequest {
            locations: if self.locations.is_empty() {
                from_schedule.locations
            } else {
                self.locations
            },
            source: self.source.unwrap_or(from_schedule.source),
            seed: self.seed.or(from_schedule.seed),
            concurrency: self.concurrency.or(from_schedule.concurrency),
            backfill_hours: self.backfill_hours,
            history: self.history.then_some(HistoryRange {
                // clap requires --from with --history.
                from: self.from.unwrap_or_default(),
                to: self.to,
                dry_run: self.dry_run,
            }),
        }
    }
}

/// Flags of `weatherflow run persist`.
#[derive(Debug, Args)]
pub struct PersistFlags {
    /// Drain what is on the topic, then exit.
    #[arg(long)]
    pub until_idle: bool,
}

/// Flags of `weatherflow run analytics`.
#[derive(Debug, Args)]
pub struct AnalyticsFlags {
    /// Only observations at or after this time (RFC 3339). Default: `analytics.window_days` (30)
    /// days before `--until` or now.
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    /// Fit every stored observation instead of the default window.
    #[arg(long, conflicts_with = "since")]
    pub all_history: bool,
    /// Only observations before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
    /// Minimum samples for a per-location fit (default: configuration, 30).
    #[arg(long)]
    pub min_samples: Option<u64>,
    /// Write the scatter plot with the fitted line to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Also plot this location (repeatable), to `<plot stem>-<location>.svg` next to `--plot`.
    #[arg(long = "plot-scope", value_name = "LOCATION_KEY", requires = "plot")]
    pub plot_scopes: Vec<String>,
    /// Plot every fitted location, one file each next to `--plot`.
    #[arg(long, requires = "plot")]
    pub plot_all_scopes: bool,
    /// Which observations to fit: auto fits WeatherAPI's when the window has any, and the
    /// simulated ones only when it has nothing else.
    #[arg(long, value_enum, default_value_t = FitSource::Auto)]
    pub source: FitSource,
}

impl From<AnalyticsFlags> for AnalyticsRequest {
    fn from(f: AnalyticsFlags) -> Self {
        AnalyticsRequest {
            since: f.since,
            all_history: f.all_history,
            until: f.until,
            min_samples: f.min_samples,
            plot: f.plot,
            plot_scopes: f.plot_scopes,
            plot_all_scopes: f.plot_all_scopes,
            source: f.source,
        }
    }
}

/// Runs the chosen job once.
/// A paused job is refused unless `force`.
pub async fn run(
    config: &Config,
    job: RunJob,
    force: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let req = match job {
        RunJob::Fetch(flags) => {
            let schedule = if flags.needs_schedule() {
                Some(schedules::load(config, None)?.fetch.args)
            } else {
                None
            };
            let mut config = config.clone();
            config.fetch.allow_simulated_beside_real |= flags.allow_simulated_beside_real;
            let mut req = flags.into_request(schedule.as_ref());
            // `auto` decided (and logged) as at any process start.
            req.source = AutoSource::at_start(&config)?.apply(req.source);
            if req.history.is_some_and(|h| h.dry_run) {
                return history_dry_run(&config, req, shutdown).await;
            }
            return once(&config, JobRequest::Fetch(req), Some(force), shutdown).await;
        }
        RunJob::Persist(flags) if flags.until_idle => {
            // Draining a backlog: its progress is the consumer group's lag going down.
            let reporter = tokio::spawn(drain_progress(config.kafka.clone()));
            let req = JobRequest::Persist(PersistRequest {
                until_idle: true,
                ignore_pause: force,
            });
            let result = once(config, req, Some(force), shutdown).await;
            reporter.abort();
            return result;
        }
        RunJob::Persist(_) => JobRequest::Persist(PersistRequest {
            until_idle: false,
            ignore_pause: force,
        }),
        RunJob::Analytics(flags) => JobRequest::Analytics(flags.into()),
        RunJob::Maintenance => JobRequest::Maintenance,
    };
    once(config, req, Some(force), shutdown).await
}

/// `weatherflow run fetch --history --dry-run`: the calls the backfill would make, printed; no run
/// is recorded and nothing is called.
async fn history_dry_run(config: &Config, req: FetchRequest, shutdown: CancellationToken) -> anyhow::Result<()> {
    let conn = db::connect(&config.database).await?;
    let summary = fetch::run_history(config, &conn, None, req, shutdown).await?;
    println!("{}", summary.calls);
    eprintln!("dry run: {}", summary.line());
    if let Ok(usage) = crate::quota::usage(&conn, &config.weatherapi).await {
        eprintln!("quota: {}", usage.line());
    }
    Ok(())
}

/// How often `run persist --until-idle` samples the consumer group's lag for its progress.
const DRAIN_SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Reports `run persist --until-idle`'s progress on stderr: records stored of the backlog the group
/// had when it started (its lag), from the lag sampled every [`DRAIN_SAMPLE_EVERY`]. Nothing when
/// there was no backlog worth a report (under one batch), or the lag cannot be read.
async fn drain_progress(kafka: crate::config::KafkaConfig) {
    let lag = move || {
        let kafka = kafka.clone();
        async move {
            tokio::task::spawn_blocking(move || crate::kafka::consumer_lag(&kafka))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
                .map(|parts| parts.iter().map(|p| p.lag().max(0) as u64).sum::<u64>())
        }
    };
    let Some(backlog) = lag().await else { return };
    if backlog < 5_000 {
        return;
    }
    let progress = crate::progress::Progress::stderr("persist --until-idle", Some(backlog));
    loop {
        tokio::time::sleep(DRAIN_SAMPLE_EVERY).await;
        let Some(left) = lag().await else { continue };
        progress.update(backlog.saturating_sub(left), format!("records consumed, {left} left"));
    }
}

/// `weatherflow consumer`: the persist job until stopped.
pub async fn consumer(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    once(
        config,
        JobRequest::Persist(PersistRequest::default()),
        None,
        shutdown,
    )
    .await
}

/// One manual run of `req` on the executor: claimed (fails at once when another run holds the
/// job's lock, or, with `force` given and false, when the job is paused), run, recorded. The
/// consumer passes no `force`: it starts whatever the pause, and a paused persist holds its
/// partitions without fetching until resumed.
async fn once(
    config: &Config,
    req: JobRequest,
    force: Option<bool>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let conn = db::connect(&config.database).await?;
    let exec = Executor::from_config(conn.clone(), config);
    let claim = match force {
        Some(force) => exec.claim_unpaused(req.job(), force).await?,
        None => exec.claim(req.job()).await?,
    };
    let outcome = exec
        .run(claim, Launch::manual(&shutdown), |ctx| {
            catalog::run(config, &conn, req.clone(), ctx)
        })
        .await?;
    Ok(outcome.into_result()?)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cmd::{Cli, Command};

    fn analytics(args: &[&str]) -> Result<AnalyticsRequest, clap::Error> {
        let cli = Cli::try_parse_from(["weatherflow", "run", "analytics"].iter().chain(args))?;
        match cli.command {
            Command::Run {
                job: RunJob::Analytics(flags),
                ..
            } => Ok(flags.into()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_manual_analytics_run_has_the_default_window_and_all_history_lifts_it() {
        let default = analytics(&[]).unwrap();
        assert!(!default.all_history && default.since.is_none());
        assert!(analytics(&["--all-history"]).unwrap().all_history);
        assert!(analytics(&["--all-history", "--since", "2026-11-01T00:00:00Z"]).is_err());
        assert_eq!(default.source, FitSource::Auto);
        let real = analytics(&["--source", "weatherapi"]).unwrap();
        assert_eq!(real.source, FitSource::Weatherapi);
        assert!(analytics(&["--source", "mixed"]).is_err());
    }
}
