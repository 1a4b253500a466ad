//! How long the consumer loop's `poll` may block, from the lanes' and the commits' state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Settings;
use super::state::State;
use crate::backoff::Backoff;
use crate::jobs::persist::store::{Lineage, Raw, RejectedRecord};
use crate::jobs::persist::validate::{Rejection, RejectionClass, Rules};
use crate::jobs::persist::writer::Batch;

const BATCH_TIMEOUT: Duration = Duration::from_millis(200);

fn state() -> State {
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
    };
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let (_acks_tx, acks) = std::sync::mpsc::channel();
    State::new(settings, vec![tx], acks)
}

/// A batch of one record, opened at `opened`.
fn one_record(opened: Instant) -> Batch {
    let mut batch = Batch::new();
    batch.rejected.push(RejectedRecord {
        lineage: Lineage {
            topic: Arc::from("observations"),
            partition: 0,
            offset: 7,
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
    batch.opened = opened;
    batch
}

#[test]
fn records_for_an_idle_writer_are_handed_over_without_blocking() {
    let mut st = state();
    let now = Instant::now();
    st.lanes[0].open = one_record(now);
    assert_eq!(st.poll_timeout(now), Duration::ZERO);
}

#[test]
fn records_next_in_line_for_a_busy_writer_poll_briefly() {
    let mut st = state();
    let now = Instant::now();
    st.lanes[0].open = one_record(now);
    st.lanes[0].in_flight = 1;
    assert_eq!(st.poll_timeout(now), Duration::from_millis(1));
    // Past most of its timeout, the batch's remaining wait is shorter still.
    let late = now + BATCH_TIMEOUT - Duration::from_micros(300);
    assert_eq!(st.poll_timeout(late), Duration::from_micros(300));
}

#[test]
fn records_behind_a_waiting_batch_poll_at_the_busy_pace() {
    let mut st = state();
    let now = Instant::now();
    st.lanes[0].open = one_record(now);
    // A second batch is already queued for the writer (an outage, or a backlog): the open one is
    // not next, and the loop does not spin at the hand-off pace.
    st.lanes[0].in_flight = 2;
    assert_eq!(st.poll_timeout(now), Duration::from_millis(10));
    st.lanes[0].in_flight = 1;
    st.lanes[0].sealed.push_back(one_record(now));
    assert_eq!(st.poll_timeout(now), Duration::from_millis(10));
}

#[test]
fn a_due_commit_bounds_the_wait_and_an_idle_loop_polls_slowly() {
    let mut st = state();
    let now = Instant::now();
    assert_eq!(st.poll_timeout(now), Duration::from_millis(100));
    st.commit_due = true;
    st.next_commit_at = now + Duration::from_millis(4);
    assert_eq!(st.poll_timeout(now), Duration::from_millis(4));
    st.next_commit_at = now + Duration::from_millis(60);
    assert_eq!(st.poll_timeout(now), Duration::from_millis(10));
}
