//! The observations fast path: binary COPY straight into `observations`, keeping the effect of
//! `ON CONFLICT DO NOTHING` by leaving out what is already stored.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::{Lineage, OBSERVATION_COLUMNS, ValidRecord};
use crate::jobs::persist::validate::Observation;

/// Which observations of a batch are already stored.
const EXISTING_OBSERVATIONS: &str = "\
SELECT b.location_key, b.observed_at FROM UNNEST($1::text[], $2::timestamptz[]) AS b(location_key, observed_at) \
WHERE EXISTS (SELECT 1 FROM observations o WHERE o.location_key = b.location_key AND o.observed_at = b.observed_at)";

/// The COPY statement of [`copy_observations`], columns in [`OBSERVATION_COLUMNS`] order.
pub const COPY_OBSERVATIONS: &str = "\
COPY observations (location_key, location_name, region, country, lat, lon, observed_at, temp_c, \
feelslike_c, wind_kph, gust_kph, pressure_mb, precip_mm, vis_km, uv, wind_degree, humidity, cloud, \
wind_dir, condition_text, condition_code, is_day, source, fetched_at, kafka_topic, kafka_partition, \
kafka_offset) FROM STDIN (FORMAT binary)";

/// The persist job's observations write, inside the caller's transaction: binary-COPY the batch
/// straight into `observations`. With `check_first`, one indexed query first finds which
/// `(location_key, observed_at)` are already stored and leaves them out. Returns how many rows are
/// new.
///
/// The effect is `INSERT ... ON CONFLICT (location_key, observed_at) DO NOTHING`: the first stored
/// copy of an observation wins and keeps its lineage, a replay writes nothing. Without the check,
/// or when a concurrent writer stores the same observation between the check and the COPY, the
/// COPY fails with a unique violation and the caller writes the batch again (see
/// [`super::store_batch`]).
///
/// Why COPY: measured with `weatherflow bench persist --messages 200000` (release build, our 2-core
/// machine, PostgreSQL 15 on the same host, the same rows into identical emptied tables, batches of
/// 2000 on one connection, one transaction each): COPY 152–160 k rows/s, existence check + COPY
/// 110–116 k, UNNEST with `ON CONFLICT DO NOTHING` 88–92 k, SeaORM `insert_many` 57–61 k; one
/// binary COPY of all rows in a single transaction (the benchmark's yardstick) 170–183 k. A batch
/// that meets a duplicate costs a failed COPY plus a checked one, so the writer keeps checking while
/// duplicates keep coming (see [`super::CopyStrategy`]).
pub async fn copy_observations(
    conn: &mut sqlx::PgConnection,
    records: &[&ValidRecord],
    check_first: bool,
) -> Result<u64, sqlx::Error> {
    if records.is_empty() {
        return Ok(0);
    }
    let existing = if check_first {
        stored_already(conn, records).await?
    } else {
        Vec::new()
    };
    let existing: HashSet<(&str, DateTime<Utc>)> = existing.iter().map(|(k, t)| (k.as_str(), *t)).collect();
    let mut buf = Vec::with_capacity(64 + records.len() * 400);
    copy_header(&mut buf);
    let mut fresh = 0u64;
    for r in records {
        let o = &r.observation;
        if !existing.contains(&(o.location_key.as_str(), o.observed_at)) {
            encode_copy_row(&mut buf, o, &r.lineage);
            fresh += 1;
        }
    }
    if fresh == 0 {
        return Ok(0);
    }
    copy_trailer(&mut buf);
    let mut copy = conn.copy_in_raw(COPY_OBSERVATIONS).await?;
    copy.send(buf).await?;
    copy.finish().await
}

/// The batch's observations that are already stored.
async fn stored_already(
    conn: &mut sqlx::PgConnection,
    records: &[&ValidRecord],
) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    let keys: Vec<&str> = records
        .iter()
        .map(|r| r.observation.location_key.as_str())
        .collect();
    let times: Vec<DateTime<Utc>> = records.iter().map(|r| r.observation.observed_at).collect();
    sqlx::query_as(EXISTING_OBSERVATIONS)
        .bind(keys)
        .bind(times)
        .fetch_all(conn)
        .await
}

/// The signature, flags and header extension of PostgreSQL's binary COPY format.
pub fn copy_header(buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
}

/// The end-of-data marker of the binary COPY format.
pub fn copy_trailer(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&(-1i16).to_be_bytes());
}

/// One observation as a binary COPY tuple, columns in [`OBSERVATION_COLUMNS`] order.
pub fn encode_copy_row(buf: &mut Vec<u8>, o: &Observation, l: &Lineage) {
    buf.extend_from_slice(&(OBSERVATION_COLUMNS.len() as i16).to_be_bytes());
    copy_text(buf, Some(&o.location_key));
    copy_text(buf, Some(&o.location_name));
    copy_text(buf, Some(&o.region));
    copy_text(buf, Some(&o.country));
    copy_f64(buf, Some(o.lat));
    copy_f64(buf, Some(o.lon));
    copy_time(buf, o.observed_at);
    copy_f64(buf, Some(o.temp_c));
    copy_f64(buf, o.feelslike_c);
    copy_f64(buf, Some(o.wind_kph));
    copy_f64(buf, o.gust_kph);
    copy_f64(buf, o.pressure_mb);
    copy_f64(buf, o.precip_mm);
    copy_f64(buf, o.vis_km);
    copy_f64(buf, o.uv);
    copy_i32(buf, o.wind_degree);
    copy_i32(buf, o.humidity);
    copy_i32(buf, o.cloud);
    copy_text(buf, o.wind_dir.as_deref());
    copy_text(buf, o.condition_text.as_deref());
    copy_i32(buf, o.condition_code);
    match o.is_day {
        Some(d) => copy_field(buf, &[u8::from(d)]),
        None => copy_null(buf),
    }
    copy_text(buf, Some(o.source.as_str()));
    copy_time(buf, o.fetched_at);
    copy_text(buf, Some(&l.topic));
    copy_i32(buf, Some(l.partition));
    copy_field(buf, &l.offset.to_be_bytes());
}

fn copy_field(buf: &mut Vec<u8>, v: &[u8]) {
    // A field is at most a few hundred bytes: location names and condition texts.
    buf.extend_from_slice(&(v.len() as i32).to_be_bytes());
    buf.extend_from_slice(v);
}

fn copy_null(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&(-1i32).to_be_bytes());
}

fn copy_text(buf: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(s) => copy_field(buf, s.as_bytes()),
        None => copy_null(buf),
    }
}

fn copy_f64(buf: &mut Vec<u8>, v: Option<f64>) {
    match v {
        Some(x) => copy_field(buf, &x.to_be_bytes()),
        None => copy_null(buf),
    }
}

fn copy_i32(buf: &mut Vec<u8>, v: Option<i32>) {
    match v {
        Some(x) => copy_field(buf, &x.to_be_bytes()),
        None => copy_null(buf),
    }
}

/// `timestamptz`: microseconds since 2000-01-01 00:00:00 UTC.
fn copy_time(buf: &mut Vec<u8>, v: DateTime<Utc>) {
    const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
    copy_field(buf, &(v.timestamp_micros() - PG_EPOCH_MICROS).to_be_bytes());
}
