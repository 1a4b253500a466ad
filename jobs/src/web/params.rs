//! Query-string validation: every parameter is checked, unknown ones are refused, and each refusal
//! is a 400 naming the parameter and saying what is accepted.

use chrono::{DateTime, Utc};

use super::error::ApiError;

/// Upper bound of `last` (and the default) on list endpoints: bounded pages keep one request cheap.
pub const MAX_LAST: u64 = 500;
/// Default `last`.
pub const DEFAULT_LAST: u64 = 20;
/// Upper bound of `limit` on `/observations`.
pub const MAX_LIMIT: u64 = 1000;
/// Default `limit` on `/observations`.
pub const DEFAULT_LIMIT: u64 = 100;
/// Longest accepted text value (scopes, location keys): far above any real key.
const MAX_TEXT: usize = 200;

/// A parsed query string, checked against the names an endpoint accepts.
#[derive(Debug)]
pub struct Params {
    /// The `(name, value)` pairs, in order.
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses `raw` and refuses names not in `allowed`, or given twice.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                let expected = if allowed.is_empty() {
                    "this endpoint takes no parameters".to_owned()
                } else {
                    format!("expected one of: {}", allowed.join(", "))
                };
                return Err(ApiError::bad_parameter(
                    &shorten(name),
                    format!("unknown parameter '{}'; {expected}", shorten(name)),
                ));
            }
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(ApiError::bad_parameter(
                    name,
                    format!("'{name}' is given more than once"),
                ));
            }
        }
        Ok(Self { pairs })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// An integer in `1..=max`, `default` when absent.
    pub fn count(&self, name: &str, default: u64, max: u64) -> Result<u64, ApiError> {
        let Some(text) = self.get(name) else {
            return Ok(default);
        };
        match text.parse::<u64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_parameter(
                name,
                format!(
                    "{name} must be an integer from 1 to {max}, got '{}'",
                    shorten(text)
                ),
            )),
        }
    }

    /// Non-empty text of at most 200 characters without control characters; `None` when absent.
    pub fn text(&self, name: &str) -> Result<Option<String>, ApiError> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        let t = text.trim();
        if t.is_empty() || t.chars().count() > MAX_TEXT || t.chars().any(char::is_control) {
            return Err(ApiError::bad_parameter(
                name,
                format!("{name} must be 1 to {MAX_TEXT} printable characters"),
            ));
        }
        Ok(Some(t.to_owned()))
    }

    /// One of `choices`; `None` when absent.
    pub fn choice(&self, name: &str, choices: &[&'static str]) -> Result<Option<&'static str>, ApiError> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        choices
            .iter()
            .find(|c| **c == text)
            .copied()
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_parameter(
                    name,
                    format!(
                        "{name} must be one of {}, got '{}'",
                        choices.join(", "),
                        shorten(text)
                    ),
                )
            })
    }

    /// An RFC 3339 time (`2026-11-25T00:00:00Z`); `None` when absent.
    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        DateTime::parse_from_rfc3339(text)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| {
                ApiError::bad_parameter(
                    name,
                    format!(
                        "{name} must be an RFC 3339 time such as 2026-11-25T00:00:00Z, got '{}'",
                        shorten(text)
                    ),
                )
            })
    }
}

/// At most 40 characters of a caller's text, for echoing it back in a message.
fn shorten(text: &str) -> String {
    let mut s: String = text.chars().take(40).collect();
    if text.chars().count() > 40 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_bounded_and_named() {
        let p = Params::parse(Some("last=0"), &["last"]).unwrap();
        let e = p.count("last", 20, 500).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("last"));
        assert!(e.message.contains("from 1 to 500"), "{}", e.message);
        let p = Params::parse(Some("last=501"), &["last"]).unwrap();
        assert!(p.count("last", 20, 500).is_err());
        let p = Params::parse(Some("last=7"), &["last"]).unwrap();
        assert_eq!(p.count("last", 20, 500).unwrap(), 7);
        assert_eq!(
            Params::parse(None, &["last"])
                .unwrap()
                .count("last", 20, 500)
                .unwrap(),
            20
        );
    }

    #[test]
    fn unknown_and_repeated_names_are_refused() {
        let e = Params::parse(Some("lsat=3"), &["last", "scope"]).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("lsat"));
        assert!(e.message.contains("last, scope"), "{}", e.message);
        let e = Params::parse(Some("last=1&last=2"), &["last"]).unwrap_err();
        assert!(e.message.contains("more than once"), "{}", e.message);
    }

    #[test]
    fn times_and_choices() {
        let p = Params::parse(Some("from=yesterday&status=ok"), &["from", "status"]).unwrap();
        assert!(p.time("from").unwrap_err().message.contains("RFC 3339"));
        let e = p.choice("status", &["running", "failed"]).unwrap_err();
        assert!(e.message.contains("running, failed"), "{}", e.message);
    }
}
