//! Freshness: is the newest observation a fit would use recent enough to publish the fit as new?
//!
//! The figure is the age of the newest observation of the source the fit uses (provenance: the same
//! `auto` choice as the fit, so simulated rows never make WeatherAPI data look fresh) in the window.
//! It is one read ([`freshness`] for the default window, [`check`] for a run's), below every face:
//! the analytics run ([`gate`]), `weatherflow status`, `/api/v1/status` and the gauge
//! `weatherflow_data_staleness_seconds`. It is independent of `/readyz`: stale data is no reason
//! to take a replica out of a load balancer.
//!
//! The consumer's lag is given beside it when known: a stale window with a lag says the stream is
//! there but not being stored (look at persist), one without says nothing arrives (look at fetch).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use serde_json::{Value, json};

use super::read::{Window, filtered};
use super::source::{self, FitSource};
use super::{AnalyticsRequest, default_since};
use crate::config::{Config, OnStale};
use crate::envelope::Source;
use crate::job_error::{JobError, JobErrorKind, JobResultExt};
use crate::report::{Completion, Report};

/// The newest observation of a window and how it compares with `analytics.max_staleness_secs`.
#[derive(Debug, Clone, PartialEq)]
pub struct Freshness {
    /// The source the fit uses.
    pub source: Source,
    /// Its newest observation in the window; `None` when the window has none.
    pub newest: Option<DateTime<Utc>>,
    /// When this was read.
    pub checked_at: DateTime<Utc>,
    /// The bound; zero: not checked.
    pub max_staleness: Duration,
    /// Records the persist group has still to consume, when known.
    pub lag: Option<i64>,
}

impl Freshness {
    /// How old the newest observation is.
    pub fn age(&self) -> Option<Duration> {
        self.newest
            .map(|n| (self.checked_at - n).to_std().unwrap_or_default())
    }

    /// Older than the bound. A window with no observation is not called stale here: the fit
    /// records its own skip ("no samples") for it.
    pub fn stale(&self) -> bool {
        !self.max_staleness.is_zero() && self.age().is_some_and(|a| a > self.max_staleness)
    }

    /// Why the data is stale (or what was found), naming the newest observation, its age and the
    /// bound.
    pub fn reason(&self) -> String {
        let Some(newest) = self.newest else {
            return format!("no {} observation in the window", self.source.as_str());
        };
        let age = self.age().unwrap_or_default();
        let verdict = if self.stale() { "above" } else { "within" };
        let mut text = format!(
            "the newest {} observation in the window is from {} ({} old), {verdict} analytics.max_staleness_secs = {} ({})",
            self.source.as_str(),
            crate::runs::tick_text(newest),
            human(age),
            self.max_staleness.as_secs(),
            human(self.max_staleness),
        );
        match self.lag {
            Some(0) => text.push_str("; the consumer has no lag (nothing newer arrived)"),
            Some(n) => text.push_str(&format!("; the consumer is {n} records behind")),
            None => {}
        }
        text
    }

    /// The `freshness` field of `/api/v1/status` and the stale run's details.
    pub fn to_json(&self) -> Value {
        json!({
            "source": self.source.as_str(),
            "newest_observation": self.newest,
            "age_secs": self.age().map(|a| a.as_secs()),
            "max_staleness_secs": self.max_staleness.as_secs(),
            "stale": self.stale(),
            "consumer_lag": self.lag,
            "checked_at": self.checked_at,
        })
    }
}

/// `2h 5m`, `3m 12s`, `4d 1h`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, _) => format!("{mins}m {secs}s"),
        (0, _, _) => format!("{hours}h {mins}m"),
        _ => format!("{days}d {hours}h"),
    }
}

/// The freshness of `window` for the source `choice` resolves to, without the lag; sets the gauge.
pub(crate) async fn check(
    pool: &sqlx::PgPool,
    config: &Config,
    window: Window,
    choice: FitSource,
) -> Result<Freshness, sqlx::Error> {
    let (source, _) = source::resolve(pool, window, choice).await?;
    let sql = filtered("SELECT max(observed_at) FROM observations", window, Some(source));
    let mut query = sqlx::query_scalar::<_, Option<DateTime<Utc>>>(sqlx::AssertSqlSafe(sql));
    for b in [window.0, window.1].into_iter().flatten() {
        query = query.bind(b);
    }
    let newest = query.fetch_one(pool).await?;
    let f = Freshness {
        source,
        newest,
        checked_at: Utc::now(),
        max_staleness: Duration::from_secs(config.analytics.max_staleness_secs),
        lag: None,
    };
    if let Some(age) = f.age() {
        crate::metrics::data_staleness(age);
    }
    Ok(f)
}

/// The freshness of the nightly run's default window (`analytics.window_days` up to now, the
/// `auto` source), without the lag: what `status`, the API and an alert read.
pub async fn freshness(db: &DatabaseConnection, config: &Config) -> Result<Freshness, sqlx::Error> {
    let window = (
        default_since(&AnalyticsRequest::default(), config.analytics.window_days, Utc::now()),
        None,
    );
    check(db.get_postgres_connection_pool(), config, window, FitSource::Auto).await
}

/// A run not made because its data is stale (`analytics.on_stale = "skip"`): recorded `skipped`,
/// with the reason and the figures in its details.
#[derive(Debug, Clone)]
pub struct Stale(pub Freshness);

impl Report for Stale {
    fn completion(&self) -> Completion {
        Completion::Skipped
    }
    fn records_in(&self) -> Option<i64> {
        None
    }
    fn records_out(&self) -> Option<i64> {
        Some(0)
    }
    fn details(&self) -> Value {
        json!({ "reason": format!("data is stale: {}", self.0.reason()), "freshness": self.0.to_json() })
    }
}

/// The consumer lag summed over the partitions, `None` when unknown (Kafka unreachable, no topic).
async fn total_lag(config: &Config) -> Option<i64> {
    let k = config.kafka.clone();
    let lag = tokio::task::spawn_blocking(move || crate::kafka::consumer_lag(&k)).await;
    match lag {
        Ok(Ok(Some(parts))) => Some(parts.iter().map(crate::kafka::PartitionLag::lag).sum()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "consumer lag unknown for the freshness check");
            None
        }
        _ => None,
    }
}

/// The check before a run fits: `Some` when the run's window is stale and `on_stale` is `skip`, an
/// error (fatal: another attempt soon finds the same data) when it is `fail`, `None` to go on. A
/// run with an end (`--until`) fits a past window and is not checked; nor is any with
/// `max_staleness_secs = 0`.
pub async fn gate(
    config: &Config,
    db: &DatabaseConnection,
    req: &AnalyticsRequest,
) -> Result<Option<Stale>, JobError> {
    if req.until.is_some() || config.analytics.max_staleness_secs == 0 {
        return Ok(None);
    }
    let window = (
        default_since(req, config.analytics.window_days, Utc::now()),
        None,
    );
    let mut f = check(db.get_postgres_connection_pool(), config, window, req.source)
        .await
        .job(JobErrorKind::Retryable, "checking the data's freshness")?;
    if !f.stale() {
        tracing::info!(freshness = %f.reason(), "data fresh enough to fit");
        return Ok(None);
    }
    f.lag = total_lag(config).await;
    let reason = format!("data is stale: {}", f.reason());
    tracing::warn!(%reason, on_stale = ?config.analytics.on_stale, "not fitting");
    match config.analytics.on_stale {
        OnStale::Skip => Ok(Some(Stale(f))),
        OnStale::Fail => Err(JobError::fatal(reason).with_report(&Stale(f))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn stale_is_older_than_the_bound_and_the_reason_names_time_age_and_bound() {
        let mut f = Freshness {
            source: Source::Weatherapi,
            newest: Some(at("2026-12-07T10:00:00Z")),
            checked_at: at("2026-12-07T13:30:00Z"),
            max_staleness: Duration::from_secs(7200),
            lag: Some(42),
        };
        assert!(f.stale());
        assert_eq!(
            f.reason(),
            "the newest weatherapi observation in the window is from 2026-12-07T10:00:00Z (3h 30m old), \
             above analytics.max_staleness_secs = 7200 (2h 0m); the consumer is 42 records behind"
        );
        assert_eq!(f.to_json()["age_secs"], 12_600);
        f.checked_at = at("2026-12-07T11:59:59Z");
        assert!(!f.stale());
        f.max_staleness = Duration::ZERO;
        f.checked_at = at("2027-01-01T00:00:00Z");
        assert!(!f.stale(), "0 turns the check off");
        f.newest = None;
        assert!(!f.stale() && f.age().is_none());
    }
}
