//! The persist job: a Kafka consumer that validates records and stores them in PostgreSQL.

use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::runs::Report;

/// How long to run.
#[derive(Debug, Clone, Default)]
pub struct PersistRequest {
    /// Drain what is on the topic and exit, instead of running until stopped.
    pub until_idle: bool,
}

/// The outcome of a persist run.
#[derive(Debug, Clone)]
pub struct PersistSummary {}

impl Report for PersistSummary {
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

/// Runs the consumer.
pub async fn run(
    _config: &Config,
    _db: &DatabaseConnection,
    _req: PersistRequest,
    _shutdown: CancellationToken,
) -> anyhow::Result<PersistSummary> {
    anyhow::bail!("the persist job is not implemented yet")
}
