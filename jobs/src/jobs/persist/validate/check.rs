//! The semantic rules, on a payload that parsed: names present, measurements in their physical
//! ranges, the observation time not too far ahead.

use chrono::{DateTime, Utc};

use super::observation::{CurrentResponse, Observation};
use super::{Rejection, RejectionClass, Rules};
use crate::envelope::{self, Envelope};

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

fn non_empty(field: &str, value: String) -> Result<String, Rejection> {
    if value.trim().is_empty() {
        return Err(Rejection::new(
            RejectionClass::InvalidValue,
            format!("{field} is empty"),
        ));
    }
    Ok(value)
}

/// The semantic rules, on a body that parsed.
pub(super) fn check(
    body: CurrentResponse,
    envelope: &Envelope,
    now: DateTime<Utc>,
    rules: &Rules,
) -> Result<Observation, Rejection> {
    let CurrentResponse { location, current } = body;
    let name = non_empty("payload.location.name", location.name)?;
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
    let is_day = optional_int("payload.current.is_day", current.is_day, 0.0, 1.0)?.map(|d| d == 1);
    let (condition_text, condition_code) = match current.condition {
        Some(c) => (
            c.text,
            optional_int("payload.current.condition.code", c.code, 0.0, f64::from(i32::MAX))?,
        ),
        None => (None, None),
    };
    Ok(Observation {
        location_key: envelope::location_key(&name, &location.region, &country),
        location_name: name,
        region: location.region,
        country,
        lat,
        lon,
        observed_at,
        temp_c,
        feelslike_c: current.feelslike_c,
        wind_kph,
        gust_kph: current.gust_kph,
        pressure_mb,
        precip_mm: current.precip_mm,
        vis_km: current.vis_km,
        uv: current.uv,
        wind_degree,
        humidity,
        cloud,
        wind_dir: current.wind_dir,
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
