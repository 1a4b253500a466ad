//! The records a batch is made of: where each came from, its raw bytes, and what validation made
//! of it.

use std::sync::Arc;

use bytes::Bytes;

use crate::jobs::persist::validate::{Observation, Rejection};

/// Where a record was read from; stored as lineage on both tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    /// Kafka topic.
    pub topic: Arc<str>,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
}

/// The record as it arrived, kept so that a refusal can be quarantined byte for byte. The consumer
/// copies the bytes into shared chunks (`consumer::arena`), so a clone is a reference count.
#[derive(Debug, Clone, Default)]
pub struct Raw {
    /// The message key.
    pub key: Option<Bytes>,
    /// The message value.
    pub value: Option<Bytes>,
}

/// A record that passed validation.
#[derive(Debug, Clone)]
pub struct ValidRecord {
    /// Where it came from.
    pub lineage: Lineage,
    /// The raw message, in case the database refuses the row.
    pub raw: Raw,
    /// The typed observation.
    pub observation: Observation,
}

/// A record refused by validation or by the database.
#[derive(Debug, Clone)]
pub struct RejectedRecord {
    /// Where it came from.
    pub lineage: Lineage,
    /// The complete raw message.
    pub raw: Raw,
    /// Why it was refused.
    pub rejection: Rejection,
}

#[cfg(test)]
pub(super) mod sample {
    use chrono::DateTime;

    use super::*;

    /// A valid record of `key` observed at `at` (seconds), read at `offset`.
    pub(crate) fn record(key: &str, at: i64, offset: i64) -> ValidRecord {
        let observed_at = DateTime::from_timestamp(at, 0).unwrap();
        ValidRecord {
            lineage: Lineage {
                topic: "t".into(),
                partition: 0,
                offset,
            },
            raw: Raw::default(),
            observation: Observation {
                location_key: key.into(),
                location_name: key.into(),
                region: String::new(),
                country: "c".into(),
                lat: 0.0,
                lon: 0.0,
                observed_at,
                temp_c: 1.0,
                feelslike_c: None,
                wind_kph: 1.0,
                gust_kph: None,
                pressure_mb: None,
                precip_mm: None,
                vis_km: None,
                uv: None,
                wind_degree: None,
                humidity: None,
                cloud: None,
                wind_dir: None,
                condition_text: None,
                condition_code: None,
                is_day: None,
                source: crate::envelope::Source::Simulated,
                fetched_at: observed_at,
            },
        }
    }
}
