//! The producer side of a run: every message handed to Kafka is kept until its delivery report
//! comes, so a location is `ok` only once the broker has acknowledged it.

use std::time::Duration;

use chrono::Utc;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;

use super::summary::{LocationOutcome, LocationStatus};
use super::weatherapi::Current;
use crate::envelope::{self, Envelope, Source};

/// The producer side of a run: enqueues messages and keeps their delivery futures.
pub(crate) struct Sink {
    producer: FutureProducer,
    topic: String,
    /// (location index, delivery report) for every enqueued message.
    pending: Vec<(usize, DeliveryFuture)>,
}

impl Sink {
    pub(crate) fn new(producer: FutureProducer, topic: String) -> Self {
        Self {
            producer,
            topic,
            pending: Vec::new(),
        }
    }

    pub(crate) async fn send_current(
        &mut self,
        i: usize,
        query: &str,
        current: Current,
        attempts: u32,
        outcomes: &mut [LocationOutcome],
    ) {
        let loc = &current.location;
        let key = envelope::location_key(&loc.name, &loc.region, &loc.country);
        let envelope = Envelope::new(Source::Weatherapi, Utc::now(), query, current.payload);
        self.send(i, key, &envelope, attempts, outcomes).await;
    }

    /// Enqueues one message; the location is `ok` once enqueued, until its delivery report says
    /// otherwise.
    pub(crate) async fn send(
        &mut self,
        i: usize,
        key: String,
        envelope: &Envelope,
        attempts: u32,
        outcomes: &mut [LocationOutcome],
    ) {
        let value = envelope.to_bytes();
        loop {
            let record = FutureRecord::to(&self.topic).key(&key).payload(&value);
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.pending.push((i, delivery));
                    let o = &mut outcomes[i];
                    o.status = LocationStatus::Ok;
                    o.key = Some(key);
                    o.reason = None;
                    o.attempts = attempts;
                    return;
                }
                // The local queue drains as the broker acknowledges; wait for room.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => {
                    outcomes[i].failed(format!("cannot enqueue the message: {e}"), attempts);
                    return;
                }
            }
        }
    }

    /// Drops every message not yet acknowledged, so that [`Sink::finish`] reports them failed at once
    /// instead of after the delivery timeout: for a run that cannot deliver (its topic check failed).
    pub(crate) fn abandon(&self) {
        self.producer.purge(PurgeConfig::default().queue().inflight());
    }

    /// Awaits every delivery report; a failed delivery turns its location into a failure. Returns
    /// the numbers of delivered and of failed messages.
    pub(crate) async fn finish(self, outcomes: &mut [LocationOutcome]) -> (usize, usize) {
        let (indices, futures): (Vec<usize>, Vec<DeliveryFuture>) = self.pending.into_iter().unzip();
        let reports = futures::future::join_all(futures).await;
        // Every report is in, so nothing is lost by not waiting for the producer to close.
        crate::kafka::close_off_task(self.producer);
        let total = reports.len();
        let mut failed = 0;
        for (i, report) in indices.into_iter().zip(reports) {
            let error = match report {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => e.to_string(),
                Err(_) => "the producer was dropped before reporting".to_owned(),
            };
            failed += 1;
            let attempts = outcomes[i].attempts;
            outcomes[i].failed(format!("delivery to Kafka failed: {error}"), attempts);
        }
        (total - failed, failed)
    }
}
