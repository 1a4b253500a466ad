//! `job_runs`: the history of every job run, scheduled or manual.

use sea_orm::entity::prelude::*;

/// One run of one job.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "job_runs")]
pub struct Model {
    /// Surrogate key.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `fetch`, `persist` or `analytics`.
    pub job: String,
    /// `schedule` or `manual`.
    pub trigger: String,
    /// Start time.
    pub started_at: DateTimeUtc,
    /// End time; `None` while running.
    pub finished_at: Option<DateTimeUtc>,
    /// `running`, `succeeded`, `failed` or `skipped`.
    pub status: String,
    /// Records read.
    pub records_in: Option<i64>,
    /// Records written.
    pub records_out: Option<i64>,
    /// Error message of a failed run.
    pub error: Option<String>,
    /// Job-specific summary (fetch: per-location outcomes).
    pub details: Option<Json>,
}

/// A run has the regression results it produced.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// Results written by this run.
    #[sea_orm(has_many = "super::regression_results::Entity")]
    RegressionResults,
}

impl Related<super::regression_results::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::RegressionResults.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
