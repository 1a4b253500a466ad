//! What a run's outcome means, on the real services: the scheduler retries only retryable failures
//! (a WeatherAPI quota error is tried once per tick, a 503 or a refused connection again); only the
//! results of succeeded analytics runs are shown (a run cancelled mid-write shows nothing); a persist
//! run stopped during an outage is not `succeeded`; a persist run killed by SIGKILL is closed as
//! abandoned by the next start, while a live one is left alone.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::schedule::{self, tick};
use common::weatherapi_stub::{self, Failure, WeatherApiStub};
use common::{TestContext, eventually, exit_within, log_of, run_cli, scratch_dir, signal, spawn};
use entity::job_runs;
use nix::sys::signal::Signal::{SIGKILL, SIGTERM};
use sea_orm::{ColumnTrait, ConnectionTrait, Database, EntityTrait, QueryFilter, QueryOrder};
use secrecy::{ExposeSecret, SecretString};
use sqlx::Connection;
use weatherflow::config::Config;
use weatherflow::runs::{ABANDONED, JobName, RunStatus};
use weatherflow::scheduler::schedules::Schedules;
use weatherflow::scheduler::{Scheduler, SchedulerOptions, TickOutcome, catalog};

fn options(cancel_wait: Duration) -> SchedulerOptions {
    schedule::options("test", cancel_wait)
}

/// The pipeline's schedules with a yearly cron, `fetch_timing` and `analytics_timing` added.
fn schedules(fetch_timing: &str, analytics_timing: &str) -> Schedules {
    let text = format!(
        "[fetch]\ncron = \"0 0 0 1 1 *\"\n{fetch_timing}\n\
         [fetch.args]\nsource = \"weatherapi\"\nconcurrency = 1\nlocations = [\"London\"]\n\
         [analytics]\ncron = \"0 0 0 1 1 *\"\n{analytics_timing}\n"
    );
    Schedules::parse(&text, "test").expect("test schedules")
}

async fn rows(ctx: &TestContext, job: JobName) -> Vec<job_runs::Model> {
    job_runs::Entity::find()
        .filter(job_runs::Column::Job.eq(job))
        .order_by_asc(job_runs::Column::Id)
        .all(&ctx.db)
        .await
        .unwrap()
}

/// The test context's configuration pointed at `stub` with `key`, short timeouts and backoffs.
fn api_config(ctx: &TestContext, base_url: &str, key: &str) -> Config {
    let mut config = ctx.config.clone();
    let w = &mut config.weatherapi;
    w.base_url = base_url.to_owned();
    w.api_key = Some(SecretString::from(key));
    w.key_file = None;
    w.timeout_secs = 1;
    w.max_attempts = 2;
    w.backoff_initial_ms = 10;
    w.backoff_max_ms = 50;
    w.max_total_secs = 10;
    w.bulk = false;
    w.aqi = false;
    config.fetch.rate_per_sec = 0.0;
    config
}

/// One scheduled tick of the real fetch job with `config`, two retries allowed.
async fn fetch_tick(ctx: &TestContext, config: Config, at: &str) -> TickOutcome {
    let s = schedules("retries = 2\nretry_backoff_secs = 1\ntimeout_secs = 20", "");
    let jobs = catalog::pipeline_jobs(Arc::new(config), ctx.db.clone(), &s);
    let scheduler = Scheduler::new(ctx.db.clone(), jobs, options(Duration::from_secs(1)));
    scheduler.run_tick(JobName::Fetch, tick(at)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_error_is_tried_once_per_tick_while_server_and_network_errors_are_retried() {
    let ctx = TestContext::new().await;

    // 403/2007: fatal, so one attempt, one request, one failed row saying why.
    let stub = WeatherApiStub::start().await;
    let config = api_config(&ctx, &stub.base_url, weatherapi_stub::QUOTA_KEY);
    let outcome = fetch_tick(&ctx, config, "2026-01-01T00:00:00Z").await;
    let TickOutcome::Ran { status, run_ids } = outcome else {
        panic!("the tick should run: {outcome:?}")
    };
    assert_eq!(
        (status, run_ids.len()),
        (RunStatus::Failed, 1),
        "one attempt only"
    );
    assert_eq!(stub.requests().len(), 1, "one request for the one location");
    let all = rows(&ctx, JobName::Fetch).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].status, RunStatus::Failed);
    let error = all[0].error.clone().unwrap_or_default();
    assert!(error.contains("code 2007") && error.contains("quota"), "{error}");

    // 503 for the first attempt's two requests: retryable, and the retry succeeds.
    let stub = WeatherApiStub::start().await;
    stub.fail_next("London", 2, Failure::Status(503));
    let config = api_config(&ctx, &stub.base_url, weatherapi_stub::KEY);
    let outcome = fetch_tick(&ctx, config, "2026-01-02T00:00:00Z").await;
    let TickOutcome::Ran { status, run_ids } = outcome else {
        panic!("the tick should run: {outcome:?}")
    };
    assert_eq!((status, run_ids.len()), (RunStatus::Succeeded, 2), "retried once");
    assert_eq!(stub.requests_for("London").len(), 3, "two 503s, then the answer");

    // Connection refused: retryable, so every attempt is used.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = api_config(&ctx, &format!("http://{closed}/v1"), weatherapi_stub::KEY);
    let outcome = fetch_tick(&ctx, config, "2026-01-03T00:00:00Z").await;
    let TickOutcome::Ran { status, run_ids } = outcome else {
        panic!("the tick should run: {outcome:?}")
    };
    assert_eq!(
        (status, run_ids.len()),
        (RunStatus::Failed, 3),
        "one attempt and two retries"
    );
}

/// Observations for two locations with a clear line, so analytics has something to fit.
async fn insert_observations(ctx: &TestContext) {
    sqlx::query(
        "INSERT INTO observations (location_key, location_name, region, country, lat, lon, observed_at,
                                   temp_c, wind_kph, source, fetched_at)
         SELECT 'loc' || (g % 2), 'loc', '', 'testland', 0, 0, now() - g * interval '1 minute',
                20 - 0.1 * (g % 50) + (g % 7) * 0.3, (g % 50), 'simulated', now()
         FROM generate_series(1, 400) AS g",
    )
    .execute(ctx.db.get_postgres_connection_pool())
    .await
    .expect("inserting observations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analytics_attempt_cancelled_mid_write_leaves_no_visible_results() {
    let ctx = TestContext::new().await;
    insert_observations(&ctx).await;

    // Another session holds a lock that makes the job's INSERT wait: the attempt is mid-write when
    // its 1 s timeout fires, and the write can go on once the lock is let go (within the 4 s the
    // scheduler waits for a cancelled body).
    let url = ctx.config.database.url.expose_secret().to_owned();
    let mut locker = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut txn = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE regression_results IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *txn)
        .await
        .unwrap();

    let s = schedules("", "timeout_secs = 1\nretries = 0");
    let jobs = catalog::pipeline_jobs(Arc::new(ctx.config.clone()), ctx.db.clone(), &s);
    let scheduler = Scheduler::new(ctx.db.clone(), jobs, options(Duration::from_secs(4)));
    let run = tokio::spawn(async move {
        scheduler
            .run_tick(JobName::Analytics, tick("2026-01-01T02:00:00Z"))
            .await
    });
    let blocked = eventually(Duration::from_secs(10), || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        .fetch_one(ctx.db.get_postgres_connection_pool())
        .await
        .unwrap();
        waiting > 0
    })
    .await;
    assert!(blocked, "the job's write waits on the lock");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    txn.rollback().await.unwrap();

    let outcome = run.await.unwrap().unwrap();
    assert!(
        matches!(outcome, TickOutcome::Ran { status: RunStatus::Failed, ref run_ids } if run_ids.len() == 1),
        "{outcome:?}"
    );
    let all = rows(&ctx, JobName::Analytics).await;
    assert_eq!(all[0].error.as_deref(), Some("timed out after 1 s"));
    let stored = ctx.scalar_i64("SELECT count(*) FROM regression_results").await;
    assert_eq!(stored, 0, "the cancelled attempt's transaction was rolled back");

    let dir = scratch_dir("wf-outcomes");
    let (ok, stdout, stderr) = run_cli(&dir, &["results"], &ctx.child_env()).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("no results yet"), "{stdout}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_of_runs_that_did_not_succeed_are_shown_by_no_reader() {
    let ctx = TestContext::new().await;
    // A run recorded failed whose rows were committed anyway (a timeout firing during the commit),
    // one still running, and one that succeeded.
    let insert_run = |status: &'static str| {
        let db = ctx.db.clone();
        async move {
            let row: (i64,) = sqlx::query_as(
                "INSERT INTO job_runs (job, \"trigger\", started_at, status) VALUES ('analytics', 'manual', now(), $1) RETURNING id",
            )
            .bind(status)
            .fetch_one(db.get_postgres_connection_pool())
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO regression_results (job_run_id, fitted_at, scope, target, feature, n_samples,
                                                 intercept, slope, r_squared, rmse)
                 VALUES ($1, now(), 'all', 'temp_c', 'wind_kph', 100, 10, $2, 0.5, 1)",
            )
            .bind(row.0)
            .bind(-(row.0 as f64))
            .execute(db.get_postgres_connection_pool())
            .await
            .unwrap();
            row.0
        }
    };
    let good = insert_run("succeeded").await;
    let failed = insert_run("failed").await;
    let running = insert_run("running").await;

    let latest = weatherflow::jobs::analytics::results::latest_per_scope(&ctx.db, 20)
        .await
        .unwrap();
    let ids: Vec<i64> = latest.iter().map(|r| r.job_run_id).collect();
    assert_eq!(
        ids,
        [good],
        "the newest succeeded run's result, not {failed} or {running}"
    );
    let history = weatherflow::jobs::analytics::results::history(&ctx.db, "all", 20)
        .await
        .unwrap();
    assert_eq!(history.iter().map(|r| r.job_run_id).collect::<Vec<_>>(), [good]);
    for sql in [
        weatherflow::jobs::analytics::results::LATEST_PER_SCOPE_SQL,
        weatherflow::jobs::analytics::results::SLOPE_HISTORY_SQL,
    ] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM ({sql}) q")))
            .fetch_one(ctx.db.get_postgres_connection_pool())
            .await
            .unwrap();
        assert_eq!(n, 1, "{sql}");
    }
    let view: i64 = ctx
        .scalar_i64("SELECT count(*) FROM latest_regression WHERE scope = 'all'")
        .await;
    assert_eq!(view, 1);

    let dir = scratch_dir("wf-outcomes");
    let (ok, stdout, stderr) = run_cli(&dir, &["results"], &ctx.child_env()).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("{good}")), "{stdout}");
    assert!(!stdout.contains(&format!("-{failed}.0")), "{stdout}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Produces simulated observations of three locations over the last `hours` (one per 15 minutes):
/// the fetch job on its own touches Kafka only, so it runs while the database is away.
async fn produce(ctx: &TestContext, hours: u32) {
    let req = weatherflow::jobs::fetch::FetchRequest {
        locations: ["Oslo", "Lima", "Perth"].map(str::to_owned).to_vec(),
        source: weatherflow::jobs::fetch::SourceChoice::Simulated,
        backfill_hours: Some(hours),
        history: None,
        ..Default::default()
    };
    weatherflow::jobs::fetch::run(&ctx.config, req, tokio_util::sync::CancellationToken::new())
        .await
        .expect("producing simulated observations");
}

async fn persist_rows(ctx: &TestContext) -> Vec<job_runs::Model> {
    rows(ctx, JobName::Persist).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persist_run_stopped_during_an_outage_with_records_abandoned_is_recorded_failed() {
    let ctx = TestContext::new().await;
    let dir = scratch_dir("wf-outcomes");
    let env = ctx.child_env_with(&[
        ("WEATHERFLOW_PERSIST_BATCH_SIZE", "50"),
        // A writer waits 2-4 s between attempts, so the SIGTERM below lands in that wait, not in an
        // attempt that could still succeed once the database is back (it did, on a loaded machine,
        // with 100-300 ms waits).
        ("WEATHERFLOW_PERSIST_RETRY_INITIAL_MS", "4000"),
        ("WEATHERFLOW_PERSIST_RETRY_MAX_MS", "4000"),
        ("WEATHERFLOW_PERSIST_SESSION_TIMEOUT_MS", "6000"),
    ]);
    let mut child = spawn(&dir, "consumer", &["consumer"], &env);
    let started = eventually(Duration::from_secs(30), || async {
        log_of(&dir, "consumer").contains("persist consumer starting")
    })
    .await;
    assert!(started, "{}", log_of(&dir, "consumer"));

    // Only this test's database goes away; the admin session is on the main database.
    let admin_url = Config::load_from(None, std::env::vars())
        .unwrap()
        .database
        .url
        .expose_secret()
        .to_owned();
    let admin = Database::connect(&admin_url).await.expect("admin connection");
    let db = ctx.db_name.clone();
    admin
        .execute_unprepared(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ))
        .await
        .unwrap();
    produce(&ctx, 6).await;
    let waiting = eventually(Duration::from_secs(60), || async {
        log_of(&dir, "consumer").contains("database outage")
    })
    .await;
    assert!(waiting, "{}", log_of(&dir, "consumer"));

    // Stopped while the records wait for the database; the database is back a moment later, in
    // time for the run to record how it ended.
    signal(&child, SIGTERM);
    tokio::time::sleep(Duration::from_millis(100)).await;
    admin
        .execute_unprepared(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    let status = exit_within(&mut child, Duration::from_secs(30)).await;
    let log = log_of(&dir, "consumer");
    assert!(status.is_some(), "the consumer exits: {log}");

    let all = persist_rows(&ctx).await;
    assert_eq!(all.len(), 1, "{all:?}");
    let run = &all[0];
    let details = run.details.clone().unwrap_or_default();
    assert!(details["abandoned"].as_u64().unwrap_or(0) > 0, "{details} {log}");
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.clone().unwrap_or_default();
    assert!(error.contains("records read but not stored"), "{error}");
    assert_eq!(details["stop"], "shutdown");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persist_run_killed_by_sigkill_is_closed_as_abandoned_by_the_next_start_and_a_live_one_is_not() {
    let ctx = TestContext::new().await;
    let dir = scratch_dir("wf-outcomes");
    let env = ctx.child_env_with(&[("WEATHERFLOW_PERSIST_SESSION_TIMEOUT_MS", "6000")]);
    let running = |n: usize| {
        let ctx = &ctx;
        move || async move {
            persist_rows(ctx)
                .await
                .iter()
                .filter(|r| r.status == RunStatus::Running)
                .count()
                == n
        }
    };

    let mut live = spawn(&dir, "live", &["consumer"], &env);
    assert!(
        eventually(Duration::from_secs(30), running(1)).await,
        "{}",
        log_of(&dir, "live")
    );
    let mut killed = spawn(&dir, "killed", &["consumer"], &env);
    assert!(
        eventually(Duration::from_secs(30), running(2)).await,
        "{}",
        log_of(&dir, "killed")
    );
    signal(&killed, SIGKILL);
    exit_within(&mut killed, Duration::from_secs(10))
        .await
        .expect("SIGKILL ends it");
    let before = persist_rows(&ctx).await;
    assert!(
        before.iter().all(|r| r.status == RunStatus::Running),
        "{before:?}"
    );

    // The next start closes the killed run's row, and only that one, then records its own run (the
    // two are separate statements, so wait for both).
    let mut next = spawn(&dir, "next", &["consumer"], &env);
    let closed = eventually(Duration::from_secs(30), || async {
        let rows = persist_rows(&ctx).await;
        rows.len() == 3 && rows.iter().any(|r| r.status == RunStatus::Failed)
    })
    .await;
    let all = persist_rows(&ctx).await;
    assert!(closed, "{all:?}\n{}", log_of(&dir, "next"));
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(all[0].status, RunStatus::Running, "the live run is left alone");
    assert_eq!(all[1].status, RunStatus::Failed);
    assert_eq!(all[1].error.as_deref(), Some(ABANDONED));
    assert!(all[1].finished_at.is_some());
    assert_eq!(all[2].status, RunStatus::Running);

    for (child, name) in [(&mut live, "live"), (&mut next, "next")] {
        signal(child, SIGTERM);
        let status = exit_within(child, Duration::from_secs(30)).await;
        assert!(status.is_some_and(|s| s.success()), "{}", log_of(&dir, name));
    }
    let all = persist_rows(&ctx).await;
    let statuses: Vec<RunStatus> = all.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [RunStatus::Succeeded, RunStatus::Failed, RunStatus::Succeeded]
    );
    let _ = std::fs::remove_dir_all(dir);
}
