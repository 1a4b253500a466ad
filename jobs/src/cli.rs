//! Command-line interface: parses arguments, loads the configuration once, dispatches to `cmd::*`.

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cmd;
use crate::config::Config;
use crate::jobs::analytics::AnalyticsRequest;
use crate::jobs::fetch::FetchRequest;
use crate::jobs::persist::PersistRequest;
use crate::schedules::SourceChoice;

/// weatherflow: fetch weather into Kafka, persist it into PostgreSQL, fit regressions nightly.
#[derive(Debug, Parser)]
#[command(name = "weatherflow", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (TOML). Default: ./weatherflow.toml when it exists. Env: WEATHERFLOW_CONFIG.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply or inspect database migrations.
    Migrate {
        /// What to do (default: up).
        #[arg(value_enum, default_value_t = MigrateAction::Up)]
        action: MigrateAction,
        /// With `down`: how many migrations to revert (default 1). With `up`: how many to apply (default all).
        #[arg(long)]
        steps: Option<u32>,
    },
    /// Check that Kafka and PostgreSQL answer, and report what they hold.
    Check,
    /// Validate schedules.toml and print each job's next five fire times.
    Schedules {
        /// Schedules file (default: the configuration's scheduler.schedules_path).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Run one job now (trigger = manual), recorded in the run history.
    Run {
        /// The job.
        #[command(subcommand)]
        job: RunJob,
    },
    /// Show the run history.
    Runs {
        /// Only this job.
        #[arg(long)]
        job: Option<String>,
        /// How many runs (newest first).
        #[arg(long, default_value_t = 20)]
        last: u64,
    },
    /// Show the latest regression results.
    Results {
        /// Only this scope (`all` or a location key).
        #[arg(long)]
        scope: Option<String>,
        /// How many results (newest first).
        #[arg(long, default_value_t = 20)]
        last: u64,
    },
    /// Last run of each job, next fire times, consumer lag, table row counts.
    Status,
    /// The long-running scheduler service (fetch and analytics on schedule, the consumer alongside).
    Scheduler {
        /// Do not run the persist consumer in this process.
        #[arg(long)]
        no_consumer: bool,
        /// Serve /healthz, /readyz and /metrics on this address (e.g. 127.0.0.1:9101).
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
    },
    /// Run only the persist consumer, until stopped.
    Consumer {
        /// Serve /healthz, /readyz and /metrics on this address (e.g. 127.0.0.1:9102).
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
    },
    /// The web application: dashboard at /, JSON API under /api/v1, /healthz, /readyz, /metrics.
    Serve {
        /// Listen address (default: web.listen, 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Benchmarks that print figures.
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        which: BenchKind,
    },
}

/// `weatherflow migrate` actions.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MigrateAction {
    /// Apply pending migrations.
    Up,
    /// Revert the last migration(s).
    Down,
    /// List applied and pending migrations.
    Status,
    /// Drop every table and apply all migrations again (destroys data).
    Fresh,
}

/// `weatherflow run <job>`.
#[derive(Debug, Subcommand)]
pub enum RunJob {
    /// Fetch current weather and produce it to Kafka.
    Fetch(FetchArgs),
    /// Consume Kafka into PostgreSQL.
    Persist(PersistArgs),
    /// Fit temp_c ~ wind_kph and store the results.
    Analytics(AnalyticsArgs),
}

/// Arguments of `weatherflow run fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// A location (repeatable); default: the fetch job's list in schedules.toml.
    #[arg(long = "location")]
    pub locations: Vec<String>,
    /// Data source; default: the schedule's, else auto (WeatherAPI.com with a key, simulated without).
    #[arg(long, value_enum)]
    pub source: Option<SourceArg>,
    /// Seed for the simulated source.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Requests in flight at once.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Simulated source only: also produce every 15-minute observation of the last N hours.
    #[arg(long)]
    pub backfill_hours: Option<u32>,
}

/// `--source` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SourceArg {
    /// WeatherAPI.com with a key, else simulated.
    Auto,
    /// WeatherAPI.com (needs WEATHERAPI_KEY).
    Weatherapi,
    /// The built-in simulator.
    Simulated,
}

impl From<SourceArg> for SourceChoice {
    fn from(s: SourceArg) -> Self {
        match s {
            SourceArg::Auto => SourceChoice::Auto,
            SourceArg::Weatherapi => SourceChoice::Weatherapi,
            SourceArg::Simulated => SourceChoice::Simulated,
        }
    }
}

/// Arguments of `weatherflow run persist`.
#[derive(Debug, Args)]
pub struct PersistArgs {
    /// Drain what is on the topic, then exit.
    #[arg(long)]
    pub until_idle: bool,
}

/// Arguments of `weatherflow run analytics`.
#[derive(Debug, Args)]
pub struct AnalyticsArgs {
    /// Only observations at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
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
}

/// `weatherflow bench <which>`.
#[derive(Debug, Subcommand)]
pub enum BenchKind {
    /// Consumer throughput vs binary COPY, and end-to-end latency.
    Persist {
        /// Messages to produce and drain.
        #[arg(long, default_value_t = 200_000)]
        messages: u64,
    },
    /// Analytics job time vs PostgreSQL's regr_* aggregates.
    Analytics {
        /// Synthetic observations.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
    },
    /// Web mode under load: wrk against /api/v1/results, /api/v1/status and /.
    Web {
        /// Synthetic observations.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Seconds per endpoint.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent connections.
        #[arg(long, default_value_t = 200)]
        connections: u64,
    },
}

impl FetchArgs {
    /// Builds the job's request: flags first, then the schedule's arguments.
    pub fn into_request(self, config: &Config) -> anyhow::Result<FetchRequest> {
        let schedule = if self.locations.is_empty() || self.source.is_none() {
            Some(cmd::schedules::load(config, None)?.fetch.args)
        } else {
            None
        };
        let locations = if self.locations.is_empty() {
            schedule.as_ref().map(|s| s.locations.clone()).unwrap_or_default()
        } else {
            self.locations
        };
        let source = match (self.source, &schedule) {
            (Some(s), _) => s.into(),
            (None, Some(s)) => s.source,
            (None, None) => SourceChoice::Auto,
        };
        Ok(FetchRequest {
            locations,
            source,
            seed: self.seed.or(schedule.as_ref().and_then(|s| s.seed)),
            concurrency: self.concurrency.or(schedule.as_ref().and_then(|s| s.concurrency)),
            backfill_hours: self.backfill_hours,
        })
    }
}

/// Parses the command line and runs the command.
pub async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    let shutdown = crate::shutdown::on_signal();
    match cli.command {
        Command::Migrate { action, steps } => cmd::migrate::run(&config, action, steps).await,
        Command::Check => cmd::check::run(&config).await,
        Command::Schedules { file } => cmd::schedules::print(&config, file.as_deref()),
        Command::Run { job } => match job {
            RunJob::Fetch(args) => {
                let req = args.into_request(&config)?;
                cmd::run::fetch(&config, req, shutdown).await
            }
            RunJob::Persist(args) => {
                cmd::run::persist(
                    &config,
                    PersistRequest {
                        until_idle: args.until_idle,
                    },
                    shutdown,
                )
                .await
            }
            RunJob::Analytics(args) => {
                let req = AnalyticsRequest {
                    since: args.since,
                    until: args.until,
                    min_samples: args.min_samples,
                    plot: args.plot,
                    plot_scopes: args.plot_scopes,
                    plot_all_scopes: args.plot_all_scopes,
                };
                cmd::run::analytics(&config, req, shutdown).await
            }
        },
        Command::Runs { job, last } => cmd::runs::run(&config, job.as_deref(), last).await,
        Command::Results { scope, last } => cmd::results::run(&config, scope.as_deref(), last).await,
        Command::Status => cmd::status::run(&config).await,
        Command::Scheduler { no_consumer, http } => {
            let _http = cmd::serve::ops(&config, http.as_deref(), &shutdown).await?;
            cmd::scheduler::run(&config, !no_consumer, shutdown).await
        }
        Command::Consumer { http } => {
            let _http = cmd::serve::ops(&config, http.as_deref(), &shutdown).await?;
            cmd::run::persist(&config, PersistRequest { until_idle: false }, shutdown).await
        }
        Command::Serve { listen } => cmd::serve::run(&config, listen.as_deref(), shutdown).await,
        Command::Bench { which } => match which {
            BenchKind::Persist { messages } => cmd::bench::persist(&config, messages, shutdown).await,
            BenchKind::Analytics { rows } => cmd::bench::analytics(&config, rows, shutdown).await,
            BenchKind::Web {
                rows,
                seconds,
                connections,
            } => crate::web::bench::run(&config, rows, seconds, connections).await,
        },
    }
}
