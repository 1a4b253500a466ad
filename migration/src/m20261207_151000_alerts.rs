//! The webhook alerts' shared state (docs/alerts.md): `alert_incidents`, one row per incident, and
//! `alert_deliveries`, one row per delivery attempt.
//!
//! Every scheduler replica evaluates the same conditions; the partial unique index
//! `alert_incidents_open_key` allows one unresolved incident per `(kind, subject)`, and an incident is
//! announced (`opened_at` set) and resolved (`resolved_at` set) by conditional updates, so exactly one
//! replica wins each step and sends its message. `since` is when the condition was first seen: a
//! condition that must hold for a while (lag, an outage) waits as a pending row (`opened_at` NULL)
//! until it has. Webhook URLs are secrets: `alert_deliveries.url` holds only their scheme and host.

use sea_orm_migration::prelude::*;

/// Creates the two tables; `down` drops them.
#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE TABLE alert_incidents (
    id          bigserial   PRIMARY KEY,
    kind        text        NOT NULL,
    subject     text        NOT NULL,
    since       timestamptz NOT NULL DEFAULT now(),
    opened_at   timestamptz,
    resolved_at timestamptz,
    run_id      bigint      REFERENCES job_runs (id) ON DELETE SET NULL,
    summary     text        NOT NULL,
    details     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    CHECK (resolved_at IS NULL OR opened_at IS NOT NULL)
);
CREATE UNIQUE INDEX alert_incidents_open_key ON alert_incidents (kind, subject) WHERE resolved_at IS NULL;
CREATE INDEX alert_incidents_opened_at_idx ON alert_incidents (opened_at);

CREATE TABLE alert_deliveries (
    id          bigserial   PRIMARY KEY,
    incident_id bigint      NOT NULL REFERENCES alert_incidents (id) ON DELETE CASCADE,
    event       text        NOT NULL CHECK (event IN ('opened', 'resolved')),
    url         text        NOT NULL,
    attempt     integer     NOT NULL CHECK (attempt >= 1),
    http_status integer,
    error       text,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_deliveries_incident_id_idx ON alert_deliveries (incident_id);
"#;

const DOWN: &str = r#"
DROP TABLE alert_deliveries;
DROP TABLE alert_incidents;
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
