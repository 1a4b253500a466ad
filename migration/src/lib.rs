//! The weatherflow schema, as an ordered list of reversible migrations.

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_create_tables;

/// Every migration, oldest first. `weatherflow migrate` and the test harness run this list.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261125_000001_create_tables::Migration)]
    }
}
