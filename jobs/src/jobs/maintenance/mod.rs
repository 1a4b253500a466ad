//! The maintenance job: keeps the monthly partitions of `observations` ([`crate::partitions`]) with
//! the configuration's `[maintenance]` policy, and deletes quarantined records past
//! `maintenance.rejected_retention_days` (by default they are kept). A job of its own, on its own
//! schedule, so that a failed fit does not leave the coming month without a partition, nor a failed
//! maintenance leave a day without a fit.

use chrono::{Duration, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde::Serialize;
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

/// What a maintenance run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MaintenanceSummary {
    /// The partitions created, filled, dropped.
    #[serde(flatten)]
    pub partitions: Maintenance,
    /// Quarantined records deleted for being older than `maintenance.rejected_retention_days`.
    pub rejects_deleted: u64,
}

/// Rows of `rejected_records` deleted per statement: each is a short transaction, so the deletion
/// of a long backlog never holds locks or a snapshot for long.
const DELETE_CHUNK: i64 = 10_000;

/// Runs maintenance for now. A table lock not granted in time is retryable; a table that is not
/// partitioned is fatal.
pub async fn run(config: &Config, db: &DatabaseConnection) -> Result<MaintenanceSummary, JobError> {
    let pool = db.get_postgres_connection_pool();
    let partitions = partitions::maintain(pool, Utc::now(), policy(config)).await?;
    let rejects_deleted = match config.maintenance.rejected_retention_days {
        Some(days) => delete_rejects_before(db, Utc::now() - Duration::days(i64::from(days))).await?,
        None => 0,
    };
    Ok(MaintenanceSummary {
        partitions,
        rejects_deleted,
    })
}

/// Deletes the quarantined records received before `cutoff`, oldest first, in chunks. Re-driven or
/// not: the setting is the operator's statement that such old records are not wanted (the
/// dead-letter topic keeps them for its own retention).
async fn delete_rejects_before(db: &DatabaseConnection, cutoff: chrono::DateTime<Utc>) -> Result<u64, JobError> {
    let mut deleted = 0u64;
    loop {
        // Oldest ids first along the primary key: received_at grows with the id, so the scan
        // stops at the first young row instead of reading the table.
        let done = db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "DELETE FROM rejected_records WHERE id IN (
                   SELECT id FROM rejected_records WHERE received_at < $1 ORDER BY id LIMIT $2)",
                [cutoff.into(), DELETE_CHUNK.into()],
            ))
            .await
            .map_err(|e| JobError::retryable(format!("deleting quarantined records before {cutoff}: {e}")))?
            .rows_affected();
        deleted += done;
        if done < DELETE_CHUNK as u64 {
            if deleted > 0 {
                tracing::info!(deleted, %cutoff, "quarantined records past their retention deleted");
            }
            return Ok(deleted);
        }
    }
}

impl Report for MaintenanceSummary {
    /// No rows are read as such; the rows moved out of the default partition are the ones it wrote.
    fn records_in(&self) -> Option<i64> {
        None
    }
    fn records_out(&self) -> Option<i64> {
        i64::try_from(self.partitions.moved_from_default).ok()
    }
    fn details(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}
