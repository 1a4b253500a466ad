//! The typed observation validation produces, and the wire shape of the payload it is read from.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::envelope::Source;

/// A validated observation: every required field present, every measurement in range. The Kafka
/// lineage is added by the caller, which knows where the record came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Normalized `name|region|country` (see [`crate::envelope::location_key`]).
    pub location_key: String,
    /// `location.name`.
    pub location_name: String,
    /// `location.region` (may be empty).
    pub region: String,
    /// `location.country`.
    pub country: String,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// From `current.last_updated_epoch`.
    pub observed_at: DateTime<Utc>,
    /// Temperature, °C.
    pub temp_c: f64,
    /// Feels-like temperature, °C.
    pub feelslike_c: Option<f64>,
    /// Wind speed, km/h.
    pub wind_kph: f64,
    /// Gust speed, km/h.
    pub gust_kph: Option<f64>,
    /// Pressure, mb.
    pub pressure_mb: Option<f64>,
    /// Precipitation, mm.
    pub precip_mm: Option<f64>,
    /// Visibility, km.
    pub vis_km: Option<f64>,
    /// UV index.
    pub uv: Option<f64>,
    /// Wind direction, degrees.
    pub wind_degree: Option<i32>,
    /// Relative humidity, %.
    pub humidity: Option<i32>,
    /// Cloud cover, %.
    pub cloud: Option<i32>,
    /// 16-point compass direction.
    pub wind_dir: Option<String>,
    /// Condition text.
    pub condition_text: Option<String>,
    /// WeatherAPI condition code.
    pub condition_code: Option<i32>,
    /// Day or night.
    pub is_day: Option<bool>,
    /// Where the payload came from.
    pub source: Source,
    /// When the fetch job received it.
    pub fetched_at: DateTime<Utc>,
}

/// A whole message in one pass: the [`crate::envelope::Envelope`]'s fields, with its payload read as
/// a [`CurrentResponse`] straight away instead of kept raw and parsed again: the envelope's payload
/// is nine tenths of the message, so scanning it twice nearly doubled the parse. The scanner in
/// `scan` fills it faster for the common message;
/// what neither reads goes through the two-step parse, whose errors name the part at fault.
#[derive(Debug, Deserialize)]
pub(super) struct Message<'a> {
    pub(super) schema_version: u32,
    pub(super) source: Source,
    pub(super) fetched_at: DateTime<Utc>,
    /// Required like the envelope's, and borrowed: the persist job does not keep it.
    #[serde(rename = "query", borrow)]
    pub(super) _query: std::borrow::Cow<'a, str>,
    pub(super) payload: CurrentResponse,
}

/// The part of a `current.json` body the persist job reads. Every number is read as `f64`: WeatherAPI
/// writes `86` or `86.0` for the same field depending on the build, and serde accepts an integer
/// literal for an `f64`. Unknown fields are ignored, since newer API builds add some.
#[derive(Debug, Deserialize)]
pub(super) struct CurrentResponse {
    pub(super) location: Location,
    pub(super) current: Current,
}

/// `location`: the place.
#[derive(Debug, Deserialize)]
pub(super) struct Location {
    pub(super) name: String,
    pub(super) region: String,
    pub(super) country: String,
    pub(super) lat: f64,
    pub(super) lon: f64,
}

/// `current`: the measurements. Only `last_updated_epoch`, `temp_c` and `wind_kph` are required, like
/// the NOT NULL columns of `observations`; the rest may be absent or `null`.
#[derive(Debug, Deserialize)]
pub(super) struct Current {
    pub(super) last_updated_epoch: f64,
    pub(super) temp_c: f64,
    pub(super) wind_kph: f64,
    #[serde(default)]
    pub(super) feelslike_c: Option<f64>,
    #[serde(default)]
    pub(super) gust_kph: Option<f64>,
    #[serde(default)]
    pub(super) pressure_mb: Option<f64>,
    #[serde(default)]
    pub(super) precip_mm: Option<f64>,
    #[serde(default)]
    pub(super) vis_km: Option<f64>,
    #[serde(default)]
    pub(super) uv: Option<f64>,
    #[serde(default)]
    pub(super) wind_degree: Option<f64>,
    #[serde(default)]
    pub(super) humidity: Option<f64>,
    #[serde(default)]
    pub(super) cloud: Option<f64>,
    #[serde(default)]
    pub(super) wind_dir: Option<String>,
    #[serde(default)]
    pub(super) is_day: Option<f64>,
    #[serde(default)]
    pub(super) condition: Option<Condition>,
}

/// `current.condition`.
#[derive(Debug, Deserialize)]
pub(super) struct Condition {
    #[serde(default)]
    pub(super) text: Option<String>,
    #[serde(default)]
    pub(super) code: Option<f64>,
}
