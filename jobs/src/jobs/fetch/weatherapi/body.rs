//! Reading `current.json` bodies, single and bulk, without re-serialising them: the payload handed on
//! is the server's bytes, and only `location` is deserialised (the Kafka key comes from it).

use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::{ApiError, ErrorBody, ErrorDetail};

/// The identifying part of a response's `location` object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Location {
    /// Place name, e.g. `London`.
    pub name: String,
    /// Region or state; may be empty.
    pub region: String,
    /// Country name.
    pub country: String,
    /// Latitude, decimal degrees.
    pub lat: f64,
    /// Longitude, decimal degrees.
    pub lon: f64,
}

/// One location's current weather as served.
#[derive(Debug)]
pub struct Current {
    /// The place the API resolved `q` to.
    pub location: Location,
    /// The `{location, current}` JSON exactly as the server wrote it (for bulk: the two objects'
    /// bytes sliced from the body, in a `{"location":…,"current":…}` wrapper).
    pub payload: Box<RawValue>,
}

#[derive(Deserialize)]
struct CurrentBody<'a> {
    location: Location,
    #[serde(borrow)]
    current: &'a RawValue,
}

fn unparsable(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::Unparsable {
        reason: format!("{what}: {e}"),
    }
}

fn check_object(current: &RawValue) -> Result<(), ApiError> {
    if current.get().starts_with('{') {
        Ok(())
    } else {
        Err(unparsable("`current` is not an object", current.get()))
    }
}

/// Parses a successful `current.json` body; the body itself becomes the payload.
pub fn parse_current(status: u16, body: String) -> Result<Current, ApiError> {
    let location = match serde_json::from_str::<CurrentBody>(&body) {
        Ok(parsed) => {
            check_object(parsed.current)?;
            parsed.location
        }
        Err(e) => {
            // A 200 carrying an error object is still an error; classify it by its code.
            if let Ok(ErrorBody { error }) = serde_json::from_str::<ErrorBody>(&body) {
                return Err(ApiError::from_code(status, error.code, error.message));
            }
            return Err(unparsable("not a current.json body", e));
        }
    };
    let payload = RawValue::from_string(body).map_err(|e| unparsable("not JSON", e))?;
    Ok(Current { location, payload })
}

#[derive(Deserialize)]
struct BulkBody<'a> {
    #[serde(borrow)]
    bulk: Vec<BulkItem<'a>>,
}

#[derive(Deserialize)]
struct BulkItem<'a> {
    #[serde(borrow)]
    query: BulkQuery<'a>,
}

#[derive(Deserialize)]
struct BulkQuery<'a> {
    custom_id: Option<String>,
    #[serde(borrow)]
    location: Option<&'a RawValue>,
    #[serde(borrow)]
    current: Option<&'a RawValue>,
    error: Option<ErrorDetail>,
}

/// Parses a successful bulk body into one result per requested location, in request order. The
/// request tagged location `i` with `custom_id = i`; entries are matched by it, falling back to
/// position when a `custom_id` is absent.
pub fn parse_bulk(
    status: u16,
    body: &str,
    requested: usize,
) -> Result<Vec<Result<Current, ApiError>>, ApiError> {
    let parsed: BulkBody = match serde_json::from_str(body) {
        Ok(parsed) => parsed,
        Err(e) => {
            if let Ok(ErrorBody { error }) = serde_json::from_str::<ErrorBody>(body) {
                return Err(ApiError::from_code(status, error.code, error.message));
            }
            return Err(unparsable("not a bulk current.json body", e));
        }
    };
    let mut results: Vec<Option<Result<Current, ApiError>>> = (0..requested).map(|_| None).collect();
    for (position, item) in parsed.bulk.into_iter().enumerate() {
        let index = item
            .query
            .custom_id
            .as_deref()
            .and_then(|id| id.parse::<usize>().ok())
            .unwrap_or(position);
        if let Some(slot) = results.get_mut(index) {
            *slot = Some(bulk_entry(status, item.query));
        }
    }
    Ok(results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(ApiError::Unparsable {
                    reason: "location missing from the bulk response".into(),
                })
            })
        })
        .collect())
}

fn bulk_entry(status: u16, query: BulkQuery) -> Result<Current, ApiError> {
    if let Some(error) = query.error {
        return Err(ApiError::from_code(status, error.code, error.message));
    }
    let (Some(location_raw), Some(current)) = (query.location, query.current) else {
        return Err(ApiError::Unparsable {
            reason: "bulk entry has neither location/current nor error".into(),
        });
    };
    check_object(current)?;
    let location: Location =
        serde_json::from_str(location_raw.get()).map_err(|e| unparsable("bulk entry location", e))?;
    // Two valid JSON values joined into an object literal are valid JSON; from_string checks anyway.
    let text = format!(
        "{{\"location\":{},\"current\":{}}}",
        location_raw.get(),
        current.get()
    );
    let payload = RawValue::from_string(text).map_err(|e| unparsable("bulk entry", e))?;
    Ok(Current { location, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOC: &str = r#"{"name":"Roswell","region":"Georgia","country":"United States of America","lat":34.02,"lon":-84.36,"tz_id":"America/New_York","localtime_epoch":1697457029,"localtime":"2023-10-16 7:50"}"#;
    const CUR: &str =
        r#"{"last_updated_epoch":1697456700,"temp_c":7.2,"wind_kph":13.0,"pressure_mb":1013.0}"#;

    #[test]
    fn single_body_is_kept_verbatim() {
        let body = format!("{{\"location\":{LOC},  \"current\":{CUR}}}");
        let c = parse_current(200, body.clone()).unwrap();
        assert_eq!(c.payload.get(), body);
        assert_eq!(c.location.name, "Roswell");
        assert_eq!(c.location.region, "Georgia");
    }

    #[test]
    fn bad_single_bodies_are_unparsable_or_classified() {
        let err = parse_current(200, "<html>".into()).unwrap_err();
        assert!(matches!(err, ApiError::Unparsable { .. }), "{err}");
        let err = parse_current(200, format!("{{\"location\":{LOC}}}")).unwrap_err();
        assert!(matches!(err, ApiError::Unparsable { .. }), "{err}");
        let err = parse_current(200, r#"{"error":{"code":1006,"message":"x"}}"#.into()).unwrap_err();
        assert!(matches!(err, ApiError::LocationNotFound { .. }), "{err}");
    }

    #[test]
    fn bulk_entries_are_sliced_byte_exact_and_matched_by_custom_id() {
        let body = format!(
            r#"{{"bulk":[{{"query":{{"custom_id":"1","q":"x","error":{{"code":1006,"message":"No matching location found."}}}}}},{{"query":{{"custom_id":"0","q":"Roswell","location":{LOC},"current":{CUR}}}}}]}}"#
        );
        let results = parse_bulk(200, &body, 3).unwrap();
        assert_eq!(results.len(), 3);
        let first = results[0].as_ref().unwrap();
        assert_eq!(
            first.payload.get(),
            format!("{{\"location\":{LOC},\"current\":{CUR}}}")
        );
        assert!(matches!(results[1], Err(ApiError::LocationNotFound { .. })));
        assert!(matches!(results[2], Err(ApiError::Unparsable { .. })));
    }
}
