//! The dead-letter topic: every refused record, byte for byte, with headers saying where it came from
//! and why it was refused.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::{KafkaConfig, PersistConfig};
use crate::jobs::persist::store::{Interrupted, Outage, RejectedRecord, Retry};
use crate::kafka::{self, KafkaSetupError};
use crate::outages::Cause;

/// Header names on dead-letter messages.
pub(crate) mod headers {
    /// The topic the record was read from.
    pub(crate) const ORIGINAL_TOPIC: &str = "original_topic";
    /// Its partition (decimal text).
    pub(crate) const ORIGINAL_PARTITION: &str = "original_partition";
    /// Its offset (decimal text).
    pub(crate) const ORIGINAL_OFFSET: &str = "original_offset";
    /// The machine-readable class, e.g. `out_of_range`.
    pub(crate) const ERROR_CLASS: &str = "error_class";
    /// The human-readable reason.
    pub(crate) const REASON: &str = "reason";
    /// Present (value `true`) when the value was too large for the dead-letter topic and was left
    /// out; the complete value is in rejected_records.
    pub(crate) const PAYLOAD_OMITTED: &str = "payload_omitted";
}

/// Creates the dead-letter topic unless it exists, with `max.message.bytes` raised so that any
/// record the observations topic accepted fits.
pub(crate) async fn ensure_topic(k: &KafkaConfig, p: &PersistConfig) -> Result<(), KafkaSetupError> {
    let max = p.dlq_max_message_bytes.to_string();
    kafka::ensure_topic_with(k, &k.dlq_topic, k.partitions, &[("max.message.bytes", &max)]).await
}

/// The dead-letter producer's `message.timeout.ms`: `persist.dlq_unavailable_secs`, between 1 and 30 s.
fn message_timeout_ms(dlq_unavailable_secs: u64) -> u64 {
    dlq_unavailable_secs.clamp(1, 30) * 1000
}

/// The dead-letter producer.
pub(crate) struct Dlq {
    producer: FutureProducer,
    topic: String,
}

impl Dlq {
    /// An idempotent, `acks=all` producer like [`crate::kafka::producer`], with `message.max.bytes`
    /// raised to the dead-letter topic's limit.
    pub(crate) fn new(k: &KafkaConfig, p: &PersistConfig) -> Result<Self, KafkaSetupError> {
        let producer = kafka::producer_config(k)
            .set("message.max.bytes", p.dlq_max_message_bytes.to_string())
            // Bounded, so that an outage surfaces as an error we log and retry with our backoff; no
            // longer than persist.dlq_unavailable_secs, since a send to a deleted topic fails only
            // at this timeout and readiness cannot say so before.
            .set(
                "message.timeout.ms",
                message_timeout_ms(p.dlq_unavailable_secs).to_string(),
            )
            .create()
            .map_err(KafkaSetupError::Client)?;
        Ok(Self {
            producer,
            topic: k.dlq_topic.clone(),
        })
    }

    /// Sends every record and waits for every delivery report. Failed sends are retried with
    /// backoff until they succeed or the job is stopped.
    pub(crate) async fn send_all(
        &self,
        records: &[RejectedRecord],
        retry: &Retry,
    ) -> Result<u64, Interrupted> {
        let mut todo: Vec<(&RejectedRecord, bool)> = records.iter().map(|r| (r, false)).collect();
        let mut outage = Outage::dead_letter(retry, &self.topic);
        while !todo.is_empty() {
            let results = join_all(todo.iter().map(|(r, omit)| self.send(r, *omit))).await;
            let mut failed = Vec::new();
            let mut last_error = None;
            for ((record, omit), result) in todo.into_iter().zip(results) {
                match result {
                    Ok(()) => {}
                    Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) if !omit => {
                        tracing::warn!(
                            offset = record.lineage.offset,
                            "record too large for the dead-letter topic; sending it without its value"
                        );
                        failed.push((record, true));
                    }
                    Err(e) => {
                        last_error = Some(e);
                        failed.push((record, omit));
                    }
                }
            }
            todo = failed;
            if let Some(e) = last_error {
                let cause = Cause {
                    class: "kafka".into(),
                    detail: format!("dead-letter topic {}: {e}", self.topic),
                };
                outage.wait(cause, todo.len()).await?;
            }
        }
        let retries = u64::from(outage.attempts());
        outage.end();
        Ok(retries)
    }

    async fn send(&self, r: &RejectedRecord, omit_value: bool) -> Result<(), KafkaError> {
        let partition = r.lineage.partition.to_string();
        let offset = r.lineage.offset.to_string();
        let mut hdrs = OwnedHeaders::new_with_capacity(6)
            .insert(Header {
                key: headers::ORIGINAL_TOPIC,
                value: Some(&*r.lineage.topic),
            })
            .insert(Header {
                key: headers::ORIGINAL_PARTITION,
                value: Some(&partition),
            })
            .insert(Header {
                key: headers::ORIGINAL_OFFSET,
                value: Some(&offset),
            })
            .insert(Header {
                key: headers::ERROR_CLASS,
                value: Some(r.rejection.class.as_str()),
            })
            .insert(Header {
                key: headers::REASON,
                value: Some(&r.rejection.reason),
            });
        if omit_value {
            hdrs = hdrs.insert(Header {
                key: headers::PAYLOAD_OMITTED,
                value: Some("true"),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(hdrs);
        if let Some(key) = &r.raw.key {
            record = record.key(&key[..]);
        }
        if let (Some(value), false) = (&r.raw.value, omit_value) {
            record = record.payload(&value[..]);
        }
        self.producer
            .send(record, Duration::from_secs(5))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_send_fails_no_later_than_readiness_should_say_so() {
        assert_eq!(super::message_timeout_ms(5), 5_000);
        assert_eq!(super::message_timeout_ms(30), 30_000);
        assert_eq!(super::message_timeout_ms(600), 30_000);
        assert_eq!(super::message_timeout_ms(0), 1_000);
    }
}
