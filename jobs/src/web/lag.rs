//! The persist group's consumer lag, sampled every few seconds in the background (by
//! [`super::readiness::watch`], on the process's one long-lived Kafka client): asking Kafka takes a
//! round trip per partition, too slow (and, with the broker down, too long) to do per request.
//! Status, the dashboard and `/metrics` read the latest sample.

use std::sync::RwLock;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::kafka::PartitionLag;

/// How often the lag is sampled.
pub(crate) const EVERY: Duration = Duration::from_secs(5);

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

    /// Keeps `sample` as the latest, and sets the lag gauges from it.
    pub(crate) fn record(&self, sample: LagSample) {
        if let LagSample::Partitions(parts) = &sample {
            for p in parts {
                metrics::gauge!("weatherflow_persist_consumer_lag", "partition" => p.partition.to_string())
                    .set(p.lag() as f64);
            }
        }
        *self.latest.write().unwrap_or_else(|p| p.into_inner()) = (sample, Some(Utc::now()));
    }
}
