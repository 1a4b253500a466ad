//! The analytics job on a real database: its coefficients against PostgreSQL's own `regr_*`
//! aggregates over the same rows, the window, `min_samples`, degenerate data, the run linkage, the
//! SVG plot and the SQL the manual gives for the results table.

mod common;

use std::path::Path;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::TestContext;
use entity::{job_runs, regression_results};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use weatherflow::executor::{ExecError, Executor};
use weatherflow::job_error::{JobError, JobErrorKind};
use weatherflow::jobs::analytics::{self, AnalyticsRequest, AnalyticsSummary};
use weatherflow::runs::{JobName, RunStatus};

/// One synthetic observation.
struct Obs {
    key: String,
    at: DateTime<Utc>,
    wind: f64,
    temp: f64,
}

/// A location's synthetic climate: temp = intercept + slope·wind + noise (+ a daily cycle).
struct Climate {
    key: &'static str,
    n: usize,
    intercept: f64,
    slope: f64,
    noise: f64,
    wind_max: f64,
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

/// Noisy observations every 15 minutes from `t0()`, with a daily temperature cycle the wind does not
/// explain, so no fit is exact.
fn generate(climates: &[Climate], seed: u64) -> Vec<Obs> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for c in climates {
        for j in 0..c.n {
            let at = t0() + Duration::minutes(15 * j as i64);
            let wind = rng.random::<f64>() * c.wind_max;
            let hour = j as f64 / 4.0;
            let cycle = 2.0 * (hour / 24.0 * std::f64::consts::TAU).sin();
            // Sum of three uniforms: a bell-shaped noise.
            let noise: f64 = (0..3).map(|_| rng.random::<f64>() - 0.5).sum::<f64>() * c.noise;
            out.push(Obs {
                key: c.key.to_owned(),
                at,
                wind,
                temp: c.intercept + c.slope * wind + cycle + noise,
            });
        }
    }
    out
}

/// The varied set most tests use: different slopes, noise, sizes and offsets; `tiny` has fewer
/// samples than the default `min_samples` (30).
fn climates() -> Vec<Climate> {
    let c = |key, n, intercept, slope, noise, wind_max| Climate {
        key,
        n,
        intercept,
        slope,
        noise,
        wind_max,
    };
    vec![
        c("bergen||norway", 600, 9.0, -0.12, 3.0, 70.0),
        c("cairo||egypt", 450, 27.0, 0.05, 2.0, 30.0),
        c("london|city of london|united kingdom", 800, 12.0, -0.2, 4.0, 50.0),
        c("reykjavik||iceland", 300, 2.0, -0.3, 1.0, 90.0),
        // Kelvin-sized temperatures: a large offset the fit must not lose precision on.
        c("station k||antarctica", 500, 1250.0, -0.05, 5.0, 120.0),
        c("tiny||nowhere", 12, 15.0, 0.1, 1.0, 20.0),
    ]
}

async fn insert(ctx: &TestContext, rows: &[Obs]) {
    let pool = ctx.db.get_postgres_connection_pool();
    sqlx::query(
        "INSERT INTO observations (location_key, location_name, region, country, lat, lon, observed_at,
                                   temp_c, wind_kph, source, fetched_at)
         SELECT k, k, '', 'testland', 0, 0, t, temp, wind, 'simulated', now()
         FROM UNNEST($1::text[], $2::timestamptz[], $3::float8[], $4::float8[]) AS u(k, t, wind, temp)",
    )
    .bind(rows.iter().map(|o| o.key.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|o| o.at).collect::<Vec<_>>())
    .bind(rows.iter().map(|o| o.wind).collect::<Vec<_>>())
    .bind(rows.iter().map(|o| o.temp).collect::<Vec<_>>())
    .execute(pool)
    .await
    .expect("inserting observations");
}

/// A request over every stored row: the fixtures lie in November 2026, which the default window
/// (the last 30 days) would cut as the calendar moves on.
fn every_row() -> AnalyticsRequest {
    AnalyticsRequest {
        all_history: true,
        ..AnalyticsRequest::default()
    }
}

/// Runs the job as `weatherflow run analytics` does, inside a recorded run. Returns the run id too.
async fn run_job(ctx: &TestContext, req: AnalyticsRequest) -> (i64, Result<AnalyticsSummary, JobError>) {
    by_hand(ctx, req, CancellationToken::new()).await
}

/// One analytics run on the executor, as `weatherflow run analytics` starts it: its row id and the
/// job's own result.
async fn by_hand(
    ctx: &TestContext,
    req: AnalyticsRequest,
    shutdown: CancellationToken,
) -> (i64, Result<AnalyticsSummary, JobError>) {
    let run_id = std::cell::Cell::new(0);
    let exec = Executor::from_config(ctx.db.clone(), &ctx.config);
    let result = exec
        .run_by_hand(JobName::Analytics, &shutdown, |run| {
            run_id.set(run.run_id);
            analytics::run(&ctx.config, &ctx.db, run.run_id, req.clone(), run.cancel)
        })
        .await;
    let result = match result {
        Ok((_, summary)) => Ok(summary),
        Err(ExecError::Failed(e)) => Err(e),
        Err(e) => panic!("the executor failed: {e}"),
    };
    (run_id.get(), result)
}

/// PostgreSQL's own fit of one scope over the rows the job reads.
#[derive(Debug)]
struct Reference {
    scope: String,
    n: i64,
    intercept: f64,
    slope: f64,
    r2: f64,
    /// √(SSE/n) with SSE = Syy − Sxy²/Sxx.
    rmse: f64,
    /// √(SSE/(n−2)/Sxx).
    stderr: Option<f64>,
}

/// `regr_*` per location and over everything, optionally within a window.
async fn reference(
    ctx: &TestContext,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Vec<Reference> {
    let sql = "
        SELECT coalesce(location_key, 'all') AS scope, count(*) AS n,
               regr_intercept(temp_c, wind_kph) AS intercept, regr_slope(temp_c, wind_kph) AS slope,
               regr_r2(temp_c, wind_kph) AS r2, regr_sxx(temp_c, wind_kph) AS sxx,
               regr_syy(temp_c, wind_kph) AS syy, regr_sxy(temp_c, wind_kph) AS sxy
        FROM observations
        WHERE observed_at >= coalesce($1, '-infinity') AND observed_at < coalesce($2, 'infinity')
        GROUP BY ROLLUP (location_key)
        ORDER BY location_key NULLS FIRST";
    let rows = sqlx::query(sql)
        .bind(since)
        .bind(until)
        .fetch_all(ctx.db.get_postgres_connection_pool())
        .await
        .expect("reference query");
    // PostgreSQL answers NULL where there is no line (zero variance): no reference for that scope.
    rows.iter()
        .filter(|r| r.get::<Option<f64>, _>("slope").is_some())
        .map(|r| {
            let n: i64 = r.get("n");
            let (sxx, syy, sxy): (f64, f64, f64) = (r.get("sxx"), r.get("syy"), r.get("sxy"));
            let sse = syy - sxy * sxy / sxx;
            Reference {
                scope: r.get("scope"),
                n,
                intercept: r.get("intercept"),
                slope: r.get("slope"),
                r2: r.get("r2"),
                rmse: (sse / n as f64).sqrt(),
                stderr: (n >= 3).then(|| (sse / (n - 2) as f64 / sxx).sqrt()),
            }
        })
        .collect()
}

fn assert_close(what: &str, got: f64, want: f64, rel: f64) {
    let tol = rel * want.abs().max(1e-12);
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got:e}, PostgreSQL {want:e}, diff {:e} > {tol:e}",
        (got - want).abs()
    );
}

async fn results_of(ctx: &TestContext, run_id: i64) -> Vec<regression_results::Model> {
    regression_results::Entity::find()
        .filter(regression_results::Column::JobRunId.eq(run_id))
        .order_by_asc(regression_results::Column::Scope)
        .all(&ctx.db)
        .await
        .unwrap()
}

async fn run_row(ctx: &TestContext, run_id: i64) -> job_runs::Model {
    job_runs::Entity::find_by_id(run_id)
        .one(&ctx.db)
        .await
        .unwrap()
        .expect("the run's job_runs row")
}

/// Every stored result agrees with PostgreSQL's aggregate over the same rows.
fn check_against(stored: &[regression_results::Model], refs: &[Reference]) {
    for s in stored {
        let r = refs
            .iter()
            .find(|r| r.scope == s.scope)
            .unwrap_or_else(|| panic!("no reference for scope {}", s.scope));
        let what = |f: &str| format!("{} {f}", s.scope);
        assert_eq!(s.n_samples, r.n, "{}", what("n"));
        assert_close(&what("intercept"), s.intercept, r.intercept, 1e-9);
        assert_close(&what("slope"), s.slope, r.slope, 1e-9);
        assert_close(&what("r_squared"), s.r_squared, r.r2, 1e-9);
        // Computed by PostgreSQL's side from Syy − Sxy²/Sxx, which cancels digits: looser.
        assert_close(&what("rmse"), s.rmse, r.rmse, 1e-7);
        assert_close(
            &what("slope_stderr"),
            s.slope_stderr.unwrap(),
            r.stderr.unwrap(),
            1e-7,
        );
        assert_eq!(s.target, "temp_c");
        assert_eq!(s.feature, "wind_kph");
    }
}

#[tokio::test]
async fn fits_match_postgres_regr_for_all_and_each_location() {
    let ctx = TestContext::new().await;
    let rows = generate(&climates(), 1);
    insert(&ctx, &rows).await;

    let (run_id, summary) = run_job(&ctx, every_row()).await;
    let summary = summary.expect("analytics run");

    let stored = results_of(&ctx, run_id).await;
    let scopes: Vec<&str> = stored.iter().map(|s| s.scope.as_str()).collect();
    assert_eq!(
        scopes,
        [
            "all",
            "bergen||norway",
            "cairo||egypt",
            "london|city of london|united kingdom",
            "reykjavik||iceland",
            "station k||antarctica",
        ],
        "one row per scope; tiny (12 < 30 samples) has none"
    );
    let refs = reference(&ctx, None, None).await;
    check_against(&stored, &refs);
    // The synthetic slopes are recovered (noise permitting), so the data is what we think it is.
    let london = stored.iter().find(|s| s.scope.starts_with("london")).unwrap();
    assert!((london.slope + 0.2).abs() < 0.03, "{}", london.slope);
    for s in &stored {
        assert_eq!(s.window_start, None);
        assert_eq!(s.window_end, None);
    }

    // The run row: linked, counted, explained.
    let run = run_row(&ctx, run_id).await;
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.job, JobName::Analytics);
    assert_eq!(run.records_in, Some(rows.len() as i64));
    assert_eq!(run.records_out, Some(6));
    assert_eq!(summary.results_written, 6);
    let details = run.details.expect("details");
    assert_eq!(details["scopes_fitted"], 6);
    assert_eq!(details["locations"], 6);
    assert_eq!(details["skipped"][0]["scope"], "tiny||nowhere");
    assert_eq!(details["skipped"][0]["n"], 12);
    assert!(
        details["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("min_samples (30)"),
        "{details}"
    );
    // Every stored row points at this run, and the run at its rows through the relation.
    let linked = job_runs::Entity::find_by_id(run_id)
        .find_with_related(regression_results::Entity)
        .all(&ctx.db)
        .await
        .unwrap();
    assert_eq!(linked[0].1.len(), 6);
}

/// The read split over several connections (`analytics.read_connections`) stores what one connection
/// does: the same scopes, the same n, the same coefficients to rounding. The locations' spans differ
/// (12 to 800 rows from the same start), so the later parts hold only some of them, and the merge
/// must join a location's rows across parts and skip the parts without it.
#[tokio::test]
async fn a_read_split_over_connections_fits_what_one_connection_fits() {
    let mut ctx = TestContext::new().await;
    let rows = generate(&climates(), 7);
    insert(&ctx, &rows).await;
    let mut fits = Vec::new();
    // 8 is more than the test pool's 5 connections: the read takes what it can get.
    for connections in [1, 2, 8] {
        ctx.config.analytics.read_connections = connections;
        // Also a window that cuts every location, with a bound row at the window's end.
        for req in [
            every_row(),
            AnalyticsRequest {
                since: Some(t0() + Duration::hours(30)),
                until: Some(t0() + Duration::days(5)),
                ..every_row()
            },
        ] {
            let (run_id, summary) = run_job(&ctx, req.clone()).await;
            let summary = summary.unwrap_or_else(|e| panic!("{connections} connections: {e}"));
            let stored = results_of(&ctx, run_id).await;
            check_against(&stored, &reference(&ctx, req.since, req.until).await);
            fits.push((connections, req.since, summary.rows_read, stored));
        }
    }
    for (connections, since, rows_read, stored) in &fits[2..] {
        let (_, _, want_rows, want) = fits.iter().find(|f| f.0 == 1 && f.1 == *since).unwrap();
        assert_eq!(rows_read, want_rows, "{connections} connections, since {since:?}");
        let scopes = |v: &[regression_results::Model]| {
            v.iter()
                .map(|s| (s.scope.clone(), s.n_samples))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            scopes(stored),
            scopes(want),
            "{connections} connections, since {since:?}"
        );
        for (got, want) in stored.iter().zip(want) {
            assert_close(
                &format!("{} slope, {connections} connections", got.scope),
                got.slope,
                want.slope,
                1e-12,
            );
            assert_close(
                &format!("{} intercept, {connections} connections", got.scope),
                got.intercept,
                want.intercept,
                1e-12,
            );
        }
    }
    assert_eq!(fits[0].2, rows.len() as u64);

    ctx.config.analytics.read_connections = 0;
    let (_, err) = run_job(&ctx, every_row()).await;
    let err = err.unwrap_err();
    assert_eq!(err.kind(), JobErrorKind::Fatal, "{err}");
    assert!(err.to_string().contains("read_connections"), "{err}");
}

#[tokio::test]
async fn window_selects_rows_since_inclusive_until_exclusive() {
    let ctx = TestContext::new().await;
    // ~6 days of data per location.
    let rows = generate(&climates()[..3], 2);
    insert(&ctx, &rows).await;
    let since = t0() + Duration::days(1);
    let until = t0() + Duration::days(3);
    let in_window = rows.iter().filter(|o| o.at >= since && o.at < until).count();
    assert!(rows.iter().any(|o| o.at == since) && rows.iter().any(|o| o.at == until));

    let req = AnalyticsRequest {
        since: Some(since),
        until: Some(until),
        ..every_row()
    };
    let (run_id, summary) = run_job(&ctx, req).await;
    let summary = summary.expect("analytics run");
    assert_eq!(summary.rows_read, in_window as u64);

    let stored = results_of(&ctx, run_id).await;
    assert_eq!(stored.len(), 4);
    check_against(&stored, &reference(&ctx, Some(since), Some(until)).await);
    let all = &stored[0];
    assert_eq!(all.scope, "all");
    assert_eq!(all.n_samples, in_window as i64);
    assert_eq!(all.window_start, Some(since));
    assert_eq!(all.window_end, Some(until));
    // The window changed the answer: the unbounded fit differs.
    let unbounded = reference(&ctx, None, None).await;
    assert_ne!(unbounded[0].n, all.n_samples);

    // An empty window is a usage error, not a skipped run.
    let req = AnalyticsRequest {
        since: Some(until),
        until: Some(since),
        ..every_row()
    };
    let (_, err) = run_job(&ctx, req).await;
    let err = err.unwrap_err();
    assert_eq!(err.kind(), JobErrorKind::Fatal, "{err}");
    assert!(err.to_string().contains("empty window"), "{err}");
}

#[tokio::test]
async fn min_samples_comes_from_the_request_else_the_configuration() {
    let mut ctx = TestContext::new().await;
    let c = |key, n| Climate {
        key,
        n,
        intercept: 10.0,
        slope: -0.1,
        noise: 2.0,
        wind_max: 40.0,
    };
    insert(&ctx, &generate(&[c("a||x", 40), c("b||x", 25), c("c||x", 3)], 3)).await;

    let scopes = |s: &AnalyticsSummary| s.fits.iter().map(|f| f.scope.clone()).collect::<Vec<_>>();
    let (_, s) = run_job(&ctx, every_row()).await;
    assert_eq!(scopes(&s.unwrap()), ["all", "a||x"], "default 30");

    let req = AnalyticsRequest {
        min_samples: Some(3),
        ..every_row()
    };
    let (run_id, s) = run_job(&ctx, req).await;
    assert_eq!(scopes(&s.unwrap()), ["all", "a||x", "b||x", "c||x"]);
    check_against(
        &results_of(&ctx, run_id).await,
        &reference(&ctx, None, None).await,
    );

    ctx.config.analytics.min_samples = 26;
    let (run_id, s) = run_job(&ctx, every_row()).await;
    let s = s.unwrap();
    assert_eq!(scopes(&s), ["all", "a||x"]);
    assert_eq!(s.min_samples, 26);
    let skipped: Vec<&str> = s.skipped.iter().map(|k| k.scope.as_str()).collect();
    assert_eq!(skipped, ["b||x", "c||x"]);
    assert_eq!(run_row(&ctx, run_id).await.details.unwrap()["min_samples"], 26);
}

/// No NaN or infinity reached the table (its CHECK constraints would refuse them anyway).
async fn assert_no_non_finite(ctx: &TestContext) {
    let row = sqlx::query(
        "SELECT count(*) AS bad FROM regression_results
         WHERE 'NaN'::float8 IN (intercept, slope, r_squared, rmse, coalesce(slope_stderr, 0))
            OR abs(intercept) = 'Infinity' OR abs(slope) = 'Infinity' OR abs(rmse) = 'Infinity'",
    )
    .fetch_one(ctx.db.get_postgres_connection_pool())
    .await
    .unwrap();
    assert_eq!(row.get::<i64, _>("bad"), 0);
}

async fn assert_skipped_run(ctx: &TestContext, run_id: i64, reason_part: &str) {
    let run = run_row(ctx, run_id).await;
    assert_eq!(run.status, RunStatus::Skipped);
    assert_eq!(run.records_out, Some(0));
    let reason = run.details.unwrap()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains(reason_part),
        "reason {reason:?} lacks {reason_part:?}"
    );
    assert!(results_of(ctx, run_id).await.is_empty());
}

#[tokio::test]
async fn degenerate_data_is_skipped_with_a_reason_never_stored_as_nan() {
    let ctx = TestContext::new().await;

    // No rows at all.
    let (run_id, s) = run_job(&ctx, every_row()).await;
    assert_eq!(s.unwrap().rows_read, 0);
    assert_skipped_run(&ctx, run_id, "only 0 sample(s)").await;

    // One row.
    let one = |key: &str, j: i64, wind: f64, temp: f64| Obs {
        key: key.into(),
        at: t0() + Duration::hours(j),
        wind,
        temp,
    };
    insert(&ctx, &[one("solo||x", 0, 12.0, 8.0)]).await;
    let (run_id, _) = run_job(&ctx, every_row()).await;
    assert_skipped_run(&ctx, run_id, "only 1 sample(s)").await;

    // Many rows, one wind speed.
    let calm: Vec<Obs> = (1..60)
        .map(|j| one("solo||x", j, 12.0, 5.0 + j as f64 * 0.1))
        .collect();
    insert(&ctx, &calm).await;
    let (run_id, _) = run_job(&ctx, every_row()).await;
    assert_skipped_run(&ctx, run_id, "zero variance: all 60 samples are 12 km/h").await;

    // Good data elsewhere: all and the windy location are fitted, the calm one is listed as skipped.
    insert(&ctx, &generate(&climates()[..1], 4)).await;
    let (run_id, s) = run_job(&ctx, every_row()).await;
    let s = s.unwrap();
    assert_eq!(run_row(&ctx, run_id).await.status, RunStatus::Succeeded);
    let stored = results_of(&ctx, run_id).await;
    assert_eq!(stored.len(), 2);
    check_against(&stored, &reference(&ctx, None, None).await);
    let calm = s.skipped.iter().find(|k| k.scope == "solo||x").unwrap();
    assert_eq!(calm.n, 60);
    assert!(calm.reason.contains("zero variance"), "{}", calm.reason);

    // Non-finite values that slipped into observations are left out of the fit.
    let poison = [
        one("bergen||norway", 10_000, f64::NAN, 3.0),
        one("bergen||norway", 10_001, 5.0, f64::INFINITY),
    ];
    insert(&ctx, &poison).await;
    let (run_id, s) = run_job(&ctx, every_row()).await;
    let s = s.unwrap();
    assert_eq!(s.rows_read, 60 + 600);
    assert_eq!(s.non_finite_rows, 2);
    assert_eq!(run_row(&ctx, run_id).await.details.unwrap()["non_finite_rows"], 2);
    let stored = results_of(&ctx, run_id).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].n_samples, 660);
    assert_no_non_finite(&ctx).await;
}

#[tokio::test]
async fn shutdown_before_the_write_stores_nothing() {
    let ctx = TestContext::new().await;
    insert(&ctx, &generate(&climates()[..2], 5)).await;
    let token = CancellationToken::new();
    token.cancel();
    let (run_id, result) = by_hand(&ctx, every_row(), token).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), JobErrorKind::Interrupted, "{err}");
    let run = run_row(&ctx, run_id).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.error.unwrap().contains("interrupted by shutdown"));
    assert!(results_of(&ctx, run_id).await.is_empty());
}

/// What the SVG holds, parsed as XML.
struct SvgFacts {
    circles: usize,
    /// Points of the red polylines: the fitted line, then its legend sample (axes and ticks are
    /// black polylines).
    red_lines: Vec<Vec<(f64, f64)>>,
    texts: Vec<String>,
}

fn parse_svg(path: &Path) -> SvgFacts {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc = roxmltree::Document::parse(&text).expect("the plot is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let named = |n: &str| doc.descendants().filter(|e| e.tag_name().name() == n).count();
    SvgFacts {
        circles: named("circle"),
        red_lines: doc
            .descendants()
            .filter(|e| e.tag_name().name() == "polyline" && e.attribute("stroke") == Some("#FF0000"))
            .map(|e| {
                e.attribute("points")
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(|p| {
                        let (x, y) = p.split_once(',').expect("x,y");
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect()
            })
            .collect(),
        texts: doc
            .descendants()
            .filter(|e| e.tag_name().name() == "text")
            .filter_map(|e| e.text())
            .map(|t| t.trim().to_owned())
            .collect(),
    }
}

#[tokio::test]
async fn plot_is_valid_svg_with_points_line_title_labels_and_legend() {
    let mut ctx = TestContext::new().await;
    let rows = generate(&climates(), 6);
    insert(&ctx, &rows).await;
    let dir = common::scratch_dir("wf_plot");
    let main = dir.join("fit.svg");

    let req = AnalyticsRequest {
        plot: Some(main.clone()),
        plot_scopes: vec![
            "reykjavik||iceland".into(),
            "tiny||nowhere".into(),
            "atlantis||x".into(),
        ],
        ..every_row()
    };
    let (_, s) = run_job(&ctx, req).await;
    let s = s.expect("analytics run");
    let reykjavik = dir.join("fit-reykjavik-iceland.svg");
    assert_eq!(s.plots, [main.clone(), reykjavik.clone()]);
    let not_drawn: Vec<&str> = s.plots_skipped.iter().map(|p| p.scope.as_str()).collect();
    assert_eq!(not_drawn, ["tiny||nowhere", "atlantis||x"]);

    let all = parse_svg(&main);
    // One circle per observation, plus the legend's marker.
    assert_eq!(all.circles, rows.len() + 1);
    // The fitted line spans the plot and rises or falls with the slope (SVG's y grows downwards).
    assert_eq!(all.red_lines.len(), 2, "the line and its legend sample");
    let line = &all.red_lines[0];
    assert_eq!(line.len(), 2);
    assert!(line[1].0 - line[0].0 > 800.0, "{line:?}");
    let slope = s.fits[0].fit.slope;
    assert_eq!(line[1].1 < line[0].1, slope > 0.0, "slope {slope}, line {line:?}");
    let has = |facts: &SvgFacts, part: &str| facts.texts.iter().any(|t| t.contains(part));
    assert!(
        has(&all, "Temperature vs wind speed — all (n = 2662)"),
        "{:?}",
        all.texts
    );
    assert!(has(&all, "Wind speed (km/h)"), "{:?}", all.texts);
    assert!(has(&all, "Temperature (°C)"), "{:?}", all.texts);
    assert!(has(&all, "observations"), "{:?}", all.texts);
    assert!(has(&all, "fit: temp ="), "{:?}", all.texts);

    let one = parse_svg(&reykjavik);
    assert_eq!(one.circles, 300 + 1);
    assert!(has(&one, "reykjavik||iceland"), "{:?}", one.texts);

    // Thinned when large, and said so in the title; every fitted location gets its own file.
    ctx.config.analytics.plot_max_points = 500;
    let req = AnalyticsRequest {
        plot: Some(main.clone()),
        plot_all_scopes: true,
        ..every_row()
    };
    let (_, s) = run_job(&ctx, req).await;
    assert_eq!(s.unwrap().plots.len(), 6);
    let all = parse_svg(&main);
    assert!(all.circles <= 501 && all.circles > 400, "{}", all.circles);
    assert!(has(&all, "shown)"), "{:?}", all.texts);
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, 6);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The analytics page of the manual; its "Querying the results" queries are run from here, as printed.
const ANALYTICS_MANUAL: &str = include_str!("../../docs/analytics.md");

/// The ```sql block that follows `<!-- query: {name} -->` in docs/analytics.md, without its final
/// `;` so that it can be wrapped in a subquery.
fn manual_query(name: &str) -> String {
    let marker = format!("<!-- query: {name} -->");
    let (_, after) = ANALYTICS_MANUAL
        .split_once(&marker)
        .unwrap_or_else(|| panic!("docs/analytics.md has no {marker}"));
    let block = after
        .trim_start()
        .strip_prefix("```sql\n")
        .unwrap_or_else(|| panic!("{marker} in docs/analytics.md is not followed by a ```sql block"));
    let (sql, _) = block
        .split_once("\n```")
        .unwrap_or_else(|| panic!("the ```sql block after {marker} is not closed"));
    sql.trim_end().trim_end_matches(';').to_owned()
}

#[tokio::test]
async fn the_manuals_results_queries_run_and_answer_correctly() {
    let ctx = TestContext::new().await;
    insert(&ctx, &generate(&climates(), 7)).await;
    let (first, _) = run_job(
        &ctx,
        AnalyticsRequest {
            until: Some(t0() + Duration::days(2)),
            ..every_row()
        },
    )
    .await;
    let (second, _) = run_job(&ctx, every_row()).await;
    let pool = ctx.db.get_postgres_connection_pool();

    // The manual's queries verbatim; their rounded numerics are read back as float8.
    let latest_per_scope = manual_query("latest-per-scope");
    let latest = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT scope, fitted_at, n_samples, slope::float8 AS slope FROM ({latest_per_scope}) l"
    )))
    .fetch_all(pool)
    .await
    .unwrap();
    let scopes: Vec<String> = latest.iter().map(|r| r.get("scope")).collect();
    let newest = results_of(&ctx, second).await;
    let mut want: Vec<String> = newest.iter().map(|r| r.scope.clone()).collect();
    want.sort_by_key(|s| s != "all");
    assert_eq!(scopes, want, "the second run's scopes, all first");
    for (row, stored) in latest.iter().zip(newest.iter()) {
        assert_eq!(row.get::<DateTime<Utc>, _>("fitted_at"), stored.fitted_at);
        assert_eq!(row.get::<i64, _>("n_samples"), stored.n_samples);
        assert!((row.get::<f64, _>("slope") - stored.slope).abs() < 1e-5);
    }

    let slope_history = manual_query("slope-history");
    let history = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT change::float8 AS change FROM ({slope_history}) h"
    )))
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].get::<Option<f64>, _>("change"), None);
    let slope1 = results_of(&ctx, first).await[0].slope;
    let slope2 = results_of(&ctx, second).await[0].slope;
    let change: f64 = history[1].get("change");
    assert!(
        (change - (slope2 - slope1)).abs() < 1e-5,
        "{change} vs {}",
        slope2 - slope1
    );

    let ranked = sqlx::query(sqlx::AssertSqlSafe(manual_query("best-worst-fit")))
        .fetch_all(pool)
        .await
        .unwrap();
    let stored = results_of(&ctx, second).await;
    let mut by_r2: Vec<&regression_results::Model> = stored.iter().filter(|r| r.scope != "all").collect();
    by_r2.sort_by(|a, b| b.r_squared.total_cmp(&a.r_squared));
    assert_eq!(
        ranked.len(),
        5,
        "5 fitted locations: 3 best and the 2 others as worst"
    );
    assert_eq!(ranked[0].get::<String, _>("scope"), by_r2[0].scope);
    assert_eq!(ranked[0].get::<String, _>("fit"), "best");
    assert_eq!(ranked[4].get::<String, _>("scope"), by_r2[4].scope);
    assert_eq!(ranked[4].get::<String, _>("fit"), "worst");

    // What `weatherflow results` prints comes from the same query.
    let rows = weatherflow::jobs::analytics::results::latest_per_scope(&ctx.db, 20)
        .await
        .unwrap();
    let listed: Vec<&String> = rows.iter().map(|r| &r.scope).collect();
    assert_eq!(listed, scopes.iter().collect::<Vec<_>>());
    assert!(rows.iter().all(|r| r.job_run_id == second));
    let table = weatherflow::cmd::results::render(&rows);
    assert!(table.lines().nth(2).unwrap().starts_with("all "), "{table}");
    let one = weatherflow::jobs::analytics::results::history(&ctx.db, "all", 5)
        .await
        .unwrap();
    assert_eq!(
        one.iter().map(|r| r.job_run_id).collect::<Vec<_>>(),
        [second, first]
    );
}

#[tokio::test]
async fn the_default_window_is_the_last_30_days_and_all_history_reads_every_row() {
    let mut ctx = TestContext::new().await;
    // Two locations every 6 hours over the last 90 days, half an hour off the quarter hours so no
    // row sits on a window bound the run computes from its own clock.
    let start = Utc::now() - Duration::days(90) + Duration::minutes(30);
    let rows: Vec<Obs> = (0..360)
        .flat_map(|i| {
            let at = start + Duration::hours(6 * i);
            ["a||x", "b||x"].map(|key| Obs {
                key: key.to_owned(),
                at,
                wind: (i % 40) as f64,
                temp: 10.0 - 0.1 * (i % 40) as f64 + (i % 7) as f64 * 0.3,
            })
        })
        .collect();
    insert(&ctx, &rows).await;
    let recent = |days: i64| {
        rows.iter()
            .filter(|o| o.at >= Utc::now() - Duration::days(days))
            .count() as u64
    };

    let before = Utc::now();
    let (_, s) = run_job(&ctx, AnalyticsRequest::default()).await;
    let s = s.expect("default run");
    let since = s.since.expect("a default run has a window start");
    assert!(since >= before - Duration::days(30) && since <= Utc::now() - Duration::days(30));
    assert_eq!(s.until, None);
    assert_eq!(s.rows_read, recent(30), "the last 30 days only");
    assert!(s.rows_read < rows.len() as u64);

    let (run_id, s) = run_job(&ctx, every_row()).await;
    let s = s.expect("all-history run");
    assert_eq!((s.since, s.rows_read), (None, rows.len() as u64), "every row");
    let stored = results_of(&ctx, run_id).await;
    assert_eq!(stored[0].window_start, None);

    ctx.config.analytics.window_days = 7;
    let (_, s) = run_job(&ctx, AnalyticsRequest::default()).await;
    assert_eq!(
        s.unwrap().rows_read,
        recent(7),
        "analytics.window_days sets the default"
    );
    ctx.config.analytics.window_days = 0;
    let (_, s) = run_job(&ctx, AnalyticsRequest::default()).await;
    assert_eq!(s.unwrap().rows_read, rows.len() as u64, "0 is every row");
}
