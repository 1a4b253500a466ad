//! The HTTP side: one pooled reqwest client, the two request forms, and the retry loop.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::body::{self, Current};
use super::error::{ApiError, ApiErrorAction, cause_chain};
use super::history::{self, HistoryDay};
use crate::backoff::Backoff;
use crate::config::{WeatherApiConfig, redact_url};
use crate::jobs::fetch::ratelimit::TokenBucket;
use crate::quota::{CallMeter, Endpoint};

/// The most locations WeatherAPI accepts in one bulk request.
pub const BULK_MAX: usize = 50;

/// A result with the number of HTTP attempts it took (retries included).
#[derive(Debug)]
pub struct Attempted<T> {
    /// The outcome of the last attempt.
    pub result: Result<T, ApiError>,
    /// HTTP requests sent; 0 when the run stopped before the first.
    pub attempts: u32,
}

/// When to give up on a request.
#[derive(Debug, Clone, Copy)]
struct RetryPolicy {
    /// Per-attempt timeout (connect to last body byte).
    timeout: Duration,
    /// Attempts per request, at least 1.
    max_attempts: u32,
    /// Delays between attempts.
    backoff: Backoff,
    /// Bound on one request's total time, attempts and waits included.
    max_total: Duration,
}

/// The WeatherAPI.com client. Cheap to share by reference; holds one connection pool.
pub struct WeatherApi {
    /// The pooled HTTP client (rustls, no redirects: a redirect would carry the key elsewhere).
    http: reqwest::Client,
    /// `<base>/current.json`, without query.
    current_url: Url,
    /// `<base>/history.json`, without query.
    history_url: Url,
    /// Sent only as the `key` query parameter; never logged.
    key: SecretString,
    /// Whether to ask for `air_quality` (`aqi=yes`).
    aqi: bool,
    /// Retry limits.
    retry: RetryPolicy,
    /// Every attempt takes a token, retries included.
    limiter: Arc<TokenBucket>,
    /// Counts every attempt in `api_calls` before it is sent; `None` counts nothing (benchmarks,
    /// tests that run the fetch without a database).
    meter: Option<Arc<CallMeter>>,
}

impl fmt::Debug for WeatherApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeatherApi")
            .field("current_url", &redact_url(self.current_url.as_str()))
            .field("key", &"[REDACTED]")
            .field("aqi", &self.aqi)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct BulkRequest<'a> {
    locations: Vec<BulkLocation<'a>>,
}

#[derive(Serialize)]
struct BulkLocation<'a> {
    q: &'a str,
    custom_id: String,
}

impl WeatherApi {
    /// A client for `cfg.base_url` with `key`, pacing its requests through `limiter`.
    pub fn new(
        cfg: &WeatherApiConfig,
        key: SecretString,
        limiter: Arc<TokenBucket>,
    ) -> Result<Self, ApiError> {
        let base = cfg.base_url.trim_end_matches('/');
        let url = |method: &str| {
            Url::parse(&format!("{base}/{method}"))
                .map_err(|e| ApiError::Config(format!("weatherapi.base_url {}: {e}", redact_url(base))))
        };
        let current_url = url("current.json")?;
        let history_url = url("history.json")?;
        let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
        let http = reqwest::Client::builder()
            .user_agent(concat!("weatherflow/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            // Retries are ours alone: counted, paced by the token bucket, logged.
            .retry(reqwest::retry::never())
            .build()
            .map_err(|e| ApiError::Config(format!("cannot build the HTTP client: {}", e.without_url())))?;
        Ok(Self {
            http,
            current_url,
            history_url,
            key,
            aqi: cfg.aqi,
            retry: RetryPolicy {
                timeout,
                max_attempts: cfg.max_attempts.max(1),
                backoff: Backoff::new(
                    Duration::from_millis(cfg.backoff_initial_ms),
                    Duration::from_millis(cfg.backoff_max_ms.max(cfg.backoff_initial_ms)),
                ),
                max_total: Duration::from_secs(cfg.max_total_secs.max(1)),
            },
            limiter,
            meter: None,
        })
    }

    /// This client with every attempt counted by `meter` before it is sent.
    pub fn with_meter(mut self, meter: Arc<CallMeter>) -> Self {
        self.meter = Some(meter);
        self
    }

    fn aqi_param(&self) -> &'static str {
        if self.aqi { "yes" } else { "no" }
    }

    /// `GET current.json?q=<q>`, retried per the configuration. `cancel` stops waiting (backoff,
    /// rate limit) but never cuts a request in flight.
    pub async fn current(&self, q: &str, cancel: &CancellationToken) -> Attempted<Current> {
        self.with_retries(q, (Endpoint::Current, 1), cancel, || async {
            let request = self.http.get(self.current_url.clone()).query(&[
                ("key", self.key.expose_secret()),
                ("q", q),
                ("aqi", self.aqi_param()),
            ]);
            let (status, text) = self.send(request).await?;
            body::parse_current(status, text)
        })
        .await
    }

    /// `POST current.json?q=bulk` for up to [`BULK_MAX`] locations: one result per location, in the
    /// order of `queries`. The outer result fails only when the whole request did.
    pub async fn current_bulk(
        &self,
        queries: &[String],
        cancel: &CancellationToken,
    ) -> Attempted<Vec<Result<Current, ApiError>>> {
        if queries.len() > BULK_MAX {
            return Attempted {
                result: Err(ApiError::Config(format!(
                    "a bulk request holds at most {BULK_MAX} locations, got {}",
                    queries.len()
                ))),
                attempts: 0,
            };
        }
        let payload = BulkRequest {
            locations: queries
                .iter()
                .enumerate()
                .map(|(i, q)| BulkLocation {
                    q,
                    custom_id: i.to_string(),
                })
                .collect(),
        };
        let label = format!("bulk of {}", queries.len());
        let calls = (Endpoint::Bulk, queries.len() as u64);
        self.with_retries(&label, calls, cancel, || async {
            let request = self
                .http
                .post(self.current_url.clone())
                .query(&[
                    ("key", self.key.expose_secret()),
                    ("q", "bulk"),
                    ("aqi", self.aqi_param()),
                ])
                .json(&payload);
            let (status, text) = self.send(request).await?;
            body::parse_bulk(status, &text, queries.len())
        })
        .await
    }

    /// `GET history.json?q=<q>&dt=<day>`: the hourly observations of one local day, retried like
    /// [`WeatherApi::current`].
    pub async fn history(
        &self,
        q: &str,
        day: chrono::NaiveDate,
        cancel: &CancellationToken,
    ) -> Attempted<HistoryDay> {
        let dt = day.format("%Y-%m-%d").to_string();
        self.with_retries(q, (Endpoint::History, 1), cancel, || async {
            let request = self.http.get(self.history_url.clone()).query(&[
                ("key", self.key.expose_secret()),
                ("q", q),
                ("dt", dt.as_str()),
                ("aqi", self.aqi_param()),
            ]);
            let (status, text) = self.send(request).await?;
            history::parse_history(status, &text)
        })
        .await
    }

    /// Sends one request; a success status gives the body, anything else a classified error.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, String), ApiError> {
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(|e| self.transport(e))?;
        let text = String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::Unparsable {
            reason: format!("HTTP {status} body is not UTF-8"),
        });
        if (200..300).contains(&status) {
            return Ok((status, text?));
        }
        let text = text.unwrap_or_default();
        Err(ApiError::from_response(status, &text, retry_after).scrubbed(self.key.expose_secret()))
    }

    /// A reqwest error as an [`ApiError`], its URL (which holds the key) removed.
    fn transport(&self, e: reqwest::Error) -> ApiError {
        let e = e.without_url();
        if e.is_timeout() {
            ApiError::Timeout(self.retry.timeout)
        } else if e.is_connect() {
            ApiError::Connect(cause_chain(&e))
        } else if e.is_builder() {
            ApiError::Config(cause_chain(&e))
        } else {
            ApiError::Transport(cause_chain(&e))
        }
    }

    /// Runs `attempt` until it succeeds, fails for a non-retryable reason, runs out of attempts, or
    /// would outlive the total-time bound. Waits honour `Retry-After` (seconds form), else back off
    /// exponentially with jitter.
    async fn with_retries<T, F, Fut>(
        &self,
        label: &str,
        (endpoint, calls): (Endpoint, u64),
        cancel: &CancellationToken,
        attempt: F,
    ) -> Attempted<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let mut attempts = 0;
        let mut deadline = None;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Attempted { result: Err(ApiError::Cancelled), attempts },
                _ = self.limiter.acquire() => {}
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.retry.max_total);
            // Counted before it is sent: a crash after the request can never leave it uncounted.
            if let Some(meter) = &self.meter
                && let Err(e) = meter.take(endpoint, calls).await
            {
                return Attempted {
                    result: Err(ApiError::Budget(e.to_string())),
                    attempts,
                };
            }
            attempts += 1;
            let err = match counted(attempt()).await {
                Ok(value) => {
                    return Attempted {
                        result: Ok(value),
                        attempts,
                    };
                }
                Err(e) => e,
            };
            if err.class() != ApiErrorAction::Retryable || attempts >= self.retry.max_attempts {
                return Attempted {
                    result: Err(err),
                    attempts,
                };
            }
            let delay = err
                .retry_after()
                .unwrap_or_else(|| self.retry.backoff.delay(attempts - 1));
            if Instant::now() + delay >= deadline {
                tracing::warn!(q = label, attempts, error = %err, "giving up: the next retry would pass weatherapi.max_total_secs");
                return Attempted {
                    result: Err(err),
                    attempts,
                };
            }
            tracing::warn!(q = label, attempt = attempts, delay_ms = delay.as_millis() as u64, error = %err, "WeatherAPI request failed; retrying");
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Attempted { result: Err(ApiError::Cancelled), attempts },
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// The `Retry-After` header in its seconds form; the HTTP-date form is left to the backoff.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Awaits one HTTP attempt and records its outcome class and latency in the metrics.
async fn counted<T>(attempt: impl Future<Output = Result<T, ApiError>>) -> Result<T, ApiError> {
    let started = std::time::Instant::now();
    let result = attempt.await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => match e.class() {
            ApiErrorAction::Retryable => "retryable",
            ApiErrorAction::Location => "location",
            ApiErrorAction::Fatal => "fatal",
        },
    };
    crate::metrics::fetch_request(outcome, started.elapsed());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_only() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn debug_output_hides_the_key() {
        let cfg = WeatherApiConfig {
            base_url: "http://127.0.0.1:1/v1".into(),
            ..Default::default()
        };
        let limiter = Arc::new(TokenBucket::new(0.0, 1).unwrap());
        let api = WeatherApi::new(&cfg, SecretString::from("sekrit-abc"), limiter).unwrap();
        let shown = format!("{api:?}");
        assert!(
            !shown.contains("sekrit-abc") && shown.contains("REDACTED"),
            "{shown}"
        );
    }
}
