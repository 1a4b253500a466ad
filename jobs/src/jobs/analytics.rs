//! The analytics job: a linear regression of temp_c on wind_kph, stored in regression_results.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::runs::Report;

/// What to fit.
#[derive(Debug, Clone, Default)]
pub struct AnalyticsRequest {
    /// Only observations at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only observations before this time.
    pub until: Option<DateTime<Utc>>,
    /// Minimum samples for a per-location fit; `None` uses the configuration.
    pub min_samples: Option<u64>,
    /// Write an SVG scatter plot with the fitted line here.
    pub plot: Option<PathBuf>,
}

/// The outcome of an analytics run.
#[derive(Debug, Clone)]
pub struct AnalyticsSummary {}

impl Report for AnalyticsSummary {
    fn records_in(&self) -> Option<i64> {
        None
    }
    fn records_out(&self) -> Option<i64> {
        None
    }
    fn details(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// Runs the analytics job; `run_id` is the `job_runs` row its results link to.
pub async fn run(
    _config: &Config,
    _db: &DatabaseConnection,
    _run_id: i64,
    _req: AnalyticsRequest,
    _shutdown: CancellationToken,
) -> anyhow::Result<AnalyticsSummary> {
    anyhow::bail!("the analytics job is not implemented yet")
}
