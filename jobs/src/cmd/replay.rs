//! `weatherflow replay`: read a range of the observations topic again and store what is missing
//! (see `jobs::persist::replay`). One replay at a time (the replay job's advisory lock), recorded in
//! job_runs with trigger `manual`; a progress line goes to stderr every few seconds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::bail;
use chrono::{DateTime, Utc};
use clap::Args;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db;
use crate::executor::{Executor, Launch};
use crate::jobs::persist::replay::{self, ReplayFrom, ReplayRequest, ReplaySummary};
use crate::progress::Progress;
use crate::runs::JobName;

/// How often the progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// Flags of `weatherflow replay`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("start").required(true).args(["from_time", "from_offset"]))]
pub struct ReplayFlags {
    /// Start at the first record stamped at or after this time (RFC 3339, e.g.
    /// 2026-12-06T18:00:00Z), in every partition read.
    #[arg(long, value_name = "TIME")]
    pub from_time: Option<DateTime<Utc>>,
    /// Start at this offset: `P:O` (partition P from offset O; repeatable, only the partitions
    /// named are read), or `O` with `--partition` (every partition given, from O).
    #[arg(long, value_name = "P:O")]
    pub from_offset: Vec<String>,
    /// Stop before the first record stamped at or after this time (RFC 3339). Default: the end
    /// of each partition when the replay starts.
    #[arg(long, value_name = "TIME")]
    pub to_time: Option<DateTime<Utc>>,
    /// Read only this partition (repeatable). Default: every partition.
    #[arg(long, value_name = "P")]
    pub partition: Vec<i32>,
}

impl ReplayFlags {
    /// The job's request, or what is wrong with the flags.
    pub fn into_request(self) -> anyhow::Result<ReplayRequest> {
        let partitions: BTreeSet<i32> = self.partition.into_iter().collect();
        if let Some(&p) = partitions.iter().find(|&&p| p < 0) {
            bail!("--partition {p}: partitions are numbered from 0");
        }
        let from = match self.from_time {
            Some(at) => ReplayFrom::Time(at),
            None => ReplayFrom::Offsets(offsets(&self.from_offset, &partitions)?),
        };
        // With offsets, the partitions are those the offsets name.
        let partitions = match from {
            ReplayFrom::Time(_) => partitions,
            ReplayFrom::Offsets(_) => BTreeSet::new(),
        };
        Ok(ReplayRequest {
            from,
            to_time: self.to_time,
            partitions,
        })
    }
}

/// `--from-offset` values: all `P:O`, or one bare `O` applied to each `--partition`.
fn offsets(specs: &[String], partitions: &BTreeSet<i32>) -> anyhow::Result<BTreeMap<i32, i64>> {
    let number = |text: &str, what: &str| -> anyhow::Result<i64> {
        match text.trim().parse::<i64>() {
            Ok(n) if n >= 0 => Ok(n),
            _ => bail!("--from-offset {text:?}: the {what} is not a number from 0"),
        }
    };
    if let [spec] = specs
        && !spec.contains(':')
    {
        if partitions.is_empty() {
            bail!("--from-offset {spec} without a partition: write P:O, or add --partition P");
        }
        let offset = number(spec, "offset")?;
        return Ok(partitions.iter().map(|&p| (p, offset)).collect());
    }
    if !partitions.is_empty() {
        bail!("--partition goes with a bare --from-offset O; with P:O the partitions are named already");
    }
    let mut out = BTreeMap::new();
    for spec in specs {
        let Some((p, o)) = spec.split_once(':') else {
            bail!("--from-offset {spec:?}: write P:O (partition:offset) when giving several");
        };
        let partition = i32::try_from(number(p, "partition")?)?;
        if out.insert(partition, number(o, "offset")?).is_some() {
            bail!("--from-offset names partition {partition} twice");
        }
    }
    Ok(out)
}

/// Runs one replay under the replay job's lock, recorded in job_runs.
pub async fn run(config: &Config, flags: ReplayFlags, shutdown: CancellationToken) -> anyhow::Result<()> {
    let req = flags.into_request()?;
    let conn = db::connect(&config.database).await?;
    let exec = Executor::from_config(conn.clone(), config);
    // Under the lock, a `running` replay row belongs to a process that died: the claim closes it.
    let claim = exec.claim(JobName::Replay).await?;
    let (progress, watching) = watch::channel(ReplaySummary::default());
    let printer = tokio::spawn(print_progress(watching));
    let result = exec
        .run(claim, Launch::manual(&shutdown), |ctx| {
            replay::run(config, &conn, ctx.run_id, req.clone(), ctx.cancel, &progress)
        })
        .await;
    drop(progress);
    let _ = printer.await;
    Ok(result?.into_result()?)
}

/// Reports the replay's progress on stderr ([`Progress`]: a bar on a terminal, else a line at
/// most every [`PROGRESS_EVERY`]) while it runs, and a last line when it stopped early.
async fn print_progress(mut summary: watch::Receiver<ReplaySummary>) {
    let progress = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        Progress::stderr("replay", None)
    } else {
        Progress::lines("replay", None, PROGRESS_EVERY, Box::new(std::io::stderr()))
    };
    let show = |s: &ReplaySummary| {
        progress.set_total(s.to_read());
        progress.update(s.read(), s.progress_message());
    };
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    loop {
        tokio::select! {
            changed = summary.changed() => if changed.is_err() { break },
            // A replay waiting on the database still shows where it is.
            _ = beat.tick() => show(&summary.borrow()),
        }
        show(&summary.borrow());
    }
    let last = summary.borrow();
    show(&last);
    if last.stop.is_some() {
        progress.finish(last.progress_message());
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cmd::{Cli, Command};

    fn request(args: &[&str]) -> anyhow::Result<ReplayRequest> {
        let cli = Cli::try_parse_from(["weatherflow", "replay"].iter().chain(args))?;
        match cli.command {
            Command::Replay(flags) => flags.into_request(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_start_is_required_and_times_are_rfc_3339() {
        assert!(request(&[]).is_err());
        assert!(request(&["--from-time", "yesterday"]).is_err());
        let r = request(&[
            "--from-time",
            "2026-12-06T18:00:00Z",
            "--to-time",
            "2026-12-06T20:30:00+01:00",
            "--partition",
            "2",
        ])
        .unwrap();
        assert_eq!(r.from, ReplayFrom::Time("2026-12-06T18:00:00Z".parse().unwrap()));
        assert_eq!(r.to_time.unwrap().to_rfc3339(), "2026-12-06T19:30:00+00:00");
        assert_eq!(r.partitions, [2].into());
        assert!(request(&["--from-time", "2026-12-06T18:00:00Z", "--from-offset", "0:1"]).is_err());
    }

    #[test]
    fn offsets_are_partition_colon_offset_or_one_offset_for_the_partitions_given() {
        let r = request(&["--from-offset", "0:10", "--from-offset", "2:0"]).unwrap();
        assert_eq!(r.from, ReplayFrom::Offsets([(0, 10), (2, 0)].into()));
        assert!(r.partitions.is_empty());
        let r = request(&["--from-offset", "7", "--partition", "1", "--partition", "2"]).unwrap();
        assert_eq!(r.from, ReplayFrom::Offsets([(1, 7), (2, 7)].into()));
        for bad in [
            &["--from-offset", "7"][..],
            &["--from-offset", "0:1", "--partition", "0"],
            &["--from-offset", "0:1", "--from-offset", "0:2"],
            &["--from-offset", "0:-1"],
            &["--from-offset", "x:1"],
            &["--from-offset", "1", "--from-offset", "2:1"],
            &["--from-time", "2026-12-06T18:00:00Z", "--partition", "-1"],
        ] {
            assert!(request(bad).is_err(), "{bad:?}");
        }
    }
}
