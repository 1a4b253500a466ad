//! Validation of Kafka records into typed observations (owned by the persist job).
//!
//! Pure functions: bytes in, an [`Observation`] or a [`Rejection`] out. Nothing here touches Kafka or
//! the database, so every rule is unit tested.
//!
//! The fast path parses the envelope and the payload once with serde. Only when that fails does
//! [`diagnose`] run a second, slower pass to name the class of the problem and the field: invalid
//! records are rare, and their diagnosis should be precise rather than fast.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

use crate::envelope::{self, Envelope, SCHEMA_VERSION, Source};

/// Why a record was refused, machine-readable. Stored in `rejected_records.error_class` and in the
/// `error_class` header of the dead-letter message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// The message has no value (a tombstone) or a zero-length value.
    EmptyValue,
    /// The value is larger than `persist.max_value_bytes`.
    TooLarge,
    /// The value is not valid UTF-8, so it cannot be JSON.
    NotUtf8,
    /// The value is not syntactically valid JSON.
    InvalidJson,
    /// The envelope's `schema_version` is not one this build reads.
    UnknownSchemaVersion,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong JSON type (a string where a number belongs, a JSON array as the value...).
    WrongType,
    /// A field has the right type but a meaningless value (an unknown `source`, an empty name, a
    /// malformed timestamp).
    InvalidValue,
    /// A measurement outside its physical range.
    OutOfRange,
    /// The observation time lies too far in the future.
    FutureTimestamp,
    /// The record passed validation but PostgreSQL refused the row (a data exception or constraint
    /// violation, SQLSTATE class 22 or 23), found by splitting the batch.
    DbRejected,
}

impl ErrorClass {
    /// Every class, in the order of the README's table.
    pub const ALL: [ErrorClass; 11] = [
        ErrorClass::EmptyValue,
        ErrorClass::TooLarge,
        ErrorClass::NotUtf8,
        ErrorClass::InvalidJson,
        ErrorClass::UnknownSchemaVersion,
        ErrorClass::MissingField,
        ErrorClass::WrongType,
        ErrorClass::InvalidValue,
        ErrorClass::OutOfRange,
        ErrorClass::FutureTimestamp,
        ErrorClass::DbRejected,
    ];

    /// The stored, snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::EmptyValue => "empty_value",
            ErrorClass::TooLarge => "too_large",
            ErrorClass::NotUtf8 => "not_utf8",
            ErrorClass::InvalidJson => "invalid_json",
            ErrorClass::UnknownSchemaVersion => "unknown_schema_version",
            ErrorClass::MissingField => "missing_field",
            ErrorClass::WrongType => "wrong_type",
            ErrorClass::InvalidValue => "invalid_value",
            ErrorClass::OutOfRange => "out_of_range",
            ErrorClass::FutureTimestamp => "future_timestamp",
            ErrorClass::DbRejected => "db_rejected",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused record: its class and a human reason naming the field and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Machine-readable class.
    pub class: ErrorClass,
    /// Human-readable reason, at most [`MAX_REASON_CHARS`] characters, never containing NUL (which
    /// PostgreSQL text cannot hold).
    pub reason: String,
}

/// Reasons are cut to this many characters: a reason quotes the offending value, and a value can be
/// megabytes long. The complete record is kept in the payload column anyway.
pub const MAX_REASON_CHARS: usize = 500;

impl Rejection {
    /// A rejection with its reason bounded and made storable.
    pub fn new(class: ErrorClass, reason: impl Into<String>) -> Self {
        Self {
            class,
            reason: storable_reason(&reason.into()),
        }
    }
}

/// Cuts `reason` to [`MAX_REASON_CHARS`] characters and escapes NUL, so it always fits a `text`
/// column.
fn storable_reason(reason: &str) -> String {
    let mut out: String = reason
        .chars()
        .take(MAX_REASON_CHARS)
        .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
        .collect();
    if reason.chars().nth(MAX_REASON_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// The limits a record is checked against; from `persist` settings.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Values longer than this are refused as [`ErrorClass::TooLarge`].
    pub max_value_bytes: usize,
    /// How far ahead of the clock an observation time may be.
    pub max_future: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            max_value_bytes: 256 * 1024,
            max_future: Duration::hours(1),
        }
    }
}

/// A validated observation: every required field present, every measurement in range. The Kafka
/// lineage is added by the caller, which knows where the record came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Normalized `name|region|country` (see [`envelope::location_key`]).
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

/// The part of a `current.json` body the persist job reads. Every number is read as `f64`: WeatherAPI
/// writes `86` or `86.0` for the same field depending on the build, and serde accepts an integer
/// literal for an `f64`. Unknown fields are ignored, since newer API builds add some.
#[derive(Debug, Deserialize)]
struct CurrentResponse {
    location: Location,
    current: Current,
}

/// `location`: the place.
#[derive(Debug, Deserialize)]
struct Location {
    name: String,
    region: String,
    country: String,
    lat: f64,
    lon: f64,
}

/// `current`: the measurements. Only `last_updated_epoch`, `temp_c` and `wind_kph` are required, like
/// the NOT NULL columns of `observations`; the rest may be absent or `null`.
#[derive(Debug, Deserialize)]
struct Current {
    last_updated_epoch: f64,
    temp_c: f64,
    wind_kph: f64,
    #[serde(default)]
    feelslike_c: Option<f64>,
    #[serde(default)]
    gust_kph: Option<f64>,
    #[serde(default)]
    pressure_mb: Option<f64>,
    #[serde(default)]
    precip_mm: Option<f64>,
    #[serde(default)]
    vis_km: Option<f64>,
    #[serde(default)]
    uv: Option<f64>,
    #[serde(default)]
    wind_degree: Option<f64>,
    #[serde(default)]
    humidity: Option<f64>,
    #[serde(default)]
    cloud: Option<f64>,
    #[serde(default)]
    wind_dir: Option<String>,
    #[serde(default)]
    is_day: Option<f64>,
    #[serde(default)]
    condition: Option<Condition>,
}

/// `current.condition`.
#[derive(Debug, Deserialize)]
struct Condition {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    code: Option<f64>,
}

/// Validates one record's value. The message key is not consulted: an observation's identity is the
/// location in its payload, so a record with a null (or any) key is accepted when its value is valid.
pub fn validate(value: Option<&[u8]>, now: DateTime<Utc>, rules: &Rules) -> Result<Observation, Rejection> {
    let bytes = match value {
        None => {
            return Err(Rejection::new(
                ErrorClass::EmptyValue,
                "the message has no value (null)",
            ));
        }
        Some([]) => {
            return Err(Rejection::new(
                ErrorClass::EmptyValue,
                "the message value is empty (0 bytes)",
            ));
        }
        Some(b) => b,
    };
    if bytes.len() > rules.max_value_bytes {
        return Err(Rejection::new(
            ErrorClass::TooLarge,
            format!(
                "the message value is {} bytes, more than the limit of {} bytes (persist.max_value_bytes)",
                bytes.len(),
                rules.max_value_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Rejection::new(
            ErrorClass::NotUtf8,
            format!(
                "the message value is not UTF-8: invalid byte at position {}",
                e.valid_up_to()
            ),
        )
    })?;
    let Ok(envelope) = serde_json::from_str::<Envelope>(text) else {
        return Err(diagnose_envelope(text));
    };
    if envelope.schema_version != SCHEMA_VERSION {
        return Err(unknown_version(&envelope.schema_version.to_string()));
    }
    let payload = envelope.payload.get();
    let body = serde_json::from_str::<CurrentResponse>(payload).map_err(|_| diagnose_payload(payload))?;
    check(body, &envelope, now, rules)
}

fn unknown_version(shown: &str) -> Rejection {
    Rejection::new(
        ErrorClass::UnknownSchemaVersion,
        format!("schema_version = {shown} is unknown; this build reads version {SCHEMA_VERSION}"),
    )
}

/// Why the envelope did not parse: syntax first, then the schema version (a newer envelope may have a
/// different shape, and that is the thing to report), then the first field serde stumbled on.
fn diagnose_envelope(text: &str) -> Rejection {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Rejection::new(
                ErrorClass::InvalidJson,
                format!("the message value is not JSON: {e}"),
            );
        }
    };
    let Some(object) = value.as_object() else {
        return Rejection::new(
            ErrorClass::WrongType,
            format!(
                "the message value is a JSON {}, expected an object (the envelope)",
                json_type(&value)
            ),
        );
    };
    match object.get("schema_version") {
        None => return Rejection::new(ErrorClass::MissingField, "schema_version is missing"),
        Some(v) if v.as_u64() != Some(u64::from(SCHEMA_VERSION)) => {
            return if v.is_number() {
                unknown_version(&v.to_string())
            } else {
                Rejection::new(
                    ErrorClass::WrongType,
                    format!(
                        "schema_version = {} is a {}, expected an integer",
                        shorten(&v.to_string()),
                        json_type(v)
                    ),
                )
            };
        }
        Some(_) => {}
    }
    let mut de = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, Envelope>(&mut de) {
        Ok(_) => Rejection::new(
            ErrorClass::InvalidValue,
            "the envelope did not parse on the first pass",
        ),
        Err(e) => from_serde(&e.path().to_string(), e.inner()),
    }
}

/// Why the payload did not parse, with the field's path inside the envelope (`payload.current.temp_c`).
fn diagnose_payload(payload: &str) -> Rejection {
    if !payload.trim_start().starts_with('{') {
        let kind = serde_json::from_str::<serde_json::Value>(payload)
            .map(|v| json_type(&v))
            .unwrap_or("value");
        return Rejection::new(
            ErrorClass::WrongType,
            format!("payload is a JSON {kind}, expected an object"),
        );
    }
    let mut de = serde_json::Deserializer::from_str(payload);
    match serde_path_to_error::deserialize::<_, CurrentResponse>(&mut de) {
        Ok(_) => Rejection::new(
            ErrorClass::InvalidValue,
            "the payload did not parse on the first pass",
        ),
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." {
                "payload".to_owned()
            } else {
                format!("payload.{path}")
            };
            from_serde(&path, e.inner())
        }
    }
}

/// Maps a serde error to a class. serde's messages for these cases are fixed by `serde::de::Error`'s
/// provided methods (`missing field `x``, `invalid type: …, expected …`), so the prefix is reliable.
fn from_serde(path: &str, err: &serde_json::Error) -> Rejection {
    use serde_json::error::Category;
    let message = err.to_string();
    let message = strip_position(&message);
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => Rejection::new(
            ErrorClass::InvalidJson,
            format!("the message value is not JSON: {err}"),
        ),
        Category::Data => {
            if let Some(field) = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
            {
                let full = if path == "." {
                    field.to_owned()
                } else {
                    format!("{path}.{field}")
                };
                return Rejection::new(ErrorClass::MissingField, format!("{full} is missing"));
            }
            let class = if message.starts_with("invalid type") {
                ErrorClass::WrongType
            } else {
                ErrorClass::InvalidValue
            };
            Rejection::new(class, format!("{path}: {message}"))
        }
    }
}

/// serde_json appends " at line L column C"; the path says more than the position.
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= 60 {
        return s.to_owned();
    }
    let head: String = s.chars().take(60).collect();
    format!("{head}…")
}

/// An inclusive range check for a measurement; the reason names the field, the value and the bounds.
fn in_range(field: &str, value: f64, min: f64, max: f64) -> Result<f64, Rejection> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(Rejection::new(
            ErrorClass::OutOfRange,
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
            ErrorClass::InvalidValue,
            format!("{field} is empty"),
        ));
    }
    Ok(value)
}

/// The semantic rules, on a body that parsed.
fn check(
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
                ErrorClass::OutOfRange,
                format!("{FIELD} = {epoch} is not a representable time"),
            )
        })?;
    if at > now + rules.max_future {
        let ahead = at - now;
        return Err(Rejection::new(
            ErrorClass::FutureTimestamp,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// The London recording of weatherapi.md §4.4, verbatim (aqi=yes, with solar fields as bare `0`).
    const LONDON: &str = r#"{
  "location": {"name": "London", "region": "City of London, Greater London", "country": "United Kingdom",
    "lat": 51.5171, "lon": -0.1062, "tz_id": "Europe/London", "localtime_epoch": 1767633260,
    "localtime": "2026-01-05 17:14"},
  "current": {"last_updated_epoch": 1767632400, "last_updated": "2026-01-05 17:00", "temp_c": 0.1,
    "temp_f": 32.2, "is_day": 0,
    "condition": {"text": "Clear", "icon": "//cdn.weatherapi.com/weather/64x64/night/113.png", "code": 1000},
    "wind_mph": 8.1, "wind_kph": 13.0, "wind_degree": 318, "wind_dir": "NW", "pressure_mb": 1015.0,
    "pressure_in": 29.97, "precip_mm": 0.0, "precip_in": 0.0, "humidity": 69, "cloud": 0,
    "feelslike_c": -3.9, "feelslike_f": 25.0, "windchill_c": -4.0, "windchill_f": 24.8,
    "heatindex_c": 0.0, "heatindex_f": 32.0, "dewpoint_c": -6.1, "dewpoint_f": 21.1, "vis_km": 10.0,
    "vis_miles": 6.0, "uv": 0.0, "gust_mph": 13.1, "gust_kph": 21.1,
    "air_quality": {"co": 258.85, "no2": 55.55, "o3": 10.0, "so2": 4.85, "pm2_5": 9.95, "pm10": 14.25,
      "us-epa-index": 1, "gb-defra-index": 1},
    "short_rad": 0, "diff_rad": 0, "dni": 0, "gti": 0}
}"#;

    /// The minimal pre-2024 Roswell recording (weatherapi.md §4.4), verbatim.
    const ROSWELL: &str = r#"{"location":{"name":"Roswell","region":"Georgia","country":"United States of America","lat":34.02,"lon":-84.36,"tz_id":"America/New_York","localtime_epoch":1697457029,"localtime":"2023-10-16 7:50"},"current":{"last_updated_epoch":1697456700,"last_updated":"2023-10-16 07:45","temp_c":7.2,"temp_f":45.0,"is_day":1,"condition":{"text":"Sunny","icon":"//cdn.weatherapi.com/weather/64x64/day/113.png","code":1000},"wind_mph":8.1,"wind_kph":13.0,"wind_degree":330,"wind_dir":"NNW","pressure_mb":1013.0,"pressure_in":29.91,"precip_mm":0.0,"precip_in":0.0,"humidity":86,"cloud":0,"feelslike_c":5.1,"feelslike_f":41.1,"vis_km":16.0,"vis_miles":9.0,"uv":1.0,"gust_mph":11.8,"gust_kph":18.9}}"#;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_633_300, 0).unwrap()
    }

    fn envelope_text(payload: &str) -> String {
        format!(
            r#"{{"schema_version":1,"source":"weatherapi","fetched_at":"2026-01-05T17:14:20Z","query":"London","payload":{payload}}}"#
        )
    }

    fn run(value: &str) -> Result<Observation, Rejection> {
        validate(Some(value.as_bytes()), now(), &Rules::default())
    }

    /// The London payload with one edit applied to its JSON tree.
    fn london_with(edit: impl FnOnce(&mut Value)) -> String {
        let mut v: Value = serde_json::from_str(LONDON).unwrap();
        edit(&mut v);
        envelope_text(&v.to_string())
    }

    fn rejected(value: &str) -> Rejection {
        run(value).expect_err("should be rejected")
    }

    #[test]
    fn real_recordings_are_accepted_with_their_values() {
        let o = run(&envelope_text(LONDON)).unwrap();
        assert_eq!(
            o.location_key,
            "london|city of london, greater london|united kingdom"
        );
        assert_eq!(o.location_name, "London");
        assert_eq!((o.lat, o.lon), (51.5171, -0.1062));
        assert_eq!(o.observed_at.timestamp(), 1_767_632_400);
        assert_eq!((o.temp_c, o.wind_kph), (0.1, 13.0));
        assert_eq!(
            (o.humidity, o.cloud, o.wind_degree),
            (Some(69), Some(0), Some(318))
        );
        assert_eq!(o.is_day, Some(false));
        assert_eq!(o.condition_code, Some(1000));
        assert_eq!(o.condition_text.as_deref(), Some("Clear"));
        assert_eq!(o.source, Source::Weatherapi);
        assert_eq!(o.fetched_at.to_rfc3339(), "2026-01-05T17:14:20+00:00");

        let o = run(&envelope_text(ROSWELL)).unwrap();
        assert_eq!(o.location_key, "roswell|georgia|united states of america");
        assert_eq!(o.humidity, Some(86));
        assert_eq!(o.is_day, Some(true));
        assert_eq!(o.feelslike_c, Some(5.1));
    }

    #[test]
    fn integer_literals_and_float_integers_are_both_accepted() {
        let v = london_with(|v| {
            v["current"]["temp_c"] = json!(7);
            v["current"]["humidity"] = json!(86.0);
            v["current"]["cloud"] = json!(25.0);
            v["current"]["wind_degree"] = json!(318.0);
            v["location"]["lat"] = json!(51);
        });
        let o = run(&v).unwrap();
        assert_eq!(o.temp_c, 7.0);
        assert_eq!(
            (o.humidity, o.cloud, o.wind_degree),
            (Some(86), Some(25), Some(318))
        );
        assert_eq!(o.lat, 51.0);
    }

    #[test]
    fn optional_fields_may_be_absent_or_null() {
        let v = london_with(|v| {
            let c = v["current"].as_object_mut().unwrap();
            for f in ["humidity", "pressure_mb", "condition", "gust_kph", "uv", "is_day"] {
                c.remove(f);
            }
            c.insert("cloud".into(), Value::Null);
        });
        let o = run(&v).unwrap();
        assert_eq!(
            (o.humidity, o.pressure_mb, o.cloud, o.is_day),
            (None, None, None, None)
        );
        assert_eq!(o.condition_code, None);
    }

    #[test]
    fn empty_large_and_binary_values() {
        let r = validate(None, now(), &Rules::default()).unwrap_err();
        assert_eq!(r.class, ErrorClass::EmptyValue);
        assert_eq!(rejected("").class, ErrorClass::EmptyValue);
        let big = "x".repeat(300 * 1024);
        let r = rejected(&big);
        assert_eq!(r.class, ErrorClass::TooLarge);
        assert!(r.reason.contains("307200 bytes"), "{}", r.reason);
        let r = validate(Some(&[0x7b, 0xff, 0xfe, 0x7d]), now(), &Rules::default()).unwrap_err();
        assert_eq!(r.class, ErrorClass::NotUtf8);
        assert!(r.reason.contains("position 1"), "{}", r.reason);
    }

    #[test]
    fn syntax_errors_are_invalid_json() {
        let r = rejected(r#"{"schema_version":1,"source":"#);
        assert_eq!(r.class, ErrorClass::InvalidJson);
        assert_eq!(rejected("not json at all").class, ErrorClass::InvalidJson);
        assert_eq!(
            rejected(&envelope_text(r#"{"location": }"#)).class,
            ErrorClass::InvalidJson
        );
    }

    #[test]
    fn non_objects_are_wrong_type() {
        let r = rejected("[1,2,3]");
        assert_eq!(r.class, ErrorClass::WrongType);
        assert!(r.reason.contains("array"), "{}", r.reason);
        let r = rejected(&envelope_text("\"just a string\""));
        assert_eq!(r.class, ErrorClass::WrongType);
        assert!(r.reason.contains("payload"), "{}", r.reason);
    }

    #[test]
    fn schema_version_is_checked_before_the_shape() {
        let r = rejected(r#"{"schema_version":2,"something":"else"}"#);
        assert_eq!(r.class, ErrorClass::UnknownSchemaVersion);
        assert!(r.reason.contains("schema_version = 2"), "{}", r.reason);
        let v2 = envelope_text(LONDON).replace("\"schema_version\":1", "\"schema_version\":2");
        assert_eq!(rejected(&v2).class, ErrorClass::UnknownSchemaVersion);
        let r = rejected(r#"{"schema_version":"1"}"#);
        assert_eq!(r.class, ErrorClass::WrongType);
        let r = rejected(r#"{"source":"weatherapi"}"#);
        assert_eq!(
            (r.class, r.reason.as_str()),
            (ErrorClass::MissingField, "schema_version is missing")
        );
    }

    #[test]
    fn missing_fields_are_named_with_their_path() {
        let r = rejected(&london_with(|v| {
            v["current"].as_object_mut().unwrap().remove("temp_c");
        }));
        assert_eq!(r.class, ErrorClass::MissingField);
        assert_eq!(r.reason, "payload.current.temp_c is missing");
        let r = rejected(&london_with(|v| {
            v["location"].as_object_mut().unwrap().remove("name");
        }));
        assert_eq!(r.reason, "payload.location.name is missing");
        let r = rejected(&london_with(|v| {
            v.as_object_mut().unwrap().remove("current");
        }));
        assert_eq!(r.reason, "payload.current is missing");
        let r = rejected(
            r#"{"schema_version":1,"source":"weatherapi","fetched_at":"2026-01-05T17:14:20Z","query":"x"}"#,
        );
        assert_eq!(
            (r.class, r.reason.as_str()),
            (ErrorClass::MissingField, "payload is missing")
        );
    }

    #[test]
    fn wrong_types_name_the_field_and_value() {
        let r = rejected(&london_with(|v| v["current"]["temp_c"] = json!("hot")));
        assert_eq!(r.class, ErrorClass::WrongType);
        assert!(
            r.reason
                .starts_with("payload.current.temp_c: invalid type: string \"hot\""),
            "{}",
            r.reason
        );
        let r = rejected(&london_with(|v| v["current"]["humidity"] = json!("86%")));
        assert_eq!(r.class, ErrorClass::WrongType);
        assert!(r.reason.contains("payload.current.humidity"), "{}", r.reason);
        let r = rejected(&london_with(|v| v["current"]["temp_c"] = Value::Null));
        assert_eq!(r.class, ErrorClass::WrongType);
        let r = rejected(&london_with(|v| v["location"]["name"] = json!(42)));
        assert_eq!(r.class, ErrorClass::WrongType);
        assert!(r.reason.contains("payload.location.name"), "{}", r.reason);
    }

    #[test]
    fn bad_envelope_values_are_invalid_value() {
        let r = rejected(&envelope_text(LONDON).replace("\"weatherapi\"", "\"satellite\""));
        assert_eq!(r.class, ErrorClass::InvalidValue);
        assert!(r.reason.starts_with("source:"), "{}", r.reason);
        let r = rejected(&envelope_text(LONDON).replace("2026-01-05T17:14:20Z", "yesterday"));
        assert_eq!(r.class, ErrorClass::InvalidValue);
        assert!(r.reason.starts_with("fetched_at:"), "{}", r.reason);
        let r = rejected(&london_with(|v| v["location"]["name"] = json!("  ")));
        assert_eq!(
            (r.class, r.reason.as_str()),
            (ErrorClass::InvalidValue, "payload.location.name is empty")
        );
    }

    #[test]
    fn every_physical_range_is_enforced_at_both_ends() {
        let cases: [(&str, &str, f64, f64); 7] = [
            ("current", "temp_c", -90.0, 60.0),
            ("current", "humidity", 0.0, 100.0),
            ("current", "wind_kph", 0.0, 420.0),
            ("current", "pressure_mb", 850.0, 1090.0),
            ("location", "lat", -90.0, 90.0),
            ("location", "lon", -180.0, 180.0),
            ("current", "cloud", 0.0, 100.0),
        ];
        for (obj, field, min, max) in cases {
            for ok in [min, max] {
                run(&london_with(|v| v[obj][field] = json!(ok)))
                    .unwrap_or_else(|r| panic!("{field} = {ok} should pass: {}", r.reason));
            }
            for bad in [min - 0.5, max + 0.5] {
                let r = rejected(&london_with(|v| v[obj][field] = json!(bad)));
                assert_eq!(r.class, ErrorClass::OutOfRange, "{field} = {bad}");
                assert_eq!(
                    r.reason,
                    format!("payload.{obj}.{field} = {bad} is out of range [{min}, {max}]")
                );
            }
        }
    }

    #[test]
    fn observation_time_may_be_at_most_an_hour_ahead() {
        let epoch = now().timestamp();
        run(&london_with(|v| {
            v["current"]["last_updated_epoch"] = json!(epoch + 3600)
        }))
        .unwrap();
        let r = rejected(&london_with(|v| {
            v["current"]["last_updated_epoch"] = json!(epoch + 7200)
        }));
        assert_eq!(r.class, ErrorClass::FutureTimestamp);
        assert!(r.reason.contains("120 min ahead"), "{}", r.reason);
        let r = rejected(&london_with(|v| {
            v["current"]["last_updated_epoch"] = json!(1e300)
        }));
        assert_eq!(r.class, ErrorClass::OutOfRange);
    }

    #[test]
    fn reasons_are_bounded_and_storable() {
        let long = "y".repeat(10_000);
        let r = rejected(&london_with(|v| v["current"]["temp_c"] = json!(long)));
        assert!(
            r.reason.chars().count() <= MAX_REASON_CHARS + 1,
            "{}",
            r.reason.len()
        );
        let r = Rejection::new(ErrorClass::InvalidValue, "a\0b");
        assert!(!r.reason.contains('\0'));
    }

    #[test]
    fn class_names_are_unique_snake_case() {
        let names: std::collections::BTreeSet<_> = ErrorClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorClass::ALL.len());
        assert!(names.iter().all(|n| {
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        }));
    }
}
