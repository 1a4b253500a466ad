//! Records as the persist job hands them to its store, and a fast retry policy, for tests that call
//! the store directly.

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use weatherflow::backoff::Backoff;
use weatherflow::envelope::Source;
use weatherflow::jobs::persist::store::{Lineage, Raw, Retry, ValidRecord};
use weatherflow::jobs::persist::validate::Observation;

/// An observation of `key` at `at`, as the persist job would store it.
pub fn record(key: &str, at: DateTime<Utc>, offset: i64) -> ValidRecord {
    ValidRecord {
        lineage: Lineage {
            topic: "weather.observations".into(),
            partition: 0,
            offset,
        },
        raw: Raw::default(),
        observation: Observation {
            location_key: key.into(),
            location_name: key.into(),
            region: String::new(),
            country: "land".into(),
            lat: 0.0,
            lon: 0.0,
            observed_at: at,
            temp_c: 99.0,
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
            source: Source::Simulated,
            fetched_at: at,
        },
    }
}

/// A retry policy for tests: outages retried every 50–200 ms, never stopped.
pub fn retry() -> Retry {
    Retry::new(
        Backoff::new(
            std::time::Duration::from_millis(50),
            std::time::Duration::from_millis(200),
        ),
        CancellationToken::new(),
    )
}
