//! The observations fast path: binary COPY straight into `observations`, keeping the effect of
//! `ON CONFLICT DO NOTHING` by leaving out what is already stored.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use entity::observations::WRITTEN_COLUMNS;

use super::{Lineage, ObservationTable, ValidRecord};
use crate::jobs::persist::validate::Observation;

/// The persist job's observations write, inside the caller's transaction: binary-COPY the batch
/// straight into `table` (`observations` for the job). With `check_first`, one indexed query first finds which
/// `(location_key, observed_at, source)` are already stored and leaves them out. Returns how many
/// rows are new.
///
/// The effect is `INSERT ... ON CONFLICT (location_key, observed_at, source) DO NOTHING`: the first stored
/// copy of an observation wins and keeps its lineage, a replay writes nothing. Without the check,
/// or when a concurrent writer stores the same observation between the check and the COPY, the
/// COPY fails with a unique violation and the caller writes the batch again (see
/// [`super::store_batch`]).
///
/// Why COPY: `weatherflow bench persist` writes the same rows through each path alone, in batches of
/// 5,000 on one connection (`docs/performance.md`): COPY 86.7 k rows/s, existence check + COPY
/// 44.6 k, UNNEST with `ON CONFLICT DO NOTHING` 41.6 k, SeaORM `insert_many` 26.9 k. A batch that
/// meets a duplicate costs a failed COPY plus a checked one, so the writer keeps checking while
/// duplicates keep coming (see [`super::CopyStrategy`]).
pub(crate) async fn copy_observations(
    conn: &mut sqlx::PgConnection,
    table: &ObservationTable,
    records: &[&ValidRecord],
    check_first: bool,
) -> Result<u64, sqlx::Error> {
    if records.is_empty() {
        return Ok(0);
    }
    let existing = if check_first {
        stored_already(conn, table, records).await?
    } else {
        Vec::new()
    };
    let existing: HashSet<(&str, DateTime<Utc>, &str)> = existing
        .iter()
        .map(|(k, t, s)| (k.as_str(), *t, s.as_str()))
        .collect();
    let is_new = |r: &&&ValidRecord| {
        let o = &r.observation;
        !existing.contains(&(o.location_key.as_str(), o.observed_at, o.source.as_str()))
    };
    if !records.iter().any(|r| is_new(&r)) {
        return Ok(0);
    }
    // The rows go out in chunks as they are encoded, not as one buffer of the whole batch: the
    // server parses and inserts a chunk while the next is encoded, and a chunk small enough to
    // stay in the cache is copied by sqlx and encrypted by TLS without a trip to memory (a buffer of
    // the whole batch spends a writer's time on page faults and copies).
    let mut copy = conn.copy_in_raw(table.copy_statement()).await?;
    let mut buf = Vec::with_capacity(COPY_CHUNK_BYTES + 4096);
    copy_header(&mut buf);
    for r in records.iter().filter(is_new) {
        encode_copy_row(&mut buf, &r.observation, &r.lineage);
        if buf.len() >= COPY_CHUNK_BYTES {
            copy.send(buf.as_slice()).await?;
            buf.clear();
        }
    }
    copy_trailer(&mut buf);
    copy.send(buf.as_slice()).await?;
    copy.finish().await
}

/// Bytes of COPY data sent at a time.
const COPY_CHUNK_BYTES: usize = 128 * 1024;

/// The batch's observations that are already stored: `(location_key, observed_at, source)`.
async fn stored_already(
    conn: &mut sqlx::PgConnection,
    table: &ObservationTable,
    records: &[&ValidRecord],
) -> Result<Vec<(String, DateTime<Utc>, String)>, sqlx::Error> {
    let keys: Vec<&str> = records
        .iter()
        .map(|r| r.observation.location_key.as_str())
        .collect();
    let times: Vec<DateTime<Utc>> = records.iter().map(|r| r.observation.observed_at).collect();
    let sources: Vec<&str> = records.iter().map(|r| r.observation.source.as_str()).collect();
    sqlx::query_as(AssertSqlSafe(Arc::clone(table.existing_statement())))
        .bind(keys)
        .bind(times)
        .bind(sources)
        .fetch_all(conn)
        .await
}

/// The signature, flags and header extension of PostgreSQL's binary COPY format.
pub(crate) fn copy_header(buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
}

/// The end-of-data marker of the binary COPY format.
pub(crate) fn copy_trailer(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&(-1i16).to_be_bytes());
}

/// One observation as a binary COPY tuple, columns in [`WRITTEN_COLUMNS`] order.
pub(crate) fn encode_copy_row(buf: &mut Vec<u8>, o: &Observation, l: &Lineage) {
    buf.extend_from_slice(&(WRITTEN_COLUMNS.len() as i16).to_be_bytes());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::persist::store::record::sample::record;

    #[test]
    fn copy_tuples_have_one_field_per_column() {
        let r = record("a|b|c", 1_767_632_400, 42);
        let mut buf = Vec::new();
        copy_header(&mut buf);
        let start = buf.len();
        encode_copy_row(&mut buf, &r.observation, &r.lineage);
        let tuple = &buf[start..];
        assert_eq!(
            i16::from_be_bytes([tuple[0], tuple[1]]) as usize,
            WRITTEN_COLUMNS.len()
        );
        let (mut at, mut fields) = (2, Vec::new());
        while at < tuple.len() {
            let len = i32::from_be_bytes(tuple[at..at + 4].try_into().unwrap());
            at += 4;
            let width = usize::try_from(len).unwrap_or(0);
            fields.push((len, &tuple[at..at + width]));
            at += width;
        }
        assert_eq!(fields.len(), WRITTEN_COLUMNS.len());
        assert_eq!(fields[0].1, b"a|b|c");
        // observed_at: 2026-01-05T17:00:00Z in microseconds since 2000-01-01.
        let micros = i64::from_be_bytes(fields[6].1.try_into().unwrap());
        assert_eq!(micros, (1_767_632_400 - 946_684_800) * 1_000_000);
        assert_eq!(fields[8].0, -1, "feelslike_c is NULL");
        assert_eq!(i64::from_be_bytes(fields[26].1.try_into().unwrap()), 42);
    }
}
