//! The semantic rules, on a payload that parsed: names present, measurements in their physical
//! ranges, texts within their length bounds, the timestamps within their window.

use chrono::{DateTime, Utc};

use super::observation::{CurrentResponse, Observation};
use super::{Rejection, RejectionClass, Rules};
use crate::envelope::{self, Source};

/// An inclusive range check for a measurement; the reason names the field, the value and the bounds.
fn in_range(field: &str, value: f64, min: f64, max: f64) -> Result<f64, Rejection> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(Rejection::new(
            RejectionClass::OutOfRange,
            format!("{field} = {value} is out of range [{min}, {max}]"),
        ))
    }
}

fn optional_in_range(field: &str, value: Option<f64>, min: f64, max: f64) -> Result<Option<f64>, Rejection> {
    value.map(|v| in_range(field, v, min, max)).transpose()
}

/// A whole-number field that WeatherAPI may write as `86` or `86.0`: rounded to the nearest integer
/// after the range check.
fn optional_int(field: &str, value: Option<f64>, min: f64, max: f64) -> Result<Option<i32>, Rejection> {
    // The bounds are within i32, so the cast after the check cannot saturate.
    Ok(optional_in_range(field, value, min, max)?.map(|v| v.round() as i32))
}

/// Longest `location.name`, `region` and `country`, in bytes. Real names are under 100 bytes; the
/// bound keeps the location key (all three, normalized) well under the 2,704 bytes a btree index row
/// may hold in nearly every case, so an absurd name is a validation rejection, not a database one.
pub(crate) const MAX_PLACE_BYTES: usize = 1024;
/// Longest `current.condition.text`, in bytes.
pub(crate) const MAX_CONDITION_BYTES: usize = 1024;
/// Longest `current.wind_dir`, in bytes (a 16-point compass direction is at most 3).
pub(crate) const MAX_WIND_DIR_BYTES: usize = 16;
/// Earliest accepted observation or fetch time (2000-01-01T00:00:00Z): older is a unit mistake
/// (milliseconds read as seconds the other way round, a zero epoch), not an observation.
pub(crate) const MIN_EPOCH: i64 = 946_684_800;

/// A text of at most `max` bytes; the reason gives its length, not its value.
fn bounded(field: &str, value: String, max: usize) -> Result<String, Rejection> {
    if value.len() > max {
        return Err(Rejection::new(
            RejectionClass::InvalidValue,
            format!(
                "{field} is {} bytes long; at most {max} bytes are allowed",
                value.len()
            ),
        ));
    }
    Ok(value)
}

fn optional_bounded(field: &str, value: Option<String>, max: usize) -> Result<Option<String>, Rejection> {
    value.map(|v| bounded(field, v, max)).transpose()
}

fn non_empty(field: &str, value: String) -> Result<String, Rejection> {
    if value.trim().is_empty() {
        return Err(Rejection::new(
            RejectionClass::InvalidValue,
            format!("{field} is empty"),
        ));
    }
    bounded(field, value, MAX_PLACE_BYTES)
}

/// `is_day` is a flag: exactly 0 or 1 (`0.0` and `1.0` too), nothing in between.
fn day_flag(value: Option<f64>) -> Result<Option<bool>, Rejection> {
    match value {
        None => Ok(None),
        Some(v) if v == 0.0 || v == 1.0 => Ok(Some(v == 1.0)),
        Some(v) => Err(Rejection::new(
            RejectionClass::OutOfRange,
            format!("payload.current.is_day = {v} is neither 0 nor 1"),
        )),
    }
}

/// What the rules read from the envelope around the body.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stamp {
    /// Where the payload came from.
    pub(super) source: Source,
    /// When the fetch job received it.
    pub(super) fetched_at: DateTime<Utc>,
}

/// The semantic rules, on a body that parsed.
pub(super) fn check(
    body: CurrentResponse,
    envelope: Stamp,
    now: DateTime<Utc>,
    rules: &Rules,
) -> Result<Observation, Rejection> {
    let CurrentResponse { location, current } = body;
    let name = non_empty("payload.location.name", location.name)?;
    let region = bounded("payload.location.region", location.region, MAX_PLACE_BYTES)?;
    let country = non_empty("payload.location.country", location.country)?;
    let lat = in_range("payload.location.lat", location.lat, -90.0, 90.0)?;
    let lon = in_range("payload.location.lon", location.lon, -180.0, 180.0)?;
    let observed_at = observed_at(current.last_updated_epoch, now, rules)?;
    let temp_c = in_range("payload.current.temp_c", current.temp_c, -90.0, 60.0)?;
    let wind_kph = in_range("payload.current.wind_kph", current.wind_kph, 0.0, 420.0)?;
    let pressure_mb = optional_in_range("payload.current.pressure_mb", current.pressure_mb, 850.0, 1090.0)?;
    let humidity = optional_int("payload.current.humidity", current.humidity, 0.0, 100.0)?;
    let cloud = optional_int("payload.current.cloud", current.cloud, 0.0, 100.0)?;
    let wind_degree = optional_int("payload.current.wind_degree", current.wind_degree, 0.0, 360.0)?;
    let is_day = day_flag(current.is_day)?;
    let feelslike_c = optional_in_range("payload.current.feelslike_c", current.feelslike_c, -100.0, 70.0)?;
    let gust_kph = optional_in_range("payload.current.gust_kph", current.gust_kph, 0.0, 500.0)?;
    let precip_mm = optional_in_range("payload.current.precip_mm", current.precip_mm, 0.0, 1000.0)?;
    let vis_km = optional_in_range("payload.current.vis_km", current.vis_km, 0.0, 1000.0)?;
    let uv = optional_in_range("payload.current.uv", current.uv, 0.0, 30.0)?;
    let wind_dir = optional_bounded("payload.current.wind_dir", current.wind_dir, MAX_WIND_DIR_BYTES)?;
    fetched_at(envelope.fetched_at, now, rules)?;
    let (condition_text, condition_code) = match current.condition {
        Some(c) => (
            optional_bounded("payload.current.condition.text", c.text, MAX_CONDITION_BYTES)?,
            optional_int("payload.current.condition.code", c.code, 0.0, f64::from(i32::MAX))?,
        ),
        None => (None, None),
    };
    Ok(Observation {
        location_key: envelope::location_key(&name, &region, &country),
        location_name: name,
        region,
        country,
        lat,
        lon,
        observed_at,
        temp_c,
        feelslike_c,
        wind_kph,
        gust_kph,
        pressure_mb,
        precip_mm,
        vis_km,
        uv,
        wind_degree,
        humidity,
        cloud,
        wind_dir,
        condition_text,
        condition_code,
        is_day,
        source: envelope.source,
        fetched_at: envelope.fetched_at,
    })
}

/// `current.last_updated_epoch` as a time, at most `rules.max_future` ahead of `now`.
fn observed_at(epoch: f64, now: DateTime<Utc>, rules: &Rules) -> Result<DateTime<Utc>, Rejection> {
    const FIELD: &str = "payload.current.last_updated_epoch";
    // Anything outside ±2^53 is not an exact integer in f64 and far outside chrono's range anyway.
    let valid = epoch.is_finite() && epoch.abs() < 9_007_199_254_740_992.0;
    let at = valid
        .then(|| DateTime::from_timestamp(epoch.trunc() as i64, 0))
        .flatten()
        .ok_or_else(|| {
            Rejection::new(
                RejectionClass::OutOfRange,
                format!("{FIELD} = {epoch} is not a representable time"),
            )
        })?;
    if at.timestamp() < MIN_EPOCH {
        return Err(Rejection::new(
            RejectionClass::OutOfRange,
            format!(
                "{FIELD} = {epoch} ({}) is before 2000-01-01T00:00:00Z",
                at.to_rfc3339()
            ),
        ));
    }
    if at > now + rules.max_future {
        let ahead = at - now;
        return Err(Rejection::new(
            RejectionClass::FutureTimestamp,
            format!(
                "{FIELD} = {epoch} ({}) is {} min ahead of the clock; at most {} min are allowed",
                at.to_rfc3339(),
                ahead.num_minutes(),
                rules.max_future.num_minutes()
            ),
        ));
    }
    Ok(at)
}

/// The envelope's `fetched_at`: not before 2000 and at most `rules.max_future` ahead of `now`, like
/// the observation time.
fn fetched_at(at: DateTime<Utc>, now: DateTime<Utc>, rules: &Rules) -> Result<(), Rejection> {
    if at.timestamp() < MIN_EPOCH {
        return Err(Rejection::new(
            RejectionClass::OutOfRange,
            format!("fetched_at = {} is before 2000-01-01T00:00:00Z", at.to_rfc3339()),
        ));
    }
    if at > now + rules.max_future {
        return Err(Rejection::new(
            RejectionClass::FutureTimestamp,
            format!(
                "fetched_at = {} is {} min ahead of the clock; at most {} min are allowed",
                at.to_rfc3339(),
                (at - now).num_minutes(),
                rules.max_future.num_minutes()
            ),
        ));
    }
    Ok(())
}
