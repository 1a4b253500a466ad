//! Views for analysts: `weather_data`, `latest_observations`, `latest_regression`, `run_history`,
//! `rejections_summary` (documented, with example queries, in docs/schema.md).
//!
//! Views rather than tables: they hold no data of their own, so they cannot drift from the base
//! tables, and dropping them loses nothing. `weather_data` gives the reference analysis its shape
//! (kelvin and metres per second) without a second copy of the observations.

use sea_orm_migration::prelude::*;

/// Creates the analysis views; `down` drops them again.
#[derive(DeriveMigrationName)]
pub struct Migration;

/// `weather_data`: one row per observation in SI units. Also recreated by the partitioning migration,
/// which replaces the table it reads.
pub(crate) const WEATHER_DATA: &str = r#"
-- One row per observation, in SI units: K = °C + 273.15, m/s = km/h ÷ 3.6.
CREATE VIEW weather_data AS
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
FROM observations o;
"#;

/// `latest_observations`: the newest observation of each location (recreated like [`WEATHER_DATA`]).
pub(crate) const LATEST_OBSERVATIONS: &str = r#"
-- The newest observation of each location.
CREATE VIEW latest_observations AS
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
ORDER BY o.location_key, o.observed_at DESC;
"#;

/// `latest_regression`: the newest published fit of each scope (replaced by the provenance
/// migration, which adds the fit's source).
pub(crate) const LATEST_REGRESSION: &str = r#"
-- The newest fit of each scope among the runs that succeeded (a failed or still running run's rows
-- are not the answer). The stored line is temp_c = intercept + slope · wind_kph; in kelvin and m/s
-- it is T = (intercept + 273.15) + (slope · 3.6) · v, since temp_c = T − 273.15 and wind_kph = 3.6 v.
-- RMSE is a temperature difference: the same number in °C and K.
CREATE VIEW latest_regression AS
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
       r.slope_stderr * 3.6   AS slope_stderr_k_per_ms
FROM regression_results r
JOIN job_runs j ON j.id = r.job_run_id
WHERE j.status = 'succeeded'
  AND r.target = 'temp_c'
  AND r.feature = 'wind_kph'
ORDER BY r.scope, r.fitted_at DESC, r.id DESC;
"#;

/// The views over the other tables.
const OTHER_VIEWS: &str = r#"
-- job_runs with its duration and a one-line outcome.
CREATE VIEW run_history AS
SELECT j.id,
       j.job,
       j."trigger",
       j.status,
       j.started_at,
       j.finished_at,
       j.finished_at - j.started_at                           AS duration,
       extract(epoch FROM j.finished_at - j.started_at)::float8 AS duration_secs,
       j.records_in,
       j.records_out,
       CASE j.status
           WHEN 'succeeded' THEN 'succeeded: ' || coalesce(j.records_in::text, '-') || ' in, '
                                 || coalesce(j.records_out::text, '-') || ' out'
           WHEN 'failed'    THEN 'failed: ' || coalesce(j.error, 'no error recorded')
           WHEN 'skipped'   THEN 'skipped: ' || coalesce(j.details->>'reason', j.error, 'no reason recorded')
           ELSE 'running since ' || to_char(j.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'
       END                                                    AS outcome,
       j.details->>'replica'                                  AS replica
FROM job_runs j;

-- Dead-letter counts per UTC day and error class.
CREATE VIEW rejections_summary AS
SELECT (r.received_at AT TIME ZONE 'UTC')::date AS day,
       r.error_class,
       count(*)                                 AS rejections,
       min(r.received_at)                       AS first_at,
       max(r.received_at)                       AS last_at
FROM rejected_records r
GROUP BY 1, 2;
"#;

const DOWN: &str = r#"
DROP VIEW rejections_summary;
DROP VIEW run_history;
DROP VIEW latest_regression;
DROP VIEW latest_observations;
DROP VIEW weather_data;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        for sql in [WEATHER_DATA, LATEST_OBSERVATIONS, LATEST_REGRESSION, OTHER_VIEWS] {
            conn.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(DOWN)
            .await
            .map(|_| ())
    }
}
