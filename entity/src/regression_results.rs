//! `regression_results`: fits of temp_c on wind_kph written by the analytics job.

use sea_orm::entity::prelude::*;

/// One fitted line for one scope (`all` or a location key).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "regression_results")]
pub struct Model {
    /// Surrogate key.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The analytics run that produced it.
    pub job_run_id: i64,
    /// When it was fitted.
    pub fitted_at: DateTimeUtc,
    /// `all` or a location key.
    pub scope: String,
    /// Dependent variable (`temp_c`).
    pub target: String,
    /// Explanatory variable (`wind_kph`).
    pub feature: String,
    /// Start of the observation window, if bounded.
    pub window_start: Option<DateTimeUtc>,
    /// End of the observation window, if bounded.
    pub window_end: Option<DateTimeUtc>,
    /// Rows used.
    pub n_samples: i64,
    /// Fitted intercept.
    pub intercept: f64,
    /// Fitted slope.
    pub slope: f64,
    /// Coefficient of determination.
    pub r_squared: f64,
    /// Root mean squared error of the residuals.
    pub rmse: f64,
    /// Standard error of the slope (absent with fewer than 3 samples).
    pub slope_stderr: Option<f64>,
    /// The observations' source the fit used (`weatherapi` or `simulated`); `None` on fits made
    /// before sources were told apart, which used every row.
    pub source: Option<String>,
}

/// Each result belongs to a run.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The producing run.
    #[sea_orm(
        belongs_to = "super::job_runs::Entity",
        from = "Column::JobRunId",
        to = "super::job_runs::Column::Id",
        on_delete = "Cascade"
    )]
    JobRuns,
}

impl Related<super::job_runs::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::JobRuns.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
