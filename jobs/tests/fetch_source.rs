//! No silent fallback to simulated weather, on the real services: `auto` is decided once when a
//! process starts and logged with its reason (never the key); a fetch whose source is simulated
//! against a database that already holds WeatherAPI observations is refused with the reason and the
//! opt-in, whether it comes over HTTP (409, not 202), from the scheduler or from the CLI, and recorded
//! failed; `fetch.allow_simulated_beside_real` or `--allow-simulated-beside-real` lets it run.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{TestContext, eventually, exit_within, log_of, run_cli, scratch_dir, signal, spawn};
use entity::job_runs;
use nix::sys::signal::Signal::SIGTERM;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
use serde_json::Value;
use tokio::process::Child;
use tokio_util::sync::CancellationToken;
use weatherflow::runs::{JobName, RunStatus, Trigger};
use weatherflow::scheduler::schedules::Schedules;
use weatherflow::scheduler::{Scheduler, SchedulerOptions, catalog};

const TOKEN: &str = "fetch-source-token-2c81";
/// A key the processes of these tests are given; it must appear in no answer, log or run row.
const SECRET_KEY: &str = "wf-secret-key-9d3e7a41b0";
/// The start line of a process without a key.
const NO_KEY_LINE: &str = "WEATHERAPI_KEY is not set: this process fetches simulated weather";
/// The start line of a process with one.
const KEY_LINE: &str = "WEATHERAPI_KEY is set: this process fetches real weather";
/// What every refusal starts with.
const REFUSED: &str =
    "refusing to fetch simulated weather into a database that already holds WeatherAPI observations";

/// One WeatherAPI observation, as persist would have stored it from a real fetch.
async fn store_real_row(ctx: &TestContext) {
    let n = ctx
        .scalar_i64(
            "WITH i AS (INSERT INTO observations (location_key, location_name, region, country, lat, lon,
                 observed_at, temp_c, wind_kph, source, fetched_at)
             VALUES ('london|city of london, greater london|united kingdom', 'London',
                 'City of London, Greater London', 'United Kingdom', 51.52, -0.11,
                 date_trunc('hour', now()), 8.0, 14.0, 'weatherapi', now()) RETURNING 1)
             SELECT count(*) FROM i",
        )
        .await;
    assert_eq!(n, 1);
}

/// A schedules file: fetch of two locations on `source` on `cron`, with retries (which a refusal, being
/// fatal, must not use), analytics disabled. `serve`'s trigger reads the same arguments.
fn schedules_text(cron: &str, source: &str) -> String {
    format!(
        "[fetch]\ncron = \"{cron}\"\ntimeout_secs = 20\nretries = 2\nretry_backoff_secs = 1\n\
         [fetch.args]\nsource = \"{source}\"\nseed = 5\nlocations = [\"London\", \"Paris\"]\n\
         [analytics]\ncron = \"0 0 2 * * *\"\nenabled = false\n"
    )
}

/// The environment of a process of this test: its database and topics, `schedules` as its schedules
/// file, the web token, and `extra` (later entries win). No key unless `extra` gives one (an empty
/// variable unsets the field, so a developer's own WEATHERAPI_KEY cannot leak in).
fn env(ctx: &TestContext, dir: &Path, schedules: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let path = dir.join(format!("schedules-{}.toml", common::unique("s")));
    std::fs::write(&path, schedules).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let mut all = vec![
        ("WEATHERAPI_KEY", ""),
        ("WEATHERFLOW_WEATHERAPI_KEY_FILE", ""),
        ("WEATHERFLOW_WEB_TOKEN_FILE", token.to_str().unwrap()),
        ("WEATHERFLOW_SCHEDULER_SCHEDULES_PATH", path.to_str().unwrap()),
    ];
    all.extend_from_slice(extra);
    let pairs: Vec<(String, String)> = all.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut env = ctx.child_env();
    env.extend(pairs);
    env
}

async fn runs_of(db: &DatabaseConnection, job: JobName) -> Vec<job_runs::Model> {
    job_runs::Entity::find()
        .filter(job_runs::Column::Job.eq(job))
        .order_by_asc(job_runs::Column::Id)
        .all(db)
        .await
        .unwrap()
}

/// `weatherflow serve` on a free port, answering /healthz.
struct Serve {
    child: Child,
    url: String,
    dir: PathBuf,
    name: String,
}

impl Serve {
    async fn start(dir: &Path, name: &str, env: &[(String, String)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let child = spawn(dir, name, &["serve", "--listen", &listen], env);
        let url = format!("http://{listen}");
        let http = reqwest::Client::new();
        let up = eventually(Duration::from_secs(30), || {
            let r = http.get(format!("{url}/healthz")).send();
            async move { r.await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        assert!(up, "serve did not start:\n{}", log_of(dir, name));
        Self {
            child,
            url,
            dir: dir.to_owned(),
            name: name.to_owned(),
        }
    }

    async fn post_fetch(&self) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/api/v1/runs/fetch", self.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// SIGTERM, a clean exit, and the process's log.
    async fn stop(mut self) -> String {
        signal(&self.child, SIGTERM);
        let status = exit_within(&mut self.child, Duration::from_secs(20)).await;
        let log = log_of(&self.dir, &self.name);
        assert!(status.is_some_and(|s| s.success()), "{status:?}\n{log}");
        log
    }
}

#[tokio::test]
async fn an_http_fetch_without_a_key_beside_real_rows_is_refused_409_and_runs_with_the_opt_in() {
    let ctx = TestContext::new().await;
    let dir = scratch_dir("wf-fetch-source");
    store_real_row(&ctx).await;

    // No key, `auto`: the process says at start that it fetches simulated weather, and the trigger
    // refuses with the reason and the opt-in instead of answering 202.
    let serve = Serve::start(
        &dir,
        "nokey",
        &env(&ctx, &dir, &schedules_text("0 0 3 * * *", "auto"), &[]),
    )
    .await;
    let (status, body) = serve.post_fetch().await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "simulated_beside_real", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with(REFUSED), "{message}");
    assert!(
        message.contains("WEATHERAPI_KEY is not set in this process"),
        "{message}"
    );
    assert!(
        message.contains("fetch.allow_simulated_beside_real = true"),
        "{message}"
    );
    let runs = runs_of(&ctx.db, JobName::Fetch).await;
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert_eq!(runs[0].trigger, Trigger::Manual);
    assert!(
        runs[0].error.as_deref().unwrap_or("").starts_with(REFUSED),
        "{:?}",
        runs[0]
    );
    let log = serve.stop().await;
    assert_eq!(
        log.matches(NO_KEY_LINE).count(),
        1,
        "logged once, at start:\n{log}"
    );
    assert!(
        log.contains(" INFO ") || log.contains("\"level\":\"INFO\""),
        "{log}"
    );
    assert!(log.contains("manual fetch over HTTP refused"), "{log}");
    assert_eq!(
        ctx.scalar_i64("SELECT count(*) FROM observations").await,
        1,
        "nothing was fetched"
    );

    // The operator opts in: 202, and the run stores simulated observations beside the real one.
    let serve = Serve::start(
        &dir,
        "optin",
        &env(
            &ctx,
            &dir,
            &schedules_text("0 0 3 * * *", "auto"),
            &[("WEATHERFLOW_FETCH_ALLOW_SIMULATED_BESIDE_REAL", "true")],
        ),
    )
    .await;
    let (status, body) = serve.post_fetch().await;
    assert_eq!(status, 202, "{body}");
    let id = body["run_id"].as_i64().unwrap();
    let db = ctx.db.clone();
    let done = eventually(Duration::from_secs(30), || {
        let db = db.clone();
        async move {
            runs_of(&db, JobName::Fetch)
                .await
                .iter()
                .any(|r| r.id == id && r.finished_at.is_some())
        }
    })
    .await;
    let run = runs_of(&ctx.db, JobName::Fetch)
        .await
        .into_iter()
        .find(|r| r.id == id)
        .unwrap();
    assert!(done && run.status == RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.records_out, Some(2));
    assert_eq!(run.details.as_ref().unwrap()["source"], "simulated", "{run:?}");
    serve.stop().await;

    // With a key, an explicit `simulated` is still refused; the key is in no answer, log or row.
    let serve = Serve::start(
        &dir,
        "withkey",
        &env(
            &ctx,
            &dir,
            &schedules_text("0 0 3 * * *", "simulated"),
            &[("WEATHERAPI_KEY", SECRET_KEY)],
        ),
    )
    .await;
    let (status, body) = serve.post_fetch().await;
    assert_eq!(status, 409, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("asks for source \"simulated\""), "{message}");
    let log = serve.stop().await;
    assert_eq!(log.matches(KEY_LINE).count(), 1, "{log}");
    let rows = format!("{:?}", runs_of(&ctx.db, JobName::Fetch).await);
    for text in [body.to_string(), log, rows] {
        assert!(!text.contains(SECRET_KEY), "the key leaked: {text}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_scheduled_simulated_fetch_beside_real_rows_fails_once_per_tick_and_runs_with_the_opt_in() {
    let ctx = TestContext::new().await;
    store_real_row(&ctx).await;
    let schedules = Schedules::parse(&schedules_text("* * * * * *", "simulated"), "test").unwrap();
    let options = || SchedulerOptions {
        shutdown_grace: Duration::from_secs(2),
        cancel_wait: Duration::from_millis(300),
        replica: "solo".to_owned(),
    };
    let mut config = ctx.config.clone();
    config.weatherapi.api_key = None;
    config.weatherapi.key_file = None;

    // Refused: every tick's run fails fatal (no retry), says why, and produces nothing.
    let run_until = |config: weatherflow::config::Config, n: usize| {
        let db = ctx.db.clone();
        let schedules = schedules.clone();
        async move {
            let jobs = catalog::pipeline_jobs(Arc::new(config), db.clone(), &schedules);
            let shutdown = CancellationToken::new();
            let service = tokio::spawn(Scheduler::new(db.clone(), jobs, options()).run(shutdown.clone()));
            let reached = eventually(Duration::from_secs(20), || {
                let db = db.clone();
                async move {
                    runs_of(&db, JobName::Fetch)
                        .await
                        .iter()
                        .filter(|r| r.finished_at.is_some() && r.status != RunStatus::Skipped)
                        .count()
                        >= n
                }
            })
            .await;
            shutdown.cancel();
            service.await.unwrap().unwrap();
            assert!(reached, "{:#?}", runs_of(&db, JobName::Fetch).await);
        }
    };
    run_until(config.clone(), 2).await;
    let refused: Vec<_> = runs_of(&ctx.db, JobName::Fetch)
        .await
        .into_iter()
        .filter(|r| r.status != RunStatus::Skipped)
        .collect();
    for r in &refused {
        assert_eq!(r.trigger, Trigger::Schedule);
        assert_eq!(r.status, RunStatus::Failed, "{r:?}");
        assert!(r.error.as_deref().unwrap_or("").starts_with(REFUSED), "{r:?}");
    }
    let mut ticks: Vec<_> = refused
        .iter()
        .map(|r| r.details.as_ref().unwrap()["tick"].to_string())
        .collect();
    ticks.dedup();
    assert_eq!(
        ticks.len(),
        refused.len(),
        "fatal: one attempt per tick, no retry: {refused:#?}"
    );
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM observations").await, 1);

    // Opted in: the next runs succeed.
    config.fetch.allow_simulated_beside_real = true;
    let before = refused.len();
    run_until(config, before + 2).await;
    let after: Vec<_> = runs_of(&ctx.db, JobName::Fetch)
        .await
        .into_iter()
        .filter(|r| r.status != RunStatus::Skipped)
        .skip(before)
        .collect();
    assert!(after.len() >= 2, "{after:#?}");
    for r in after.iter().filter(|r| r.finished_at.is_some()) {
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
        assert_eq!(r.records_out, Some(2), "{r:?}");
    }
}

#[tokio::test]
async fn a_scheduler_process_logs_its_source_once_and_its_runs_say_why_they_are_refused() {
    let ctx = TestContext::new().await;
    let dir = scratch_dir("wf-fetch-source-sched");
    store_real_row(&ctx).await;
    let env = env(&ctx, &dir, &schedules_text("* * * * * *", "auto"), &[]);
    let mut child = spawn(&dir, "sched", &["scheduler", "--no-consumer"], &env);
    let db = ctx.db.clone();
    let two = eventually(Duration::from_secs(30), || {
        let db = db.clone();
        async move {
            runs_of(&db, JobName::Fetch)
                .await
                .iter()
                .filter(|r| r.status == RunStatus::Failed)
                .count()
                >= 2
        }
    })
    .await;
    signal(&child, SIGTERM);
    let status = exit_within(&mut child, Duration::from_secs(20)).await;
    let log = log_of(&dir, "sched");
    assert!(two, "{log}");
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{log}");
    assert_eq!(
        log.matches(NO_KEY_LINE).count(),
        1,
        "once, at start, whatever the runs:\n{log}"
    );
    let first = log.lines().position(|l| l.contains(NO_KEY_LINE)).unwrap();
    let first_run = log.lines().position(|l| l.contains("run started"));
    assert!(
        first_run.is_none_or(|r| first < r),
        "before the first run:\n{log}"
    );
    for r in runs_of(&ctx.db, JobName::Fetch)
        .await
        .iter()
        .filter(|r| r.status == RunStatus::Failed)
    {
        let error = r.error.as_deref().unwrap_or("");
        assert!(
            error.starts_with(REFUSED) && error.contains("WEATHERAPI_KEY is not set"),
            "{r:?}"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_manual_fetch_beside_real_rows_is_refused_unless_the_flag_opts_in() {
    let ctx = TestContext::new().await;
    let dir = scratch_dir("wf-fetch-source-cli");
    let env = env(&ctx, &dir, &schedules_text("0 0 3 * * *", "auto"), &[]);
    let fetch = ["run", "fetch", "--source", "simulated", "--location", "Oslo"];

    // An empty database (the demo, the test stages): a simulated fetch runs.
    let (ok, _, stderr) = run_cli(&dir, &fetch, &env).await;
    assert!(ok, "{stderr}");
    assert_eq!(stderr.matches(NO_KEY_LINE).count(), 1, "{stderr}");

    store_real_row(&ctx).await;
    let (ok, _, stderr) = run_cli(&dir, &fetch, &env).await;
    assert!(!ok, "refused beside a real row");
    assert!(
        stderr.contains(REFUSED) && stderr.contains("--allow-simulated-beside-real"),
        "{stderr}"
    );

    let mut flagged = fetch.to_vec();
    flagged.push("--allow-simulated-beside-real");
    let (ok, _, stderr) = run_cli(&dir, &flagged, &env).await;
    assert!(ok, "{stderr}");

    let runs = runs_of(&ctx.db, JobName::Fetch).await;
    let statuses: Vec<_> = runs.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [RunStatus::Succeeded, RunStatus::Failed, RunStatus::Succeeded],
        "{runs:#?}"
    );
    std::fs::remove_dir_all(dir).ok();
}
