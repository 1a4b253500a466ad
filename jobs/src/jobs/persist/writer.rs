//! A writer: takes batches for its share of the partitions and makes them durable — dead-letter
//! messages, then one transaction — before acknowledging them to the consumer thread.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::mpsc::Receiver;

use super::dlq::Dlq;
use super::probe::{BatchStamps, Probe};
use crate::jobs::persist::store::{self, CopyStrategy, Interrupted, RejectedRecord, Retry, ValidRecord};

/// What every writer shares.
pub(crate) struct Deps {
    /// SeaORM's underlying pool (the write path binds arrays through sqlx directly).
    pub(crate) pool: PgPool,
    /// The dead-letter producer.
    pub(crate) dlq: Dlq,
    /// Outage retries and the shutdown token.
    pub(crate) retry: Retry,
    /// Where stored batches leave their stage stamps, when the benchmark asks.
    pub(crate) probe: Option<Probe>,
}

/// One batch: records of this writer's partitions in offset order, and the offsets they cover; or,
/// merged from several writers' small batches, records of their partitions (see `consumer::merge`).
#[derive(Debug)]
pub(crate) struct Batch {
    /// Records that passed validation.
    pub(crate) valid: Vec<ValidRecord>,
    /// Records refused by validation.
    pub(crate) rejected: Vec<RejectedRecord>,
    /// Per partition, the highest offset in the batch.
    pub(crate) last_offsets: BTreeMap<i32, i64>,
    /// Memory the records hold, as counted against `persist.max_buffered_bytes`.
    pub(crate) bytes: usize,
    /// Stage stamps of the first record, when probing (one per batch merged into this one).
    pub(crate) stamps: BatchStamps,
    /// When the first record was added (the batch timeout counts from here).
    pub(crate) opened: Instant,
    /// A merged batch's lanes, each with the bytes it gave; empty for a lane's own batch.
    pub(crate) members: Vec<(usize, usize)>,
}

impl Batch {
    /// An empty batch.
    pub(crate) fn new() -> Self {
        Self::with_capacity(0, 0)
    }

    /// An empty batch with room for `valid` and `rejected` records.
    pub(crate) fn with_capacity(valid: usize, rejected: usize) -> Self {
        Self {
            valid: Vec::with_capacity(valid),
            rejected: Vec::with_capacity(rejected),
            last_offsets: BTreeMap::new(),
            bytes: 0,
            stamps: BatchStamps::default(),
            opened: Instant::now(),
            members: Vec::new(),
        }
    }

    /// Records in the batch.
    pub(crate) fn len(&self) -> usize {
        self.valid.len() + self.rejected.len()
    }

    /// True when the batch holds nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a writer tells the consumer thread about a batch.
#[derive(Debug)]
pub(crate) struct Ack {
    /// The writer (its lane index).
    pub(crate) lane: usize,
    /// The lanes a merged batch held, each with its bytes ([`Batch::members`]).
    pub(crate) members: Vec<(usize, usize)>,
    /// The offsets the batch covered.
    pub(crate) last_offsets: BTreeMap<i32, i64>,
    /// Records in the batch.
    pub(crate) records: u64,
    /// The batch's [`Batch::bytes`], released from the buffer bound.
    pub(crate) bytes: usize,
    /// The counts, or [`Interrupted`] when the job was stopped before the batch was durable.
    pub(crate) outcome: Result<BatchOutcome, Interrupted>,
}

/// Counts of one stored batch.
#[derive(Debug, Default)]
pub(crate) struct BatchOutcome {
    /// New observation rows.
    pub(crate) inserted: u64,
    /// Valid records already stored.
    pub(crate) duplicates: u64,
    /// Quarantined records by class (validation and database).
    pub(crate) rejected: BTreeMap<&'static str, u64>,
    /// Outage retries (database and dead-letter topic).
    pub(crate) retries: u64,
    /// Transactions committed.
    pub(crate) transactions: u64,
    /// Time the last transaction's COMMIT took.
    pub(crate) commit_time: Duration,
}

/// The writer loop: ends when the consumer thread drops its sender.
pub(crate) async fn run(lane: usize, mut batches: Receiver<Batch>, acks: mpsc::Sender<Ack>, deps: Arc<Deps>) {
    let mut strategy = CopyStrategy::default();
    while let Some(mut batch) = batches.recv().await {
        batch.stamps.writing();
        let outcome = counted(batch.len(), write(&deps, &batch, &mut strategy)).await;
        if let (Some(probe), Ok(o)) = (&deps.probe, &outcome) {
            probe.stored(std::mem::take(&mut batch.stamps), batch.len(), o.commit_time);
        }
        let ack = Ack {
            lane,
            members: batch.members,
            last_offsets: batch.last_offsets,
            records: (batch.valid.len() + batch.rejected.len()) as u64,
            bytes: batch.bytes,
            outcome,
        };
        if acks.send(ack).is_err() {
            break;
        }
    }
}

/// Dead-letter messages for the validation rejections, the transaction, then dead-letter messages
/// for rows the database refused. All of it happens before the acknowledgement, so all of it happens
/// before the offsets are committed.
async fn write(deps: &Deps, batch: &Batch, strategy: &mut CopyStrategy) -> Result<BatchOutcome, Interrupted> {
    let mut outcome = BatchOutcome {
        retries: deps.dlq.send_all(&batch.rejected, &deps.retry).await?,
        ..BatchOutcome::default()
    };
    let stored = store::store_batch(&deps.pool, &batch.valid, &batch.rejected, &deps.retry, strategy).await?;
    outcome.retries += stored.retries;
    outcome.retries += deps.dlq.send_all(&stored.db_rejected, &deps.retry).await?;
    outcome.inserted = stored.inserted;
    outcome.duplicates = stored.duplicates;
    outcome.transactions = stored.transactions;
    outcome.commit_time = stored.commit_time;
    for r in batch.rejected.iter().chain(&stored.db_rejected) {
        *outcome.rejected.entry(r.rejection.class.as_str()).or_default() += 1;
    }
    for r in &stored.db_rejected {
        tracing::warn!(
            partition = r.lineage.partition,
            offset = r.lineage.offset,
            reason = %r.rejection.reason,
            "the database refused a row; quarantined as db_rejected"
        );
    }
    Ok(outcome)
}

/// Awaits one batch write of `records` records and records in the metrics what it stored, skipped
/// as duplicate and quarantined, its size and its time.
async fn counted<E>(
    records: usize,
    write: impl Future<Output = Result<BatchOutcome, E>>,
) -> Result<BatchOutcome, E> {
    let started = Instant::now();
    let result = write.await;
    if let Ok(o) = &result {
        crate::metrics::persist_batch(records, o.inserted, o.duplicates, &o.rejected, started.elapsed());
    }
    result
}
