//! The persist group's consumer lag, sampled every few seconds in the background: asking Kafka takes
//! a metadata round trip per partition, too slow (and, with the broker down, too long) to do per
//! request. Status, the dashboard and `/metrics` read the latest sample.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::kafka::{PartitionLag, consumer_lag};

/// How often the lag is sampled.
const EVERY: Duration = Duration::from_secs(5);

/// One sample.
#[derive(Debug, Clone)]
pub enum LagSample {
    /// No sample yet (the first takes a moment).
    Pending,
    /// The observations topic does not exist yet.
    NoTopic,
    /// Per-partition lag.
    Partitions(Vec<PartitionLag>),
    /// Kafka did not answer.
    Unreachable(String),
}

/// The latest sample and when it was taken.
#[derive(Debug)]
pub struct LagSampler {
    /// The sample and its time.
    latest: RwLock<(LagSample, Option<DateTime<Utc>>)>,
}

impl Default for LagSampler {
    fn default() -> Self {
        Self {
            latest: RwLock::new((LagSample::Pending, None)),
        }
    }
}

impl LagSampler {
    /// The latest sample and its time.
    pub fn latest(&self) -> (LagSample, Option<DateTime<Utc>>) {
        self.latest.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, sample: LagSample) {
        *self.latest.write().unwrap_or_else(|p| p.into_inner()) = (sample, Some(Utc::now()));
    }
}

/// Samples until `shutdown`.
pub async fn sample(kafka: KafkaConfig, into: Arc<LagSampler>, shutdown: CancellationToken) {
    let mut kafka = kafka;
    // A sample must not outlive its period by much when the broker is down.
    kafka.request_timeout_secs = kafka.request_timeout_secs.min(4);
    loop {
        let cfg = kafka.clone();
        let sample = match tokio::task::spawn_blocking(move || consumer_lag(&cfg)).await {
            Ok(Ok(Some(parts))) => LagSample::Partitions(parts),
            Ok(Ok(None)) => LagSample::NoTopic,
            Ok(Err(e)) => LagSample::Unreachable(e.to_string()),
            Err(e) => LagSample::Unreachable(e.to_string()),
        };
        if let LagSample::Partitions(parts) = &sample {
            for p in parts {
                metrics::gauge!("weatherflow_persist_consumer_lag", "partition" => p.partition.to_string())
                    .set(p.lag() as f64);
            }
        }
        into.set(sample);
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {},
            _ = shutdown.cancelled() => return,
        }
    }
}
