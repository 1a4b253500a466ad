//! Small batches of several writers' lanes, written as one transaction.
//!
//! At a steady rate each lane's batches are one or two records, and each would be a transaction of
//! its own: at 2,000 msg/s three writers commit about 1,400 transactions a second, and on a host
//! whose cores are nearly busy that CPU lengthens every stage of the latency (one writer against
//! three: `docs/performance.md`). So at most one small batch is in flight at a time. While it is,
//! the records of idle lanes wait, and when it is acknowledged they go together, as one batch, to
//! one of those lanes' writers. A lane still has at most one batch in flight, so each partition's
//! batches are stored, and its offsets committed, in order. Once more than
//! [`SMALL_BATCH_ROWS`] records wait, the lanes go to their own writers in parallel, as a backlog
//! needs.
//!
//! These are functions of the lanes, called by [`super::batching::Batching`].

use tokio::sync::mpsc::error::TrySendError;

use super::error::ConsumerError;
use super::lane::Lane;
use crate::jobs::persist::store::SMALL_BATCH_ROWS;
use crate::jobs::persist::writer::Batch;

/// The lanes whose records can go at once (`Lane::ready`).
fn ready_lanes(lanes: &[Lane]) -> impl Iterator<Item = usize> + '_ {
    (0..lanes.len()).filter(|&i| lanes[i].ready())
}

/// A merged batch is in flight: some lane's records are in it. There is at most one.
pub(super) fn in_flight(lanes: &[Lane]) -> bool {
    lanes.iter().any(|l| l.merged)
}

/// Records of idle lanes wait for the small batch in flight, to go when it is acknowledged.
/// Called on every turn of the loop, so it counts without collecting.
pub(super) fn holding(lanes: &[Lane]) -> bool {
    if !in_flight(lanes) {
        return false;
    }
    let records: usize = ready_lanes(lanes).map(|i| lanes[i].open.len()).sum();
    records > 0 && records <= SMALL_BATCH_ROWS
}

/// Nothing more to read right now: idle writers get what there is, without waiting for the batch
/// timeout; a few records as one merged batch, more lane by lane (sealed, for the hand-off).
pub(super) fn on_quiet(lanes: &mut [Lane]) -> Result<(), ConsumerError> {
    let ready: Vec<usize> = ready_lanes(lanes).collect();
    let records: usize = ready.iter().map(|&i| lanes[i].open.len()).sum();
    if ready.is_empty() || (records <= SMALL_BATCH_ROWS && in_flight(lanes)) {
        return Ok(());
    }
    // An idle writer's queue is empty, but it is checked: only this thread sends.
    let target = ready[0];
    let has_room = lanes[target].tx.as_ref().is_some_and(|tx| tx.capacity() > 0);
    if records > SMALL_BATCH_ROWS || !has_room {
        for &i in &ready {
            lanes[i].seal();
        }
        return Ok(());
    }
    send_merged(lanes, target, &ready)
}

/// The open batches of `members`, as one batch to `target`'s writer.
fn send_merged(lanes: &mut [Lane], target: usize, members: &[usize]) -> Result<(), ConsumerError> {
    let mut merged = Batch::new();
    for &i in members {
        let part = lanes[i].take_open();
        merged.opened = merged.opened.min(part.opened);
        merged.members.push((i, part.bytes));
        merged.bytes += part.bytes;
        merged.valid.extend(part.valid);
        merged.rejected.extend(part.rejected);
        merged.last_offsets.extend(part.last_offsets);
        merged.stamps.absorb(part.stamps);
    }
    merged.stamps.handed();
    let Some(tx) = lanes[target].tx.clone() else {
        return Err(ConsumerError::WriterGone);
    };
    let sent = merged.members.clone();
    match tx.try_send(merged) {
        Ok(()) => {
            for (i, bytes) in sent {
                lanes[i].sent(bytes);
                lanes[i].merged = true;
            }
            Ok(())
        }
        Err(TrySendError::Closed(_)) => {
            lanes[target].tx = None;
            Err(ConsumerError::WriterGone)
        }
        Err(TrySendError::Full(_)) => Err(ConsumerError::WriterQueueFull),
    }
}
