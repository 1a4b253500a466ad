//! `weatherflow migrate [up|down|status|fresh]`.

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm_migration::MigrationStatus;

use crate::config::Config;
use crate::db;

/// `weatherflow migrate` actions.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MigrateAction {
    /// Apply pending migrations.
    Up,
    /// Revert the last migration(s).
    Down,
    /// List applied and pending migrations.
    Status,
    /// Drop every table and apply all migrations again (destroys data).
    Fresh,
}

/// Runs a migration action against the configured database.
pub async fn run(config: &Config, action: MigrateAction, steps: Option<u32>) -> anyhow::Result<()> {
    let conn = db::connect(&config.database).await?;
    match action {
        MigrateAction::Up => Migrator::up(&conn, steps).await.context("applying migrations")?,
        MigrateAction::Down => Migrator::down(&conn, Some(steps.unwrap_or(1)))
            .await
            .context("reverting migrations")?,
        MigrateAction::Fresh => Migrator::fresh(&conn).await.context("recreating the schema")?,
        MigrateAction::Status => {}
    }
    if matches!(action, MigrateAction::Up | MigrateAction::Fresh) {
        // The service roles' grants, table by table, after the tables they name exist.
        let missing = db::grants::apply(&conn).await.context("granting the service roles")?;
        if !missing.is_empty() {
            println!("grants: no role {} (services connect as the owner)", missing.join(", "));
        }
    }
    for (name, applied) in status(&conn).await? {
        println!("{}  {name}", if applied { "applied" } else { "pending" });
    }
    Ok(())
}

/// Each known migration with whether it is applied, oldest first.
pub async fn status(conn: &sea_orm::DatabaseConnection) -> anyhow::Result<Vec<(String, bool)>> {
    let list = Migrator::get_migration_with_status(conn)
        .await
        .context("reading migration state")?;
    Ok(list
        .iter()
        .map(|m| {
            (
                m.name().to_owned(),
                matches!(m.status(), MigrationStatus::Applied),
            )
        })
        .collect())
}
