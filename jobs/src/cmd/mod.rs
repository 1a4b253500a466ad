//! The command line: one file per command, each with the clap arguments it takes. This module parses
//! the arguments, loads the configuration once, and dispatches.

#[cfg(feature = "bench")]
pub mod bench;
pub mod check;
pub mod completions;
pub mod config;
pub mod migrate;
pub mod pause;
pub mod rejects;
pub mod replay;
pub mod results;
pub mod run;
pub mod runs;
pub mod scheduler;
pub mod schedules;
pub mod serve;
pub mod status;
pub mod table;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::runs::JobName;

/// weatherflow: fetch weather into Kafka, persist it into PostgreSQL, fit regressions nightly.
#[derive(Debug, Parser)]
#[command(name = "weatherflow", version = crate::build_info::LONG_VERSION, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (TOML). Default: ./weatherflow.toml when it exists.
    #[arg(long, global = true, env = "WEATHERFLOW_CONFIG")]
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
        #[arg(value_enum, default_value_t = migrate::MigrateAction::Up)]
        action: migrate::MigrateAction,
        /// With `down`: how many migrations to revert (default 1). With `up`: how many to apply (default all).
        #[arg(long)]
        steps: Option<u32>,
    },
    /// Check that Kafka and PostgreSQL answer, and report what they hold.
    Check(table::Output),
    /// Validate schedules.toml and print each job's next fire times (the scheduler's).
    Schedules(schedules::SchedulesArgs),
    /// Run one job now (trigger = manual), recorded in the run history.
    Run {
        /// The job.
        #[command(subcommand)]
        job: run::RunJob,
        /// Run it even while it is paused (`weatherflow pause`).
        #[arg(long, global = true)]
        force: bool,
    },
    /// Pause a job: its scheduled ticks are skipped, manual runs need --force, and a paused persist
    /// stops fetching (partitions kept, nothing committed) until resumed.
    Pause(pause::PauseArgs),
    /// Resume a paused job.
    Resume(pause::ResumeArgs),
    /// Read a range of the observations topic again and store what the database is missing
    /// (after a restore from an older backup), with a consumer group of its own.
    Replay(replay::ReplayFlags),
    /// Show the run history.
    Runs {
        /// Only this job.
        #[arg(long)]
        job: Option<JobName>,
        /// How many runs (newest first).
        #[arg(long, default_value_t = 20)]
        last: u64,
        /// Output format.
        #[command(flatten)]
        output: table::Output,
    },
    /// List, count, show and re-drive quarantined records (rejected_records).
    Rejects(rejects::RejectsArgs),
    /// Show the latest regression results.
    Results {
        /// Only this scope (`all` or a location key).
        #[arg(long)]
        scope: Option<String>,
        /// How many results (newest first).
        #[arg(long, default_value_t = 20)]
        last: u64,
        /// Output format.
        #[command(flatten)]
        output: table::Output,
    },
    /// Last run of each job, next fire times, consumer lag, table row counts.
    Status(table::Output),
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
        /// Print the OpenAPI document of /api/v1 (docs/schema/openapi.v1.json) and exit.
        #[arg(long)]
        openapi: bool,
    },
    /// Print the effective configuration and each value's origin (`--reference`: every field).
    Config(config::ConfigArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to standard output.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `weatherflow man | man -l -`; `--dir` writes one page per command.
    Man {
        /// Write weatherflow.1 and a page per subcommand (weatherflow-run-fetch.1, ...) into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Benchmarks that print figures (built with `--features bench`).
    #[cfg(feature = "bench")]
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        which: bench::BenchKind,
    },
}

/// Parses the command line and runs the command.
pub async fn execute() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // These need no configuration: they work on a machine without services or settings.
    match &cli.command {
        Command::Config(args) => return config::run(cli.config.as_deref(), args),
        Command::Completions { shell } => return completions::completions(*shell),
        Command::Man { dir } => return completions::man(dir.as_deref()),
        Command::Serve { openapi: true, .. } => {
            print!("{}", crate::web::openapi::document());
            return Ok(());
        }
        _ => {}
    }
    let config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    // Unknown librdkafka properties and an unreadable password file fail every command at once.
    crate::kafka::check_settings(&config.kafka).context("checking the Kafka settings")?;
    let shutdown = crate::shutdown::on_signal();
    match cli.command {
        Command::Migrate { action, steps } => migrate::run(&config, action, steps).await,
        Command::Check(output) => check::run(&config, output.format).await,
        Command::Schedules(args) => schedules::print(&config, &args),
        Command::Run { job, force } => run::run(&config, job, force, shutdown).await,
        Command::Pause(args) => pause::pause(&config, args).await,
        Command::Resume(args) => pause::resume(&config, args).await,
        Command::Replay(flags) => replay::run(&config, flags, shutdown).await,
        Command::Runs { job, last, output } => runs::run(&config, job, last, output.format).await,
        Command::Rejects(args) => rejects::run(&config, args, shutdown).await,
        Command::Results { scope, last, output } => {
            results::run(&config, scope.as_deref(), last, output.format).await
        }
        Command::Status(output) => status::run(&config, output.format).await,
        Command::Scheduler { no_consumer, http } => {
            let _http = serve::ops(&config, http.as_deref(), &shutdown).await?;
            scheduler::run(&config, !no_consumer, shutdown).await
        }
        Command::Consumer { http } => {
            let _http = serve::ops(&config, http.as_deref(), &shutdown).await?;
            run::consumer(&config, shutdown).await
        }
        Command::Serve { listen, .. } => serve::run(&config, listen.as_deref(), shutdown).await,
        Command::Config(_) | Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("handled before the configuration is loaded")
        }
        #[cfg(feature = "bench")]
        Command::Bench { which } => bench::run(&config, which, shutdown).await,
    }
}
