//! The persist job: a Kafka consumer that validates records and stores them in PostgreSQL.
//!
//! Shape of a run:
//! - one consumer thread ([`consumer`]) owns the Kafka consumer: it polls, validates, groups records
//!   into batches per writer, hands them off, and commits offsets once the batches are stored. It is
//!   a plain thread because the rebalance callback runs on it and must block (flush, wait, commit)
//!   before a revocation proceeds.
//! - `persist.writers` async writers ([`writer`]) each take batches for their share of the
//!   partitions: dead-letter messages first ([`dlq`]), then one database transaction
//!   ([`crate::jobs::persist::store`]), then an acknowledgement back to the consumer thread.
//!
//! Pausing (`weatherflow pause persist`): a task reads the pause state every
//! [`pause::POLL_EVERY`] and the consumer thread pauses its whole assignment in the client while it
//! is set: it keeps polling (so it stays in the group, with no rebalance), fetches nothing, and
//! commits nothing new; resuming fetches from where it stopped.
//!
//! Guarantees: an offset is committed only after the transaction holding its record (or its
//! rejection) has committed, so offsets are never ahead of the database; after a crash the
//! uncommitted tail is read again and the idempotent writes make the replay a no-op.
//!
//! A run stopped while records it read were still waiting for the database (a shutdown during an
//! outage) did not do its work: it ends with [`JobErrorKind::Interrupted`] carrying its summary, and
//! is recorded `failed` with `abandoned` in its details, not `succeeded`.

mod consumer;
mod dlq;
pub mod probe;
pub mod redrive;
pub mod replay;
pub mod store;
pub mod validate;
pub(crate) mod writer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sea_orm::DatabaseConnection;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{Config, PersistConfig};
use crate::job_error::{JobError, JobErrorKind, JobResultExt};
use crate::jobs::persist::store::Retry;
use crate::jobs::persist::validate::Rules;
use crate::runs::pause;
use crate::runs::{JobName, Report};
use consumer::ConsumerError;

/// The smallest `persist.max_buffered_bytes` accepted: below it, one ordinary batch would not fit.
const MIN_BUFFERED_BYTES: usize = 1 << 20;

/// librdkafka's prefetch bound (`queued.max.messages.kbytes`) for a byte bound: a quarter of it,
/// between 1 MiB and librdkafka's 64 MiB default. What it prefetched is dropped when fetching
/// pauses, so it adds to the bound only while records flow.
fn prefetch_kbytes(max_buffered_bytes: usize) -> usize {
    (max_buffered_bytes / 4 / 1024).clamp(1024, 64 * 1024)
}

/// How the job's database writes retry an outage (`persist.retry_*`), until `shutdown`.
fn retry(p: &PersistConfig, shutdown: &CancellationToken) -> Retry {
    Retry {
        write_timeout: Duration::from_secs(p.write_timeout_secs.max(1)),
        uniform_patience: Duration::from_secs(p.uniform_refusal_patience_secs),
        dlq_grace: Duration::from_secs(p.dlq_unavailable_secs),
        ..Retry::new(
            Backoff::new(
                Duration::from_millis(p.retry_initial_ms),
                Duration::from_millis(p.retry_max_ms),
            ),
            shutdown.clone(),
        )
    }
}

/// How long to run.
#[derive(Debug, Clone, Default)]
pub struct PersistRequest {
    /// Drain what is on the topic and exit, instead of running until stopped.
    pub until_idle: bool,
    /// Fetch even while the job is paused (`weatherflow run persist --force`); otherwise a pause
    /// holds the partitions without fetching until resumed.
    pub ignore_pause: bool,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// SIGINT/SIGTERM (or the caller's token).
    Shutdown,
    /// `--until-idle` and everything assigned was read and stored.
    Idle,
}

/// The outcome of a persist run.
#[derive(Debug, Clone, Default)]
pub struct PersistSummary {
    /// Records read from Kafka.
    pub consumed: u64,
    /// New observation rows.
    pub stored: u64,
    /// Valid records whose observation was already stored (replays and repeated fetches).
    pub duplicates: u64,
    /// Records quarantined (validation or database), by error class.
    pub rejected: BTreeMap<String, u64>,
    /// Transactions committed.
    pub batches: u64,
    /// Database or dead-letter attempts retried after an outage.
    pub retries: u64,
    /// Records read but not stored because the job was stopped during an outage; they are read
    /// again by the next run (their offsets were not committed).
    pub abandoned: u64,
    /// From the first record read to the last batch stored: the time spent working, without the
    /// group join and the idle wait.
    pub active: Duration,
    /// Why the run ended.
    pub stop: Option<StopReason>,
}

impl PersistSummary {
    /// Records quarantined, all classes together.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

impl Report for PersistSummary {
    fn records_in(&self) -> Option<i64> {
        Some(self.consumed as i64)
    }
    fn records_out(&self) -> Option<i64> {
        Some(self.stored as i64)
    }
    fn details(&self) -> serde_json::Value {
        json!({
            "consumed": self.consumed,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "batches": self.batches,
            "retries": self.retries,
            "abandoned": self.abandoned,
            "active_ms": self.active.as_millis() as u64,
            "stop": match self.stop {
                Some(StopReason::Idle) => "idle",
                Some(StopReason::Shutdown) => "shutdown",
                None => "unknown",
            },
        })
    }
}

/// Whether the job is paused now; `None` when the database does not answer (the caller keeps what
/// it knew: an outage neither pauses nor resumes the consumer).
async fn read_pause(db: &DatabaseConnection) -> Option<bool> {
    match pause::get(db, JobName::Persist).await {
        Ok(p) => Some(p.is_some()),
        Err(e) => {
            tracing::debug!(error = %e, "could not read whether persist is paused; keeping the last state");
            None
        }
    }
}

/// Reads the pause state every [`pause::POLL_EVERY`] into `held` until `stop`: the consumer thread
/// applies it on its next turn. A bounded read (one primary-key lookup per interval per consumer)
/// rather than LISTEN/NOTIFY, which would hold a connection of its own per consumer.
async fn watch_pause(db: DatabaseConnection, held: Arc<AtomicBool>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(pause::POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(paused) = read_pause(&db).await {
            held.store(paused, Ordering::Relaxed);
        }
    }
}

/// Runs the consumer until `shutdown` is cancelled or, with `until_idle`, until the topic is drained.
/// Stops cleanly: the in-flight batches are stored, their offsets committed, the group left.
pub async fn run(
    config: &Config,
    db: &DatabaseConnection,
    req: PersistRequest,
    shutdown: CancellationToken,
) -> Result<PersistSummary, JobError> {
    run_probed(config, db, req, shutdown, None).await
}

/// [`run`], leaving every stored batch's stage stamps in `probe` (the benchmark's latency budget).
pub async fn run_probed(
    config: &Config,
    db: &DatabaseConnection,
    req: PersistRequest,
    shutdown: CancellationToken,
    probe: Option<probe::Probe>,
) -> Result<PersistSummary, JobError> {
    let k = &config.kafka;
    let p = &config.persist;
    if p.batch_size == 0 {
        return Err(JobError::fatal("persist.batch_size must be at least 1"));
    }
    if p.writers == 0 {
        return Err(JobError::fatal("persist.writers must be at least 1"));
    }
    if p.max_buffered_bytes < MIN_BUFFERED_BYTES {
        return Err(JobError::fatal(format!(
            "persist.max_buffered_bytes must be at least {MIN_BUFFERED_BYTES} (1 MiB)"
        )));
    }
    crate::kafka::ensure_topic(k, &k.observations_topic, k.partitions)
        .await
        .job(
            JobErrorKind::Retryable,
            format!("creating topic {}", k.observations_topic),
        )?;
    dlq::ensure_topic(k, p).await.job(
        JobErrorKind::Retryable,
        format!("creating dead-letter topic {}", k.dlq_topic),
    )?;

    let retry = retry(p, &shutdown);
    let deps = Arc::new(writer::Deps {
        pool: db.get_postgres_connection_pool().clone(),
        dlq: dlq::Dlq::new(k, p).job(JobErrorKind::Fatal, "creating the dead-letter producer")?,
        retry: retry.clone(),
        probe: probe.clone(),
    });
    let (acks_tx, acks_rx) = std::sync::mpsc::channel();
    let mut lanes = Vec::with_capacity(p.writers);
    let mut writers = Vec::with_capacity(p.writers);
    for lane in 0..p.writers {
        // Capacity 1: a writer always has its next batch ready; anything more waits on the consumer
        // thread, which pauses fetching when it piles up.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        lanes.push(tx);
        writers.push(tokio::spawn(writer::run(lane, rx, acks_tx.clone(), deps.clone())));
    }
    drop(acks_tx);

    // The pause state is read before the consumer joins the group, so a paused job never fetches.
    let held = Arc::new(AtomicBool::new(false));
    let watch_stop = shutdown.child_token();
    let watcher = if req.ignore_pause {
        tracing::warn!("forced: fetching even if the job is paused");
        None
    } else {
        held.store(read_pause(db).await.unwrap_or(false), Ordering::Relaxed);
        Some(tokio::spawn(watch_pause(db.clone(), held.clone(), watch_stop.clone())))
    };
    let settings = consumer::Settings {
        topic: Arc::from(k.observations_topic.as_str()),
        batch_size: p.batch_size,
        batch_timeout: Duration::from_millis(p.batch_timeout_ms),
        commit_interval: Duration::from_millis(p.commit_interval_ms),
        until_idle: req.until_idle,
        idle: Duration::from_millis(p.idle_ms),
        rules: Rules::from_config(p),
        max_buffered_bytes: p.max_buffered_bytes,
        probe: probe.is_some(),
        backoff: retry.backoff,
        kafka_timeout: Duration::from_secs(k.request_timeout_secs),
        held: held.clone(),
    };
    let mut kafka = crate::kafka::base_config(k);
    kafka.set(
        "queued.max.messages.kbytes",
        prefetch_kbytes(p.max_buffered_bytes).to_string(),
    );
    if let Some(name) = &k.group_instance_id {
        kafka.set("group.instance.id", name);
    }
    let group = k.consumer_group.clone();
    let session_timeout = p.session_timeout_ms;
    let token = shutdown.clone();
    tracing::info!(
        topic = %k.observations_topic,
        group = %group,
        dlq = %k.dlq_topic,
        batch_size = p.batch_size,
        writers = p.writers,
        until_idle = req.until_idle,
        static_member = k.group_instance_id.as_deref().unwrap_or("-"),
        max_buffered_bytes = p.max_buffered_bytes,
        "persist consumer starting"
    );
    // The consumer thread blocks (poll, rebalance flushes), so it lives on a blocking thread, where
    // waiting on the writers through channels is allowed.
    // Each failure says whether another attempt can help (`ConsumerError::kind`): a panicked
    // writer or a fatal client error cannot, a broker that is down may be back.
    let summary = tokio::task::spawn_blocking(move || {
        consumer::run(kafka, &group, session_timeout, settings, lanes, acks_rx, token)
    })
    .await;
    watch_stop.cancel();
    if let Some(w) = watcher {
        let _ = w.await;
    }
    let summary = summary.map_err(ConsumerError::ConsumerPanicked)??;
    for w in writers {
        w.await.map_err(ConsumerError::WriterPanicked)?;
    }
    tracing::info!(
        consumed = summary.consumed,
        stored = summary.stored,
        duplicates = summary.duplicates,
        rejected = summary.rejected_total(),
        abandoned = summary.abandoned,
        "persist consumer stopped"
    );
    if summary.abandoned > 0 {
        return Err(JobError::from(ConsumerError::Abandoned {
            records: summary.abandoned,
        })
        .with_report(&summary));
    }
    Ok(summary)
}
