//! `weatherflow schedules`: validate schedules.toml and show when each job fires next.

use std::path::Path;

use anyhow::Context;
use chrono::{SubsecRound, Utc};

use crate::config::Config;
use crate::runs::JobName;
use crate::schedules::{Schedules, Timing};

/// Loads the schedules file named by `file`, else by the configuration.
pub fn load(config: &Config, file: Option<&Path>) -> anyhow::Result<Schedules> {
    let path = file.unwrap_or(&config.scheduler.schedules_path);
    Schedules::load(path).with_context(|| format!("loading schedules from {}", path.display()))
}

/// Prints each job and its next five fire times.
pub fn print(config: &Config, file: Option<&Path>) -> anyhow::Result<()> {
    let s = load(config, file)?;
    let now = Utc::now().trunc_subsecs(0);
    show(JobName::Fetch, &s.fetch.timing, now);
    println!("  locations: {}", s.fetch.args.locations.join("; "));
    show(JobName::Analytics, &s.analytics.timing, now);
    Ok(())
}

fn show(job: JobName, t: &Timing, now: chrono::DateTime<Utc>) {
    println!(
        "{job}: cron \"{}\" ({}){}, timeout {} s, retries {}, missed ticks: {:?}",
        t.cron_expr,
        t.timezone,
        if t.enabled { "" } else { " DISABLED" },
        t.timeout_secs,
        t.retries,
        t.missed
    );
    for at in t.next_fire_times(now, 5) {
        println!(
            "  next: {}",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
}
