//! The analytics job's write: every fit of a run in one transaction, linked to its `job_runs` row.

use chrono::{DateTime, Utc};
use entity::regression_results;
use sea_orm::{ActiveValue::Set, DatabaseConnection, DbErr, EntityTrait, TransactionTrait};

use super::ScopeFit;

/// The stored `target` and `feature` columns.
const TARGET: &str = "temp_c";
const FEATURE: &str = "wind_kph";

/// Inserts one row per fit in a single transaction. Returns the rows written.
pub(crate) async fn write(
    db: &DatabaseConnection,
    run_id: i64,
    (since, until): (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    fits: &[ScopeFit],
) -> Result<u64, DbErr> {
    if fits.is_empty() {
        return Ok(0);
    }
    let fitted_at = Utc::now();
    let txn = db.begin().await?;
    let mut written = 0;
    // 14 bind parameters per row; 1000 rows stay far below PostgreSQL's 65535-parameter limit.
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
            ..Default::default()
        });
        written += regression_results::Entity::insert_many(rows)
            .exec_without_returning(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(written)
}
