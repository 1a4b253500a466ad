//! The four tables of the first release: observations, rejected_records, job_runs,
//! regression_results.
//!
//! Written as PostgreSQL DDL rather than the schema builder: the project targets PostgreSQL only, and
//! CHECK constraints (the finite-number guarantee on results, the enumerations) read best as SQL.

use sea_orm_migration::prelude::*;

/// Creates the first schema; `down` drops it again.
#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE TABLE job_runs (
    id           bigserial PRIMARY KEY,
    job          text        NOT NULL,
    "trigger"    text        NOT NULL CHECK ("trigger" IN ('schedule', 'manual')),
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    status       text        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'skipped')),
    records_in   bigint,
    records_out  bigint,
    error        text,
    details      jsonb
);
CREATE INDEX job_runs_job_started_at_idx ON job_runs (job, started_at DESC);

CREATE TABLE observations (
    id               bigserial PRIMARY KEY,
    location_key     text        NOT NULL,
    location_name    text        NOT NULL,
    region           text        NOT NULL,
    country          text        NOT NULL,
    lat              float8      NOT NULL,
    lon              float8      NOT NULL,
    observed_at      timestamptz NOT NULL,
    temp_c           float8      NOT NULL,
    feelslike_c      float8,
    wind_kph         float8      NOT NULL,
    gust_kph         float8,
    pressure_mb      float8,
    precip_mm        float8,
    vis_km           float8,
    uv               float8,
    wind_degree      integer,
    humidity         integer,
    cloud            integer,
    wind_dir         text,
    condition_text   text,
    condition_code   integer,
    is_day           boolean,
    source           text        NOT NULL CHECK (source IN ('weatherapi', 'simulated')),
    fetched_at       timestamptz NOT NULL,
    ingested_at      timestamptz NOT NULL DEFAULT now(),
    kafka_topic      text,
    kafka_partition  integer,
    kafka_offset     bigint,
    CONSTRAINT observations_location_key_observed_at_key UNIQUE (location_key, observed_at)
);
CREATE INDEX observations_observed_at_idx ON observations (observed_at);

CREATE TABLE rejected_records (
    id               bigserial PRIMARY KEY,
    received_at      timestamptz NOT NULL DEFAULT now(),
    kafka_topic      text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    key              bytea,
    payload          bytea,
    error_class      text        NOT NULL,
    reason           text        NOT NULL,
    CONSTRAINT rejected_records_source_key UNIQUE (kafka_topic, kafka_partition, kafka_offset)
);

CREATE TABLE regression_results (
    id            bigserial PRIMARY KEY,
    job_run_id    bigint      NOT NULL REFERENCES job_runs (id) ON DELETE CASCADE,
    fitted_at     timestamptz NOT NULL DEFAULT now(),
    scope         text        NOT NULL,
    target        text        NOT NULL,
    feature       text        NOT NULL,
    window_start  timestamptz,
    window_end    timestamptz,
    n_samples     bigint      NOT NULL CHECK (n_samples >= 2),
    intercept     float8      NOT NULL CHECK (intercept    NOT IN ('NaN', 'Infinity', '-Infinity')),
    slope         float8      NOT NULL CHECK (slope        NOT IN ('NaN', 'Infinity', '-Infinity')),
    r_squared     float8      NOT NULL CHECK (r_squared    NOT IN ('NaN', 'Infinity', '-Infinity')),
    rmse          float8      NOT NULL CHECK (rmse         NOT IN ('NaN', 'Infinity', '-Infinity')),
    slope_stderr  float8               CHECK (slope_stderr NOT IN ('NaN', 'Infinity', '-Infinity'))
);
CREATE INDEX regression_results_scope_fitted_at_idx ON regression_results (scope, fitted_at DESC);
CREATE INDEX regression_results_job_run_id_idx ON regression_results (job_run_id);
"#;

const DOWN: &str = r#"
DROP TABLE regression_results;
DROP TABLE rejected_records;
DROP TABLE observations;
DROP TABLE job_runs;
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
