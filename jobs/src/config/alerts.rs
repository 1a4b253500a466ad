//! The `[alerts]` configuration section (env `WEATHERFLOW_ALERTS_<FIELD>`), part of
//! [`crate::config::Config`]: where the scheduler sends webhook alerts, and when (docs/alerts.md).

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::ConfigError;
use super::field::{FieldValue, section};

/// The webhook URLs as configured: a secret, shown only as each URL's scheme and host (a webhook's
/// token is usually in its path, which the database URL's masking would show).
#[derive(Clone, serde::Deserialize)]
#[serde(transparent)]
pub struct WebhookUrls(SecretString);

impl std::fmt::Debug for WebhookUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookUrls(***)")
    }
}

impl FieldValue for WebhookUrls {
    fn type_name() -> String {
        "secret list of URLs".to_owned()
    }
    fn parse_env(text: &str) -> Result<Self, String> {
        Ok(Self(SecretString::from(text)))
    }
    fn show(&self) -> String {
        split_urls(self.0.expose_secret())
            .map(webhook_origin)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The URLs of a list separated by commas or white space.
fn split_urls(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
}

/// What may be shown or recorded of a webhook URL: its scheme, host and port (`https://hooks.slack.com`),
/// never its path, query or user info, where tokens live.
pub fn webhook_origin(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) if u.has_host() => u.origin().ascii_serialization(),
        _ => "<unparsable url>".to_owned(),
    }
}

section! {
    /// Webhook alerts, evaluated by the scheduler service (docs/alerts.md).
    pub struct AlertsConfig in "alerts" {
        /// Webhook URLs that receive the alerts (Slack and Mattermost incoming webhooks, or any
        /// endpoint taking a JSON POST), separated by commas or white space. They usually carry a
        /// token, so they are secrets: only their scheme and host are ever shown or recorded.
        /// Unset (and no `alerts.webhook_urls_file`): no alerts.
        pub webhook_urls: Option<WebhookUrls> = None;
        /// A file holding the webhook URLs (one per line, or separated as above), used when
        /// `alerts.webhook_urls` is not set.
        pub webhook_urls_file: Option<PathBuf> = None;
        /// Base URL of the dashboard (`weatherflow serve`, e.g. `https://weather.example.com`), for
        /// the link in each alert. Unset: alerts carry no link.
        pub dashboard_url: Option<String> = None;
        /// How often the conditions are evaluated, in seconds.
        pub evaluate_every_secs: u64 = 30;
        /// Alert when the persist consumer group's lag on the observations topic is above this many
        /// records for `alerts.lag_for_secs`. Unset: lag is not alerted on.
        pub lag_max_records: Option<u64> = Some(50_000);
        /// How long the lag must stay above `alerts.lag_max_records` before it is alerted, in seconds.
        pub lag_for_secs: u64 = 600;
        /// Alert when the database has refused the persist writers' inserts (a read-only server, a
        /// revoked grant, a lock; what `weatherflow status` shows), or this process's writers have
        /// been in an outage, for this many seconds.
        pub outage_for_secs: u64 = 120;
        /// Alert when more than this fraction of the records consumed in the last
        /// `alerts.quarantine_window_secs` were quarantined (`rejected_records`). Unset: not alerted.
        pub quarantine_max_ratio: Option<f64> = Some(0.01);
        /// The window of `alerts.quarantine_max_ratio`, in seconds.
        pub quarantine_window_secs: u64 = 900;
        /// The quarantine rate is judged only once the window holds at least this many records, so
        /// one bad record of a quiet hour is not an incident.
        pub quarantine_min_records: u64 = 100;
        /// Alert when this month's WeatherAPI calls reach this fraction of
        /// `weatherapi.monthly_call_budget` (no budget: not alerted).
        pub quota_alert_ratio: f64 = 0.8;
        /// Bound on one delivery attempt (connect, send, answer), in seconds.
        pub delivery_timeout_secs: u64 = 10;
        /// Attempts per message and webhook for retryable failures (no answer, 429, 5xx).
        pub delivery_attempts: u32 = 5;
        /// First delay between delivery attempts, in milliseconds; it doubles each attempt, with
        /// jitter, up to 60 s.
        pub delivery_backoff_ms: u64 = 1000;
    }
}

impl AlertsConfig {
    /// The webhook URLs from `webhook_urls`, else from `webhook_urls_file`; empty when neither is
    /// set. Each must be an `http` or `https` URL with a host; the error never repeats one.
    pub fn resolve_webhooks(&self) -> Result<Vec<SecretString>, ConfigError> {
        let inline = self.webhook_urls.as_ref().map(|w| &w.0);
        let text = super::secret_or_file(inline, self.webhook_urls_file.as_deref())
            .map_err(|source| ConfigError::Read {
                path: self.webhook_urls_file.clone().unwrap_or_default(),
                source,
            })?;
        let Some(text) = text else {
            return Ok(Vec::new());
        };
        let mut urls = Vec::new();
        for (i, part) in split_urls(text.expose_secret()).enumerate() {
            let ok = url::Url::parse(part)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            if !ok {
                return Err(ConfigError::Env {
                    var: "WEATHERFLOW_ALERTS_WEBHOOK_URLS".into(),
                    field: "alerts.webhook_urls".into(),
                    message: format!("webhook URL number {} is not an http(s) URL with a host", i + 1),
                });
            }
            urls.push(SecretString::from(part.to_owned()));
        }
        Ok(urls)
    }

    /// The evaluation interval as a [`Duration`] (at least 1 s).
    pub fn evaluate_every(&self) -> Duration {
        Duration::from_secs(self.evaluate_every_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_split_validate_and_show_only_their_origin() {
        let secret = "https://hooks.example.com/services/T0/B0/tok-123, http://127.0.0.1:9/x?token=abc";
        let cfg = AlertsConfig {
            webhook_urls: Some(WebhookUrls::parse_env(secret).unwrap()),
            ..Default::default()
        };
        let urls = cfg.resolve_webhooks().unwrap();
        assert_eq!(urls.len(), 2);
        assert_eq!(urls[1].expose_secret(), "http://127.0.0.1:9/x?token=abc");
        let shown = cfg.webhook_urls.as_ref().unwrap().show();
        assert_eq!(shown, "https://hooks.example.com, http://127.0.0.1:9");
        assert!(!format!("{cfg:?}").contains("tok-123"));

        let bad = AlertsConfig {
            webhook_urls: Some(WebhookUrls::parse_env("https://ok.example/a ftp://tok-xyz").unwrap()),
            ..Default::default()
        };
        let err = bad.resolve_webhooks().unwrap_err().to_string();
        assert!(err.contains("number 2"), "{err}");
        assert!(!err.contains("tok-xyz"), "{err}");
        assert!(AlertsConfig::default().resolve_webhooks().unwrap().is_empty());
    }
}
