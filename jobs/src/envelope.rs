//! The message format on `weather.observations`: a versioned envelope around the API's response body.
//!
//! The fetch job writes it, the persist job reads it; both go through this module so the two sides
//! cannot drift apart.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The only envelope version this build writes and accepts.
pub const SCHEMA_VERSION: u32 = 1;

/// The envelope's JSON Schema (draft 2020-12) for [`SCHEMA_VERSION`], as published in
/// `docs/schema/envelope.v1.json` and served at `/api/v1/schema/envelope`. The integration test
/// `envelope_schema` checks it against what the fetch job produces and what persist refuses.
pub const JSON_SCHEMA: &str = include_str!("../../docs/schema/envelope.v1.json");

/// Where an observation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The WeatherAPI.com service.
    Weatherapi,
    /// The built-in simulator (offline runs, demos, tests).
    Simulated,
}

impl Source {
    /// The value stored in `observations.source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Weatherapi => "weatherapi",
            Source::Simulated => "simulated",
        }
    }
}

/// One Kafka message value: `{"schema_version":1,"source":…,"fetched_at":…,"query":…,"payload":…}`.
///
/// `payload` is the API's response body verbatim (a [`RawValue`]), so what was served is exactly what
/// is stored in Kafka, byte for byte.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// Envelope format version; see [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Where the payload came from.
    pub source: Source,
    /// When the fetch job received the payload (RFC 3339).
    pub fetched_at: DateTime<Utc>,
    /// The `q` the payload answers.
    pub query: String,
    /// The API's `current.json` body, unmodified.
    pub payload: Box<RawValue>,
}

impl Envelope {
    /// The envelope of the current [`SCHEMA_VERSION`]: the one way the fetch job wraps a payload.
    pub fn new(source: Source, fetched_at: DateTime<Utc>, query: &str, payload: Box<RawValue>) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            source,
            fetched_at,
            query: query.to_owned(),
            payload,
        }
    }

    /// Serialises the envelope to the bytes produced to Kafka.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising owned strings, a timestamp and a RawValue cannot fail.
        serde_json::to_vec(self).expect("envelope serialises")
    }
}

/// The normalized identity of a place: `name|region|country`, trimmed, lower-cased, inner runs of
/// whitespace folded to one space. It is the Kafka message key and `observations.location_key`, so the
/// same place always lands in the same partition and the same unique-key slot.
///
/// Within each part, `\` is written `\\` and `|` is written `\|`, so the key is unambiguous
/// (`a|b` + `c` and `a` + `b|c` differ) while a place without either character keeps the key it
/// always had.
pub fn location_key(name: &str, region: &str, country: &str) -> String {
    let mut key = String::with_capacity(name.len() + region.len() + country.len() + 2);
    for (i, part) in [name, region, country].into_iter().enumerate() {
        if i > 0 {
            key.push('|');
        }
        if part.is_ascii() {
            push_normalized_ascii(&mut key, part);
        } else {
            key.push_str(&normalize(part));
        }
    }
    key
}

/// [`normalize`] for ASCII text, written straight into `key`: the persist job computes a key for
/// every record, and the general version's five intermediate strings per part were a tenth of its
/// validation time. Non-ASCII text takes the general version, whose Unicode lower-casing (a final
/// sigma, say) depends on the context of each character.
fn push_normalized_ascii(key: &mut String, part: &str) {
    for (i, word) in part.split_whitespace().enumerate() {
        if i > 0 {
            key.push(' ');
        }
        for c in word.chars() {
            match c {
                '\\' => key.push_str("\\\\"),
                '|' => key.push_str("\\|"),
                c => key.push(c.to_ascii_lowercase()),
            }
        }
    }
}

fn normalize(part: &str) -> String {
    part.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_key_is_normalized() {
        assert_eq!(
            location_key(" London ", "City of  London", "United Kingdom"),
            "london|city of london|united kingdom"
        );
        assert_eq!(location_key("Paris", "", "France"), "paris||france");
    }

    #[test]
    fn the_ascii_path_normalizes_like_the_general_one() {
        let parts = [
            "",
            " ",
            "London",
            "  City of\t London \r\n",
            "A\x0bB\x0cC",
            "a|b\\c",
            "\\|\\",
            "MiXeD CaSe 123 !?",
        ];
        for name in parts {
            for region in parts {
                let general = [name, region, "UK"].map(normalize).join("|");
                assert_eq!(location_key(name, region, "UK"), general, "{name:?} {region:?}");
            }
        }
        // Non-ASCII text takes the general path, final sigma and all.
        assert_eq!(location_key("ΟΔΟΣ", "Île", "X"), "οδος|île|x");
    }

    #[test]
    fn location_key_is_unambiguous() {
        assert_ne!(location_key("a|b", "c", "d"), location_key("a", "b|c", "d"));
        assert_ne!(location_key("a\\", "|b", "c"), location_key("a\\|", "b", "c"));
        assert_eq!(location_key("A|B", "c\\d", "e"), "a\\|b|c\\\\d|e");
    }

    #[test]
    fn envelope_keeps_payload_verbatim() {
        let body = r#"{"location":{"name":"X"},  "current":{"temp_c":1.0}}"#;
        let env = Envelope {
            schema_version: SCHEMA_VERSION,
            source: Source::Simulated,
            fetched_at: Utc::now(),
            query: "X".into(),
            payload: RawValue::from_string(body.to_owned()).unwrap(),
        };
        let bytes = env.to_bytes();
        let back: Envelope = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.payload.get(), body);
        assert_eq!(back.source, Source::Simulated);
    }
}
