//! `weatherflow schedules`: validate schedules.toml and show when each job fires next: the fire
//! times the scheduler computes ([`crate::scheduler::next_fires`]), in the job's own time zone.

use std::path::PathBuf;

use chrono::{DateTime, SubsecRound, Utc};
use clap::Args;

use crate::config::Config;
use crate::runs::JobName;
use crate::scheduler::next_fires;
use crate::scheduler::schedules::{self, Schedules, Timing};

/// Flags of `weatherflow schedules`.
#[derive(Debug, Args)]
pub struct SchedulesArgs {
    /// Schedules file (default: the configuration's scheduler.schedules_path).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Show the fire times after this instant (RFC 3339) instead of now: what a day with a
    /// daylight-saving change will do, ahead of time.
    #[arg(long, value_name = "TIME")]
    pub after: Option<DateTime<Utc>>,
    /// How many fire times to show per job.
    #[arg(long, default_value_t = 5)]
    pub count: usize,
}

/// Prints each job, its settings and its next fire times.
pub fn print(config: &Config, args: &SchedulesArgs) -> anyhow::Result<()> {
    let s = schedules::load(config, args.file.as_deref())?;
    let after = args.after.unwrap_or_else(Utc::now).trunc_subsecs(0);
    print!("{}", render(&s, after, args.count));
    Ok(())
}

/// The text [`print`] writes.
fn render(s: &Schedules, after: DateTime<Utc>, count: usize) -> String {
    let mut out = String::new();
    for job in schedules::SCHEDULED {
        let Some(timing) = s.timing(job) else { continue };
        out.push_str(&show(job, timing, after, count));
        if job == JobName::Fetch {
            out.push_str(&format!("  locations: {}\n", s.fetch.args.locations.join("; ")));
        }
    }
    out
}

fn show(job: JobName, t: &Timing, after: DateTime<Utc>, count: usize) -> String {
    let mut out = format!(
        "{job}: cron \"{}\" ({}){}, timeout {} s, retries {}, missed ticks: {:?}\n",
        t.cron_expr,
        t.timezone,
        if t.enabled { "" } else { " DISABLED" },
        t.timeout_secs,
        t.retries,
        t.missed
    );
    for at in next_fires(t, after, count) {
        let local = at.with_timezone(&t.timezone);
        out.push_str(&format!(
            "  next: {}\n",
            local.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    out
}
