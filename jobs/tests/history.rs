//! The history backfill (`weatherflow run fetch --history`) and the WeatherAPI call quota, against
//! the real broker and PostgreSQL and the local WeatherAPI stub's `history.json`: every hour stored
//! once, a re-run storing and calling nothing, a stopped backfill resuming without duplicates, the
//! plan's depth, the dry run's count, the calls counted across runs and processes, and a budget that
//! refuses a run before its first request.

mod common;

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use common::weatherapi_stub::{self, Failure, KeyKind, WeatherApiStub};
use common::{TestContext, run_cli, scratch_dir};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use weatherflow::config::Config;
use weatherflow::executor::Executor;
use weatherflow::executor::catalog::{self, JobRequest};
use weatherflow::job_error::JobErrorKind;
use weatherflow::jobs::fetch::{self, FetchRequest, HistoryRange, SourceChoice};
use weatherflow::jobs::persist::{self, PersistRequest};
use weatherflow::runs::JobName;

const PLACES: [&str; 3] = ["London", "Roswell", "New Delhi"];

fn api_config(ctx: &TestContext, stub: &WeatherApiStub) -> Config {
    let mut config = ctx.config.clone();
    let w = &mut config.weatherapi;
    w.base_url = stub.base_url.clone();
    w.api_key = Some(SecretString::from(weatherapi_stub::KEY));
    w.key_file = None;
    w.timeout_secs = 2;
    w.max_attempts = 3;
    w.backoff_initial_ms = 10;
    w.backoff_max_ms = 50;
    w.bulk = false;
    config.fetch.rate_per_sec = 0.0;
    config.persist.idle_ms = 1000;
    config
}

fn days_ago(n: i64) -> NaiveDate {
    Utc::now().date_naive() - chrono::Duration::days(n)
}

fn history(places: &[&str], from: NaiveDate, to: NaiveDate, dry_run: bool) -> FetchRequest {
    FetchRequest {
        locations: places.iter().map(|p| p.to_string()).collect(),
        source: SourceChoice::Weatherapi,
        concurrency: Some(2),
        history: Some(HistoryRange {
            from,
            to: Some(to),
            dry_run,
        }),
        ..FetchRequest::default()
    }
}

/// One manual fetch run through the executor, as `weatherflow run fetch` starts it: its run id and
/// its outcome.
async fn run_fetch(
    config: &Config,
    ctx: &TestContext,
    req: FetchRequest,
    cancel: &CancellationToken,
) -> Result<(i64, weatherflow::runs::StoredReport), weatherflow::executor::ExecError> {
    let exec = Executor::from_config(ctx.db.clone(), config);
    exec.run_by_hand(JobName::Fetch, cancel, |run| {
        catalog::run(config, &ctx.db, JobRequest::Fetch(req.clone()), run)
    })
    .await
}

async fn persist_all(config: &Config, ctx: &TestContext) {
    persist::run(
        config,
        &ctx.db,
        PersistRequest {
            until_idle: true,
            ..Default::default()
        },
        CancellationToken::new(),
    )
    .await
    .unwrap_or_else(|e| panic!("persist failed: {e:#}"));
}

fn history_requests(stub: &WeatherApiStub) -> usize {
    stub.requests()
        .iter()
        .filter(|r| r.path == "/v1/history.json")
        .count()
}

#[tokio::test]
async fn a_backfill_stores_every_hour_once_and_a_rerun_stores_and_calls_nothing() {
    let ctx = TestContext::new().await;
    let stub = WeatherApiStub::start().await;
    let config = api_config(&ctx, &stub);
    let req = history(&PLACES, days_ago(3), days_ago(2), false);

    let (run_id, report) = run_fetch(&config, &ctx, req.clone(), &CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("backfill failed: {e:#}"));
    assert_eq!(history_requests(&stub), 6, "one call per location and day");
    assert_eq!(report.records_out, Some(144), "{:?}", report.details);
    persist_all(&config, &ctx).await;
    let stored = "SELECT count(*) FROM observations WHERE source = 'weatherapi'";
    assert_eq!(ctx.scalar_i64(stored).await, 144);
    assert_eq!(
        ctx.scalar_i64("SELECT count(DISTINCT (location_key, observed_at)) FROM observations")
            .await,
        144
    );
    assert_eq!(
        ctx.scalar_i64(&format!(
            "SELECT count(*) FROM history_backfill WHERE run_id = {run_id}"
        ))
        .await,
        6
    );
    // The run's row carries the backfill's figures.
    let details = ctx
        .scalar_text(&format!("SELECT details::text FROM job_runs WHERE id = {run_id}"))
        .await;
    let details: serde_json::Value = serde_json::from_str(&details).unwrap();
    assert_eq!(details["history"]["days_done"], 6, "{details}");
    assert_eq!(details["history"]["hours_produced"], 144, "{details}");
    // Every call was counted.
    assert_eq!(
        ctx.scalar_i64("SELECT calls FROM api_calls WHERE endpoint = 'history'")
            .await,
        6
    );

    // Again: everything is done, so nothing is called and nothing is stored.
    let (_, again) = run_fetch(&config, &ctx, req, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(history_requests(&stub), 6, "a re-run calls nothing");
    assert_eq!(again.records_out, Some(0));
    assert_eq!(
        again.details["history"]["days_already_done"], 6,
        "{:?}",
        again.details
    );
    persist_all(&config, &ctx).await;
    assert_eq!(ctx.scalar_i64(stored).await, 144);
    assert_eq!(
        ctx.scalar_i64("SELECT calls FROM api_calls WHERE endpoint = 'history'")
            .await,
        6
    );
}

#[tokio::test]
async fn history_hours_take_the_slot_of_the_live_observation_of_that_hour() {
    let ctx = TestContext::new().await;
    let stub = WeatherApiStub::start().await;
    let mut config = api_config(&ctx, &stub);
    config.weatherapi.history_days = 400;
    // The stub's live London observation is 2026-01-05 17:00 UTC.
    let live = FetchRequest {
        locations: vec!["London".into()],
        source: SourceChoice::Weatherapi,
        ..FetchRequest::default()
    };
    run_fetch(&config, &ctx, live, &CancellationToken::new())
        .await
        .unwrap();
    let day = NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
    run_fetch(
        &config,
        &ctx,
        history(&["London"], day, day, false),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    persist_all(&config, &ctx).await;
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM observations").await,
        24,
        "24 hours, the live one among them"
    );
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM observations WHERE observed_at = to_timestamp(1767632400)")
            .await,
        1
    );
    // Its measurements are the live ones (the stub's history keeps them for that hour).
    assert_eq!(
        ctx.scalar_text("SELECT temp_c::text FROM observations WHERE observed_at = to_timestamp(1767632400)")
            .await,
        "0.1"
    );
    assert_eq!(ctx.scalar_i64("SELECT sum(calls)::int8 FROM api_calls").await, 2);
}

#[tokio::test]
async fn a_stopped_backfill_resumes_where_it_stopped_without_duplicates() {
    let ctx = TestContext::new().await;
    let stub = WeatherApiStub::start().await;
    let config = api_config(&ctx, &stub);
    // One day at a time, each answer 300 ms late, so the stop falls between days.
    for q in PLACES {
        stub.fail_next(q, 2, Failure::Delay(Duration::from_millis(300)));
    }
    let mut req = history(&PLACES, days_ago(4), days_ago(3), false);
    req.concurrency = Some(1);
    let cancel = CancellationToken::new();
    let stopper = {
        let (cancel, db) = (cancel.clone(), ctx.db.clone());
        tokio::spawn(async move {
            use sea_orm::ConnectionTrait;
            loop {
                let row = db
                    .query_one_raw(sea_orm::Statement::from_string(
                        sea_orm::DbBackend::Postgres,
                        "SELECT count(*) FROM history_backfill",
                    ))
                    .await
                    .unwrap()
                    .unwrap();
                if row.try_get_by_index::<i64>(0).unwrap() >= 2 {
                    cancel.cancel();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let err = run_fetch(&config, &ctx, req.clone(), &cancel).await.unwrap_err();
    stopper.await.unwrap();
    let weatherflow::executor::ExecError::Failed(err) = err else {
        panic!("{err:?}")
    };
    assert_eq!(err.kind(), JobErrorKind::Interrupted, "{err}");
    assert!(err.to_string().contains("run it again to resume"), "{err}");
    let first = history_requests(&stub);
    let done = ctx.scalar_i64("SELECT count(*) FROM history_backfill").await;
    assert!(
        (2..6).contains(&done) && first as i64 == done,
        "{first} calls, {done} days done"
    );

    let (_, report) = run_fetch(&config, &ctx, req, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        history_requests(&stub),
        6,
        "every day called exactly once over both runs"
    );
    assert_eq!(
        report.details["history"]["days_already_done"], done,
        "{:?}",
        report.details
    );
    persist_all(&config, &ctx).await;
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM observations").await, 144);
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM history_backfill").await, 6);
}

#[tokio::test]
async fn beyond_the_plan_depth_the_backfill_fails_naming_the_limit() {
    let ctx = TestContext::new().await;
    let stub = WeatherApiStub::start().await;
    let config = api_config(&ctx, &stub);
    // Past weatherapi.history_days (7): refused before any call.
    let err = fetch::run_history(
        &config,
        &ctx.db,
        None,
        history(&["London"], days_ago(8), days_ago(8), false),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), JobErrorKind::Fatal);
    let text = err.to_string();
    assert!(
        text.contains("8 days back") && text.contains("weatherapi.history_days = 7"),
        "{text}"
    );
    assert_eq!(stub.requests().len(), 0);

    // A key whose plan reaches less far than configured: the API's 403/2009, explained.
    stub.add_key("stub-free-history", KeyKind::FreePlan);
    let mut free = config.clone();
    free.weatherapi.api_key = Some(SecretString::from("stub-free-history"));
    let err = fetch::run_history(
        &free,
        &ctx.db,
        None,
        history(&["London"], days_ago(3), days_ago(3), false),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), JobErrorKind::Fatal);
    assert!(
        err.to_string()
            .contains("refused history.json on this key's plan (code 2009"),
        "{err}"
    );
    assert_eq!(history_requests(&stub), 1, "a plan refusal is not retried");
}

#[tokio::test]
async fn the_dry_run_prints_the_calls_it_would_make_and_calls_nothing() {
    let ctx = TestContext::new().await;
    let stub = WeatherApiStub::start().await;
    let config = api_config(&ctx, &stub);
    // One of the six (location, day) pairs is already done.
    let one = history(&["London"], days_ago(2), days_ago(2), false);
    fetch::run_history(&config, &ctx.db, None, one, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(history_requests(&stub), 1);

    let dir = scratch_dir("history-dry");
    let from = days_ago(3).to_string();
    let to = days_ago(1).to_string();
    let env = ctx.child_env_with(&[
        ("WEATHERFLOW_WEATHERAPI_BASE_URL", &stub.base_url),
        ("WEATHERAPI_KEY", weatherapi_stub::KEY),
    ]);
    let (ok, stdout, stderr) = run_cli(
        &dir,
        &[
            "run",
            "fetch",
            "--history",
            "--from",
            &from,
            "--to",
            &to,
            "--dry-run",
            "--source",
            "weatherapi",
            "--location",
            "London",
            "--location",
            "Roswell",
        ],
        &env,
    )
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "5", "2 locations x 3 days, 1 done; {stderr}");
    assert!(stderr.contains("1 already done"), "{stderr}");
    assert_eq!(history_requests(&stub), 1, "the dry run called nothing");
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM job_runs").await,
        0,
        "and recorded no run"
    );
}

#[tokio::test]
async fn calls_are_counted_in_postgresql_across_runs_and_processes() {
    let ctx = TestContext::new().await;
    let stub = WeatherApiStub::start().await;
    let config = api_config(&ctx, &stub);
    let live = |places: &[&str]| FetchRequest {
        locations: places.iter().map(|p| p.to_string()).collect(),
        source: SourceChoice::Weatherapi,
        ..FetchRequest::default()
    };
    // One retried call counts twice: WeatherAPI may bill every attempt.
    stub.fail_next("Roswell", 1, Failure::Status(503));
    run_fetch(
        &config,
        &ctx,
        live(&["London", "Roswell"]),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(stub.requests().len(), 3);
    assert_eq!(ctx.scalar_i64("SELECT sum(calls)::int8 FROM api_calls").await, 3);

    // Another process, the CLI, adds to the same count.
    let dir = scratch_dir("quota-cli");
    let env = ctx.child_env_with(&[
        ("WEATHERFLOW_WEATHERAPI_BASE_URL", &stub.base_url),
        ("WEATHERAPI_KEY", weatherapi_stub::KEY),
        ("WEATHERFLOW_FETCH_RATE_PER_SEC", "0"),
    ]);
    let (ok, _, stderr) = run_cli(
        &dir,
        &[
            "run",
            "fetch",
            "--source",
            "weatherapi",
            "--location",
            "New Delhi",
        ],
        &env,
    )
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(stub.requests().len(), 4);
    assert_eq!(ctx.scalar_i64("SELECT sum(calls)::int8 FROM api_calls").await, 4);
    let usage = weatherflow::quota::usage(&ctx.db, &config.weatherapi)
        .await
        .unwrap();
    assert_eq!(usage.used, 4);

    // `status` shows it.
    let (ok, stdout, stderr) = run_cli(&dir, &["status"], &env).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("4 calls this month"), "{stdout}");
}

#[tokio::test]
async fn a_run_over_the_monthly_budget_fails_before_any_request() {
    let ctx = TestContext::new().await;
    let stub = WeatherApiStub::start().await;
    let mut config = api_config(&ctx, &stub);
    config.weatherapi.monthly_call_budget = Some(3);
    let live = FetchRequest {
        locations: vec!["London".into(), "Roswell".into()],
        source: SourceChoice::Weatherapi,
        ..FetchRequest::default()
    };
    run_fetch(&config, &ctx, live.clone(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(stub.requests().len(), 2);

    // 2 more would make 4 of 3.
    let err = run_fetch(&config, &ctx, live, &CancellationToken::new())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("would pass weatherapi.monthly_call_budget = 3")
            && text.contains("1 remain")
            && text.contains("resets at"),
        "{text}"
    );
    assert_eq!(stub.requests().len(), 2, "no request was sent");
    // A backfill is held to the same budget.
    let err = fetch::run_history(
        &config,
        &ctx.db,
        None,
        history(&["London", "Roswell"], days_ago(2), days_ago(2), false),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("1 remain"), "{err}");
    assert_eq!(stub.requests().len(), 2);
    let usage = weatherflow::quota::usage(&ctx.db, &config.weatherapi)
        .await
        .unwrap();
    assert_eq!(
        (
            usage.used,
            usage.remaining,
            usage.fraction.map(|f| (f * 100.0).round())
        ),
        (2, Some(1), Some(67.0))
    );
}
