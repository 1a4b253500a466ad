//! The maintenance job: keeps the monthly partitions of `observations` ([`crate::partitions`]) with
//! the configuration's `[maintenance]` policy. A job of its own, on its own schedule, so that a
//! failed fit does not leave the coming month without a partition, nor a failed maintenance leave a
//! day without a fit.

use chrono::Utc;
use sea_orm::DatabaseConnection;
use serde_json::Value;

use crate::config::Config;
use crate::job_error::JobError;
use crate::partitions::{self, Maintenance, Policy};
use crate::report::Report;

/// The policy the configuration sets.
pub fn policy(config: &Config) -> Policy {
    Policy {
        months_ahead: config.maintenance.months_ahead,
        retention_months: config.maintenance.retention_months,
    }
}

/// Runs maintenance for now. A table lock not granted in time is retryable; a table that is not
/// partitioned is fatal.
pub async fn run(config: &Config, db: &DatabaseConnection) -> Result<Maintenance, JobError> {
    let pool = db.get_postgres_connection_pool();
    Ok(partitions::maintain(pool, Utc::now(), policy(config)).await?)
}

impl Report for Maintenance {
    /// No rows are read as such; the rows moved out of the default partition are the ones it wrote.
    fn records_in(&self) -> Option<i64> {
        None
    }
    fn records_out(&self) -> Option<i64> {
        i64::try_from(self.moved_from_default).ok()
    }
    fn details(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}
