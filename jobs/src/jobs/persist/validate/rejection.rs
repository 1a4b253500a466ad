//! The rejection a refused record carries: its class, stored as text, and a bounded reason.

use std::fmt;

/// Why a record was refused, machine-readable. Stored in `rejected_records.error_class` and in the
/// `error_class` header of the dead-letter message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectionClass {
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
    /// The record passed validation but PostgreSQL refused the row with an error that is not an
    /// outage (a data exception, a constraint, an index row too large...), found by splitting the
    /// batch.
    DbRejected,
}

impl RejectionClass {
    /// Every class, in the order of the README's table.
    pub const ALL: [RejectionClass; 11] = [
        RejectionClass::EmptyValue,
        RejectionClass::TooLarge,
        RejectionClass::NotUtf8,
        RejectionClass::InvalidJson,
        RejectionClass::UnknownSchemaVersion,
        RejectionClass::MissingField,
        RejectionClass::WrongType,
        RejectionClass::InvalidValue,
        RejectionClass::OutOfRange,
        RejectionClass::FutureTimestamp,
        RejectionClass::DbRejected,
    ];

    /// The stored, snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionClass::EmptyValue => "empty_value",
            RejectionClass::TooLarge => "too_large",
            RejectionClass::NotUtf8 => "not_utf8",
            RejectionClass::InvalidJson => "invalid_json",
            RejectionClass::UnknownSchemaVersion => "unknown_schema_version",
            RejectionClass::MissingField => "missing_field",
            RejectionClass::WrongType => "wrong_type",
            RejectionClass::InvalidValue => "invalid_value",
            RejectionClass::OutOfRange => "out_of_range",
            RejectionClass::FutureTimestamp => "future_timestamp",
            RejectionClass::DbRejected => "db_rejected",
        }
    }
}

impl fmt::Display for RejectionClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused record: its class and a human reason naming the field and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Machine-readable class.
    pub class: RejectionClass,
    /// Human-readable reason, at most [`MAX_REASON_CHARS`] characters, never containing NUL (which
    /// PostgreSQL text cannot hold).
    pub reason: String,
}

/// Reasons are cut to this many characters: a reason quotes the offending value, and a value can be
/// megabytes long. The complete record is kept in the payload column anyway.
pub(crate) const MAX_REASON_CHARS: usize = 500;

impl Rejection {
    /// A rejection with its reason bounded and made storable.
    pub fn new(class: RejectionClass, reason: impl Into<String>) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_are_unique_snake_case() {
        let names: std::collections::BTreeSet<_> = RejectionClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), RejectionClass::ALL.len());
        assert!(names.iter().all(|n| {
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        }));
    }
}
