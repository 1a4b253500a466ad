//! Re-drive: quarantined records (`rejected_records`) run again through today's validation and
//! store, once their cause is fixed (a validation rule relaxed, a database constraint dropped, a
//! clock corrected). `weatherflow rejects redrive` runs it; docs/recovery.md is the manual.
//!
//! A run reads the selected rows still quarantined in pages of [`RedriveRequest::batch_size`], by id
//! (keyset pagination), up to the highest id present when it started. Each page is validated with
//! the configured [`Rules`], and its valid records are written by the consumer's own
//! [`store_batch`], with the original Kafka coordinates as their lineage. Then, in one transaction:
//! a record whose observation is now stored (new, or already there) is marked re-driven
//! (`redriven_at`, `redrive_run_id`), and its row is kept; a record refused again, by validation or
//! by the database, keeps its row with the new class and reason. Both count an attempt. Re-driven
//! rows are never selected again, so a second re-drive stores nothing twice; and the observations'
//! unique key `(location_key, observed_at, source)` makes the write idempotent anyway, which is also what
//! makes a re-drive safe beside a running consumer. A re-drive does not send to the dead-letter
//! topic: the records are there since they were first refused.
//!
//! A dry run reads and validates the same pages and looks up which observations are already
//! stored; it writes nothing. It cannot foresee a database refusal (that takes the write).

pub mod quarantine;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use sea_orm::DatabaseConnection;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::envelope::Source;
use crate::job_error::{JobError, JobErrorKind, JobResultExt};
use crate::jobs::persist::store::{
    CopyStrategy, Lineage, RejectedRecord, Retry, Stored, ValidRecord, store_batch,
};
use crate::jobs::persist::validate::{Rules, validate};
use crate::runs::Report;
use quarantine::{Outcome, Quarantined, Selection, State};

/// Rows per page by default: a page is one `store_batch` and one UPDATE transaction. 1,000
/// `current.json` records are 1–3 MB, well under the store's 4 MiB transaction cut.
pub const DEFAULT_BATCH: usize = 1000;

/// How long a page may wait on a database the store takes for unavailable, by default, before the
/// run gives up. A re-drive is run by hand: it should fail and say so, not wait out an outage the
/// way the consumer does.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(60);

/// What to re-drive.
#[derive(Debug, Clone)]
pub struct RedriveRequest {
    /// Which rows; only those still quarantined are read, whatever its `state`.
    pub selection: Selection,
    /// Validate and report only; write nothing.
    pub dry_run: bool,
    /// Rows per page.
    pub batch_size: usize,
    /// How long one page may wait on an unavailable database.
    pub patience: Duration,
}

impl Default for RedriveRequest {
    fn default() -> Self {
        Self {
            selection: Selection::default(),
            dry_run: false,
            batch_size: DEFAULT_BATCH,
            patience: DEFAULT_PATIENCE,
        }
    }
}

/// What a re-drive did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedriveSummary {
    /// Whether this was a dry run (nothing written).
    pub dry_run: bool,
    /// Rows selected when the run started (still quarantined).
    pub selected: u64,
    /// Rows read so far.
    pub examined: u64,
    /// New observations (dry: valid records whose observation is not stored yet).
    pub stored: u64,
    /// Valid records whose observation was already stored; re-driven too.
    pub duplicates: u64,
    /// Records refused again, by their new class; they stay quarantined.
    pub refused: BTreeMap<String, u64>,
    /// Of those, the ones refused for another class than before.
    pub reclassified: u64,
    /// Pages read.
    pub batches: u64,
    /// Database attempts retried after an outage.
    pub retries: u64,
}

impl RedriveSummary {
    /// Records that left the quarantine: stored, or found already stored.
    pub fn redriven(&self) -> u64 {
        self.stored + self.duplicates
    }

    /// Records refused again, all classes together.
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }
}

impl Report for RedriveSummary {
    fn records_in(&self) -> Option<i64> {
        Some(self.examined as i64)
    }
    fn records_out(&self) -> Option<i64> {
        Some(self.redriven() as i64)
    }
    fn details(&self) -> serde_json::Value {
        json!({
            "dry_run": self.dry_run,
            "selected": self.selected,
            "examined": self.examined,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "redriven": self.redriven(),
            "refused": self.refused,
            "reclassified": self.reclassified,
            "batches": self.batches,
            "retries": self.retries,
        })
    }
}

/// Whether a run writes, and as which `job_runs` row.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Validate and look up only.
    Dry,
    /// Store and mark, as run `run_id`.
    Write { run_id: i64 },
}

/// Re-drives the selection as run `run_id` (the caller holds the re-drive lock and the run's row).
/// `progress` sees the summary after every page. Stops between pages when `shutdown` is cancelled
/// ([`JobErrorKind::Interrupted`], with the summary so far).
pub async fn run(
    config: &Config,
    db: &DatabaseConnection,
    run_id: i64,
    req: RedriveRequest,
    shutdown: CancellationToken,
    progress: &mut (dyn FnMut(&RedriveSummary) + Send),
) -> Result<RedriveSummary, JobError> {
    let mode = if req.dry_run {
        Mode::Dry
    } else {
        Mode::Write { run_id }
    };
    drive(config, db, mode, req, shutdown, progress).await
}

/// The dry run: what [`run`] would do, with nothing written (no `job_runs` row either).
pub async fn dry_run(
    config: &Config,
    db: &DatabaseConnection,
    req: RedriveRequest,
    shutdown: CancellationToken,
    progress: &mut (dyn FnMut(&RedriveSummary) + Send),
) -> Result<RedriveSummary, JobError> {
    drive(config, db, Mode::Dry, req, shutdown, progress).await
}

async fn drive(
    config: &Config,
    db: &DatabaseConnection,
    mode: Mode,
    mut req: RedriveRequest,
    shutdown: CancellationToken,
    progress: &mut (dyn FnMut(&RedriveSummary) + Send),
) -> Result<RedriveSummary, JobError> {
    if req.batch_size == 0 {
        return Err(JobError::fatal("the re-drive batch size must be at least 1"));
    }
    req.selection.state = State::Pending;
    let pool = db.get_postgres_connection_pool();
    let rules = Rules::from_config(&config.persist);
    let retry = Retry {
        uniform_patience: UNIFORM_PATIENCE,
        ..super::retry(&config.persist, &shutdown)
    };
    let mut strategy = CopyStrategy::default();
    let mut summary = RedriveSummary {
        dry_run: matches!(mode, Mode::Dry),
        ..Default::default()
    };
    let reading = JobErrorKind::Retryable;
    let ceiling = quarantine::ceiling(pool)
        .await
        .job(reading, "reading rejected_records")?;
    let selected = quarantine::count(pool, &req.selection, ceiling)
        .await
        .job(reading, "counting the selected rejected_records")?;
    summary.selected = selected as u64;
    let mut after = 0;
    loop {
        if shutdown.is_cancelled() {
            return Err(JobError::interrupted("stopped between two pages").with_report(&summary));
        }
        let page = quarantine::page(pool, &req.selection, after, ceiling, req.batch_size)
            .await
            .job(reading, "reading a page of rejected_records")
            .map_err(|e| e.with_report(&summary))?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.id;
        let checked = check(&page, &rules);
        summary.examined += page.len() as u64;
        summary.batches += 1;
        match mode {
            Mode::Dry => dry_page(pool, &checked, &mut summary).await,
            Mode::Write { run_id } => {
                let work = PageWork {
                    pool,
                    retry: &retry,
                    patience: req.patience,
                    strategy: &mut strategy,
                    run_id,
                    shutdown: &shutdown,
                };
                write_page(work, &checked, &mut summary).await
            }
        }
        .map_err(|e| e.with_report(&summary))?;
        progress(&summary);
    }
    Ok(summary)
}

/// A page after validation: the valid records, and the refused ones with the row each came from.
struct Checked<'a> {
    /// Valid records (their lineage names their row, see [`Checked::ids`]), in rounds without two
    /// records of one observation `(location_key, observed_at, source)`: the store keeps the first of such
    /// twins and counts the others as duplicates, which would mark them re-driven even when the
    /// database refused the first. A later round is written once the earlier is stored, so a twin
    /// finds its observation stored, or is refused itself. Nearly always one round.
    valid: Vec<Vec<ValidRecord>>,
    /// Refused rows: the row, its new class and reason.
    refused: Vec<(&'a Quarantined, String, String)>,
    /// Row ids by original Kafka coordinates, unique in `rejected_records`.
    ids: HashMap<(String, i32, i64), &'a Quarantined>,
}

/// Validates every row of `page` against today's rules and clock.
fn check<'a>(page: &'a [Quarantined], rules: &Rules) -> Checked<'a> {
    let now = Utc::now();
    let mut checked = Checked {
        valid: Vec::new(),
        refused: Vec::new(),
        ids: HashMap::with_capacity(page.len()),
    };
    let mut twins: HashMap<(String, chrono::DateTime<Utc>, Source), usize> = HashMap::new();
    for row in page {
        let l = &row.lineage;
        checked
            .ids
            .insert((l.topic.to_string(), l.partition, l.offset), row);
        match validate(row.raw.value.as_deref(), now, rules) {
            Ok(observation) => {
                let seen = twins
                    .entry((
                        observation.location_key.clone(),
                        observation.observed_at,
                        observation.source,
                    ))
                    .or_insert(0);
                if checked.valid.len() <= *seen {
                    checked.valid.push(Vec::new());
                }
                checked.valid[*seen].push(ValidRecord {
                    lineage: row.lineage.clone(),
                    raw: row.raw.clone(),
                    observation,
                });
                *seen += 1;
            }
            Err(rejection) => {
                checked
                    .refused
                    .push((row, rejection.class.as_str().to_owned(), rejection.reason))
            }
        }
    }
    checked
}

/// Counts what a page would do, from its validation and a lookup of the stored observations.
async fn dry_page(
    pool: &sqlx::PgPool,
    checked: &Checked<'_>,
    summary: &mut RedriveSummary,
) -> Result<(), JobError> {
    let keys: Vec<_> = checked
        .valid
        .iter()
        .flatten()
        .map(|v| {
            let o = &v.observation;
            (o.location_key.as_str(), o.observed_at, o.source.as_str())
        })
        .collect();
    let already = quarantine::already_stored(pool, &keys)
        .await
        .job(JobErrorKind::Retryable, "looking up stored observations")?;
    summary.duplicates += already;
    summary.stored += keys.len() as u64 - already.min(keys.len() as u64);
    for (row, class, _) in &checked.refused {
        *summary.refused.entry(class.clone()).or_insert(0) += 1;
        summary.reclassified += u64::from(row.class != *class);
    }
    Ok(())
}

/// How long a re-drive waits out a page whose every record the database refuses the same way
/// before they stay quarantined with the new reason. The consumer waits
/// `persist.uniform_refusal_patience_secs` (300 s), since a stream of records all refused alike is
/// more likely a database refusing everything than bad data; a re-drive's records are quarantined
/// already, and a uniform refusal says the cause is still there.
pub const UNIFORM_PATIENCE: Duration = Duration::from_secs(5);

/// What writing one page needs besides the page.
struct PageWork<'a> {
    pool: &'a sqlx::PgPool,
    /// The run's retry policy: the consumer's settings, with [`UNIFORM_PATIENCE`]. Its streak of
    /// uniform refusals is the run's.
    retry: &'a Retry,
    /// How long one write may spend retrying an outage.
    patience: Duration,
    strategy: &'a mut CopyStrategy,
    run_id: i64,
    /// The run's token: a retry wait ends when it is cancelled.
    shutdown: &'a CancellationToken,
}

impl PageWork<'_> {
    /// [`store_batch`] of `valid`, its retry waits ended by the run's shutdown or, after
    /// `patience`, by the run itself. The patience only ends retry waits: a write in progress
    /// finishes.
    async fn store(&mut self, valid: &[ValidRecord]) -> Result<Stored, JobError> {
        let retry = Retry {
            shutdown: self.shutdown.child_token(),
            ..self.retry.clone()
        };
        let no_rejections: &[RejectedRecord] = &[];
        let store = store_batch(self.pool, valid, no_rejections, &retry, self.strategy);
        tokio::pin!(store);
        let stored = tokio::select! {
            stored = &mut store => stored,
            () = tokio::time::sleep(self.patience) => {
                retry.shutdown.cancel();
                store.await
            }
        };
        stored.map_err(|_| {
            if self.shutdown.is_cancelled() {
                JobError::interrupted("stopped while waiting for the database; the page was not stored")
            } else {
                JobError::retryable(format!(
                    "the database was unavailable for more than {} s (the log has its error); this \
                     page's rows are unchanged",
                    self.patience.as_secs()
                ))
            }
        })
    }
}

/// Stores a page's valid records, round by round, then records every row's outcome.
async fn write_page(
    mut work: PageWork<'_>,
    checked: &Checked<'_>,
    summary: &mut RedriveSummary,
) -> Result<(), JobError> {
    let row_of = |l: &Lineage| {
        checked
            .ids
            .get(&(l.topic.to_string(), l.partition, l.offset))
            .copied()
    };
    let mut outcome = Outcome::default();
    let mut reclassified = 0;
    for round in &checked.valid {
        let stored = work.store(round).await?;
        summary.retries += stored.retries;
        summary.stored += stored.inserted;
        summary.duplicates += stored.duplicates;
        let mut refused_again = HashSet::new();
        for r in &stored.db_rejected {
            let Some(row) = row_of(&r.lineage) else {
                continue;
            };
            refused_again.insert(row.id);
            let class = r.rejection.class.as_str();
            reclassified += u64::from(row.class != class);
            outcome
                .refused
                .push((row.id, class.to_owned(), r.rejection.reason.clone()));
        }
        outcome.stored.extend(
            round
                .iter()
                .filter_map(|v| row_of(&v.lineage))
                .map(|row| row.id)
                .filter(|id| !refused_again.contains(id)),
        );
    }
    for (row, class, reason) in &checked.refused {
        reclassified += u64::from(row.class != *class);
        outcome.refused.push((row.id, class.clone(), reason.clone()));
    }
    let by_class = quarantine::record(work.pool, &outcome, work.run_id).await.job(
        JobErrorKind::Retryable,
        "recording the outcome in rejected_records",
    )?;
    for (class, n) in by_class {
        *summary.refused.entry(class).or_insert(0) += n;
    }
    summary.reclassified += reclassified;
    Ok(())
}
