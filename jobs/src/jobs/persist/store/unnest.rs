//! The fallback observations write: every column bound as one array and unnested server-side.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::{Lineage, ObservationTable, ValidRecord};
use crate::jobs::persist::validate::Observation;

/// Inserts observations into `table` with its UNNEST statement, `ON CONFLICT (location_key,
/// observed_at, source) DO NOTHING` (see [`super::copy_observations`] for the figures and why COPY comes
/// first); returns how many rows are new.
pub(crate) async fn insert_observations(
    conn: &mut sqlx::PgConnection,
    table: &ObservationTable,
    records: &[&ValidRecord],
) -> Result<u64, sqlx::Error> {
    if records.is_empty() {
        return Ok(0);
    }
    let n = records.len();
    let mut c = ObservationColumns::with_capacity(n);
    for r in records {
        c.push(&r.observation, &r.lineage);
    }
    let result = sqlx::query(AssertSqlSafe(Arc::clone(table.unnest_statement())))
        .bind(c.location_key)
        .bind(c.location_name)
        .bind(c.region)
        .bind(c.country)
        .bind(c.lat)
        .bind(c.lon)
        .bind(c.observed_at)
        .bind(c.temp_c)
        .bind(c.feelslike_c)
        .bind(c.wind_kph)
        .bind(c.gust_kph)
        .bind(c.pressure_mb)
        .bind(c.precip_mm)
        .bind(c.vis_km)
        .bind(c.uv)
        .bind(c.wind_degree)
        .bind(c.humidity)
        .bind(c.cloud)
        .bind(c.wind_dir)
        .bind(c.condition_text)
        .bind(c.condition_code)
        .bind(c.is_day)
        .bind(c.source)
        .bind(c.fetched_at)
        .bind(c.kafka_topic)
        .bind(c.kafka_partition)
        .bind(c.kafka_offset)
        .execute(conn)
        .await?;
    Ok(result.rows_affected())
}

/// A batch of observations turned inside out: one vector per column, borrowing the records.
#[derive(Default)]
struct ObservationColumns<'a> {
    location_key: Vec<&'a str>,
    location_name: Vec<&'a str>,
    region: Vec<&'a str>,
    country: Vec<&'a str>,
    lat: Vec<f64>,
    lon: Vec<f64>,
    observed_at: Vec<DateTime<Utc>>,
    temp_c: Vec<f64>,
    feelslike_c: Vec<Option<f64>>,
    wind_kph: Vec<f64>,
    gust_kph: Vec<Option<f64>>,
    pressure_mb: Vec<Option<f64>>,
    precip_mm: Vec<Option<f64>>,
    vis_km: Vec<Option<f64>>,
    uv: Vec<Option<f64>>,
    wind_degree: Vec<Option<i32>>,
    humidity: Vec<Option<i32>>,
    cloud: Vec<Option<i32>>,
    wind_dir: Vec<Option<&'a str>>,
    condition_text: Vec<Option<&'a str>>,
    condition_code: Vec<Option<i32>>,
    is_day: Vec<Option<bool>>,
    source: Vec<&'static str>,
    fetched_at: Vec<DateTime<Utc>>,
    kafka_topic: Vec<&'a str>,
    kafka_partition: Vec<i32>,
    kafka_offset: Vec<i64>,
}

impl<'a> ObservationColumns<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            location_key: Vec::with_capacity(n),
            location_name: Vec::with_capacity(n),
            region: Vec::with_capacity(n),
            country: Vec::with_capacity(n),
            lat: Vec::with_capacity(n),
            lon: Vec::with_capacity(n),
            observed_at: Vec::with_capacity(n),
            temp_c: Vec::with_capacity(n),
            feelslike_c: Vec::with_capacity(n),
            wind_kph: Vec::with_capacity(n),
            gust_kph: Vec::with_capacity(n),
            pressure_mb: Vec::with_capacity(n),
            precip_mm: Vec::with_capacity(n),
            vis_km: Vec::with_capacity(n),
            uv: Vec::with_capacity(n),
            wind_degree: Vec::with_capacity(n),
            humidity: Vec::with_capacity(n),
            cloud: Vec::with_capacity(n),
            wind_dir: Vec::with_capacity(n),
            condition_text: Vec::with_capacity(n),
            condition_code: Vec::with_capacity(n),
            is_day: Vec::with_capacity(n),
            source: Vec::with_capacity(n),
            fetched_at: Vec::with_capacity(n),
            kafka_topic: Vec::with_capacity(n),
            kafka_partition: Vec::with_capacity(n),
            kafka_offset: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, o: &'a Observation, l: &'a Lineage) {
        self.location_key.push(&o.location_key);
        self.location_name.push(&o.location_name);
        self.region.push(&o.region);
        self.country.push(&o.country);
        self.lat.push(o.lat);
        self.lon.push(o.lon);
        self.observed_at.push(o.observed_at);
        self.temp_c.push(o.temp_c);
        self.feelslike_c.push(o.feelslike_c);
        self.wind_kph.push(o.wind_kph);
        self.gust_kph.push(o.gust_kph);
        self.pressure_mb.push(o.pressure_mb);
        self.precip_mm.push(o.precip_mm);
        self.vis_km.push(o.vis_km);
        self.uv.push(o.uv);
        self.wind_degree.push(o.wind_degree);
        self.humidity.push(o.humidity);
        self.cloud.push(o.cloud);
        self.wind_dir.push(o.wind_dir.as_deref());
        self.condition_text.push(o.condition_text.as_deref());
        self.condition_code.push(o.condition_code);
        self.is_day.push(o.is_day);
        self.source.push(o.source.as_str());
        self.fetched_at.push(o.fetched_at);
        self.kafka_topic.push(&l.topic);
        self.kafka_partition.push(l.partition);
        self.kafka_offset.push(l.offset);
    }
}
