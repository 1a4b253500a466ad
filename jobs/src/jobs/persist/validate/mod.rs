//! Validation of Kafka records into typed observations (owned by the persist job).
//!
//! Pure functions: bytes in, an [`Observation`] or a [`Rejection`] out. Nothing here touches Kafka or
//! the database, so every rule is unit tested.
//!
//! The fast path reads the envelope and the payload in one pass, with a scanner that steps over the
//! fields it does not keep ([`scan`]), or with serde where the scanner declines. Only when that fails does
//! [`diagnose`] run a second, slower pass to name the class of the problem and the field: invalid
//! records are rare, and their diagnosis should be precise rather than fast.

mod check;
mod diagnose;
mod observation;
mod rejection;
mod scan;

use chrono::{DateTime, Duration, Utc};

use crate::envelope::{Envelope, SCHEMA_VERSION};
use check::{Stamp, check};
use diagnose::{diagnose_envelope, diagnose_payload, unknown_version};
pub use observation::Observation;
use observation::{CurrentResponse, Message};
pub use rejection::{Rejection, RejectionClass};

/// The limits a record is checked against; from `persist` settings.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Values longer than this are refused as [`RejectionClass::TooLarge`].
    pub max_value_bytes: usize,
    /// How far ahead of the clock an observation time may be.
    pub max_future: Duration,
}

impl Rules {
    /// The rules `persist` settings configure: the consumer and a re-drive check records alike.
    pub fn from_config(p: &crate::config::PersistConfig) -> Self {
        Self {
            max_value_bytes: p.max_value_bytes,
            max_future: Duration::seconds(p.max_future_secs as i64),
        }
    }
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            max_value_bytes: 256 * 1024,
            max_future: Duration::hours(1),
        }
    }
}

/// How a well-formed message is read in one pass. The job always uses the scanner; with the `bench`
/// feature serde alone is callable too, so that `bench persist` can time the two side by side on the
/// same messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnePass {
    /// [`scan`], falling back to serde where it declines.
    Scanner,
    /// serde's derived parse of [`Message`].
    #[cfg(feature = "bench")]
    Serde,
}

/// Validates one record's value. The message key is not consulted: an observation's identity is the
/// location in its payload, so a record with a null (or any) key is accepted when its value is valid.
pub fn validate(value: Option<&[u8]>, now: DateTime<Utc>, rules: &Rules) -> Result<Observation, Rejection> {
    validate_with(OnePass::Scanner, value, now, rules)
}

/// [`validate`] with the one-pass parse chosen.
pub(crate) fn validate_with(
    one_pass: OnePass,
    value: Option<&[u8]>,
    now: DateTime<Utc>,
    rules: &Rules,
) -> Result<Observation, Rejection> {
    let bytes = match value {
        None => {
            return Err(Rejection::new(
                RejectionClass::EmptyValue,
                "the message has no value (null)",
            ));
        }
        Some([]) => {
            return Err(Rejection::new(
                RejectionClass::EmptyValue,
                "the message value is empty (0 bytes)",
            ));
        }
        Some(b) => b,
    };
    if bytes.len() > rules.max_value_bytes {
        return Err(Rejection::new(
            RejectionClass::TooLarge,
            format!(
                "the message value is {} bytes, more than the limit of {} bytes (persist.max_value_bytes)",
                bytes.len(),
                rules.max_value_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Rejection::new(
            RejectionClass::NotUtf8,
            format!(
                "the message value is not UTF-8: invalid byte at position {}",
                e.valid_up_to()
            ),
        )
    })?;
    // One pass over the message when it is well formed; the envelope, then its payload, otherwise,
    // so that a refusal names the part at fault exactly as before.
    let by_serde = || serde_json::from_str::<Message<'_>>(text).ok();
    let message = match one_pass {
        OnePass::Scanner => scan::message(text).or_else(by_serde),
        #[cfg(feature = "bench")]
        OnePass::Serde => by_serde(),
    };
    if let Some(message) = message {
        if message.schema_version != SCHEMA_VERSION {
            return Err(unknown_version(&message.schema_version.to_string()));
        }
        let stamp = Stamp {
            source: message.source,
            fetched_at: message.fetched_at,
        };
        return check(message.payload, stamp, now, rules);
    }
    let Ok(envelope) = serde_json::from_str::<Envelope>(text) else {
        return Err(diagnose_envelope(text));
    };
    if envelope.schema_version != SCHEMA_VERSION {
        return Err(unknown_version(&envelope.schema_version.to_string()));
    }
    let payload = envelope.payload.get();
    let body = serde_json::from_str::<CurrentResponse>(payload).map_err(|_| diagnose_payload(payload))?;
    let stamp = Stamp {
        source: envelope.source,
        fetched_at: envelope.fetched_at,
    };
    check(body, stamp, now, rules)
}

#[cfg(test)]
mod tests {
    use super::rejection::MAX_REASON_CHARS;
    use super::*;
    use crate::envelope::Source;
    use serde_json::{Value, json};

    /// The London recording of weatherapi.md §4.4, verbatim (aqi=yes, with solar fields as bare `0`).
    pub(super) const LONDON: &str = r#"{
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
    pub(super) const ROSWELL: &str = r#"{"location":{"name":"Roswell","region":"Georgia","country":"United States of America","lat":34.02,"lon":-84.36,"tz_id":"America/New_York","localtime_epoch":1697457029,"localtime":"2023-10-16 7:50"},"current":{"last_updated_epoch":1697456700,"last_updated":"2023-10-16 07:45","temp_c":7.2,"temp_f":45.0,"is_day":1,"condition":{"text":"Sunny","icon":"//cdn.weatherapi.com/weather/64x64/day/113.png","code":1000},"wind_mph":8.1,"wind_kph":13.0,"wind_degree":330,"wind_dir":"NNW","pressure_mb":1013.0,"pressure_in":29.91,"precip_mm":0.0,"precip_in":0.0,"humidity":86,"cloud":0,"feelslike_c":5.1,"feelslike_f":41.1,"vis_km":16.0,"vis_miles":9.0,"uv":1.0,"gust_mph":11.8,"gust_kph":18.9}}"#;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_633_300, 0).unwrap()
    }

    pub(super) fn envelope_text(payload: &str) -> String {
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
        assert_eq!(r.class, RejectionClass::EmptyValue);
        assert_eq!(rejected("").class, RejectionClass::EmptyValue);
        let big = "x".repeat(300 * 1024);
        let r = rejected(&big);
        assert_eq!(r.class, RejectionClass::TooLarge);
        assert!(r.reason.contains("307200 bytes"), "{}", r.reason);
        let r = validate(Some(&[0x7b, 0xff, 0xfe, 0x7d]), now(), &Rules::default()).unwrap_err();
        assert_eq!(r.class, RejectionClass::NotUtf8);
        assert!(r.reason.contains("position 1"), "{}", r.reason);
    }

    #[test]
    fn syntax_errors_are_invalid_json() {
        let r = rejected(r#"{"schema_version":1,"source":"#);
        assert_eq!(r.class, RejectionClass::InvalidJson);
        assert_eq!(rejected("not json at all").class, RejectionClass::InvalidJson);
        assert_eq!(
            rejected(&envelope_text(r#"{"location": }"#)).class,
            RejectionClass::InvalidJson
        );
    }

    #[test]
    fn non_objects_are_wrong_type() {
        let r = rejected("[1,2,3]");
        assert_eq!(r.class, RejectionClass::WrongType);
        assert!(r.reason.contains("array"), "{}", r.reason);
        let r = rejected(&envelope_text("\"just a string\""));
        assert_eq!(r.class, RejectionClass::WrongType);
        assert!(r.reason.contains("payload"), "{}", r.reason);
    }

    #[test]
    fn schema_version_is_checked_before_the_shape() {
        let r = rejected(r#"{"schema_version":2,"something":"else"}"#);
        assert_eq!(r.class, RejectionClass::UnknownSchemaVersion);
        assert!(r.reason.contains("schema_version = 2"), "{}", r.reason);
        let v2 = envelope_text(LONDON).replace("\"schema_version\":1", "\"schema_version\":2");
        assert_eq!(rejected(&v2).class, RejectionClass::UnknownSchemaVersion);
        let r = rejected(r#"{"schema_version":"1"}"#);
        assert_eq!(r.class, RejectionClass::WrongType);
        let r = rejected(r#"{"source":"weatherapi"}"#);
        assert_eq!(
            (r.class, r.reason.as_str()),
            (RejectionClass::MissingField, "schema_version is missing")
        );
    }

    #[test]
    fn missing_fields_are_named_with_their_path() {
        let r = rejected(&london_with(|v| {
            v["current"].as_object_mut().unwrap().remove("temp_c");
        }));
        assert_eq!(r.class, RejectionClass::MissingField);
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
            (RejectionClass::MissingField, "payload is missing")
        );
    }

    #[test]
    fn wrong_types_name_the_field_and_value() {
        let r = rejected(&london_with(|v| v["current"]["temp_c"] = json!("hot")));
        assert_eq!(r.class, RejectionClass::WrongType);
        assert!(
            r.reason
                .starts_with("payload.current.temp_c: invalid type: string \"hot\""),
            "{}",
            r.reason
        );
        let r = rejected(&london_with(|v| v["current"]["humidity"] = json!("86%")));
        assert_eq!(r.class, RejectionClass::WrongType);
        assert!(r.reason.contains("payload.current.humidity"), "{}", r.reason);
        let r = rejected(&london_with(|v| v["current"]["temp_c"] = Value::Null));
        assert_eq!(r.class, RejectionClass::WrongType);
        let r = rejected(&london_with(|v| v["location"]["name"] = json!(42)));
        assert_eq!(r.class, RejectionClass::WrongType);
        assert!(r.reason.contains("payload.location.name"), "{}", r.reason);
    }

    #[test]
    fn bad_envelope_values_are_invalid_value() {
        let r = rejected(&envelope_text(LONDON).replace("\"weatherapi\"", "\"satellite\""));
        assert_eq!(r.class, RejectionClass::InvalidValue);
        assert!(r.reason.starts_with("source:"), "{}", r.reason);
        let r = rejected(&envelope_text(LONDON).replace("2026-01-05T17:14:20Z", "yesterday"));
        assert_eq!(r.class, RejectionClass::InvalidValue);
        assert!(r.reason.starts_with("fetched_at:"), "{}", r.reason);
        let r = rejected(&london_with(|v| v["location"]["name"] = json!("  ")));
        assert_eq!(
            (r.class, r.reason.as_str()),
            (RejectionClass::InvalidValue, "payload.location.name is empty")
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
                assert_eq!(r.class, RejectionClass::OutOfRange, "{field} = {bad}");
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
        assert_eq!(r.class, RejectionClass::FutureTimestamp);
        assert!(r.reason.contains("120 min ahead"), "{}", r.reason);
        let r = rejected(&london_with(|v| {
            v["current"]["last_updated_epoch"] = json!(1e300)
        }));
        assert_eq!(r.class, RejectionClass::OutOfRange);
    }

    #[test]
    fn optional_measurements_have_ranges_too() {
        let cases: [(&str, f64, f64); 5] = [
            ("feelslike_c", -100.0, 70.0),
            ("gust_kph", 0.0, 500.0),
            ("precip_mm", 0.0, 1000.0),
            ("vis_km", 0.0, 1000.0),
            ("uv", 0.0, 30.0),
        ];
        for (field, min, max) in cases {
            for ok in [min, max] {
                run(&london_with(|v| v["current"][field] = json!(ok)))
                    .unwrap_or_else(|r| panic!("{field} = {ok} should pass: {}", r.reason));
            }
            for bad in [min - 0.5, max + 0.5] {
                let r = rejected(&london_with(|v| v["current"][field] = json!(bad)));
                assert_eq!(r.class, RejectionClass::OutOfRange, "{field} = {bad}");
                assert_eq!(
                    r.reason,
                    format!("payload.current.{field} = {bad} is out of range [{min}, {max}]")
                );
            }
        }
    }

    #[test]
    fn is_day_is_exactly_zero_or_one() {
        assert_eq!(
            run(&london_with(|v| v["current"]["is_day"] = json!(1.0)))
                .unwrap()
                .is_day,
            Some(true)
        );
        assert_eq!(
            run(&london_with(|v| v["current"]["is_day"] = json!(0)))
                .unwrap()
                .is_day,
            Some(false)
        );
        for bad in [json!(0.5), json!(2), json!(-1), json!(0.9999)] {
            let r = rejected(&london_with(|v| v["current"]["is_day"] = bad.clone()));
            assert_eq!(r.class, RejectionClass::OutOfRange, "{bad}");
            assert!(r.reason.contains("neither 0 nor 1"), "{}", r.reason);
        }
    }

    #[test]
    fn timestamps_have_a_lower_bound() {
        run(&london_with(|v| {
            v["current"]["last_updated_epoch"] = json!(946_684_800)
        }))
        .unwrap();
        for bad in [json!(946_684_799), json!(0), json!(-86_400)] {
            let r = rejected(&london_with(|v| v["current"]["last_updated_epoch"] = bad.clone()));
            assert_eq!(r.class, RejectionClass::OutOfRange, "{bad}");
            assert!(r.reason.contains("before 2000-01-01"), "{}", r.reason);
        }
        let r = rejected(&envelope_text(LONDON).replace("2026-01-05T17:14:20Z", "1999-12-31T23:59:59Z"));
        assert_eq!(r.class, RejectionClass::OutOfRange);
        assert!(r.reason.starts_with("fetched_at = 1999-12-31"), "{}", r.reason);
        let r = rejected(&envelope_text(LONDON).replace("2026-01-05T17:14:20Z", "2026-01-05T20:00:00Z"));
        assert_eq!(r.class, RejectionClass::FutureTimestamp);
        assert!(r.reason.starts_with("fetched_at = "), "{}", r.reason);
    }

    #[test]
    fn every_text_field_has_a_length_bound() {
        let cases: [(&str, &str, usize); 4] = [
            ("location", "name", 1024),
            ("location", "region", 1024),
            ("location", "country", 1024),
            ("current", "wind_dir", 16),
        ];
        for (obj, field, max) in cases {
            run(&london_with(|v| v[obj][field] = json!("é".repeat(max / 2))))
                .unwrap_or_else(|r| panic!("{field} of {max} bytes should pass: {}", r.reason));
            let r = rejected(&london_with(|v| v[obj][field] = json!("x".repeat(max + 1))));
            assert_eq!(r.class, RejectionClass::InvalidValue, "{field}");
            assert_eq!(
                r.reason,
                format!(
                    "payload.{obj}.{field} is {} bytes long; at most {max} bytes are allowed",
                    max + 1
                )
            );
        }
        let r = rejected(&london_with(|v| {
            v["current"]["condition"]["text"] = json!("x".repeat(1025))
        }));
        assert_eq!(r.class, RejectionClass::InvalidValue);
        assert!(
            r.reason
                .starts_with("payload.current.condition.text is 1025 bytes"),
            "{}",
            r.reason
        );
        // A multi-kilobyte name is a validation rejection, never sent to the database.
        let r = rejected(&london_with(|v| v["location"]["name"] = json!("n".repeat(8000))));
        assert_eq!(r.class, RejectionClass::InvalidValue);
    }

    #[test]
    fn a_pipe_in_a_name_cannot_collide_with_another_place() {
        let a = run(&london_with(|v| {
            v["location"]["name"] = json!("a|b");
            v["location"]["region"] = json!("c");
        }))
        .unwrap();
        let b = run(&london_with(|v| {
            v["location"]["name"] = json!("a");
            v["location"]["region"] = json!("b|c");
        }))
        .unwrap();
        assert_ne!(a.location_key, b.location_key);
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
        let r = Rejection::new(RejectionClass::InvalidValue, "a\0b");
        assert!(!r.reason.contains('\0'));
    }
}
