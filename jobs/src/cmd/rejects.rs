//! `weatherflow rejects`: the quarantine (`rejected_records`) listed, counted, shown one record at a
//! time, and re-driven through today's validation and store (docs/recovery.md).
//!
//! The re-drive takes the `redrive` job lock, so two never run at once, and is a `job_runs` row
//! (trigger `manual`) like any manual run. A dry run takes no lock and writes no row.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use super::table::{self, Format};
use serde_json::Value;
use crate::config::Config;
use crate::progress::Progress;
use crate::db;
use crate::executor::{ExecError, Executor};
use crate::jobs::persist::redrive::quarantine::{self, Selection, State};
use crate::jobs::persist::redrive::{self, RedriveRequest, RedriveSummary};
use crate::runs::JobName;

mod show;

/// `weatherflow rejects [list flags] | list | counts | show ID | redrive`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RejectsArgs {
    /// What to do (default: list).
    #[command(subcommand)]
    pub action: Option<RejectsAction>,
    /// The listing's flags, when no subcommand is given.
    #[command(flatten)]
    pub list: ListFlags,
}

/// The subcommands of `weatherflow rejects`.
#[derive(Debug, Subcommand)]
pub enum RejectsAction {
    /// List quarantined records, newest first, then the counts per class.
    List(ListFlags),
    /// Records per class: still quarantined, and re-driven.
    Counts(table::Output),
    /// One record: lineage, class, reason, times, the key and the raw payload.
    Show {
        /// The record's id (the first column of the listing).
        id: i64,
        /// Output format.
        #[command(flatten)]
        output: table::Output,
    },
    /// Run quarantined records through today's validation and store again.
    Redrive(RedriveFlags),
}

/// Flags of the listing.
#[derive(Debug, Args, Default)]
pub struct ListFlags {
    /// Only this class (e.g. `db_rejected`, `invalid_json`).
    #[arg(long)]
    pub class: Option<String>,
    /// Only records quarantined at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    /// Only records quarantined before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
    /// How many records (newest first).
    #[arg(long, default_value_t = 20)]
    pub last: u64,
    /// Only records a re-drive stored.
    #[arg(long, conflicts_with = "pending")]
    pub redriven: bool,
    /// Only records still quarantined.
    #[arg(long)]
    pub pending: bool,
    /// Output format.
    #[command(flatten)]
    pub output: table::Output,
}

/// Flags of `weatherflow rejects redrive`. Only records still quarantined are re-driven.
#[derive(Debug, Args)]
pub struct RedriveFlags {
    /// Only this class.
    #[arg(long)]
    pub class: Option<String>,
    /// Only records quarantined at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    /// Only records quarantined before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
    /// Only these records (repeatable, or several after one flag).
    #[arg(long = "id", num_args = 1..)]
    pub ids: Vec<i64>,
    /// Validate and report what would happen; write nothing (no run row either).
    #[arg(long)]
    pub dry_run: bool,
    /// Records per page: one store transaction and one update each.
    #[arg(long, default_value_t = redrive::DEFAULT_BATCH)]
    pub batch: usize,
    /// Seconds a page may wait on an unavailable database before the run gives up.
    #[arg(long, default_value_t = redrive::DEFAULT_PATIENCE.as_secs())]
    pub patience: u64,
    /// Output format of the closing report (progress goes to standard error).
    #[command(flatten)]
    pub output: table::Output,
}

impl From<&RedriveFlags> for RedriveRequest {
    fn from(f: &RedriveFlags) -> Self {
        RedriveRequest {
            selection: Selection {
                class: f.class.clone(),
                since: f.since,
                until: f.until,
                ids: f.ids.clone(),
                state: State::Pending,
            },
            dry_run: f.dry_run,
            batch_size: f.batch,
            patience: Duration::from_secs(f.patience),
        }
    }
}

/// Runs `weatherflow rejects …`.
pub async fn run(config: &Config, args: RejectsArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let conn = db::connect(&config.database).await?;
    match args.action {
        None => list(&conn, &args.list).await,
        Some(RejectsAction::List(flags)) => list(&conn, &flags).await,
        Some(RejectsAction::Counts(output)) => {
            let counts = quarantine::counts(&conn).await?;
            table::print_records(output.format, "classes", &COUNT_COLUMNS, &counts, || {
                counts_table(&counts)
            })
        }
        Some(RejectsAction::Show { id, output }) => {
            let row = quarantine::get(&conn, id)
                .await?
                .with_context(|| format!("no quarantined record with id {id}"))?;
            match output.format {
                Format::Table => table::emit(&show::render(&row)),
                Format::Json => table::print_json(&show::record(&row)),
                Format::Csv => table::emit(&table::csv(&show::COLUMNS, &Value::Array(vec![show::record(&row)]))),
            }
        }
        Some(RejectsAction::Redrive(flags)) => redrive(config, &conn, &flags, shutdown).await,
    }
}

async fn list(conn: &sea_orm::DatabaseConnection, f: &ListFlags) -> anyhow::Result<()> {
    let sel = Selection {
        class: f.class.clone(),
        since: f.since,
        until: f.until,
        ids: Vec::new(),
        state: match (f.redriven, f.pending) {
            (true, _) => State::Redriven,
            (_, true) => State::Pending,
            _ => State::Any,
        },
    };
    let rows = quarantine::list(conn, &sel, f.last).await?;
    match f.output.format {
        Format::Table => {}
        Format::Json => {
            let classes = quarantine::counts(conn).await?;
            return table::print_json(&serde_json::json!({ "records": rows, "classes": classes }));
        }
        Format::Csv => return table::print_records(Format::Csv, "records", &LIST_COLUMNS, &rows, String::new),
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let state = match r.redriven_at {
                Some(at) => format!("re-driven {}", at.format("%Y-%m-%d %H:%M:%S")),
                None => "quarantined".to_owned(),
            };
            vec![
                r.id.to_string(),
                r.received_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                r.error_class.clone(),
                format!("{}/{}/{}", r.kafka_topic, r.kafka_partition, r.kafka_offset),
                r.payload_bytes.map_or_else(|| "-".into(), |n| n.to_string()),
                r.redrive_attempts.to_string(),
                state,
                brief(&r.reason),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "id",
                "received (UTC)",
                "class",
                "topic/partition/offset",
                "bytes",
                "tries",
                "state",
                "reason"
            ],
            &cells
        )
    );
    println!();
    print!("{}", counts_table(&quarantine::counts(conn).await?));
    Ok(())
}

/// A reason cut for the listing (`show` prints it whole), without sqlx's prefix to the server's
/// message, which would leave little room for the message itself.
fn brief(reason: &str) -> String {
    let reason = reason
        .strip_prefix("error returned from database: ")
        .unwrap_or(reason);
    let mut out: String = reason.chars().take(100).collect();
    if reason.chars().nth(100).is_some() {
        out.push('…');
    }
    out
}

/// The fields of a listed record (`quarantine::Listed`), in order: the CSV header of `rejects list`.
const LIST_COLUMNS: [&str; 11] = [
    "id",
    "received_at",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "error_class",
    "reason",
    "payload_bytes",
    "redrive_attempts",
    "redriven_at",
    "redrive_run_id",
];

/// The fields of a class's counts (`quarantine::ClassCount`): the CSV header of `rejects counts`.
const COUNT_COLUMNS: [&str; 4] = ["error_class", "quarantined", "redriven", "latest"];

fn counts_table(counts: &[quarantine::ClassCount]) -> String {
    let mut cells: Vec<Vec<String>> = counts
        .iter()
        .map(|c| {
            vec![
                c.error_class.clone(),
                c.quarantined.to_string(),
                c.redriven.to_string(),
                c.latest.format("%Y-%m-%d %H:%M:%S").to_string(),
            ]
        })
        .collect();
    let (q, r): (i64, i64) = counts
        .iter()
        .fold((0, 0), |(q, r), c| (q + c.quarantined, r + c.redriven));
    cells.push(vec!["total".into(), q.to_string(), r.to_string(), String::new()]);
    table::render(&["class", "quarantined", "re-driven", "latest (UTC)"], &cells)
}

/// How often a long re-drive prints its progress to stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Reports a re-drive's progress on stderr ([`Progress`]: a bar on a terminal, else a line at most
/// every [`PROGRESS_EVERY`]): records examined of those selected, and what became of them.
fn progress_printer() -> impl FnMut(&RedriveSummary) + Send {
    let mut progress: Option<Progress> = None;
    move |s: &RedriveSummary| {
        let label = if s.dry_run { "redrive (dry run)" } else { "redrive" };
        let p = progress.get_or_insert_with(|| {
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                Progress::stderr(label, Some(s.selected))
            } else {
                Progress::lines(label, Some(s.selected), PROGRESS_EVERY, Box::new(std::io::stderr()))
            }
        });
        p.set_total(s.selected);
        p.update(
            s.examined,
            format!(
                "examined: {} new observations, {} already stored, {} refused again",
                s.stored,
                s.duplicates,
                s.refused_total()
            ),
        );
    }
}

async fn redrive(
    config: &Config,
    conn: &sea_orm::DatabaseConnection,
    flags: &RedriveFlags,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let req = RedriveRequest::from(flags);
    if req.dry_run {
        let mut progress = progress_printer();
        let summary = redrive::dry_run(config, conn, req, shutdown, &mut progress).await?;
        return print_report(flags.output.format, &summary, None);
    }
    let exec = Executor::from_config(conn.clone(), config);
    // Re-drives run only under the job's lock: a `running` row then is one whose process died, and
    // the claim closes it.
    let ran = exec
        .run_by_hand(JobName::Redrive, &shutdown, |ctx| {
            let req = req.clone();
            async move {
                let mut progress = progress_printer();
                redrive::run(config, conn, ctx.run_id, req, ctx.cancel, &mut progress).await
            }
        })
        .await;
    let (run_id, summary) = ran.map_err(|e| match e {
        ExecError::Held(_) => {
            anyhow::anyhow!("another re-drive is in progress; try again when it has finished")
        }
        e => e.into(),
    })?;
    print_report(flags.output.format, &summary, Some(run_id))
}

/// Prints the closing report of a re-drive: the text for people, or as JSON (csv: its `path,value`
/// pairs) with the fields of docs/cli-formats.md.
fn print_report(format: Format, s: &RedriveSummary, run_id: Option<i64>) -> anyhow::Result<()> {
    let doc = serde_json::json!({
        "run_id": run_id,
        "dry_run": s.dry_run,
        "selected": s.selected,
        "examined": s.examined,
        "redriven": s.redriven(),
        "stored": s.stored,
        "duplicates": s.duplicates,
        "refused": s.refused,
        "refused_total": s.refused_total(),
        "reclassified": s.reclassified,
        "batches": s.batches,
        "retries": s.retries,
    });
    match format {
        Format::Table => table::emit(&report(s, run_id)),
        Format::Json => table::print_json(&doc),
        Format::Csv => table::emit(&table::csv_pairs(&doc)),
    }
}

/// The closing report of a re-drive.
fn report(s: &RedriveSummary, run_id: Option<i64>) -> String {
    let head = match run_id {
        Some(id) => format!("redrive run {id}"),
        None => "redrive dry run (nothing written)".to_owned(),
    };
    let (redriven, quarantined) = if s.dry_run {
        ("would be re-driven", "would stay quarantined")
    } else {
        ("re-driven", "still quarantined")
    };
    let refused: Vec<String> = s.refused.iter().map(|(c, n)| format!("{c} {n}")).collect();
    let mut out = format!(
        "{head}: {} of {} selected records examined in {} page{}\n",
        s.examined,
        s.selected,
        s.batches,
        if s.batches == 1 { "" } else { "s" }
    );
    out.push_str(&format!(
        "  {redriven}: {} (new observations: {}, already stored: {})\n",
        s.redriven(),
        s.stored,
        s.duplicates
    ));
    out.push_str(&format!("  {quarantined}: {}", s.refused_total()));
    if !refused.is_empty() {
        out.push_str(&format!(", refused again ({})", refused.join(", ")));
    }
    if s.reclassified > 0 {
        out.push_str(&format!("; {} with a new class", s.reclassified));
    }
    out.push('\n');
    if s.dry_run && s.stored > 0 {
        out.push_str("  a dry run cannot foresee database refusals: they show in a real run\n");
    }
    out
}
