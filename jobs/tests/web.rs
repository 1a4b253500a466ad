//! Web mode on the real services: `weatherflow serve` and `scheduler --http` as processes, on a
//! database and topics of the test's own, filled by the real pipeline (fetch → Kafka → persist →
//! analytics); Prometheus, Chromium and nginx are Debian's packages (scripts/web-tools.sh installs
//! them). A missing tool or service fails the test.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::TestContext;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sea_orm::ConnectionTrait;
use secrecy::ExposeSecret;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_weatherflow");
const TOKEN: &str = "test-token-5f1c9a";
/// A location name the dashboard must show as text.
const SCRIPT_NAME: &str = "<script>alert('x')</script>";

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The environment that points a `weatherflow` process at the test's database and topics.
fn env_of(ctx: &TestContext) -> Vec<(String, String)> {
    let k = &ctx.config.kafka;
    let schedules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schedules.toml");
    vec![
        (
            "DATABASE_URL".into(),
            ctx.config.database.url.expose_secret().to_owned(),
        ),
        ("KAFKA_BOOTSTRAP_SERVERS".into(), k.bootstrap_servers.clone()),
        (
            "WEATHERFLOW_KAFKA_OBSERVATIONS_TOPIC".into(),
            k.observations_topic.clone(),
        ),
        ("WEATHERFLOW_KAFKA_DLQ_TOPIC".into(), k.dlq_topic.clone()),
        (
            "WEATHERFLOW_KAFKA_CONSUMER_GROUP".into(),
            k.consumer_group.clone(),
        ),
        ("WEATHERFLOW_KAFKA_PARTITIONS".into(), k.partitions.to_string()),
        (
            "WEATHERFLOW_SCHEDULER_SCHEDULES_PATH".into(),
            schedules.display().to_string(),
        ),
    ]
}

fn weatherflow(ctx: &TestContext, args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .envs(env_of(ctx))
        .output()
        .expect("running weatherflow");
    assert!(
        out.status.success(),
        "weatherflow {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The real pipeline's data: simulated observations through Kafka into PostgreSQL, one location
/// with a hostile name, and a regression over all of it.
async fn fill(ctx: &TestContext) {
    weatherflow(
        ctx,
        &[
            "run",
            "fetch",
            "--source",
            "simulated",
            "--location",
            "London",
            "--location",
            "Paris",
            "--location",
            "Tokyo",
            "--backfill-hours",
            "12",
        ],
    );
    weatherflow(ctx, &["run", "persist", "--until-idle"]);
    let inserted = ctx
        .scalar_i64(&format!(
            "WITH i AS (INSERT INTO observations (location_key, location_name, region, country, lat, lon,
                 observed_at, temp_c, wind_kph, source, fetched_at)
             SELECT 'script||nowhere', '{}', '', 'Nowhere', 0, 0, now() - make_interval(mins => 15 * g),
                 10 - 0.2 * g, g, 'simulated', now() FROM generate_series(1, 40) g RETURNING 1)
             SELECT count(*) FROM i",
            SCRIPT_NAME.replace('\'', "''")
        ))
        .await;
    assert_eq!(inserted, 40);
    weatherflow(ctx, &["run", "analytics"]);
}

/// A `weatherflow` service process, stopped with SIGTERM when dropped.
struct Service {
    child: Child,
    port: u16,
}

impl Service {
    fn start(ctx: &TestContext, args: &[&str], port: u16, extra_env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .envs(env_of(ctx))
            .envs(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd.spawn().expect("starting weatherflow");
        let svc = Self { child, port };
        svc.wait_healthy();
        svc
    }

    fn serve(ctx: &TestContext, extra_env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        Self::start(ctx, &["serve", "--listen", &listen], port, extra_env)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = raw_http::blocking_get(&self.url("/healthz"))
                && r == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{} did not answer /healthz within 30 s", self.url(""));
    }

    /// SIGTERM, then the exit status (SIGKILL after 15 s).
    fn stop(&mut self) -> std::process::ExitStatus {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("waiting") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("weatherflow did not stop within 15 s of SIGTERM");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

/// Minimal blocking HTTP over std, so helpers that run outside the runtime need no client.
mod raw_http {
    pub fn blocking_get(url: &str) -> std::io::Result<u16> {
        let rest = url.strip_prefix("http://").expect("http url");
        let (host, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
        let mut s = std::net::TcpStream::connect(host)?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        std::io::Write::write_all(
            &mut s,
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )?;
        let mut buf = String::new();
        std::io::Read::read_to_string(&mut s, &mut buf)?;
        Ok(buf.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0))
    }
}

/// GET `url`: status and body.
async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    let r = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (r.status().as_u16(), r.text().await.expect("body"))
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let (status, body) = get(client, url).await;
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"))
}

/// Waits until the lag sampler has a sample (status says so), so pages show no placeholder.
async fn wait_for_lag(client: &reqwest::Client, svc: &Service) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let s = get_json(client, &svc.url("/api/v1/status")).await;
        if s["consumer_lag"]["state"] == "ok" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("no consumer-lag sample within 30 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_answers_and_refuses_bad_input() {
    let ctx = TestContext::new().await;
    fill(&ctx).await;
    let svc = Service::serve(
        &ctx,
        &[
            ("WEATHERFLOW_WEB_TOKEN", TOKEN),
            ("WEATHERFLOW_WEB_CACHE_TTL_MS", "0"),
        ],
    );
    let http = reqwest::Client::new();
    let observations = ctx.scalar_i64("SELECT count(*) FROM observations").await;
    let locations = ctx
        .scalar_i64("SELECT count(DISTINCT location_key) FROM observations")
        .await;

    // /healthz and --version name the commit checked out (the build script's) and the profile.
    let health = get_json(&http, &svc.url("/healthz")).await;
    assert_eq!(health["status"], "ok");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git");
    let head = String::from_utf8(head.stdout).unwrap().trim().to_owned();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    assert_eq!(
        (health["commit"].as_str(), health["profile"].as_str()),
        (Some(head.as_str()), Some(profile))
    );
    let version = String::from_utf8(weatherflow(&ctx, &["--version"]).stdout).unwrap();
    assert_eq!(
        version.trim(),
        format!(
            "weatherflow {} (commit {head}, {profile} build)",
            env!("CARGO_PKG_VERSION")
        )
    );
    let ready = get_json(&http, &svc.url("/readyz")).await;
    assert_eq!(ready["checks"]["kafka"], "ok", "{ready}");
    assert_eq!(ready["checks"]["migrations"], "ok", "{ready}");

    // Security headers on pages, JSON, health and refusals alike.
    for (path, want) in [
        ("/", 200),
        ("/api/v1/results", 200),
        ("/healthz", 200),
        ("/api/v1/nope", 404),
        ("/nope", 404),
    ] {
        let r = http.get(svc.url(path)).send().await.unwrap();
        assert_eq!(r.status(), want, "{path}");
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.starts_with("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
    }

    // The topic's published contract, byte for byte the committed file.
    let schema = http.get(svc.url("/api/v1/schema/envelope")).send().await.unwrap();
    assert_eq!(schema.status(), 200);
    assert_eq!(schema.headers()["content-type"], "application/schema+json");
    let committed = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/schema/envelope.v1.json");
    assert_eq!(
        schema.text().await.unwrap(),
        std::fs::read_to_string(committed).unwrap()
    );

    // The API's own contract, byte for byte the committed file (scripts/test-openapi.sh fuzzes it).
    let openapi = http.get(svc.url("/api/v1/openapi.json")).send().await.unwrap();
    assert_eq!(openapi.status(), 200);
    assert_eq!(openapi.headers()["content-type"], "application/json");
    let committed = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/schema/openapi.v1.json");
    let served = openapi.text().await.unwrap();
    assert_eq!(served, std::fs::read_to_string(committed).unwrap());
    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        doc["paths"]["/api/v1/observations/latest"]["get"].is_object(),
        "{doc}"
    );

    let results = get_json(&http, &svc.url("/api/v1/results")).await;
    let rows = results["results"].as_array().expect("results");
    assert_eq!(
        rows.len() as i64,
        locations + 1,
        "all + one per location: {results}"
    );
    assert_eq!(rows[0]["scope"], "all");
    assert_eq!(rows[0]["n_samples"], observations);
    // The fit names its source: the fixture's rows are all simulated.
    assert!(rows.iter().all(|r| r["source"] == "simulated"), "{results}");
    let one = get_json(
        &http,
        &svc.url("/api/v1/results?scope=script%7C%7Cnowhere&last=1"),
    )
    .await;
    let slope = one["results"][0]["slope"].as_f64().expect("slope");
    assert!(
        (slope + 0.2).abs() < 1e-9,
        "the inserted line has slope -0.2: {one}"
    );

    let runs = get_json(
        &http,
        &svc.url("/api/v1/runs?job=analytics&status=succeeded&last=5"),
    )
    .await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");
    let all_runs = get_json(&http, &svc.url("/api/v1/runs?last=2")).await;
    assert_eq!(all_runs["runs"].as_array().unwrap().len(), 2);

    wait_for_lag(&http, &svc).await;
    let status = get_json(&http, &svc.url("/api/v1/status")).await;
    assert_eq!(status["tables"]["observations"]["rows"], observations, "{status}");
    assert_eq!(
        status["consumer_lag"]["total"], 0,
        "persist drained the topic: {status}"
    );
    let jobs: Vec<&str> = status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"].as_str().unwrap())
        .collect();
    assert_eq!(
        jobs,
        [
            "fetch",
            "persist",
            "analytics",
            "redrive",
            "replay",
            "maintenance"
        ]
    );
    assert!(
        status["jobs"][0]["next_fire"].is_string(),
        "schedules.toml gives fetch a next fire: {status}"
    );
    // The scheduler's fire time, the same function `weatherflow schedules` prints from.
    let schedules = weatherflow::scheduler::schedules::Schedules::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../schedules.toml"),
    )
    .unwrap();
    let next = status["jobs"][5]["next_fire"]
        .as_str()
        .expect("maintenance has a next fire");
    let fired = weatherflow::scheduler::next_fire(&schedules.maintenance, chrono::Utc::now());
    assert_eq!(
        Some(next.to_owned()),
        fired.map(weatherflow::runs::tick_text),
        "{status}"
    );

    let latest = get_json(&http, &svc.url("/api/v1/observations/latest")).await;
    assert_eq!(latest["observations"].as_array().unwrap().len() as i64, locations);
    assert!(latest["next"].is_null(), "{latest}");
    // Paged one location at a time, the pages are the same places in the same order, and the last
    // says there is no next one.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let url = match &after {
            Some(a) => format!(
                "/api/v1/observations/latest?limit=1&after={}",
                url::form_urlencoded::byte_serialize(a.as_bytes()).collect::<String>()
            ),
            None => "/api/v1/observations/latest?limit=1".to_owned(),
        };
        let page = get_json(&http, &svc.url(&url)).await;
        let rows = page["observations"].as_array().unwrap();
        assert!(rows.len() <= 1, "{page}");
        paged.extend(rows.iter().map(|r| r["location_key"].clone()));
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
        assert!(paged.len() as i64 <= locations, "paging does not end: {paged:?}");
    }
    let all: Vec<_> = latest["observations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["location_key"].clone())
        .collect();
    assert_eq!(paged, all);
    let page = get_json(
        &http,
        &svc.url("/api/v1/observations?location=script%7C%7Cnowhere&limit=3"),
    )
    .await;
    let page = page["observations"].as_array().unwrap();
    assert_eq!(page.len(), 3);
    assert!(page.iter().all(|o| o["location_name"] == SCRIPT_NAME));
    let window = get_json(
        &http,
        &svc.url("/api/v1/observations?from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00Z"),
    )
    .await;
    assert_eq!(window["observations"].as_array().unwrap().len(), 0);

    ctx.db
        .execute_unprepared(
            "INSERT INTO rejected_records (kafka_topic, kafka_partition, kafka_offset, payload, error_class, reason)
             VALUES ('t', 0, 1, 'x', 'invalid_json', 'expected value'), ('t', 0, 2, 'y', 'invalid_json', 'eof')",
        )
        .await
        .unwrap();
    let rej = get_json(&http, &svc.url("/api/v1/rejections?class=invalid_json&last=1")).await;
    assert_eq!(rej["rejections"].as_array().unwrap().len(), 1, "{rej}");
    assert_eq!(rej["summary"][0]["count"], 2, "{rej}");

    // Bad parameters: 400, the one error shape, naming the parameter.
    for (path, parameter, says) in [
        ("/api/v1/results?last=0", "last", "from 1 to 500"),
        ("/api/v1/results?last=abc", "last", "got 'abc'"),
        ("/api/v1/results?scope=", "scope", "printable"),
        (
            "/api/v1/results?colour=red",
            "colour",
            "expected one of: scope, last",
        ),
        ("/api/v1/runs?job=nope", "job", "fetch, persist, analytics"),
        ("/api/v1/runs?status=done", "status", "running, succeeded"),
        ("/api/v1/observations?limit=1001", "limit", "from 1 to 1000"),
        ("/api/v1/observations?from=yesterday", "from", "RFC 3339"),
        (
            "/api/v1/observations?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "to",
            "later than from",
        ),
        (
            "/api/v1/rejections?class=DROP%20TABLE",
            "class",
            "rejection class",
        ),
        ("/api/v1/status?x=1", "x", "takes no parameters"),
        ("/api/v1/results?last=1&last=2", "last", "more than once"),
    ] {
        let (code, body) = get(&http, &svc.url(path)).await;
        assert_eq!(code, 400, "{path}: {body}");
        let e: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(e["error"]["code"], "bad_parameter", "{path}: {body}");
        assert_eq!(e["error"]["parameter"], parameter, "{path}: {body}");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{path}: {message}");
    }
    let (code, body) = get(&http, &svc.url("/api/v1/nothing")).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains(r#""code":"not_found""#), "{body}");

    let (code, metrics) = get(&http, &svc.url("/metrics")).await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains(r#"weatherflow_job_runs_total{job="analytics",status="succeeded"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"weatherflow_analytics_fit_samples{scope="all"} "#),
        "{metrics}"
    );
    assert!(
        metrics.contains("weatherflow_persist_consumer_lag{partition="),
        "{metrics}"
    );
    assert!(!metrics.contains(TOKEN) && !body.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_escapes_names_and_shows_results_plot_runs_lag_and_dead_letters() {
    let ctx = TestContext::new().await;
    fill(&ctx).await;
    let svc = Service::serve(&ctx, &[]);
    let http = reqwest::Client::new();
    wait_for_lag(&http, &svc).await;
    let r = http.get(svc.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let html = r.text().await.unwrap();
    assert!(!html.contains(SCRIPT_NAME), "the name must not be raw HTML");
    assert!(html.contains("&lt;script&gt;alert("), "the name is shown escaped");
    for needle in [
        r#"<meta http-equiv="refresh""#,
        r#"name="viewport""#,
        r#"id="results-table""#,
        "<svg viewBox=",
        r#"class="status status-succeeded""#,
        "Consumer lag",
        "Dead letters",
        "London",
    ] {
        assert!(html.contains(needle), "dashboard lacks {needle}");
    }
    assert!(!html.to_lowercase().contains("loading"));
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_runs_need_the_token_take_the_lock_and_are_recorded() {
    let ctx = TestContext::new().await;
    fill(&ctx).await;
    let http = reqwest::Client::new();

    // No token configured: 403 saying how to enable the endpoint.
    let closed = Service::serve(&ctx, &[]);
    let r = http
        .post(closed.url("/api/v1/runs/analytics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(body.contains("WEATHERFLOW_WEB_TOKEN"), "{body}");
    drop(closed);

    let token_file = std::env::temp_dir().join(common::unique("wf-token"));
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let svc = Service::serve(
        &ctx,
        &[("WEATHERFLOW_WEB_TOKEN_FILE", token_file.to_str().unwrap())],
    );
    let url = svc.url("/api/v1/runs/analytics");
    let r = http.post(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = http
        .post(&url)
        .bearer_auth("test-token-5f1c9b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body = r.text().await.unwrap();
    assert!(!body.contains(TOKEN), "{body}");
    let r = http
        .post(svc.url("/api/v1/runs/persist"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let runs_before = ctx.scalar_i64("SELECT count(*) FROM job_runs").await;

    // Another run holds the lock: 409, and no row.
    let held = weatherflow::runs::lock::JobLock::try_acquire(&ctx.db, weatherflow::runs::JobName::Analytics)
        .await
        .unwrap()
        .expect("the lock is free");
    let r = http.post(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("in progress"));
    held.release().await.unwrap();
    assert_eq!(ctx.scalar_i64("SELECT count(*) FROM job_runs").await, runs_before);

    let r = http.post(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    let id = accepted["run_id"].as_i64().expect("run id");
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let runs = get_json(&http, &svc.url("/api/v1/runs?job=analytics&last=1")).await;
        let run = runs["runs"][0].clone();
        if run["id"] == id && run["status"] != "running" {
            break run;
        }
        assert!(Instant::now() < deadline, "run {id} did not finish: {runs}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["status"], "succeeded", "{run}");
    let results = ctx
        .scalar_i64(&format!(
            "SELECT count(*) FROM regression_results WHERE job_run_id = {id}"
        ))
        .await;
    assert!(results > 0);
    // The run wrote: the cached results are replaced at once.
    let latest = get_json(&http, &svc.url("/api/v1/results?last=1")).await;
    assert_eq!(latest["results"][0]["run_id"], id, "{latest}");
    std::fs::remove_file(token_file).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_started_over_http_whose_lock_session_dies_is_recorded_lock_lost() {
    let ctx = TestContext::new().await;
    let (base_url, server) = common::weatherapi_stub::hanging().await;
    let token_file = std::env::temp_dir().join(common::unique("wf-token"));
    std::fs::write(&token_file, TOKEN).unwrap();
    // A fetch of the shipped schedule's locations from a WeatherAPI that never answers: the run is
    // still going when its lock's session is killed.
    let svc = Service::serve(
        &ctx,
        &[
            ("WEATHERFLOW_WEB_TOKEN_FILE", token_file.to_str().unwrap()),
            ("WEATHERAPI_KEY", "test-key"),
            ("WEATHERFLOW_WEATHERAPI_BASE_URL", &base_url),
            ("WEATHERFLOW_WEATHERAPI_TIMEOUT_SECS", "60"),
            ("WEATHERFLOW_WEATHERAPI_MAX_TOTAL_SECS", "120"),
            ("WEATHERFLOW_SCHEDULER_CANCEL_WAIT_SECS", "2"),
        ],
    );
    let http = reqwest::Client::new();
    let r = http
        .post(svc.url("/api/v1/runs/fetch"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    let id = accepted["run_id"].as_i64().expect("run id");

    // The session holding the fetch job's lock (not the run's lease) dies, as at a server restart
    // or an idle-session timeout.
    let key = weatherflow::runs::lock::lock_key(weatherflow::runs::JobName::Fetch);
    let (hi, lo) = ((key >> 32) & 0xffff_ffff, key & 0xffff_ffff);
    let pid = ctx
        .scalar_i64(&format!(
            "SELECT pid::bigint FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
             WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database() \
             AND l.classid::bigint = {hi} AND l.objid::bigint = {lo}"
        ))
        .await;
    let status = ctx
        .scalar_i64(&format!(
            "SELECT count(*) FROM job_runs WHERE id = {id} AND status = 'running'"
        ))
        .await;
    assert_eq!(status, 1, "run {id} should still be going when its lock is lost");
    let killed = Instant::now();
    ctx.db
        .execute_unprepared(&format!("SELECT pg_terminate_backend({pid})"))
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let runs = get_json(&http, &svc.url("/api/v1/runs?job=fetch&last=1")).await;
        let run = runs["runs"][0].clone();
        if run["id"] == id && run["status"] != "running" {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} still running 30 s after its lock was lost: {runs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "lock session killed: the HTTP run recorded its end {} ms later",
        killed.elapsed().as_millis()
    );
    assert_eq!(run["trigger"], "manual", "{run}");
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"], "lock lost", "{run}");
    // The lock is free again, and the server goes on.
    let free = weatherflow::runs::lock::JobLock::try_acquire(&ctx.db, weatherflow::runs::JobName::Fetch)
        .await
        .unwrap()
        .expect("the fetch lock is free once the run stopped");
    free.release().await.unwrap();
    assert_eq!(raw_http::blocking_get(&svc.url("/healthz")).unwrap(), 200);
    server.abort();
    std::fs::remove_file(token_file).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off_and_sigterm_stops_the_server() {
    let ctx = TestContext::new().await;
    let mut svc = Service::serve(&ctx, &[("WEATHERFLOW_WEB_REQUEST_TIMEOUT_SECS", "1")]);
    let mut slow = TcpStream::connect(("127.0.0.1", svc.port)).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "the connection stayed open {waited:?}"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(!text.contains("200 OK"), "{text}");
    // A cleartext HTTP/2 client (prior knowledge) that sends its preface and then nothing: HTTP/2
    // is not served, so it is cut off as fast, not held open.
    let mut h2 = TcpStream::connect(("127.0.0.1", svc.port)).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    h2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = h2.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the HTTP/2 connection stayed open {:?}",
        started.elapsed()
    );
    let status = svc.stop();
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
}

/// Where CI keeps artifacts: `$CARGO_TARGET_DIR/artifacts`, else `target/artifacts`.
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

fn chromium(args: &[&str], url: &str) -> Output {
    let profile = std::env::temp_dir().join(common::unique("wf-chromium"));
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("running chromium (scripts/web-tools.sh installs it)");
    std::fs::remove_dir_all(profile).ok();
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_renders_the_dashboard_with_results_and_plot() {
    let ctx = TestContext::new().await;
    fill(&ctx).await;
    let svc = Service::serve(&ctx, &[]);
    wait_for_lag(&reqwest::Client::new(), &svc).await;
    let dom = String::from_utf8(chromium(&["--dump-dom"], &svc.url("/")).stdout).unwrap();
    assert!(dom.contains(r#"id="results-table""#), "{dom}");
    assert!(
        dom.contains(r#"<th>source</th>"#)
            && dom.contains(r#"<td class="source"><span class="badge-simulated""#),
        "the regression table marks each fit on simulated rows: {dom}"
    );
    assert!(
        dom.contains("<svg") && dom.contains("<circle"),
        "the plot with its points"
    );
    assert!(dom.contains("&lt;script&gt;"), "the hostile name is text");
    assert!(!dom.to_lowercase().contains("loading"));
    // Every latest observation of `fill` is simulated: each row carries the badge, and the note
    // above the table says how many of them are made up.
    let section = dom
        .split(r#"<section id="observations">"#)
        .nth(1)
        .and_then(|rest| rest.split("</section>").next())
        .expect("the observations section");
    let rows = section.matches("<tr>").count() - 1;
    assert_eq!(rows, 4, "London, Paris, Tokyo and the hostile name: {section}");
    assert_eq!(
        section
            .matches(r#"class="badge-simulated" title="made up by the built-in simulator"#)
            .count(),
        rows,
        "one badge per row: {section}"
    );
    assert!(
        section.contains(r#"id="observations-simulated""#)
            && section.contains("4 of these 4 readings are made up by the built-in simulator"),
        "{section}"
    );
    let shot = artifacts_dir().join("dashboard.png");
    std::fs::remove_file(&shot).ok();
    chromium(
        &[
            "--window-size=1280,2200",
            &format!("--screenshot={}", shot.display()),
        ],
        &svc.url("/"),
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
}

/// Runs Debian's nginx with deploy/nginx/nginx.conf rewritten to listen on `port` and proxy to
/// `upstream`, in a prefix of its own, as a foreground process.
struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    fn start(port: u16, upstream: u16) -> Self {
        let dir = std::env::temp_dir().join(common::unique("wf-nginx"));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = std::fs::read_to_string(deploy_conf()).unwrap();
        let conf: String = conf
            .lines()
            .map(|l| {
                if l.contains("# test: listen") {
                    format!("listen 127.0.0.1:{port};")
                } else if l.contains("# test: upstream") {
                    format!("set $weatherflow_web http://127.0.0.1:{upstream};")
                } else if l.contains("# test: resolver") {
                    String::new()
                } else if l.trim_start().starts_with("pid ") {
                    format!("pid {}/nginx.pid;", dir.display())
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .args(["-e", "stderr", "-g", "daemon off;", "-c"])
            .arg(&path)
            .stdout(Stdio::null())
            .spawn()
            .expect("running nginx (scripts/web-tools.sh installs it)");
        Self { child, dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGQUIT);
        let _ = self.child.wait();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn deploy_conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx/nginx.conf")
}

#[test]
fn the_deploy_nginx_config_passes_nginx_t() {
    let dir = std::env::temp_dir().join(common::unique("wf-nginx-t"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(&dir)
        .args(["-e", "stderr", "-c"])
        .arg(deploy_conf())
        .output()
        .expect("running nginx (scripts/web-tools.sh installs it)");
    std::fs::remove_dir_all(&dir).ok();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("test is successful"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_in_front_of_serve_returns_the_dashboard_gzipped() {
    let ctx = TestContext::new().await;
    fill(&ctx).await;
    let svc = Service::serve(&ctx, &[]);
    let port = free_port();
    let _nginx = Nginx::start(port, svc.port);
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/");
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        match http.get(&url).header("accept-encoding", "gzip").send().await {
            Ok(r) => break r,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("nginx did not answer: {e}"),
        }
    };
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip", "{:?}", r.headers());
    let (code, html) = get(&http, &url).await;
    assert_eq!(code, 200);
    assert!(html.contains(r#"id="results-table""#));
    let (code, body) = get(&http, &format!("http://127.0.0.1:{port}/api/v1/results?last=1")).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""scope":"all""#), "{body}");

    // Security headers, once each, on pages and on refusals alike; probes and scrapes stay inside.
    for (path, want) in [
        ("/", 200),
        ("/api/v1/status", 200),
        ("/metrics", 404),
        ("/readyz", 404),
        ("/nope", 404),
    ] {
        let r = http
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{path}");
        let h = r.headers();
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("x-frame-options", "DENY"),
        ] {
            let all: Vec<_> = h.get_all(name).iter().collect();
            assert_eq!(all, [value], "{path}: {name}");
        }
        let csp: Vec<_> = h.get_all("content-security-policy").iter().collect();
        assert_eq!(csp.len(), 1, "{path}: {h:?}");
        let csp = csp[0].to_str().unwrap();
        assert!(
            csp.starts_with("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
    }

    // Starting runs is limited harder: 6 a minute in bursts of 3. No token is configured, so the
    // ones let through get 403; the rest 429.
    let mut trigger = Vec::new();
    for _ in 0..8 {
        let r = http
            .post(format!("http://127.0.0.1:{port}/api/v1/runs/fetch"))
            .send()
            .await
            .unwrap();
        trigger.push(r.status().as_u16());
    }
    assert_eq!(&trigger[..4], [403, 403, 403, 403], "{trigger:?}");
    assert!(trigger[4..].iter().all(|c| *c == 429), "{trigger:?}");

    // A client past 20 requests a second (bursts of 40) gets 429 at once; the rest are served (the
    // requests above spent part of the burst).
    let burst = futures::future::join_all(
        (0..120).map(|_| http.get(format!("http://127.0.0.1:{port}/healthz")).send()),
    )
    .await;
    let codes: Vec<u16> = burst.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    let limited = codes.iter().filter(|c| **c == 429).count();
    let served = codes.iter().filter(|c| **c == 200).count();
    assert!(
        limited > 0 && served >= 25 && limited + served == 120,
        "{served} served, {limited} limited"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_the_scheduler_and_serve_and_promtool_accepts_the_metrics() {
    let ctx = TestContext::new().await;
    fill(&ctx).await;
    let svc = Service::serve(&ctx, &[]);
    let sched_port = free_port();
    let http_addr = format!("127.0.0.1:{sched_port}");
    let scheduler = Service::start(
        &ctx,
        &["scheduler", "--no-consumer", "--http", &http_addr],
        sched_port,
        &[],
    );
    let http = reqwest::Client::new();

    for target in [&svc, &scheduler] {
        let (code, body) = get(&http, &target.url("/metrics")).await;
        assert_eq!(code, 200);
        let mut check = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running promtool (scripts/web-tools.sh installs prometheus)");
        check.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}\n{body}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let dir = std::env::temp_dir().join(common::unique("wf-prometheus"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: weatherflow\n    static_configs:\n      - targets: ['127.0.0.1:{}', '127.0.0.1:{}']\n",
            svc.port, scheduler.port
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("running prometheus (scripts/web-tools.sh installs it)");
    let targets_url = format!("http://127.0.0.1:{prom_port}/api/v1/targets");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let up = loop {
        if let Ok(r) = http.get(&targets_url).send().await
            && let Ok(v) = r.json::<Value>().await
        {
            let active = v["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
            last = v.to_string();
            if active.len() == 2 && active.iter().all(|t| t["health"] == "up") {
                break true;
            }
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let _ = prom.kill();
    let _ = prom.wait();
    std::fs::remove_dir_all(&dir).ok();
    assert!(up, "both targets up in Prometheus: {last}");
}

#[test]
fn web_defaults_bind_loopback_and_hide_the_token() {
    let c = weatherflow::config::Config::load_from(
        None,
        [("WEATHERFLOW_WEB_TOKEN".to_owned(), TOKEN.to_owned())],
    )
    .unwrap();
    assert_eq!(c.web.listen, "127.0.0.1:8080");
    assert!(!format!("{c:?}").contains(TOKEN));
    assert_eq!(c.web.resolve_token().unwrap().unwrap().expose_secret(), TOKEN);
}
