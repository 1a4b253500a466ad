//! The weatherflow schema, as an ordered list of reversible migrations.

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_create_tables;
mod m20261201_215000_create_analysis_views;
mod m20261202_073000_partition_observations;
mod m20261207_090000_rejected_records_redrive;
mod m20261207_100000_observation_source_identity;
mod m20261207_150000_job_pauses;
mod m20261207_151000_alerts;
mod m20261207_152000_api_calls;

/// Every migration, oldest first. `weatherflow migrate` and the test harness run this list.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_create_tables::Migration),
            Box::new(m20261201_215000_create_analysis_views::Migration),
            Box::new(m20261202_073000_partition_observations::Migration),
            Box::new(m20261207_090000_rejected_records_redrive::Migration),
            Box::new(m20261207_100000_observation_source_identity::Migration),
            Box::new(m20261207_150000_job_pauses::Migration),
            Box::new(m20261207_151000_alerts::Migration),
            Box::new(m20261207_152000_api_calls::Migration),
        ]
    }
}
