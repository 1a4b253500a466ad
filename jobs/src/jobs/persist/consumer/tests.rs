//! The batching part and the composed state: where batches go, how long `poll` may block, and
//! what an acknowledgement releases.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Receiver;

use super::Settings;
use super::batching::Incoming;
use super::error::ConsumerError;
use super::state::State;
use crate::backoff::Backoff;
use crate::jobs::persist::store::{Lineage, Raw, RejectedRecord};
use crate::jobs::persist::validate::{Rejection, RejectionClass, Rules};
use crate::jobs::persist::writer::{Ack, Batch, BatchOutcome};

const BATCH_TIMEOUT: Duration = Duration::from_millis(200);

fn state() -> State {
    state_with(1).0
}

/// A state with `lanes` lanes, and the writers' ends of their queues.
fn state_with(lanes: usize) -> (State, Vec<Receiver<Batch>>) {
    let settings = Settings {
        topic: Arc::from("observations"),
        batch_size: 100,
        batch_timeout: BATCH_TIMEOUT,
        commit_interval: Duration::from_millis(100),
        until_idle: false,
        idle: Duration::from_secs(1),
        rules: Rules {
            max_value_bytes: 1024,
            max_future: chrono::Duration::hours(1),
        },
        max_buffered_bytes: 1 << 20,
        probe: false,
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
        kafka_timeout: Duration::from_secs(5),
        held: Default::default(),
    };
    let (txs, rxs) = (0..lanes).map(|_| tokio::sync::mpsc::channel(4)).unzip();
    let (_acks_tx, acks) = std::sync::mpsc::channel();
    (State::new(settings, txs, acks), rxs)
}

/// A batch of one record, opened at `opened`.
fn one_record(opened: Instant) -> Batch {
    let mut batch = records(0, 1);
    batch.opened = opened;
    batch
}

/// A batch of `n` records of `partition` (offsets 0..n), 100 bytes each.
fn records(partition: i32, n: i64) -> Batch {
    let mut batch = Batch::new();
    for offset in 0..n {
        batch.rejected.push(RejectedRecord {
            lineage: Lineage {
                topic: Arc::from("observations"),
                partition,
                offset,
            },
            raw: Raw {
                key: None,
                value: None,
            },
            rejection: Rejection {
                class: RejectionClass::EmptyValue,
                reason: "empty".into(),
            },
        });
        batch.last_offsets.insert(partition, offset);
        batch.bytes += 100;
    }
    batch
}

/// The acknowledgement of a stored `batch`, as its writer sends it.
fn stored(lane: usize, batch: Batch) -> Ack {
    Ack {
        lane,
        records: batch.len() as u64,
        bytes: batch.bytes,
        members: batch.members,
        last_offsets: batch.last_offsets,
        outcome: Ok(BatchOutcome::default()),
    }
}

/// A state with `lanes` lanes whose lane 0 has one record in flight, as a small batch through
/// `on_quiet`; the writers' ends of the queues, and that batch as its writer received it.
fn one_record_in_flight(lanes: usize) -> (State, Vec<Receiver<Batch>>, Batch) {
    let (mut st, mut rx) = state_with(lanes);
    st.batching.lanes[0].open = records(0, 1);
    st.on_quiet().unwrap();
    let batch = rx[0].try_recv().unwrap();
    (st, rx, batch)
}

#[test]
fn records_for_an_idle_writer_are_handed_over_without_blocking() {
    let mut st = state();
    let now = Instant::now();
    st.batching.lanes[0].open = one_record(now);
    assert_eq!(st.poll_timeout(now), Duration::ZERO);
}

#[test]
fn records_next_in_line_for_a_busy_writer_poll_briefly() {
    let mut st = state();
    let now = Instant::now();
    st.batching.lanes[0].open = one_record(now);
    st.batching.lanes[0].in_flight = 1;
    assert_eq!(st.poll_timeout(now), Duration::from_millis(1));
    // Past most of its timeout, the batch's remaining wait is shorter still.
    let late = now + BATCH_TIMEOUT - Duration::from_micros(300);
    assert_eq!(st.poll_timeout(late), Duration::from_micros(300));
}

#[test]
fn records_behind_a_waiting_batch_poll_at_the_busy_pace() {
    let mut st = state();
    let now = Instant::now();
    st.batching.lanes[0].open = one_record(now);
    // A second batch is already queued for the writer (an outage, or a backlog): the open one is
    // not next, and the loop does not spin at the hand-off pace.
    st.batching.lanes[0].in_flight = 2;
    assert_eq!(st.poll_timeout(now), Duration::from_millis(10));
    st.batching.lanes[0].in_flight = 1;
    st.batching.lanes[0].sealed.push_back(one_record(now));
    assert_eq!(st.poll_timeout(now), Duration::from_millis(10));
}

#[test]
fn a_due_commit_bounds_the_wait_and_an_idle_loop_polls_slowly() {
    let mut st = state();
    let now = Instant::now();
    assert_eq!(st.poll_timeout(now), Duration::from_millis(100));
    st.offsets.set_due(now + Duration::from_millis(4));
    assert_eq!(st.poll_timeout(now), Duration::from_millis(4));
    st.offsets.set_due(now + Duration::from_millis(60));
    assert_eq!(st.poll_timeout(now), Duration::from_millis(10));
}

#[test]
fn small_batches_of_idle_lanes_go_as_one_batch_to_one_writer() {
    let (mut st, mut rx) = state_with(3);
    st.batching.lanes[0].open = records(0, 1);
    st.batching.lanes[1].open = records(1, 2);
    st.on_quiet().unwrap();
    let merged = rx[0].try_recv().unwrap();
    assert!(rx[1].try_recv().is_err() && rx[2].try_recv().is_err());
    assert_eq!(merged.len(), 3);
    assert_eq!(merged.members, [(0, 100), (1, 200)]);
    assert_eq!(merged.last_offsets, BTreeMap::from([(0, 0), (1, 1)]));
    assert!(st.batching.merged_in_flight() && st.batching.lanes[0].merged && st.batching.lanes[1].merged);
    assert_eq!(
        (st.batching.lanes[0].in_flight, st.batching.lanes[1].in_flight),
        (1, 1)
    );
    assert_eq!(st.batching.lanes[1].in_flight_bytes, 200);
    assert!(st.batching.lanes[0].open.is_empty() && st.batching.lanes[1].open.is_empty());
}

#[test]
fn records_of_an_idle_lane_wait_for_the_small_batch_in_flight_then_go() {
    let (mut st, mut rx, first) = one_record_in_flight(3);
    let now = Instant::now();
    // Lane 2's writer is idle, but its record waits for the batch in flight, polling briefly.
    st.batching.lanes[2].open = records(2, 1);
    st.on_quiet().unwrap();
    assert!(rx[2].try_recv().is_err() && rx[0].try_recv().is_err());
    assert_eq!(st.poll_timeout(now), Duration::from_millis(1));
    // Stored: both lanes are free, the offsets committable, and the waiting record goes.
    st.on_ack(stored(0, first));
    assert!(!st.batching.merged_in_flight() && !st.batching.lanes[0].merged);
    assert_eq!(
        (
            st.batching.lanes[0].in_flight,
            st.batching.lanes[0].in_flight_bytes
        ),
        (0, 0)
    );
    assert_eq!(st.offsets.committable(0), Some(1));
    assert_eq!(st.poll_timeout(now), Duration::ZERO);
    st.on_quiet().unwrap();
    assert_eq!(rx[2].try_recv().unwrap().members, [(2, 100)]);
}

#[test]
fn more_records_than_a_small_batch_go_lane_by_lane() {
    let (mut st, mut rx) = state_with(2);
    st.batching.lanes[0].open = records(0, 5);
    st.batching.lanes[1].open = records(1, 4);
    st.on_quiet().unwrap();
    st.batching.hand_off().unwrap();
    let (a, b) = (rx[0].try_recv().unwrap(), rx[1].try_recv().unwrap());
    assert_eq!((a.len(), b.len()), (5, 4));
    assert!(a.members.is_empty() && b.members.is_empty() && !st.batching.merged_in_flight());
}

#[test]
fn a_lane_in_the_merged_batch_sends_nothing_more_until_it_is_stored() {
    let (mut st, mut rx, merged) = one_record_in_flight(2);
    let now = Instant::now();
    // Its next batch fills up meanwhile: it must not overtake the merged one on another writer.
    st.batching.lanes[0].sealed.push_back(records(0, 3));
    st.batching.hand_off().unwrap();
    assert!(rx[0].try_recv().is_err());
    assert_eq!(st.poll_timeout(now), Duration::from_millis(1));
    st.on_ack(stored(0, merged));
    st.batching.hand_off().unwrap();
    assert_eq!(rx[0].try_recv().unwrap().len(), 3);
}

/// A record of `partition` at `offset` with no value (rejected as empty), as read from Kafka.
fn incoming(partition: i32, offset: i64) -> Incoming<'static> {
    Incoming {
        partition,
        offset,
        key: Some(b"key"),
        value: None,
        kafka_ms: None,
    }
}

#[test]
fn a_partition_s_records_go_to_its_lane_and_a_full_batch_is_sealed() {
    let (mut st, _rx) = state_with(2);
    let now = Instant::now();
    for offset in 0..100 {
        st.batching.add(incoming(3, offset), now);
    }
    st.batching.add(incoming(3, 100), now);
    let lane = &st.batching.lanes[1];
    assert!(st.batching.lanes[0].open.is_empty());
    assert_eq!(lane.sealed.len(), 1, "batch_size is 100");
    assert_eq!(lane.sealed[0].rejected.len(), 100);
    assert_eq!(lane.sealed[0].last_offsets, BTreeMap::from([(3, 99)]));
    assert_eq!((lane.open.len(), lane.waiting()), (1, 100));
    assert!(st.batching.buffered_bytes() > 101 * 3);
}

#[test]
fn a_batch_is_sealed_after_its_timeout_and_released_by_its_acknowledgement() {
    let (mut st, mut rx) = state_with(1);
    let now = Instant::now();
    st.batching.add(incoming(0, 7), now);
    st.batching.seal_timed_out(now + BATCH_TIMEOUT / 2);
    assert!(st.batching.lanes[0].sealed.is_empty());
    st.batching.seal_timed_out(now + BATCH_TIMEOUT);
    st.batching.hand_off().unwrap();
    let batch = rx[0].try_recv().unwrap();
    assert!(st.batching.in_flight() && st.batching.busy());
    st.on_ack(stored(0, batch));
    assert!(!st.batching.in_flight() && !st.batching.busy());
    assert_eq!(st.batching.buffered_bytes(), 0);
    assert_eq!(st.offsets.committable(0), Some(8));
}

#[test]
fn a_writer_gone_is_reported_as_such() {
    let (mut st, rx) = state_with(1);
    drop(rx);
    st.batching.add(incoming(0, 0), Instant::now());
    st.batching.lanes[0].seal();
    assert!(matches!(st.batching.hand_off(), Err(ConsumerError::WriterGone)));
}
