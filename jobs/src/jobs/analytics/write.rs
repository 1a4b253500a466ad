//! The analytics job's write: every fit of a run in one transaction, linked to its `job_runs` row.
//! A run cancelled while it writes (timeout, shutdown, lost lock) rolls the transaction back.

use chrono::{DateTime, Utc};
use entity::regression_results;
use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait, TransactionTrait};
use tokio_util::sync::CancellationToken;

use super::{AnalyticsError, ScopeFit};
use crate::envelope::Source;
use crate::job_error::{JobError, JobErrorKind, JobResultExt};

/// The stored `target` and `feature` columns.
const TARGET: &str = "temp_c";
const FEATURE: &str = "wind_kph";

/// What a failed statement of the write was doing.
const WRITING: &str = "writing regression_results";

/// Inserts one row per fit, each naming the `source` it used, in a single transaction, which commits only if `cancel` has not fired by
/// then. Returns the rows written.
pub(crate) async fn write(
    db: &DatabaseConnection,
    run_id: i64,
    (since, until): (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    source: Source,
    fits: &[ScopeFit],
    cancel: &CancellationToken,
) -> Result<u64, JobError> {
    if fits.is_empty() {
        return Ok(0);
    }
    let fitted_at = Utc::now();
    let txn = db.begin().await.job(JobErrorKind::Retryable, WRITING)?;
    let mut written = 0;
    // 15 bind parameters per row; 1000 rows stay far below PostgreSQL's 65535-parameter limit.
    for chunk in fits.chunks(1000) {
        let rows = chunk.iter().map(|f| regression_results::ActiveModel {
            job_run_id: Set(run_id),
            fitted_at: Set(fitted_at),
            scope: Set(f.scope.clone()),
            target: Set(TARGET.to_owned()),
            feature: Set(FEATURE.to_owned()),
            window_start: Set(since),
            window_end: Set(until),
            n_samples: Set(f.fit.n as i64),
            intercept: Set(f.fit.intercept),
            slope: Set(f.fit.slope),
            r_squared: Set(f.fit.r_squared),
            rmse: Set(f.fit.rmse),
            slope_stderr: Set(f.fit.slope_stderr),
            source: Set(Some(source.as_str().to_owned())),
            ..Default::default()
        });
        written += regression_results::Entity::insert_many(rows)
            .exec_without_returning(&txn)
            .await
            .job(JobErrorKind::Retryable, WRITING)?;
        if cancel.is_cancelled() {
            break;
        }
    }
    // The last moment a cancellation can still keep the rows out: once committed, only the run's
    // status does (readers show succeeded runs' rows only).
    if cancel.is_cancelled() {
        txn.rollback().await.job(JobErrorKind::Retryable, WRITING)?;
        return Err(AnalyticsError::Interrupted.into());
    }
    txn.commit().await.job(JobErrorKind::Retryable, WRITING)?;
    Ok(written)
}
