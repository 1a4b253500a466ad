//! The slow pass: why a record that failed the fast parse was refused, naming the class and the
//! field. Invalid records are rare, so this pass is precise rather than fast.

use super::observation::CurrentResponse;
use super::{Rejection, RejectionClass};
use crate::envelope::{Envelope, SCHEMA_VERSION};

/// An envelope of a schema version this build does not read; `shown` is the version as written.
pub(super) fn unknown_version(shown: &str) -> Rejection {
    Rejection::new(
        RejectionClass::UnknownSchemaVersion,
        format!("schema_version = {shown} is unknown; this build reads version {SCHEMA_VERSION}"),
    )
}

/// Why the envelope did not parse: syntax first, then the schema version (a newer envelope may have a
/// different shape, and that is the thing to report), then the first field serde stumbled on.
pub(super) fn diagnose_envelope(text: &str) -> Rejection {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Rejection::new(
                RejectionClass::InvalidJson,
                format!("the message value is not JSON: {e}"),
            );
        }
    };
    let Some(object) = value.as_object() else {
        return Rejection::new(
            RejectionClass::WrongType,
            format!(
                "the message value is a JSON {}, expected an object (the envelope)",
                json_type(&value)
            ),
        );
    };
    match object.get("schema_version") {
        None => return Rejection::new(RejectionClass::MissingField, "schema_version is missing"),
        Some(v) if v.as_u64() != Some(u64::from(SCHEMA_VERSION)) => {
            return if v.is_number() {
                unknown_version(&v.to_string())
            } else {
                Rejection::new(
                    RejectionClass::WrongType,
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
            RejectionClass::InvalidValue,
            "the envelope did not parse on the first pass",
        ),
        Err(e) => from_serde(&e.path().to_string(), e.inner()),
    }
}

/// Why the payload did not parse, with the field's path inside the envelope (`payload.current.temp_c`).
pub(super) fn diagnose_payload(payload: &str) -> Rejection {
    if !payload.trim_start().starts_with('{') {
        let kind = serde_json::from_str::<serde_json::Value>(payload)
            .map(|v| json_type(&v))
            .unwrap_or("value");
        return Rejection::new(
            RejectionClass::WrongType,
            format!("payload is a JSON {kind}, expected an object"),
        );
    }
    let mut de = serde_json::Deserializer::from_str(payload);
    match serde_path_to_error::deserialize::<_, CurrentResponse>(&mut de) {
        Ok(_) => Rejection::new(
            RejectionClass::InvalidValue,
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
            RejectionClass::InvalidJson,
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
                return Rejection::new(RejectionClass::MissingField, format!("{full} is missing"));
            }
            let class = if message.starts_with("invalid type") {
                RejectionClass::WrongType
            } else {
                RejectionClass::InvalidValue
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
