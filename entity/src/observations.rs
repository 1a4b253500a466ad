//! `observations`: one row per (location, observation time, source); written by the persist job.

use sea_orm::entity::prelude::*;

/// A stored observation. `(location_key, observed_at, source)` is unique: the same observation
/// fetched twice is one row, and a WeatherAPI and a simulated observation of one slot are two.
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

/// The columns a writer supplies, in the order of the writes' column lists (COPY, UNNEST): every
/// column of [`Model`] except `id` and `ingested_at`, which take their defaults. The one list the
/// SQL of the persist job's writes is built from.
pub const WRITTEN_COLUMNS: [&str; 27] = [
    "location_key",
    "location_name",
    "region",
    "country",
    "lat",
    "lon",
    "observed_at",
    "temp_c",
    "feelslike_c",
    "wind_kph",
    "gust_kph",
    "pressure_mb",
    "precip_mm",
    "vis_km",
    "uv",
    "wind_degree",
    "humidity",
    "cloud",
    "wind_dir",
    "condition_text",
    "condition_code",
    "is_day",
    "source",
    "fetched_at",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
];

#[cfg(test)]
mod tests {
    use sea_orm::Iterable;

    use super::*;

    #[test]
    fn written_columns_are_the_entity_columns_without_the_defaults() {
        let entity: Vec<&str> = Column::iter()
            .map(|c| c.as_str())
            .filter(|c| !matches!(*c, "id" | "ingested_at"))
            .collect();
        assert_eq!(entity, WRITTEN_COLUMNS);
    }
}
