//! WeatherAPI calls counted per calendar month (UTC), and the history backfill's progress.
//!
//! - `api_calls`: one row per month and endpoint (`current`, `bulk`, `history`), incremented by
//!   every process before it calls (`INSERT … ON CONFLICT DO UPDATE SET calls = calls + n`), so the
//!   scheduler's replicas, `serve` and one-shot runs agree and a restart forgets nothing. A bulk
//!   request counts one call per location, as WeatherAPI bills it.
//! - `history_backfill`: one row per asked location (`q`, as configured) and local day a
//!   `weatherflow run fetch --history` has produced and seen acknowledged by Kafka. A backfill stopped
//!   halfway skips these when run again, so it resumes where it stopped.

use sea_orm_migration::prelude::*;

/// Creates `api_calls` and `history_backfill`; `down` drops them.
#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE TABLE api_calls (
    month      date        NOT NULL CHECK (extract(day FROM month) = 1),
    endpoint   text        NOT NULL CHECK (endpoint IN ('current', 'bulk', 'history')),
    calls      bigint      NOT NULL DEFAULT 0 CHECK (calls >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (month, endpoint)
);
CREATE TABLE history_backfill (
    query        text        NOT NULL,
    day          date        NOT NULL,
    hours        integer     NOT NULL CHECK (hours >= 0),
    location_key text,
    run_id       bigint      REFERENCES job_runs (id) ON DELETE SET NULL,
    completed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (query, day)
);
"#;

const DOWN: &str = r#"
DROP TABLE history_backfill;
DROP TABLE api_calls;
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
