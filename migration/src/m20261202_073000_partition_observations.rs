//! `observations` becomes a table partitioned by month of `observed_at`, so that a windowed read
//! (the nightly fit over the last 30 days) scans the window's partitions only, and retention drops a
//! month as one partition instead of deleting rows.
//!
//! The rows move: the plain table is renamed, the partitioned one created under the old names, a
//! partition made for every month from the oldest row to two months ahead (plus a `DEFAULT`
//! partition for anything outside them), the rows copied over with their ids, and the plain table
//! dropped. The id sequence is handed over, so ids continue where they were. The unique key
//! `(location_key, observed_at)` already holds the partition key, so it stays a table-wide unique
//! key and the write path's dedup is unchanged; the primary key becomes `(id, observed_at)`, as
//! PostgreSQL requires of a partitioned table's unique constraints. The two views over
//! `observations` are dropped and recreated, since a view follows the table it was created on.
//!
//! `down` restores the plain table, rows included. Later partitions are made by the daily
//! maintenance step (`weatherflow::partitions`), which uses the same names.

use sea_orm_migration::prelude::*;

use crate::m20261201_215000_create_analysis_views::{LATEST_OBSERVATIONS, WEATHER_DATA};

/// Partitions `observations` by month; `down` makes it one plain table again.
#[derive(DeriveMigrationName)]
pub struct Migration;

/// The columns of `observations` after the id, as the first migration defined them. Both tables of
/// the move are declared with them, in this order, so `INSERT … SELECT *` maps column to column.
const COLUMNS: &str = r#"
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
    kafka_offset     bigint"#;

/// Renames the live table and its indexes out of the way (`observations` → `observations_<suffix>`),
/// so the replacement can take the names the write path and the docs use.
fn rename_away(suffix: &str) -> String {
    format!(
        "DROP VIEW latest_observations;
DROP VIEW weather_data;
ALTER TABLE observations RENAME TO observations_{suffix};
ALTER TABLE observations_{suffix} RENAME CONSTRAINT observations_pkey TO observations_{suffix}_pkey;
ALTER TABLE observations_{suffix} RENAME CONSTRAINT observations_location_key_observed_at_key
    TO observations_{suffix}_location_key_observed_at_key;
ALTER INDEX observations_observed_at_idx RENAME TO observations_{suffix}_observed_at_idx;
"
    )
}

/// Copies the rows of `observations_<suffix>` into the new `observations`, hands it the id sequence
/// (which would otherwise be dropped with its owner) and drops the old table.
fn move_rows(suffix: &str) -> String {
    format!(
        "INSERT INTO observations SELECT * FROM observations_{suffix};
ALTER SEQUENCE observations_id_seq OWNED BY observations.id;
DROP TABLE observations_{suffix};
ANALYZE observations;
"
    )
}

/// One partition per month (UTC) from the oldest row's month through two months after the later of
/// the newest row's month and the current month, then the `DEFAULT` partition. Months are counted on
/// `timestamp` values in UTC, so the session's time zone cannot shift a bound.
const CREATE_PARTITIONS: &str = r#"
DO $$
DECLARE
    this_month timestamp := date_trunc('month', now() AT TIME ZONE 'UTC');
    first_month timestamp;
    last_month timestamp;
    m timestamp;
BEGIN
    SELECT date_trunc('month', min(observed_at) AT TIME ZONE 'UTC'),
           date_trunc('month', max(observed_at) AT TIME ZONE 'UTC')
      INTO first_month, last_month
      FROM observations_unpartitioned;
    first_month := least(coalesce(first_month, this_month), this_month);
    last_month := greatest(coalesce(last_month, this_month), this_month) + interval '2 months';
    m := first_month;
    WHILE m <= last_month LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF observations FOR VALUES FROM (%L) TO (%L)',
            'observations_y' || to_char(m, 'YYYY') || 'm' || to_char(m, 'MM'),
            m::text || '+00',
            (m + interval '1 month')::text || '+00');
        m := m + interval '1 month';
    END LOOP;
    CREATE TABLE observations_default PARTITION OF observations DEFAULT;
END
$$;
"#;

fn up_sql() -> String {
    format!(
        "{rename}
CREATE TABLE observations (
    id               bigint      NOT NULL DEFAULT nextval('observations_id_seq'::regclass),{COLUMNS},
    CONSTRAINT observations_pkey PRIMARY KEY (id, observed_at),
    CONSTRAINT observations_location_key_observed_at_key UNIQUE (location_key, observed_at)
) PARTITION BY RANGE (observed_at);
CREATE INDEX observations_observed_at_idx ON observations (observed_at);
{CREATE_PARTITIONS}
{moved}
{WEATHER_DATA}
{LATEST_OBSERVATIONS}",
        rename = rename_away("unpartitioned"),
        moved = move_rows("unpartitioned"),
    )
}

fn down_sql() -> String {
    format!(
        "{rename}
CREATE TABLE observations (
    id               bigint      NOT NULL DEFAULT nextval('observations_id_seq'::regclass),{COLUMNS},
    CONSTRAINT observations_pkey PRIMARY KEY (id),
    CONSTRAINT observations_location_key_observed_at_key UNIQUE (location_key, observed_at)
);
CREATE INDEX observations_observed_at_idx ON observations (observed_at);
{moved}
{WEATHER_DATA}
{LATEST_OBSERVATIONS}",
        rename = rename_away("partitioned"),
        moved = move_rows("partitioned"),
    )
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&up_sql())
            .await
            .map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&down_sql())
            .await
            .map(|_| ())
    }
}
