//! Which offsets a replay reads: per partition, a half-open range `[from, to)` fixed before the
//! first record is read, so that a replay beside a live producer ends.
//!
//! The start is the first offset whose timestamp is at or after `--from-time` (the broker's time
//! index, `offsets_for_times`) or the offset given; the end is the high watermark when the replay
//! starts, or, with `--to-time`, the first offset at or after that time if it comes earlier. Kafka
//! timestamps are the producer's (`CreateTime`): the fetch job stamps a record when it produces it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::TopicPartitionList;

use super::{ReplayFrom, ReplayRequest};
use crate::config::KafkaConfig;
use crate::kafka::KafkaSetupError;

/// Why the ranges could not be worked out.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    /// The broker could not be reached or refused the client.
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    /// The observations topic does not exist: nothing to replay.
    #[error("topic {0} does not exist")]
    NoTopic(String),
    /// A partition named on the command line is not one of the topic's.
    #[error("topic {topic} has no partition {partition} (it has {count})")]
    NoPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
        /// How many partitions the topic has.
        count: usize,
    },
    /// `--to-time` is not after `--from-time`.
    #[error("--to-time {to} is not after --from-time {from}")]
    Empty {
        /// `--from-time`.
        from: DateTime<Utc>,
        /// `--to-time`.
        to: DateTime<Utc>,
    },
    /// A watermark or time-index request failed.
    #[error("{what}: {source}")]
    Kafka {
        /// The request.
        what: String,
        /// The client's error.
        source: KafkaError,
    },
}

/// The offsets of one partition a replay reads: `from` up to, not including, `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    /// The partition.
    pub partition: i32,
    /// First offset read.
    pub from: i64,
    /// First offset not read.
    pub to: i64,
}

impl PartitionRange {
    /// Records in the range (offsets, counting any the log no longer holds).
    pub fn len(&self) -> u64 {
        (self.to - self.from).max(0) as u64
    }

    /// Whether the range holds nothing to read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a time-index lookup landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// The first offset at or after the time.
    At(i64),
    /// No record at or after the time: the end of the partition.
    End,
}

/// The ranges `req` asks for on `topic`, one per selected partition, in partition order. Blocking
/// (metadata, watermarks, time index): run it on a blocking thread.
pub(crate) fn plan(
    cfg: &KafkaConfig,
    topic: &str,
    req: &ReplayRequest,
) -> Result<Vec<PartitionRange>, RangeError> {
    if let (ReplayFrom::Time(from), Some(to)) = (&req.from, req.to_time)
        && to <= *from
    {
        return Err(RangeError::Empty { from: *from, to });
    }
    // The probe names a refused password or certificate instead of timing out.
    let md = crate::kafka::probe(cfg)?;
    let Some(meta) = md.topics().iter().find(|t| t.name() == topic) else {
        return Err(RangeError::NoTopic(topic.to_owned()));
    };
    let all: BTreeSet<i32> = meta.partitions().iter().map(|p| p.id()).collect();
    let selected = select(topic, &all, req)?;
    let client: BaseConsumer = crate::kafka::base_config(cfg)
        .create()
        .map_err(|e| crate::kafka::creation_error(cfg, e))?;
    let timeout = Duration::from_secs(cfg.request_timeout_secs);
    let kafka = |what: &str| {
        let what = what.to_owned();
        move |source| RangeError::Kafka { what, source }
    };

    let mut watermarks = BTreeMap::new();
    for &p in &selected {
        let marks = client
            .fetch_watermarks(topic, p, timeout)
            .map_err(kafka(&format!("reading the watermarks of {topic}/{p}")))?;
        watermarks.insert(p, marks);
    }
    let starts: BTreeMap<i32, Found> = match &req.from {
        ReplayFrom::Time(at) => lookup(&client, topic, &selected, *at, timeout)
            .map_err(kafka("looking up --from-time in the time index"))?,
        ReplayFrom::Offsets(offsets) => offsets.iter().map(|(&p, &o)| (p, Found::At(o))).collect(),
    };
    let ends = match req.to_time {
        Some(at) => Some(
            lookup(&client, topic, &selected, at, timeout)
                .map_err(kafka("looking up --to-time in the time index"))?,
        ),
        None => None,
    };
    crate::kafka::close_off_task(client);

    let mut ranges = Vec::with_capacity(selected.len());
    for p in selected {
        let (low, high) = watermarks[&p];
        let start = starts.get(&p).copied().unwrap_or(Found::End);
        let end = ends.as_ref().map(|e| e.get(&p).copied().unwrap_or(Found::End));
        let range = resolve(p, low, high, start, end);
        if let Found::At(asked) = start
            && asked < low
        {
            tracing::warn!(
                partition = p,
                asked,
                earliest = low,
                "offsets before the partition's earliest are gone (retention); replaying from the earliest"
            );
        }
        ranges.push(range);
    }
    Ok(ranges)
}

/// The partitions to read: all of the topic's, or those named (by `--partition` and by
/// `--from-offset P:O`), each of which must exist.
fn select(topic: &str, all: &BTreeSet<i32>, req: &ReplayRequest) -> Result<BTreeSet<i32>, RangeError> {
    let mut named: BTreeSet<i32> = req.partitions.clone();
    if let ReplayFrom::Offsets(offsets) = &req.from {
        named.extend(offsets.keys());
    }
    if let Some(&partition) = named.iter().find(|p| !all.contains(p)) {
        return Err(RangeError::NoPartition {
            topic: topic.to_owned(),
            partition,
            count: all.len(),
        });
    }
    Ok(if named.is_empty() { all.clone() } else { named })
}

/// The first offset at or after `at` in each partition, from the broker's time index.
fn lookup(
    client: &BaseConsumer,
    topic: &str,
    partitions: &BTreeSet<i32>,
    at: DateTime<Utc>,
    timeout: Duration,
) -> Result<BTreeMap<i32, Found>, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(at.timestamp_millis()))?;
    }
    let found = client.offsets_for_times(tpl, timeout)?;
    let mut out = BTreeMap::new();
    for elem in found.elements() {
        elem.error()?;
        let offset = match elem.offset() {
            Offset::Offset(o) if o >= 0 => Found::At(o),
            _ => Found::End,
        };
        out.insert(elem.partition(), offset);
    }
    Ok(out)
}

/// One partition's range from its watermarks `[low, high)` and the lookups. Everything is clamped
/// into the watermarks, so a start past the end, or an end before the start, is an empty range.
fn resolve(partition: i32, low: i64, high: i64, start: Found, end: Option<Found>) -> PartitionRange {
    let from = match start {
        Found::At(o) => o.clamp(low, high),
        Found::End => high,
    };
    let to = match end {
        Some(Found::At(o)) => o.clamp(from, high),
        Some(Found::End) | None => high,
    };
    PartitionRange { partition, from, to }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(from: i64, to: i64) -> PartitionRange {
        PartitionRange {
            partition: 0,
            from,
            to,
        }
    }

    #[test]
    fn the_end_is_the_high_watermark_unless_to_time_comes_first() {
        assert_eq!(resolve(0, 0, 100, Found::At(40), None), range(40, 100));
        assert_eq!(
            resolve(0, 0, 100, Found::At(40), Some(Found::At(70))),
            range(40, 70)
        );
        // No record at or after --to-time: up to the end captured at start.
        assert_eq!(
            resolve(0, 0, 100, Found::At(40), Some(Found::End)),
            range(40, 100)
        );
    }

    #[test]
    fn nothing_in_range_is_an_empty_range() {
        // No record at or after --from-time.
        let r = resolve(0, 10, 100, Found::End, None);
        assert_eq!(r, range(100, 100));
        assert!(r.is_empty());
        // --to-time lands before --from-time's offset (timestamps out of order in the log).
        assert_eq!(
            resolve(0, 0, 100, Found::At(60), Some(Found::At(50))),
            range(60, 60)
        );
        // An empty partition.
        assert!(resolve(0, 0, 0, Found::At(0), None).is_empty());
    }

    #[test]
    fn offsets_outside_the_log_are_clamped_into_it() {
        // Deleted by retention: from the earliest still held.
        assert_eq!(resolve(0, 30, 100, Found::At(5), None), range(30, 100));
        assert_eq!(resolve(0, 30, 100, Found::At(500), None), range(100, 100));
        assert_eq!(range(30, 100).len(), 70);
    }

    #[test]
    fn named_partitions_must_exist() {
        let all: BTreeSet<i32> = [0, 1, 2].into();
        let mut req = ReplayRequest {
            from: ReplayFrom::Time(Utc::now()),
            to_time: None,
            partitions: BTreeSet::new(),
        };
        assert_eq!(select("t", &all, &req).unwrap(), all);
        req.partitions = [1].into();
        assert_eq!(select("t", &all, &req).unwrap(), [1].into());
        req.partitions = [3].into();
        assert!(matches!(
            select("t", &all, &req),
            Err(RangeError::NoPartition { partition: 3, .. })
        ));
        req.partitions.clear();
        req.from = ReplayFrom::Offsets([(2, 10)].into());
        assert_eq!(select("t", &all, &req).unwrap(), [2].into());
    }
}
