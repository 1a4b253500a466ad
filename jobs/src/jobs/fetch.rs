//! The fetch job: current weather for each location → one Kafka message per location.

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::runs::Report;
use crate::schedules::SourceChoice;

/// What to fetch.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// The API's `q` for each location.
    pub locations: Vec<String>,
    /// Where data comes from.
    pub source: SourceChoice,
    /// Seed of the simulated source.
    pub seed: Option<u64>,
    /// Requests in flight at once; `None` uses the configuration.
    pub concurrency: Option<usize>,
}

/// The outcome of a fetch run.
#[derive(Debug, Clone)]
pub struct FetchSummary {}

impl Report for FetchSummary {
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

/// Runs the fetch job.
pub async fn run(
    _config: &Config,
    _req: FetchRequest,
    _shutdown: CancellationToken,
) -> anyhow::Result<FetchSummary> {
    anyhow::bail!("the fetch job is not implemented yet")
}
