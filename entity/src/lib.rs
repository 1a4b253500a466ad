//! SeaORM entities for the weatherflow tables, one module per table. No logic lives here: queries
//! belong to the job that owns them.

pub mod job_runs;
pub mod observations;
pub mod regression_results;
pub mod rejected_records;
