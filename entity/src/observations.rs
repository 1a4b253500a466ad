//! `observations`: one row per (location, observation time); written by the persist job.

use sea_orm::entity::prelude::*;

/// A stored observation. `(location_key, observed_at)` is unique: the same observation fetched twice
/// is one row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "observations")]
pub struct Model {
    /// Surrogate key.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Normalized `name|region|country`.
    pub location_key: String,
    /// The API's `location.name`.
    pub location_name: String,
    /// The API's `location.region` (may be empty).
    pub region: String,
    /// The API's `location.country`.
    pub country: String,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// From `current.last_updated_epoch`.
    pub observed_at: DateTimeUtc,
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
    /// Condition text (possibly localised).
    pub condition_text: Option<String>,
    /// WeatherAPI condition code.
    pub condition_code: Option<i32>,
    /// Day (true) or night.
    pub is_day: Option<bool>,
    /// `weatherapi` or `simulated`.
    pub source: String,
    /// When the fetch job received it.
    pub fetched_at: DateTimeUtc,
    /// When the persist job stored it.
    pub ingested_at: DateTimeUtc,
    /// Lineage: the Kafka topic it was read from.
    pub kafka_topic: Option<String>,
    /// Lineage: the partition.
    pub kafka_partition: Option<i32>,
    /// Lineage: the offset.
    pub kafka_offset: Option<i64>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
