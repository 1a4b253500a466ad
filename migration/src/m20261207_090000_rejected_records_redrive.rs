//! `rejected_records` learns what became of a quarantined record once it was re-driven
//! (`weatherflow rejects redrive`, docs/recovery.md): when it was stored after all and by which run,
//! and how often a re-drive tried it. A record stored by a re-drive keeps its row, so the history of
//! what happened stays; its class and reason still say why it was quarantined.
//!
//! Indexes for the listings: by class and time (`rejects --class C --since T`), by time alone, and
//! on the run column, which a deleted `job_runs` row clears (`ON DELETE SET NULL`).

use sea_orm_migration::prelude::*;

/// Adds the re-drive columns and the listing indexes; `down` drops them again.
#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
ALTER TABLE rejected_records
    ADD COLUMN redrive_attempts integer     NOT NULL DEFAULT 0 CHECK (redrive_attempts >= 0),
    ADD COLUMN last_redrive_at  timestamptz,
    ADD COLUMN redriven_at      timestamptz,
    ADD COLUMN redrive_run_id   bigint      REFERENCES job_runs (id) ON DELETE SET NULL;
CREATE INDEX rejected_records_error_class_received_at_idx ON rejected_records (error_class, received_at);
CREATE INDEX rejected_records_received_at_idx ON rejected_records (received_at);
CREATE INDEX rejected_records_redrive_run_id_idx ON rejected_records (redrive_run_id)
    WHERE redrive_run_id IS NOT NULL;
"#;

const DOWN: &str = r#"
DROP INDEX rejected_records_redrive_run_id_idx;
DROP INDEX rejected_records_received_at_idx;
DROP INDEX rejected_records_error_class_received_at_idx;
ALTER TABLE rejected_records
    DROP COLUMN redrive_run_id,
    DROP COLUMN redriven_at,
    DROP COLUMN last_redrive_at,
    DROP COLUMN redrive_attempts;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await.map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(DOWN)
            .await
            .map(|_| ())
    }
}
