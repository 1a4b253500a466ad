//! The consumer thread: poll, validate, batch, hand off, commit.
//!
//! It owns the Kafka consumer, and with it every offset decision. Offsets are committed only for
//! batches a writer has acknowledged, that is, after their transaction committed. Because one
//! partition always goes to the same writer, whose batches are written in order, acknowledgements
//! for a partition arrive in offset order and the committed offset never passes a record that is
//! not stored.
//!
//! On revocation (rebalance or close) the rebalance callback, which librdkafka runs on this thread
//! inside `poll`, seals and hands off the open batches, blocks until the writers have acknowledged
//! everything, and commits synchronously; only then does the rebalance proceed, so the next owner
//! of a partition starts exactly after the last stored record.
//!
//! The state the loop and the callbacks share is made of named parts, each deciding from its own
//! fields: [`batching`] (with [`merge`] and [`lane`]), [`offsets`], [`flow`] control and [`idle`]
//! tracking, composed in [`state`], the only place that calls the client. Its failures are
//! [`ConsumerError`]s, each fatal, retryable or interrupted.

mod arena;
mod batching;
mod clock;
mod error;
mod flow;
mod idle;
mod lane;
mod merge;
mod offsets;
mod state;
#[cfg(test)]
mod tests;

use std::sync::mpsc;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use super::writer::{Ack, Batch};
use super::{PersistSummary, StopReason};
use crate::backoff::Backoff;
use crate::jobs::persist::validate::Rules;
pub(crate) use error::ConsumerError;
use offsets::Mode;
use state::State;

/// What the consumer thread needs to know.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The observations topic (the only subscription).
    pub(crate) topic: Arc<str>,
    /// Records per batch, at most.
    pub(crate) batch_size: usize,
    /// Longest wait of a record in an open batch.
    pub(crate) batch_timeout: Duration,
    /// Shortest time between two asynchronous offset commits.
    pub(crate) commit_interval: Duration,
    /// Stop once drained.
    pub(crate) until_idle: bool,
    /// Quiet time before the drained check.
    pub(crate) idle: Duration,
    /// Validation limits.
    pub(crate) rules: Rules,
    /// Bound of the bytes held between reading and storing (`persist.max_buffered_bytes`).
    pub(crate) max_buffered_bytes: usize,
    /// Stamp the stages of each batch's first record (`bench persist`).
    pub(crate) probe: bool,
    /// Delays for broker error and commit retries.
    pub(crate) backoff: Backoff,
    /// Timeout of metadata and offset requests.
    pub(crate) kafka_timeout: Duration,
    /// Set while the job is paused (`weatherflow pause persist`), by a task that reads the pause
    /// state every [`crate::runs::pause::POLL_EVERY`]: the loop holds its partitions paused.
    pub(crate) held: Arc<AtomicBool>,
}

/// The consumer, with the context its callbacks run in.
pub(super) type PersistConsumer = BaseConsumer<PersistContext>;

/// Creates the consumer, runs the loop until stopped, stores and commits what was read, leaves the
/// group.
pub(crate) fn run(
    mut kafka: ClientConfig,
    group: &str,
    session_timeout_ms: u64,
    settings: Settings,
    lanes: Vec<Sender<Batch>>,
    acks: mpsc::Receiver<Ack>,
    shutdown: CancellationToken,
) -> Result<PersistSummary, ConsumerError> {
    let topic = settings.topic.clone();
    let backoff = settings.backoff;
    let context = PersistContext {
        state: Mutex::new(State::new(settings, lanes, acks)),
    };
    let consumer: PersistConsumer = kafka
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (session_timeout_ms / 3).max(100).to_string(),
        )
        // librdkafka prefetches up to queued.max.messages.kbytes (64 MB) and, once over, waits
        // fetch.queue.backoff.ms (1 s by default) before fetching again. A backlog drains faster
        // than that, so the default left the whole pipeline idle for about half a second after
        // every 64 MB (`bench persist`: 82 k rows/s with the default, 126–142 k with 10 ms).
        .set("fetch.queue.backoff.ms", "10")
        .create_with_context(context)
        .map_err(ConsumerError::Create)?;
    consumer
        .subscribe(&[&topic])
        .map_err(|source| ConsumerError::Subscribe {
            topic: topic.clone(),
            source,
        })?;

    let mut poll_errors = 0u32;
    let stop = loop {
        let timeout = {
            let now = Instant::now();
            let mut st = consumer.context().lock();
            st.housekeeping(&consumer, now)?;
            if shutdown.is_cancelled() {
                break StopReason::Shutdown;
            }
            if st.idle(&consumer) {
                break StopReason::Idle;
            }
            st.poll_timeout(now)
        };
        match consumer.poll(timeout) {
            Some(Ok(message)) => {
                poll_errors = 0;
                consumer.context().lock().accept(&message);
            }
            None => consumer.context().lock().on_quiet()?,
            Some(Err(KafkaError::MessageConsumptionFatal(code))) => {
                return Err(ConsumerError::FatalKafka(code));
            }
            Some(Err(e)) => {
                // librdkafka queues one such event per failed connection attempt during a broker
                // outage, in the queue the messages come through. Sleeping on each one kept the
                // consumer a second per stale event behind a broker that was back (over a minute
                // after a clean broker restart: scripts/test-faults.sh). The client reconnects and
                // paces its attempts by itself, so these are only logged.
                let delay = if is_connection_report(&e) {
                    Duration::ZERO
                } else {
                    backoff.delay(poll_errors).min(Duration::from_secs(1))
                };
                poll_errors = poll_errors.saturating_add(1);
                tracing::warn!(
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "kafka consumer error; the client reconnects by itself, offsets are not advanced"
                );
                sleep_unless(&shutdown, delay);
            }
        }
    };
    tracing::info!(
        reason = ?stop,
        "stopping: storing the in-flight batches and committing their offsets"
    );
    let summary = {
        let mut st = consumer.context().lock();
        st.flush_and_wait();
        st.commit(&consumer, Mode::Sync);
        st.summary.stop = Some(stop);
        std::mem::take(&mut st.summary)
    };
    // Dropping the consumer closes it: the group gets our partitions back at once instead of after
    // the session timeout. Closing runs the revocation callback once more, with nothing left to do.
    drop(consumer);
    Ok(summary)
}

/// A broker connection's state, reported by the client (refused, reset, unresolvable, all down).
fn is_connection_report(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::MessageConsumption(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::Resolve
        )
    )
}

fn sleep_unless(shutdown: &CancellationToken, total: Duration) {
    let until = Instant::now() + total;
    while !shutdown.is_cancelled() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// The consumer's context: the loop's state, shared with the callbacks librdkafka runs on this same
/// thread (inside `poll`, while the loop holds no lock).
pub(crate) struct PersistContext {
    state: Mutex<State>,
}

impl PersistContext {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock ends the thread anyway; the state is still consistent
        // enough to stop without committing anything new.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ClientContext for PersistContext {}

impl ConsumerContext for PersistContext {
    fn pre_rebalance(&self, consumer: &PersistConsumer, rebalance: &Rebalance<'_>) {
        let mut st = self.lock();
        match rebalance {
            Rebalance::Revoke(tpl) => st.on_revoke(consumer, tpl),
            Rebalance::Assign(tpl) => st.on_assign(tpl),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &PersistConsumer, _rebalance: &Rebalance<'_>) {
        self.lock().resync_pause(consumer);
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        self.lock().on_commit_result(result);
    }
}
