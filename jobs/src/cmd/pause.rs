//! `weatherflow pause JOB` and `weatherflow resume JOB`: the pause state lives in PostgreSQL
//! ([`crate::runs::pause`]), so every scheduler replica and the persist consumer honour it without a
//! restart. This command only writes it and says what it did.

use anyhow::Context;
use clap::Args;

use crate::config::Config;
use crate::db;
use crate::runs::JobName;
use crate::runs::pause::{self, PAUSABLE, Paused};

/// `weatherflow pause`.
#[derive(Debug, Args)]
pub struct PauseArgs {
    /// The job: fetch, persist, analytics or maintenance.
    pub job: JobName,
    /// Why, shown by `status`, the dashboard and the API, and in every skipped tick.
    #[arg(long)]
    pub reason: Option<String>,
    /// Who pauses (default: the OS user).
    #[arg(long, env = "USER", hide_env_values = true)]
    pub by: Option<String>,
}

/// `weatherflow resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The job.
    pub job: JobName,
    /// Who resumes (default: the OS user).
    #[arg(long, env = "USER", hide_env_values = true)]
    pub by: Option<String>,
}

fn check(job: JobName) -> anyhow::Result<()> {
    anyhow::ensure!(
        PAUSABLE.contains(&job),
        "{job} runs only by hand and cannot be paused; the jobs that can: fetch, persist, analytics, maintenance"
    );
    Ok(())
}

/// Pauses the job and prints the pause in force.
pub async fn pause(config: &Config, args: PauseArgs) -> anyhow::Result<()> {
    check(args.job)?;
    let conn = db::connect(&config.database).await?;
    let by = args.by.unwrap_or_else(|| "cli".into());
    let done = pause::pause(&conn, args.job, &by, args.reason.as_deref(), false)
        .await
        .with_context(|| format!("pausing job {}", args.job))?;
    match &done {
        Paused::Now(p) => println!("{}: {}", p.job, p.describe()),
        Paused::Already(p) => println!("{}: already {} (unchanged)", p.job, p.describe()),
    }
    if args.job == JobName::Persist {
        println!(
            "  running consumers stop fetching within {} s and keep their partitions; nothing is committed until resumed",
            pause::POLL_EVERY.as_secs()
        );
    } else {
        println!("  scheduled ticks are recorded skipped; `weatherflow run {} --force` runs it anyway", args.job);
    }
    Ok(())
}

/// Resumes the job and prints what was lifted.
pub async fn resume(config: &Config, args: ResumeArgs) -> anyhow::Result<()> {
    check(args.job)?;
    let conn = db::connect(&config.database).await?;
    let by = args.by.unwrap_or_else(|| "cli".into());
    match pause::resume(&conn, args.job, &by)
        .await
        .with_context(|| format!("resuming job {}", args.job))?
    {
        Some(p) => println!("{}: resumed (was {})", p.job, p.describe()),
        None => println!("{}: was not paused (unchanged)", args.job),
    }
    Ok(())
}
