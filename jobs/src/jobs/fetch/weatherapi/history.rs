//! Reading `history.json` bodies: `{location, forecast:{forecastday:[{date, day, astro, hour:[…]}]}}`.
//!
//! Each hour becomes a payload shaped like a `current.json` body, so that it travels in the same
//! envelope, is validated by the same rules and lands in the same `(location_key, observed_at, source)`
//! slot as a live observation of that hour: `{"location":<the body's location, verbatim>,
//! "current":{"last_updated_epoch":<time_epoch>,"last_updated":<time>,<the hour's fields, verbatim>}}`.
//! The hour's own bytes are kept; only the two `last_updated` fields, which name the observation's
//! time the way `current.json` does, are put in front.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::body::Location;
use super::error::{ApiError, ErrorBody};

/// One hour of a history day, ready to produce.
#[derive(Debug)]
pub struct HistoryHour {
    /// The hour's `time_epoch`: the observation time.
    pub epoch: i64,
    /// The `current.json`-shaped payload (see the module's documentation).
    pub payload: Box<RawValue>,
}

/// One location's hours of one day, as `history.json` served them.
#[derive(Debug)]
pub struct HistoryDay {
    /// The place the API resolved `q` to.
    pub location: Location,
    /// Every hour of every `forecastday` in the body, in the body's order.
    pub hours: Vec<HistoryHour>,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    location: &'a RawValue,
    #[serde(borrow)]
    forecast: Forecast<'a>,
}

#[derive(Deserialize)]
struct Forecast<'a> {
    #[serde(borrow)]
    forecastday: Vec<ForecastDay<'a>>,
}

#[derive(Deserialize)]
struct ForecastDay<'a> {
    #[serde(borrow, default)]
    hour: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct HourTime {
    time_epoch: i64,
    time: String,
}

fn unparsable(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::Unparsable {
        reason: format!("{what}: {e}"),
    }
}

/// Parses a successful `history.json` body into its hours.
pub fn parse_history(status: u16, text: &str) -> Result<HistoryDay, ApiError> {
    let body: Body = match serde_json::from_str(text) {
        Ok(body) => body,
        Err(e) => {
            if let Ok(ErrorBody { error }) = serde_json::from_str::<ErrorBody>(text) {
                return Err(ApiError::from_code(status, error.code, error.message));
            }
            return Err(unparsable("not a history.json body", e));
        }
    };
    let location: Location =
        serde_json::from_str(body.location.get()).map_err(|e| unparsable("history.json `location`", e))?;
    let mut hours = Vec::new();
    for day in body.forecast.forecastday {
        for hour in day.hour {
            hours.push(as_current(body.location, hour)?);
        }
    }
    Ok(HistoryDay { location, hours })
}

/// One hour as a `current.json`-shaped payload.
fn as_current(location: &RawValue, hour: &RawValue) -> Result<HistoryHour, ApiError> {
    let time: HourTime = serde_json::from_str(hour.get()).map_err(|e| unparsable("history.json hour", e))?;
    let fields = hour.get().trim_start();
    let rest = fields
        .strip_prefix('{')
        .ok_or_else(|| unparsable("history.json hour is not an object", fields))?;
    let last_updated = serde_json::to_string(&time.time).map_err(|e| unparsable("hour time", e))?;
    let text = format!(
        "{{\"location\":{},\"current\":{{\"last_updated_epoch\":{},\"last_updated\":{last_updated},{rest}}}",
        location.get(),
        time.time_epoch,
    );
    let payload = RawValue::from_string(text).map_err(|e| unparsable("history hour payload", e))?;
    Ok(HistoryHour {
        epoch: time.time_epoch,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"location":{"name":"London","region":"City of London, Greater London","country":"United Kingdom","lat":51.52,"lon":-0.11,"tz_id":"Europe/London","localtime_epoch":1767633260,"localtime":"2026-01-05 17:14"},"forecast":{"forecastday":[{"date":"2026-01-04","date_epoch":1767484800,"day":{"maxtemp_c":3.0},"astro":{"sunrise":"08:06 AM","moon_illumination":"99"},"hour":[{"time_epoch":1767484800,"time":"2026-01-04 00:00","temp_c":1.5,"wind_kph":10.1,"will_it_rain":0},{"time_epoch":1767488400,"time":"2026-01-04 01:00","temp_c":1.2,"wind_kph":9.0}]}]}}"#;

    #[test]
    fn each_hour_becomes_a_current_shaped_payload() {
        let day = parse_history(200, BODY).unwrap();
        assert_eq!(day.location.name, "London");
        assert_eq!(day.hours.len(), 2);
        assert_eq!(day.hours[1].epoch, 1_767_488_400);
        let v: serde_json::Value = serde_json::from_str(day.hours[0].payload.get()).unwrap();
        assert_eq!(v["current"]["last_updated_epoch"], 1_767_484_800);
        assert_eq!(v["current"]["last_updated"], "2026-01-04 00:00");
        assert_eq!(v["current"]["temp_c"], 1.5);
        assert_eq!(v["current"]["will_it_rain"], 0);
        assert_eq!(v["location"]["tz_id"], "Europe/London");
        // The hour's own bytes are kept.
        assert!(day.hours[0].payload.get().contains(r#""time_epoch":1767484800,"time":"2026-01-04 00:00","temp_c":1.5"#));
    }

    #[test]
    fn error_bodies_and_garbage_are_classified() {
        let e = parse_history(400, r#"{"error":{"code":1006,"message":"No matching location found."}}"#).unwrap_err();
        assert!(matches!(e, ApiError::LocationNotFound { .. }), "{e:?}");
        let e = parse_history(200, "<html>").unwrap_err();
        assert!(matches!(e, ApiError::Unparsable { .. }), "{e:?}");
        let e = parse_history(200, r#"{"location":{"name":"X","region":"","country":"Y","lat":0,"lon":0},"forecast":{"forecastday":[{"hour":[{"time":"x"}]}]}}"#).unwrap_err();
        assert!(matches!(e, ApiError::Unparsable { .. }), "{e:?}");
    }
}
