//! The persist consumer group's lag on the observations topic, as `weatherflow status`, the web
//! faces' sampler and the tests read it.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::client::base_config;
use crate::config::KafkaConfig;

/// One partition of the observations topic, seen from the persist consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Partition id.
    pub partition: i32,
    /// The group's committed offset; `None` when it never committed on this partition.
    pub committed: Option<i64>,
    /// The oldest offset still on the partition.
    pub low: i64,
    /// The offset the next message will get.
    pub high: i64,
}

impl PartitionLag {
    /// Messages the group has still to consume (from the oldest kept one when it never committed).
    pub fn lag(&self) -> i64 {
        (self.high - self.committed.unwrap_or(self.low).max(self.low)).max(0)
    }
}

/// The persist group's lag on each partition of the observations topic; `None` when the topic does not
/// exist yet. Blocking: run it on a blocking thread. Metadata is asked for all topics, because asking
/// for one by name may create it on brokers with auto-creation on.
pub fn consumer_lag(cfg: &KafkaConfig) -> Result<Option<Vec<PartitionLag>>, KafkaError> {
    let consumer = lag_client(cfg)?;
    consumer_lag_on(&consumer, cfg, Duration::from_secs(cfg.request_timeout_secs))
}

/// A client that can read the persist group's committed offsets without joining the group: it never
/// subscribes, so it can live as long as the process (the web faces keep one, see `web::readiness`).
pub fn lag_client(cfg: &KafkaConfig) -> Result<BaseConsumer, KafkaError> {
    base_config(cfg)
        .set("group.id", &cfg.consumer_group)
        .set("enable.auto.commit", "false")
        .create()
}

/// [`consumer_lag`] on a client of [`lag_client`], each request bounded by `timeout`. Blocking.
pub fn consumer_lag_on(
    consumer: &BaseConsumer,
    cfg: &KafkaConfig,
    timeout: Duration,
) -> Result<Option<Vec<PartitionLag>>, KafkaError> {
    let md = consumer.fetch_metadata(None, timeout)?;
    let Some(topic) = md.topics().iter().find(|t| t.name() == cfg.observations_topic) else {
        return Ok(None);
    };
    let mut tpl = TopicPartitionList::new();
    for p in topic.partitions() {
        tpl.add_partition(topic.name(), p.id());
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let mut parts = Vec::new();
    for elem in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(topic.name(), elem.partition(), timeout)?;
        let committed = match elem.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
        parts.push(PartitionLag {
            partition: elem.partition(),
            committed,
            low,
            high,
        });
    }
    parts.sort_by_key(|p| p.partition);
    Ok(Some(parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_commit_or_the_oldest_message() {
        let p = |committed, low, high| PartitionLag {
            partition: 0,
            committed,
            low,
            high,
        };
        assert_eq!(p(Some(7), 0, 10).lag(), 3);
        assert_eq!(p(None, 4, 10).lag(), 6);
        // A commit older than retention keeps counts from what is still there.
        assert_eq!(p(Some(1), 4, 10).lag(), 6);
    }
}
