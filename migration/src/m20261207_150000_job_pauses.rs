//! Pausing jobs (`weatherflow pause`, `POST /api/v1/jobs/{job}/pause`, auto-pause): `job_pauses`
//! holds one row per paused job, read by every scheduler replica at each tick and by the persist
//! consumer every few seconds, so a pause holds across replicas and restarts. `job_pause_events` is
//! the append-only history of every pause and resume: who, when, why.
//!
//! A job's name is the same text as `job_runs.job` (no foreign key: a job is not a row).

use sea_orm_migration::prelude::*;

/// Creates the two tables; `down` drops them.
#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE TABLE job_pauses (
    job        text        PRIMARY KEY,
    paused_at  timestamptz NOT NULL DEFAULT now(),
    paused_by  text        NOT NULL,
    reason     text,
    auto       boolean     NOT NULL DEFAULT false
);
CREATE TABLE job_pause_events (
    id      bigserial   PRIMARY KEY,
    job     text        NOT NULL,
    action  text        NOT NULL CHECK (action IN ('pause', 'resume')),
    at      timestamptz NOT NULL DEFAULT now(),
    by      text        NOT NULL,
    reason  text,
    auto    boolean     NOT NULL DEFAULT false
);
CREATE INDEX job_pause_events_job_id_idx ON job_pause_events (job, id);
"#;

const DOWN: &str = r#"
DROP TABLE job_pause_events;
DROP TABLE job_pauses;
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
