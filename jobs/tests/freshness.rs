//! Freshness on the real database, through the real binary: a stale window is recorded `skipped`
//! (or `failed` with `analytics.on_stale = "fail"`) naming the newest observation, its age and the
//! bound, and publishes no fit; a fresh one fits. Provenance holds: fresh simulated rows do not make
//! stale WeatherAPI data fresh. `status` shows the figure.

mod common;

use common::{TestContext, run_cli, scratch_dir};
use weatherflow::runs::{JobName, RunStatus};

/// 400 observations of `source` for two places, one a minute, the newest `newest_mins_ago` minutes
/// ago, on a clear line.
async fn insert(ctx: &TestContext, source: &str, newest_mins_ago: i64) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO observations (location_key, location_name, region, country, lat, lon, observed_at,
                                   temp_c, wind_kph, source, fetched_at)
         SELECT 'loc' || (g % 2), 'loc', '', 'testland', 0, 0,
                now() - ({newest_mins_ago} + g) * interval '1 minute',
                20 - 0.1 * (g % 50) + (g % 7) * 0.3, (g % 50), '{source}', now()
         FROM generate_series(0, 399) AS g"
    )))
    .execute(ctx.db.get_postgres_connection_pool())
    .await
    .expect("inserting observations");
}

async fn last_run(ctx: &TestContext) -> entity::job_runs::Model {
    weatherflow::runs::history(&ctx.db, Some(JobName::Analytics), 1)
        .await
        .unwrap()
        .remove(0)
}

#[tokio::test]
async fn a_stale_window_is_skipped_or_failed_with_its_figures_and_a_fresh_one_fits() {
    let ctx = TestContext::new().await;
    let dir = scratch_dir("wf-fresh");
    let env = ctx.child_env();
    // Newest 5 h old; the bound is 2 h.
    insert(&ctx, "simulated", 300).await;

    let (ok, _, err) = run_cli(&dir, &["run", "analytics"], &env).await;
    assert!(ok, "a skipped run exits 0: {err}");
    let run = last_run(&ctx).await;
    assert_eq!(run.status, RunStatus::Skipped);
    let details = run.details.unwrap();
    let reason = details["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("data is stale: the newest simulated observation in the window is from ")
            && reason.contains("(5h 0m old), above analytics.max_staleness_secs = 7200 (2h 0m)"),
        "{reason}"
    );
    assert_eq!(details["freshness"]["stale"], true);
    assert!(details["freshness"]["age_secs"].as_u64().unwrap() >= 5 * 3600);
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM regression_results").await,
        0,
        "no fit published"
    );

    let (ok, out, err) = run_cli(&dir, &["status"], &env).await;
    assert!(ok, "{err}");
    assert!(out.contains("STALE: the newest simulated observation"), "{out}");

    let fail = ctx.child_env_with(&[("WEATHERFLOW_ANALYTICS_ON_STALE", "fail")]);
    let (ok, _, err) = run_cli(&dir, &["run", "analytics"], &fail).await;
    assert!(!ok, "on_stale = fail fails the run");
    assert!(err.contains("data is stale"), "{err}");
    let run = last_run(&ctx).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.error.unwrap().contains("above analytics.max_staleness_secs"));
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM regression_results").await, 0);

    // A wider bound, or a past window (--until), is fitted.
    let wide = ctx.child_env_with(&[("WEATHERFLOW_ANALYTICS_MAX_STALENESS_SECS", "21600")]);
    let (ok, _, err) = run_cli(&dir, &["run", "analytics"], &wide).await;
    assert!(ok, "{err}");
    assert_eq!(last_run(&ctx).await.status, RunStatus::Succeeded);

    // Fresh data: fitted under the default bound.
    insert(&ctx, "simulated", 1).await;
    let before = ctx.scalar_i64("SELECT count(*) FROM regression_results").await;
    let (ok, _, err) = run_cli(&dir, &["run", "analytics"], &env).await;
    assert!(ok, "{err}");
    assert_eq!(last_run(&ctx).await.status, RunStatus::Succeeded);
    assert!(ctx.scalar_i64("SELECT count(*) FROM regression_results").await > before);
    let (_, out, _) = run_cli(&dir, &["status"], &env).await;
    assert!(out.contains("ok: the newest simulated observation"), "{out}");
}

#[tokio::test]
async fn fresh_simulated_rows_do_not_make_stale_weatherapi_data_fresh() {
    let ctx = TestContext::new().await;
    let dir = scratch_dir("wf-fresh");
    insert(&ctx, "weatherapi", 600).await;
    insert(&ctx, "simulated", 1).await;
    let f = weatherflow::jobs::analytics::freshness::freshness(&ctx.db, &ctx.config)
        .await
        .unwrap();
    assert_eq!(f.source, weatherflow::Source::Weatherapi);
    assert!(f.stale(), "{}", f.reason());
    let (ok, _, err) = run_cli(&dir, &["run", "analytics"], &ctx.child_env()).await;
    assert!(ok, "{err}");
    let run = last_run(&ctx).await;
    assert_eq!(run.status, RunStatus::Skipped);
    let reason = run.details.unwrap()["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("newest weatherapi observation") && reason.contains("10h 0m old"),
        "{reason}"
    );
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM regression_results").await, 0);
}
