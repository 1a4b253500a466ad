//! What can go wrong talking to WeatherAPI, by class: the caller decides from [`ApiError::class`]
//! whether to stop the run, fail one location, or retry.
//!
//! The class comes from the JSON error code when there is one (WeatherAPI's codes are stable, its
//! HTTP statuses are not: 2009 arrives as 403 or 400), else from the HTTP status.

use std::time::Duration;

use serde::Deserialize;

/// What the caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorAction {
    /// The key or the account is the problem: every other request would fail the same way, so the
    /// run stops at once, without retries.
    Fatal,
    /// This location (or batch) failed for a reason retrying will not fix; the others go on.
    Location,
    /// A transient failure (throttling, server error, network, timeout): retry with backoff.
    Retryable,
}

/// A WeatherAPI failure. Display texts never contain the API key or a request URL (the URL carries
/// the key in its query).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Key missing or invalid (401; codes 1002, 2006).
    #[error("WeatherAPI rejected the API key ({}); check WEATHERAPI_KEY or weatherapi.key_file", describe(*.code, .message))]
    InvalidKey {
        /// 1002 or 2006, when the body had a code.
        code: Option<i64>,
        /// The API's message.
        message: String,
    },
    /// The key's monthly call quota is used up (code 2007).
    #[error("WeatherAPI key has exceeded its monthly call quota (code 2007: {message})")]
    QuotaExceeded {
        /// The API's message.
        message: String,
    },
    /// The key has been disabled (code 2008).
    #[error("WeatherAPI key has been disabled (code 2008: {message})")]
    KeyDisabled {
        /// The API's message.
        message: String,
    },
    /// The plan does not include this resource (code 2009, or a bare 403), e.g. bulk on the free plan.
    #[error(
        "WeatherAPI key has no access to this resource ({}); bulk requests need a paid plan (set weatherapi.bulk = false)",
        describe(*.code, .message)
    )]
    NoAccess {
        /// 2009, when the body had a code.
        code: Option<i64>,
        /// The API's message.
        message: String,
    },
    /// The API knows no place matching `q` (code 1006).
    #[error("no matching location (code 1006: {message})")]
    LocationNotFound {
        /// The API's message.
        message: String,
    },
    /// Any other API error code (1003 q missing, 1005 bad URL, 9000/9001 bad bulk body, 9999, ...).
    #[error("WeatherAPI error (HTTP {status}, code {code}: {message})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's error code.
        code: i64,
        /// The API's message.
        message: String,
    },
    /// A non-success status without an API error body and not otherwise classified (e.g. 404).
    #[error("WeatherAPI answered HTTP {status} without an error code")]
    Http {
        /// HTTP status.
        status: u16,
    },
    /// A success status whose body is not what `current.json` returns.
    #[error("unparsable response body: {reason}")]
    Unparsable {
        /// What did not parse.
        reason: String,
    },
    /// HTTP 429.
    #[error("throttled (HTTP 429{})", after(*.retry_after))]
    RateLimited {
        /// The `Retry-After` delay, when given in seconds.
        retry_after: Option<Duration>,
    },
    /// HTTP 5xx.
    #[error("server error (HTTP {status}{})", after(*.retry_after))]
    Server {
        /// HTTP status.
        status: u16,
        /// The `Retry-After` delay, when given in seconds.
        retry_after: Option<Duration>,
    },
    /// No complete answer within the per-request timeout.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// The connection could not be established; the cause chain, without the URL (it holds the key).
    #[error("cannot connect to WeatherAPI: {0}")]
    Connect(String),
    /// Another transport failure (connection reset, bad chunk, ...); the cause chain, without the URL.
    #[error("transport error: {0}")]
    Transport(String),
    /// The client itself is misconfigured (e.g. an invalid base URL).
    #[error("invalid WeatherAPI client configuration: {0}")]
    Config(String),
    /// The run was stopped (shutdown) before this request could complete.
    #[error("interrupted by shutdown")]
    Cancelled,
    /// Not called: counting the call failed, or it would pass `weatherapi.monthly_call_budget`.
    #[error("not called: {0}")]
    Budget(String),
}

fn describe(code: Option<i64>, message: &str) -> String {
    match code {
        Some(code) => format!("code {code}: {message}"),
        None => message.to_owned(),
    }
}

fn after(retry_after: Option<Duration>) -> String {
    retry_after
        .map(|d| format!(", Retry-After {}s", d.as_secs()))
        .unwrap_or_default()
}

/// A reqwest error and its causes on one line (`error sending request: client error (Connect): tcp
/// connect error: Connection refused (os error 111)`). The error's own URL must be stripped first
/// (`without_url`): its causes (hyper, io) name hosts at most, never the query.
pub(crate) fn cause_chain(e: &reqwest::Error) -> String {
    crate::job_error::chain(e)
}

/// The JSON error body: `{"error":{"code":1006,"message":"No matching location found."}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    /// The wrapped error.
    pub error: ErrorDetail,
}

/// The inner object of an error body (also what a failed bulk entry carries).
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorDetail {
    /// WeatherAPI's error code.
    pub code: i64,
    /// Its human-readable message.
    #[serde(default)]
    pub message: String,
}

impl ApiError {
    /// The class deciding what the caller does next.
    pub fn class(&self) -> ApiErrorAction {
        match self {
            ApiError::InvalidKey { .. }
            | ApiError::QuotaExceeded { .. }
            | ApiError::KeyDisabled { .. }
            | ApiError::NoAccess { .. }
            | ApiError::Budget(_)
            | ApiError::Config(_) => ApiErrorAction::Fatal,
            ApiError::RateLimited { .. }
            | ApiError::Server { .. }
            | ApiError::Timeout(_)
            | ApiError::Connect(_)
            | ApiError::Transport(_) => ApiErrorAction::Retryable,
            ApiError::LocationNotFound { .. }
            | ApiError::Api { .. }
            | ApiError::Http { .. }
            | ApiError::Unparsable { .. }
            | ApiError::Cancelled => ApiErrorAction::Location,
        }
    }

    /// The server's requested delay before the next attempt, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after } | ApiError::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// An API error code and message as an error, by code first, then by `status`.
    pub(crate) fn from_code(status: u16, code: i64, message: String) -> Self {
        match code {
            1002 | 2006 => ApiError::InvalidKey {
                code: Some(code),
                message,
            },
            2007 => ApiError::QuotaExceeded { message },
            2008 => ApiError::KeyDisabled { message },
            2009 => ApiError::NoAccess {
                code: Some(code),
                message,
            },
            1006 => ApiError::LocationNotFound { message },
            _ => match status {
                429 => ApiError::RateLimited { retry_after: None },
                500..=599 => ApiError::Server {
                    status,
                    retry_after: None,
                },
                _ => ApiError::Api {
                    status,
                    code,
                    message,
                },
            },
        }
    }

    /// Classifies a non-success response from its status, body and `Retry-After`.
    pub(crate) fn from_response(status: u16, body: &str, retry_after: Option<Duration>) -> Self {
        // Throttling and server errors are retryable whatever their body says (the CDN may answer
        // them with HTML); only a fatal key code overrides that.
        let parsed = serde_json::from_str::<ErrorBody>(body).ok();
        if let Some(ErrorBody { error }) = parsed {
            let err = Self::from_code(status, error.code, error.message);
            if err.class() != ApiErrorAction::Location || !matches!(status, 429 | 500..=599) {
                return err.with_retry_after(retry_after);
            }
        }
        match status {
            401 => ApiError::InvalidKey {
                code: None,
                message: "HTTP 401".into(),
            },
            403 => ApiError::NoAccess {
                code: None,
                message: "HTTP 403".into(),
            },
            429 => ApiError::RateLimited { retry_after },
            500..=599 => ApiError::Server { status, retry_after },
            _ => ApiError::Http { status },
        }
    }

    fn with_retry_after(self, delay: Option<Duration>) -> Self {
        match self {
            ApiError::RateLimited { retry_after } => ApiError::RateLimited {
                retry_after: delay.or(retry_after),
            },
            ApiError::Server { status, retry_after } => ApiError::Server {
                status,
                retry_after: delay.or(retry_after),
            },
            other => other,
        }
    }

    /// Replaces `secret` in the message texts the API sent back, in case a server ever echoes it.
    pub(crate) fn scrubbed(self, secret: &str) -> Self {
        if secret.is_empty() {
            return self;
        }
        let clean = |m: String| m.replace(secret, "***");
        match self {
            ApiError::InvalidKey { code, message } => ApiError::InvalidKey {
                code,
                message: clean(message),
            },
            ApiError::QuotaExceeded { message } => ApiError::QuotaExceeded {
                message: clean(message),
            },
            ApiError::KeyDisabled { message } => ApiError::KeyDisabled {
                message: clean(message),
            },
            ApiError::NoAccess { code, message } => ApiError::NoAccess {
                code,
                message: clean(message),
            },
            ApiError::LocationNotFound { message } => ApiError::LocationNotFound {
                message: clean(message),
            },
            ApiError::Api {
                status,
                code,
                message,
            } => ApiError::Api {
                status,
                code,
                message: clean(message),
            },
            ApiError::Unparsable { reason } => ApiError::Unparsable {
                reason: clean(reason),
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: i64, message: &str) -> String {
        format!(r#"{{"error":{{"code":{code},"message":"{message}"}}}}"#)
    }

    #[test]
    fn key_and_account_codes_are_fatal_whatever_the_status() {
        for (status, code) in [
            (401, 1002),
            (401, 2006),
            (403, 2007),
            (403, 2008),
            (403, 2009),
            (400, 2009),
        ] {
            let err = ApiError::from_response(status, &body(code, "m"), None);
            assert_eq!(err.class(), ApiErrorAction::Fatal, "{status}/{code}: {err}");
        }
        assert_eq!(
            ApiError::from_response(401, "", None).class(),
            ApiErrorAction::Fatal
        );
        assert_eq!(
            ApiError::from_response(403, "<html>", None).class(),
            ApiErrorAction::Fatal
        );
    }

    #[test]
    fn location_errors_are_per_location() {
        let err = ApiError::from_response(400, &body(1006, "No matching location found."), None);
        assert!(matches!(err, ApiError::LocationNotFound { .. }), "{err}");
        assert_eq!(err.class(), ApiErrorAction::Location);
        for code in [1003, 1005, 9000, 9001, 9999] {
            let err = ApiError::from_response(400, &body(code, "m"), None);
            assert_eq!(err.class(), ApiErrorAction::Location, "{code}");
        }
        assert_eq!(
            ApiError::from_response(404, "nope", None).class(),
            ApiErrorAction::Location
        );
    }

    #[test]
    fn throttling_and_server_errors_retry_and_keep_retry_after() {
        let err = ApiError::from_response(429, "", Some(Duration::from_secs(3)));
        assert_eq!(err.class(), ApiErrorAction::Retryable);
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
        assert!(err.to_string().contains("Retry-After 3s"), "{err}");
        let err = ApiError::from_response(503, "<html>busy</html>", None);
        assert_eq!(err.class(), ApiErrorAction::Retryable);
        let err = ApiError::from_response(500, &body(9999, "Internal application error."), None);
        assert_eq!(err.class(), ApiErrorAction::Retryable, "{err}");
    }

    #[test]
    fn scrubbing_removes_an_echoed_secret() {
        let err =
            ApiError::from_response(401, &body(2006, "key sekrit-9 is invalid"), None).scrubbed("sekrit-9");
        assert!(!err.to_string().contains("sekrit-9"), "{err}");
    }
}
