//! The analysis views (migration m20261201_215000) against the base tables they read, on this
//! test's own database: rows are written to the tables directly, and each view must give what those
//! rows mean.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::TestContext;
use migration::{Migrator, MigratorTrait};

/// Three locations, six observations each, inserted newest first so that "latest" cannot mean
/// "inserted last".
const LOCATIONS: [(&str, &str, &str, &str); 3] = [
    ("alpha|north|simulated", "Alpha", "North", "Simulated"),
    ("beta||simulated", "Beta", "", "Simulated"),
    ("gamma|south|utopia", "Gamma", "South", "Utopia"),
];
const PER_LOCATION: i64 = 6;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 6, 0, 0).unwrap()
}

/// The observation `i` of location `l`: (observed_at, temp_c, wind_kph, humidity).
fn observation(l: usize, i: i64) -> (DateTime<Utc>, f64, f64, i32) {
    let temp_c = 4.25 + 1.5 * i as f64 - 3.1 * l as f64;
    let wind_kph = 7.3 + 2.2 * i as f64 + 0.9 * l as f64;
    (t0() + Duration::minutes(15 * i), temp_c, wind_kph, 60 + i as i32)
}

async fn insert_observations(ctx: &TestContext) {
    let pool = ctx.db.get_postgres_connection_pool();
    for (l, (key, name, region, country)) in LOCATIONS.iter().enumerate() {
        for i in (0..PER_LOCATION).rev() {
            let (at, temp_c, wind_kph, humidity) = observation(l, i);
            sqlx::query(
                "INSERT INTO observations (location_key, location_name, region, country, lat, lon, \
                 observed_at, temp_c, wind_kph, humidity, pressure_mb, condition_text, source, fetched_at) \
                 VALUES ($1, $2, $3, $4, 1.5, 2.5, $5, $6, $7, $8, 1012.5, 'Clear', 'simulated', $5)",
            )
            .bind(key)
            .bind(name)
            .bind(region)
            .bind(country)
            .bind(at)
            .bind(temp_c)
            .bind(wind_kph)
            .bind(humidity)
            .execute(pool)
            .await
            .expect("inserting an observation");
        }
    }
}

#[tokio::test]
async fn weather_data_is_every_observation_in_kelvin_and_metres_per_second() {
    let ctx = TestContext::new().await;
    insert_observations(&ctx).await;
    let pool = ctx.db.get_postgres_connection_pool();

    // The reference analysis' query, unchanged.
    let rows: Vec<(f64, f64)> = sqlx::query_as("SELECT temperature, wind_speed FROM weather_data")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(
        rows.len() as i64,
        ctx.scalar_i64("SELECT count(*) FROM observations").await
    );

    type Row = (
        String,
        String,
        String,
        String,
        DateTime<Utc>,
        f64,
        f64,
        Option<i32>,
        Option<f64>,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT location_key, city, region, country, observed_at, temperature, wind_speed, humidity, \
         pressure_mb, source FROM weather_data",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(rows.len() as i64, LOCATIONS.len() as i64 * PER_LOCATION);
    for (key, city, region, country, at, temperature, wind_speed, humidity, pressure, source) in rows {
        let l = LOCATIONS
            .iter()
            .position(|loc| loc.0 == key)
            .expect("a known location");
        let i = (at - t0()).num_minutes() / 15;
        let (_, temp_c, wind_kph, hum) = observation(l, i);
        assert_eq!(
            (city.as_str(), region.as_str(), country.as_str()),
            (LOCATIONS[l].1, LOCATIONS[l].2, LOCATIONS[l].3)
        );
        // The same IEEE operations on the same doubles: equal to the last bit.
        assert_eq!(temperature, temp_c + 273.15, "{key} #{i}");
        assert_eq!(wind_speed, wind_kph / 3.6, "{key} #{i}");
        assert_eq!(
            (humidity, pressure, source.as_str()),
            (Some(hum), Some(1012.5), "simulated")
        );
    }
}

#[tokio::test]
async fn latest_observations_is_the_newest_row_of_each_location() {
    let ctx = TestContext::new().await;
    insert_observations(&ctx).await;
    let pool = ctx.db.get_postgres_connection_pool();
    let rows: Vec<(String, String, DateTime<Utc>, f64, f64)> = sqlx::query_as(
        "SELECT location_key, city, observed_at, temp_c, wind_kph FROM latest_observations ORDER BY location_key",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let want: Vec<(String, String, DateTime<Utc>, f64, f64)> = LOCATIONS
        .iter()
        .enumerate()
        .map(|(l, loc)| {
            let (at, temp_c, wind_kph, _) = observation(l, PER_LOCATION - 1);
            (loc.0.to_owned(), loc.1.to_owned(), at, temp_c, wind_kph)
        })
        .collect();
    assert_eq!(rows, want);
    // And the base table agrees on what "newest" is.
    let newest = ctx
        .scalar_i64(
            "SELECT count(*) FROM latest_observations l WHERE l.observed_at = \
             (SELECT max(observed_at) FROM observations o WHERE o.location_key = l.location_key)",
        )
        .await;
    assert_eq!(newest, LOCATIONS.len() as i64);
}

/// Inserts a finished analytics run with `status`, started `at`, and one result per (scope,
/// intercept, slope); returns the run's id.
async fn analytics_run(ctx: &TestContext, status: &str, at: DateTime<Utc>, fits: &[(&str, f64, f64)]) -> i64 {
    let pool = ctx.db.get_postgres_connection_pool();
    let finished = (status != "running").then(|| at + Duration::seconds(2));
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO job_runs (job, \"trigger\", status, started_at, finished_at) \
         VALUES ('analytics', 'manual', $1, $2, $3) RETURNING id",
    )
    .bind(status)
    .bind(at)
    .bind(finished)
    .fetch_one(pool)
    .await
    .unwrap();
    for (scope, intercept, slope) in fits {
        sqlx::query(
            "INSERT INTO regression_results (job_run_id, fitted_at, scope, target, feature, n_samples, \
             intercept, slope, r_squared, rmse, slope_stderr) \
             VALUES ($1, $2, $3, 'temp_c', 'wind_kph', 18, $4, $5, 0.5, 1.25, 0.01)",
        )
        .bind(id)
        .bind(at + Duration::seconds(1))
        .bind(scope)
        .bind(intercept)
        .bind(slope)
        .execute(pool)
        .await
        .unwrap();
    }
    id
}

#[tokio::test]
async fn latest_regression_takes_the_newest_fit_of_a_succeeded_run_and_converts_it() {
    let ctx = TestContext::new().await;
    let t = t0();
    let old = analytics_run(
        &ctx,
        "succeeded",
        t,
        &[("all", 16.5, -0.25), ("alpha|north|simulated", 12.0, 0.125)],
    )
    .await;
    let new = analytics_run(&ctx, "succeeded", t + Duration::hours(1), &[("all", 17.0, -0.3)]).await;
    // Newer, but not from a succeeded run: never the answer.
    analytics_run(&ctx, "failed", t + Duration::hours(2), &[("all", 99.0, 9.0)]).await;
    analytics_run(
        &ctx,
        "running",
        t + Duration::hours(3),
        &[("all", 98.0, 8.0), ("beta||simulated", 1.0, 1.0)],
    )
    .await;

    let pool = ctx.db.get_postgres_connection_pool();
    type Row = (String, i64, f64, f64, f64, f64, f64, Option<f64>, Option<f64>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT scope, job_run_id, intercept_c, slope_c_per_kph, intercept_k, slope_k_per_ms, rmse, \
         slope_stderr_c_per_kph, slope_stderr_k_per_ms FROM latest_regression ORDER BY scope",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let want = |scope: &str, run: i64, a: f64, b: f64| -> Row {
        (
            scope.to_owned(),
            run,
            a,
            b,
            a + 273.15,
            b * 3.6,
            1.25,
            Some(0.01),
            Some(0.01 * 3.6),
        )
    };
    assert_eq!(
        rows,
        [
            want("all", new, 17.0, -0.3),
            want("alpha|north|simulated", old, 12.0, 0.125)
        ]
    );

    // The conversion is the stored line itself, rewritten in K and m/s: both predict the same
    // temperature for the same wind.
    let (a, b, ak, bk) = (rows[0].2, rows[0].3, rows[0].4, rows[0].5);
    for kph in [0.0, 10.0, 36.0, 100.0] {
        let kelvin = ak + bk * (kph / 3.6);
        assert!((kelvin - (a + b * kph + 273.15)).abs() < 1e-9, "{kph} km/h");
    }
}

#[tokio::test]
async fn run_history_gives_durations_and_outcomes() {
    let ctx = TestContext::new().await;
    let pool = ctx.db.get_postgres_connection_pool();
    let t = t0();
    /// (status, job, milliseconds to finish, error, details).
    type Run<'a> = (&'a str, &'a str, Option<i64>, Option<&'a str>, Option<&'a str>);
    let runs: [Run; 4] = [
        ("succeeded", "fetch", Some(1500), None, None),
        ("failed", "persist", Some(250), Some("broker unreachable"), None),
        (
            "skipped",
            "analytics",
            Some(0),
            None,
            Some(r#"{"reason": "lock held by another run"}"#),
        ),
        ("running", "fetch", None, None, None),
    ];
    for (status, job, millis, error, details) in runs {
        let finished = millis.map(|ms| t + Duration::milliseconds(ms));
        sqlx::query(
            "INSERT INTO job_runs (job, \"trigger\", status, started_at, finished_at, records_in, records_out, \
             error, details) VALUES ($1, 'schedule', $2, $3, $4, 12, 10, $5, $6::jsonb)",
        )
        .bind(job)
        .bind(status)
        .bind(t)
        .bind(finished)
        .bind(error)
        .bind(details)
        .execute(pool)
        .await
        .unwrap();
    }
    let rows: Vec<(String, String, Option<f64>, String)> =
        sqlx::query_as("SELECT status, job, duration_secs, outcome FROM run_history ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        [
            (
                "succeeded".into(),
                "fetch".into(),
                Some(1.5),
                "succeeded: 12 in, 10 out".into()
            ),
            (
                "failed".into(),
                "persist".into(),
                Some(0.25),
                "failed: broker unreachable".into()
            ),
            (
                "skipped".into(),
                "analytics".into(),
                Some(0.0),
                "skipped: lock held by another run".into()
            ),
            (
                "running".into(),
                "fetch".into(),
                None,
                "running since 2026-11-30 06:00:00 UTC".into()
            ),
        ]
    );
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM run_history").await,
        ctx.scalar_i64("SELECT count(*) FROM job_runs").await
    );
}

#[tokio::test]
async fn rejections_summary_counts_per_class_and_utc_day() {
    let ctx = TestContext::new().await;
    let pool = ctx.db.get_postgres_connection_pool();
    // 23:30 and 00:30 UTC fall on different days whatever the session's time zone.
    let late = Utc.with_ymd_and_hms(2026, 11, 29, 23, 30, 0).unwrap();
    let early = Utc.with_ymd_and_hms(2026, 11, 30, 0, 30, 0).unwrap();
    let records = [
        (late, "invalid_json"),
        (late, "invalid_json"),
        (late, "out_of_range"),
        (early, "invalid_json"),
        (early, "too_large"),
        (early + Duration::hours(3), "too_large"),
    ];
    let mut want: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (offset, (at, class)) in records.iter().enumerate() {
        sqlx::query(
            "INSERT INTO rejected_records (received_at, kafka_topic, kafka_partition, kafka_offset, \
             error_class, reason) VALUES ($1, 'obs', 0, $2, $3, 'test')",
        )
        .bind(at)
        .bind(offset as i64)
        .bind(class)
        .execute(pool)
        .await
        .unwrap();
        *want
            .entry((at.date_naive().to_string(), class.to_string()))
            .or_default() += 1;
    }
    // A session far from UTC must still see UTC days.
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET TIME ZONE 'Pacific/Auckland'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT day::text, error_class, rejections FROM rejections_summary ORDER BY day, error_class",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    let want: Vec<(String, String, i64)> = want.into_iter().map(|((d, c), n)| (d, c, n)).collect();
    assert_eq!(rows, want);
    assert_eq!(
        rows.iter().map(|r| r.2).sum::<i64>(),
        ctx.scalar_i64("SELECT count(*) FROM rejected_records").await
    );
}

#[tokio::test]
async fn the_views_migration_goes_down_and_up_without_touching_the_tables() {
    let ctx = TestContext::new().await;
    insert_observations(&ctx).await;
    let views = "SELECT count(*) FROM pg_views WHERE schemaname = 'public'";
    assert_eq!(ctx.scalar_i64(views).await, 5);
    // The partitioning migration (which recreates two of the views) and later ones come after the
    // views one.
    let steps = common::migrations_after("m20261201_215000_create_analysis_views") + 1;
    Migrator::down(&ctx.db, Some(steps)).await.unwrap();
    assert_eq!(ctx.scalar_i64(views).await, 0);
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM observations").await, 18);
    Migrator::up(&ctx.db, None).await.unwrap();
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM weather_data").await, 18);
}
