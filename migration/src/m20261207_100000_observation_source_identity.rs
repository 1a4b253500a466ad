//! Provenance becomes part of an observation's identity (issue 29): a WeatherAPI observation and a
//! simulated one of the same place and time are two rows, so neither can displace the other.
//!
//! - `observations`' unique key becomes `(location_key, observed_at, source)`. It still holds the
//!   partition key, so it stays a table-wide key; PostgreSQL builds it on every month partition
//!   (`observations_y2026m12_location_key_observed_at_source_key`) and on every partition attached
//!   later. The new key is built before the old one is dropped: every row is kept, and no moment
//!   exists without a key.
//! - `observations_source_observed_at_idx` on `(source, observed_at)`: the analytics job asks
//!   whether a window holds any WeatherAPI row (one index probe per partition instead of a scan of
//!   the window) and reads one source's rows of a window; `weather_data` asks the same of the table.
//! - `regression_results.source`: the source a fit used. NULL on fits made before this migration,
//!   which fitted every row whatever its source.
//! - `weather_data` and `latest_observations` return the rows of one source: WeatherAPI's when the
//!   table holds any, else the simulated ones (the analytics job's default, applied to the whole
//!   table). Their columns are unchanged. `latest_regression` gains `source` as its last column.
//!
//! `down` restores the key `(location_key, observed_at)`, which cannot hold a WeatherAPI and a
//! simulated row of one slot. It refuses, changing nothing, while such twins exist, and says how many
//! and how to remove the simulated twins (docs/schema.md): a down migration does not choose which
//! data to destroy.

use sea_orm_migration::prelude::*;

use crate::m20261201_215000_create_analysis_views::{LATEST_OBSERVATIONS, LATEST_REGRESSION, WEATHER_DATA};

/// Adds `source` to the observations' unique key and to `regression_results`; `down` takes it out.
#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
ALTER TABLE observations
    ADD CONSTRAINT observations_location_key_observed_at_source_key
    UNIQUE (location_key, observed_at, source);
ALTER TABLE observations DROP CONSTRAINT observations_location_key_observed_at_key;
CREATE INDEX observations_source_observed_at_idx ON observations (source, observed_at);
ALTER TABLE regression_results
    ADD COLUMN source text CHECK (source IN ('weatherapi', 'simulated'));

-- One row per observation of one source, in SI units: K = °C + 273.15, m/s = km/h ÷ 3.6. The source
-- is WeatherAPI when observations holds any WeatherAPI row, else simulated.
CREATE OR REPLACE VIEW weather_data AS
SELECT o.id,
       o.location_key,
       o.location_name       AS city,
       o.region,
       o.country,
       o.observed_at,
       o.temp_c + 273.15     AS temperature,
       o.wind_kph / 3.6      AS wind_speed,
       o.humidity,
       o.pressure_mb,
       o.source,
       o.ingested_at
FROM observations o
WHERE o.source = (SELECT CASE WHEN EXISTS (SELECT 1 FROM observations w WHERE w.source = 'weatherapi')
                              THEN 'weatherapi' ELSE 'simulated' END);

-- The newest observation of each location, among the rows of weather_data's source.
CREATE OR REPLACE VIEW latest_observations AS
SELECT DISTINCT ON (o.location_key)
       o.location_key,
       o.location_name AS city,
       o.region,
       o.country,
       o.lat,
       o.lon,
       o.observed_at,
       o.temp_c,
       o.wind_kph,
       o.humidity,
       o.pressure_mb,
       o.condition_text,
       o.source,
       o.ingested_at
FROM observations o
WHERE o.source = (SELECT CASE WHEN EXISTS (SELECT 1 FROM observations w WHERE w.source = 'weatherapi')
                              THEN 'weatherapi' ELSE 'simulated' END)
ORDER BY o.location_key, o.observed_at DESC;

-- latest_regression as before, with the source the fit used (NULL: fitted before sources were
-- told apart, on every row).
CREATE OR REPLACE VIEW latest_regression AS
SELECT DISTINCT ON (r.scope)
       r.scope,
       r.id                   AS result_id,
       r.job_run_id,
       r.fitted_at,
       r.window_start,
       r.window_end,
       r.n_samples,
       r.intercept            AS intercept_c,
       r.slope                AS slope_c_per_kph,
       r.intercept + 273.15   AS intercept_k,
       r.slope * 3.6          AS slope_k_per_ms,
       r.r_squared,
       r.rmse,
       r.slope_stderr         AS slope_stderr_c_per_kph,
       r.slope_stderr * 3.6   AS slope_stderr_k_per_ms,
       r.source
FROM regression_results r
JOIN job_runs j ON j.id = r.job_run_id
WHERE j.status = 'succeeded'
  AND r.target = 'temp_c'
  AND r.feature = 'wind_kph'
ORDER BY r.scope, r.fitted_at DESC, r.id DESC;
"#;

/// Refuses `down` while a slot has rows of both sources (the old key would reject the second).
const REFUSE_TWINS: &str = r#"
DO $$
DECLARE
    twins bigint;
BEGIN
    SELECT count(*) INTO twins
      FROM (SELECT 1 FROM observations GROUP BY location_key, observed_at HAVING count(*) > 1) t;
    IF twins > 0 THEN
        RAISE EXCEPTION 'cannot migrate down: % observation slot(s) (location_key, observed_at) have both a weatherapi and a simulated row, and the old unique key allows one; nothing was changed', twins
            USING HINT = 'to keep the WeatherAPI rows and drop their simulated twins: DELETE FROM observations s WHERE s.source = ''simulated'' AND EXISTS (SELECT 1 FROM observations w WHERE w.location_key = s.location_key AND w.observed_at = s.observed_at AND w.source = ''weatherapi''); then migrate down again';
    END IF;
END
$$;
"#;

const DOWN_SCHEMA: &str = r#"
DROP VIEW latest_regression;
DROP VIEW latest_observations;
DROP VIEW weather_data;
ALTER TABLE regression_results DROP COLUMN source;
DROP INDEX observations_source_observed_at_idx;
ALTER TABLE observations
    ADD CONSTRAINT observations_location_key_observed_at_key UNIQUE (location_key, observed_at);
ALTER TABLE observations DROP CONSTRAINT observations_location_key_observed_at_source_key;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await.map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One transaction (sea-orm-migration's on PostgreSQL): a refusal changes nothing.
        let conn = manager.get_connection();
        for sql in [
            REFUSE_TWINS,
            DOWN_SCHEMA,
            WEATHER_DATA,
            LATEST_OBSERVATIONS,
            LATEST_REGRESSION,
        ] {
            conn.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
