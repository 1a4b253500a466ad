//! Webhook alerts on the real database and broker, delivered over real HTTP to a receiver each test
//! starts on 127.0.0.1:0: one message per incident and one when it ends, across two evaluators (two
//! replicas); retries recorded attempt by attempt; a webhook that never answers leaves the schedule on
//! time; the webhook's token never reaches the log, the run history or the deliveries table; the lag
//! condition waits its duration, opens and resolves.

mod common;

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use common::schedule::{self, tick, timing};
use common::{TestContext, eventually};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use weatherflow::alerts::{Alerts, Event, Kind};
use weatherflow::config::{Config, WebhookUrls};
use weatherflow::job_error::JobError;
use weatherflow::runs::{JobName, RunStatus, StoredReport, pause};
use weatherflow::scheduler::{RunContext, ScheduledJob, Scheduler, SchedulerOptions, TickOutcome};

/// The secret part of every test webhook's URL: it must never show up outside the request.
const TOKEN: &str = "tok-3f9a1c-SECRET";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A webhook receiver of the test's own: records every body, answers with the queued statuses (then
/// 200).
struct Receiver {
    base: String,
    state: Arc<ReceiverState>,
}

#[derive(Default)]
struct ReceiverState {
    bodies: Mutex<Vec<Value>>,
    answers: Mutex<VecDeque<u16>>,
}

async fn receive(State(state): State<Arc<ReceiverState>>, Json(body): Json<Value>) -> StatusCode {
    state.bodies.lock().unwrap().push(body);
    let code = state.answers.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(code).unwrap()
}

impl Receiver {
    async fn start() -> Self {
        let state = Arc::new(ReceiverState::default());
        let app = axum::Router::new()
            .route("/hooks/{token}", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, state }
    }

    fn url(&self) -> String {
        format!("{}/hooks/{TOKEN}", self.base)
    }

    fn answer(&self, codes: &[u16]) {
        self.state.answers.lock().unwrap().extend(codes);
    }

    fn bodies(&self) -> Vec<Value> {
        self.state.bodies.lock().unwrap().clone()
    }
}

/// Everything the tests' processes log, at debug level, to look for the token in.
fn captured_log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let make = move || LogSink(sink.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,sqlx=info,sea_orm=info")
            .with_writer(make)
            .with_ansi(false)
            .try_init();
        buf
    })
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The test's configuration with alerts to `url`, fast retries, and only the conditions a test turns on.
fn alerting(ctx: &TestContext, url: &str) -> Config {
    let mut config = ctx.config.clone();
    let a = &mut config.alerts;
    a.webhook_urls = Some(webhook_urls(url));
    a.dashboard_url = Some("https://dash.example".into());
    a.delivery_backoff_ms = 100;
    a.delivery_attempts = 4;
    a.delivery_timeout_secs = 2;
    a.lag_max_records = None;
    a.quarantine_max_ratio = None;
    // Stale data is its own test's condition (the default bound is on).
    config.analytics.max_staleness_secs = 0;
    config
}

/// `WebhookUrls` from the text the environment variable holds, converted as the loader does.
fn webhook_urls(text: &str) -> WebhookUrls {
    let env = [("WEATHERFLOW_ALERTS_WEBHOOK_URLS".to_owned(), text.to_owned())];
    let config = Config::load_from(None, env).expect("config from the environment");
    config.alerts.webhook_urls.expect("webhook urls set")
}

fn options() -> SchedulerOptions {
    schedule::options("a", Duration::from_millis(300))
}

/// A fetch-named job that fails (retryably) while `fail` is set.
fn switchable(fail: Arc<AtomicBool>, fields: &str) -> ScheduledJob {
    ScheduledJob::new(JobName::Fetch, timing(fields), move |_ctx: RunContext| {
        let failing = fail.load(Ordering::SeqCst);
        async move {
            if failing {
                return Err(JobError::retryable("upstream said no"));
            }
            Ok(StoredReport::succeeded())
        }
    })
}

async fn texts(ctx: &TestContext, sql: &str) -> Vec<String> {
    let rows = ctx
        .db
        .query_all_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .expect(sql);
    rows.iter()
        .map(|r| {
            r.try_get_by_index::<Option<String>>(0)
                .unwrap()
                .unwrap_or_default()
        })
        .collect()
}

/// Every text the database holds about runs, incidents and deliveries, to look for the token in.
async fn stored_text(ctx: &TestContext) -> String {
    let mut all = texts(ctx, "SELECT concat_ws(' ', error, details::text) FROM job_runs").await;
    all.extend(
        texts(
            ctx,
            "SELECT concat_ws(' ', summary, details::text) FROM alert_incidents",
        )
        .await,
    );
    all.extend(texts(ctx, "SELECT concat_ws(' ', url, error) FROM alert_deliveries").await);
    all.join("\n")
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_run_failed_after_its_retries_alerts_once_and_its_next_success_resolves_once() {
    let log = captured_log();
    let ctx = TestContext::new().await;
    let receiver = Receiver::start().await;
    let config = alerting(&ctx, &receiver.url());
    let stop = CancellationToken::new();
    // Two evaluators on one database: two scheduler replicas.
    let a = Alerts::start(&config, ctx.db.clone(), &stop)
        .unwrap()
        .expect("alerts on");
    let b = Alerts::start(&config, ctx.db.clone(), &stop)
        .unwrap()
        .expect("alerts on");
    let fail = Arc::new(AtomicBool::new(true));
    let s = Scheduler::new(
        ctx.db.clone(),
        vec![switchable(
            fail.clone(),
            "cron = \"0 0 0 1 1 *\"\nretries = 1\nretry_backoff_secs = 1",
        )],
        options(),
    );

    // Nothing has run: nothing to say.
    assert!(a.evaluate().await.unwrap().is_empty());
    let out = s
        .run_tick(JobName::Fetch, tick("2026-01-01T00:00:00Z"))
        .await
        .unwrap();
    let TickOutcome::Ran {
        status: RunStatus::Failed,
        run_ids,
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(run_ids.len(), 2, "one retry");
    // Only the last attempt is marked final: the first was going to be retried.
    let finals = texts(
        &ctx,
        "SELECT coalesce(details->>'final', '-') FROM job_runs ORDER BY id",
    )
    .await;
    assert_eq!(finals, ["-", "true"]);

    let (x, y) = tokio::join!(a.evaluate(), b.evaluate());
    let sent: Vec<_> = x.unwrap().into_iter().chain(y.unwrap()).collect();
    assert_eq!(sent.len(), 1, "two replicas, one alert: {sent:?}");
    assert_eq!((sent[0].kind, sent[0].event), (Kind::RunFailed, Event::Opened));
    assert!(a.evaluate().await.unwrap().is_empty(), "not one per evaluation");

    // A second failed run of the same job is the same incident.
    s.run_tick(JobName::Fetch, tick("2026-01-02T00:00:00Z"))
        .await
        .unwrap();
    assert!(b.evaluate().await.unwrap().is_empty());

    assert!(eventually(Duration::from_secs(10), || async { receiver.bodies().len() == 1 }).await);
    let body = &receiver.bodies()[0];
    assert_eq!(body["event"], "opened");
    assert_eq!(body["kind"], "run_failed");
    assert_eq!(body["job"], "fetch");
    assert_eq!(body["run_id"], run_ids[1]);
    assert_eq!(body["status"], "failed");
    assert_eq!(body["error"], "upstream said no");
    assert_eq!(body["link"], "https://dash.example/");
    assert!(
        body["opened_at"].is_string() && body["resolved_at"].is_null(),
        "{body}"
    );
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("fetch failed after its retries") && text.contains("upstream said no"),
        "{text}"
    );

    fail.store(false, Ordering::SeqCst);
    let out = s
        .run_tick(JobName::Fetch, tick("2026-01-03T00:00:00Z"))
        .await
        .unwrap();
    assert!(
        matches!(
            out,
            TickOutcome::Ran {
                status: RunStatus::Succeeded,
                ..
            }
        ),
        "{out:?}"
    );
    let (x, y) = tokio::join!(a.evaluate(), b.evaluate());
    let sent: Vec<_> = x.unwrap().into_iter().chain(y.unwrap()).collect();
    assert_eq!(sent.len(), 1, "one resolved message: {sent:?}");
    assert_eq!(sent[0].event, Event::Resolved);
    assert!(a.evaluate().await.unwrap().is_empty());

    assert!(eventually(Duration::from_secs(10), || async { receiver.bodies().len() == 2 }).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 2, "exactly one alert and one resolved: {bodies:?}");
    let resolved = &bodies[1];
    assert_eq!(resolved["event"], "resolved");
    assert_eq!(resolved["status"], "succeeded");
    assert_eq!(resolved["incident_id"], body["incident_id"]);
    assert!(resolved["resolved_at"].is_string());
    assert!(
        resolved["text"]
            .as_str()
            .unwrap()
            .contains("fetch succeeded again"),
        "{resolved}"
    );

    let deliveries = texts(
        &ctx,
        "SELECT concat_ws(' ', event, url, attempt, http_status) FROM alert_deliveries ORDER BY id",
    )
    .await;
    let origin = receiver.base.clone();
    assert_eq!(
        deliveries,
        [
            format!("opened {origin} 1 200"),
            format!("resolved {origin} 1 200")
        ]
    );
    assert!(!stored_text(&ctx).await.contains(TOKEN));
    let logged = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(logged.contains("alert delivered"), "the log is captured");
    assert!(!logged.contains(TOKEN), "the token is in the log");
    stop.cancel();
}

#[tokio::test]
async fn a_webhook_that_answers_503_is_retried_until_it_takes_the_alert_and_each_attempt_is_recorded() {
    let ctx = TestContext::new().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[503, 503]);
    let config = alerting(&ctx, &receiver.url());
    let stop = CancellationToken::new();
    let alerts = Alerts::start(&config, ctx.db.clone(), &stop).unwrap().unwrap();
    ctx.db
        .execute_unprepared(
            r#"INSERT INTO job_runs (job, "trigger", status, finished_at, error, details)
               VALUES ('analytics', 'manual', 'failed', now(), 'too few samples', '{"final": true}')"#,
        )
        .await
        .unwrap();
    let sent = alerts.evaluate().await.unwrap();
    assert_eq!(sent.len(), 1);

    let recorded = || async {
        texts(
            &ctx,
            "SELECT concat_ws(' ', attempt, http_status, error) FROM alert_deliveries ORDER BY id",
        )
        .await
    };
    assert!(eventually(Duration::from_secs(10), || async { recorded().await.len() == 3 }).await);
    assert_eq!(
        recorded().await,
        [
            "1 503 HTTP 503 Service Unavailable",
            "2 503 HTTP 503 Service Unavailable",
            "3 200"
        ]
    );
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 3);
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "the same message each time"
    );
    assert_eq!(bodies[0]["job"], "analytics");
    stop.cancel();
}

#[tokio::test]
async fn a_webhook_that_never_answers_leaves_the_schedule_on_time() {
    let log = captured_log();
    let ctx = TestContext::new().await;
    // Accepts connections (the kernel's backlog) and never answers a request.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/{TOKEN}", silent.local_addr().unwrap());
    let mut config = alerting(&ctx, &url);
    config.alerts.evaluate_every_secs = 1;
    config.alerts.delivery_timeout_secs = 1;
    config.alerts.delivery_attempts = 2;
    let stop = CancellationToken::new();
    let alerts = Alerts::start(&config, ctx.db.clone(), &stop).unwrap().unwrap();
    let fail = Arc::new(AtomicBool::new(true));
    let s = Scheduler::new(
        ctx.db.clone(),
        vec![switchable(fail, "cron = \"* * * * * *\"\nretries = 0")],
        options(),
    );
    let started = Utc::now();
    let alerting = tokio::spawn(alerts.run(stop.clone()));
    let scheduling = tokio::spawn(s.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(5500)).await;
    stop.cancel();
    scheduling.await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(5), alerting)
        .await
        .expect("alerts stop")
        .unwrap();

    // Every second's tick ran, each within a second of its time, while the alert hung.
    let late = texts(
        &ctx,
        "SELECT (extract(epoch FROM started_at - (details->>'tick')::timestamptz) * 1000)::bigint::text \
         FROM job_runs ORDER BY id",
    )
    .await;
    assert!(late.len() >= 4, "ticks in 5.5 s: {late:?}");
    assert!(
        late.iter().all(|ms| ms.parse::<i64>().unwrap() < 1500),
        "late ticks (ms): {late:?}"
    );
    let errors = texts(
        &ctx,
        "SELECT concat_ws(' ', attempt, http_status, error) FROM alert_deliveries ORDER BY id",
    )
    .await;
    assert_eq!(
        errors,
        ["1 no answer within 1 s", "2 no answer within 1 s"],
        "since {started}"
    );
    let opened = texts(
        &ctx,
        "SELECT kind FROM alert_incidents WHERE opened_at IS NOT NULL",
    )
    .await;
    assert_eq!(opened, ["run_failed"]);
    assert!(!stored_text(&ctx).await.contains(TOKEN));
    let logged = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(
        logged.contains("alert not delivered; giving up"),
        "the log is captured"
    );
    assert!(!logged.contains(TOKEN), "the token is in the log");
    drop(silent);
}

#[tokio::test]
async fn consumer_lag_opens_after_its_duration_and_resolves_once_consumed() {
    let ctx = TestContext::new().await;
    let receiver = Receiver::start().await;
    let mut config = alerting(&ctx, &receiver.url());
    config.alerts.lag_max_records = Some(5);
    config.alerts.lag_for_secs = 2;
    let stop = CancellationToken::new();
    let alerts = Alerts::start(&config, ctx.db.clone(), &stop).unwrap().unwrap();
    let k = &ctx.config.kafka;
    // No topic yet: no lag to judge.
    assert!(alerts.evaluate().await.unwrap().is_empty());
    weatherflow::kafka::ensure_topic(k, &k.observations_topic, 3)
        .await
        .unwrap();
    let producer = weatherflow::kafka::producer(k).unwrap();
    for i in 0..8 {
        let payload = format!("m{i}");
        producer
            .send(
                FutureRecord::<(), _>::to(&k.observations_topic)
                    .partition(i % 3)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    // Above the bound, but not yet for long enough: pending, nothing sent.
    assert!(alerts.evaluate().await.unwrap().is_empty());
    let pending = texts(&ctx, "SELECT kind FROM alert_incidents WHERE opened_at IS NULL").await;
    assert_eq!(pending, ["consumer_lag"]);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let sent = alerts.evaluate().await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].kind, sent[0].event), (Kind::ConsumerLag, Event::Opened));
    assert_eq!(sent[0].subject, k.consumer_group);
    assert_eq!(sent[0].details["lag"], 8);

    // The group consumes everything.
    let group: BaseConsumer = weatherflow::kafka::base_config(k)
        .set("group.id", &k.consumer_group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        let (_, high) = group
            .fetch_watermarks(&k.observations_topic, p, Duration::from_secs(10))
            .unwrap();
        tpl.add_partition_offset(&k.observations_topic, p, Offset::Offset(high))
            .unwrap();
    }
    group.commit(&tpl, CommitMode::Sync).unwrap();
    let sent = alerts.evaluate().await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].event, Event::Resolved);
    assert!(alerts.evaluate().await.unwrap().is_empty());

    assert!(eventually(Duration::from_secs(10), || async { receiver.bodies().len() == 2 }).await);
    let bodies = receiver.bodies();
    assert_eq!(bodies[0]["kind"], "consumer_lag");
    assert_eq!(bodies[0]["job"], Value::Null);
    assert_eq!(bodies[1]["event"], "resolved");
    stop.cancel();
}

#[tokio::test]
async fn the_quarantine_rate_and_a_database_refusing_writes_open_and_resolve() {
    let ctx = TestContext::new().await;
    let receiver = Receiver::start().await;
    let mut config = alerting(&ctx, &receiver.url());
    config.alerts.quarantine_max_ratio = Some(0.05);
    config.alerts.quarantine_min_records = 50;
    config.alerts.outage_for_secs = 0;
    let stop = CancellationToken::new();
    let alerts = Alerts::start(&config, ctx.db.clone(), &stop).unwrap().unwrap();
    let observations = |n: i64, first: i64| {
        format!(
            "INSERT INTO observations (location_key, location_name, region, country, lat, lon, observed_at, \
             temp_c, wind_kph, source, fetched_at) \
             SELECT 'k|' || g, 'k', 'r', 'c', 0, 0, now() - interval '1 minute', 1, 1, 'simulated', now() \
             FROM generate_series({first}, {first} + {n} - 1) g"
        )
    };
    let rejected = |n: i64, first: i64| {
        format!(
            "INSERT INTO rejected_records (kafka_topic, kafka_partition, kafka_offset, payload, error_class, reason) \
             SELECT 't', 0, g, 'x'::bytea, 'invalid_json', 'test' FROM generate_series({first}, {first} + {n} - 1) g"
        )
    };
    // 3 of 40: too few records to judge.
    ctx.db.execute_unprepared(&observations(37, 0)).await.unwrap();
    ctx.db.execute_unprepared(&rejected(3, 0)).await.unwrap();
    assert!(alerts.evaluate().await.unwrap().is_empty());
    // 3 of 60 (5 %) is at the bound; 6 of 63 is above it.
    ctx.db.execute_unprepared(&observations(20, 100)).await.unwrap();
    assert!(alerts.evaluate().await.unwrap().is_empty());
    ctx.db.execute_unprepared(&rejected(3, 100)).await.unwrap();
    let sent = alerts.evaluate().await.unwrap();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        (sent[0].kind, sent[0].event),
        (Kind::QuarantineRate, Event::Opened)
    );
    assert_eq!(sent[0].details["rejected"], 6);
    assert_eq!(sent[0].details["total"], 63);
    // Stored records dilute it below the bound.
    ctx.db.execute_unprepared(&observations(100, 1000)).await.unwrap();
    let sent = alerts.evaluate().await.unwrap();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        (sent[0].kind, sent[0].event),
        (Kind::QuarantineRate, Event::Resolved)
    );

    // The database refuses the writers' inserts (a revoked grant), then takes them again.
    ctx.db
        .execute_unprepared("REVOKE INSERT ON observations FROM CURRENT_USER")
        .await
        .unwrap();
    let sent = alerts.evaluate().await.unwrap();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        (sent[0].kind, sent[0].event),
        (Kind::DatabaseOutage, Event::Opened)
    );
    assert!(
        sent[0].summary.contains("no INSERT privilege on observations"),
        "{}",
        sent[0].summary
    );
    assert!(alerts.evaluate().await.unwrap().is_empty());
    ctx.db
        .execute_unprepared("GRANT INSERT ON observations TO CURRENT_USER")
        .await
        .unwrap();
    let sent = alerts.evaluate().await.unwrap();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        (sent[0].kind, sent[0].event),
        (Kind::DatabaseOutage, Event::Resolved)
    );

    assert!(eventually(Duration::from_secs(10), || async { receiver.bodies().len() == 4 }).await);
    let kinds: Vec<String> = receiver
        .bodies()
        .iter()
        .map(|b| format!("{} {}", b["kind"].as_str().unwrap(), b["event"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            "quarantine_rate opened",
            "quarantine_rate resolved",
            "database_outage opened",
            "database_outage resolved"
        ]
    );
    stop.cancel();
}

#[tokio::test]
async fn the_config_command_shows_a_webhook_as_its_origin_only() {
    let ctx = TestContext::new().await;
    let dir = common::scratch_dir("alerts-config");
    let url = format!("https://hooks.example.com/services/{TOKEN}");
    let env = ctx.child_env_with(&[("WEATHERFLOW_ALERTS_WEBHOOK_URLS", url.as_str())]);
    let (ok, out, err) = common::run_cli(&dir, &["config"], &env).await;
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.contains("alerts.webhook_urls") && !l.contains("_file"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("https://hooks.example.com"), "{line}");
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN), "{out}{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn two_scheduler_processes_send_one_alert_for_a_failing_fetch_and_never_log_the_url() {
    use nix::sys::signal::Signal::SIGTERM;
    let ctx = TestContext::new().await;
    let receiver = Receiver::start().await;
    let dir = common::scratch_dir("wf-alerts");
    let path = dir.join("schedules.toml");
    // Every second, a WeatherAPI fetch against a port nothing listens on: each run fails after its
    // retry.
    std::fs::write(
        &path,
        "[fetch]\ncron = \"* * * * * *\"\ntimeout_secs = 20\nretries = 1\nretry_backoff_secs = 1\n\
         [fetch.args]\nsource = \"weatherapi\"\nlocations = [\"London\"]\n\
         [analytics]\ncron = \"0 0 2 * * *\"\nenabled = false\n",
    )
    .unwrap();
    let url = receiver.url();
    let schedules = path.display().to_string();
    let env = ctx.child_env_with(&[
        ("WEATHERFLOW_SCHEDULER_SCHEDULES_PATH", &schedules),
        ("WEATHERFLOW_WEATHERAPI_BASE_URL", "http://127.0.0.1:1/v1"),
        ("WEATHERFLOW_WEATHERAPI_MAX_ATTEMPTS", "1"),
        ("WEATHERAPI_KEY", "test-key"),
        ("WEATHERFLOW_ALERTS_WEBHOOK_URLS", &url),
        ("WEATHERFLOW_ALERTS_EVALUATE_EVERY_SECS", "1"),
        ("RUST_LOG", "debug,sqlx=warn,sea_orm=warn,rdkafka=warn"),
    ]);
    let with_name = |name: &str| {
        let mut e = env.clone();
        e.push(("WEATHERFLOW_SCHEDULER_REPLICA".into(), name.into()));
        e
    };
    let mut a = common::spawn(&dir, "a", &["scheduler", "--no-consumer"], &with_name("a"));
    let mut b = common::spawn(&dir, "b", &["scheduler", "--no-consumer"], &with_name("b"));
    let finals = "SELECT count(*) FROM job_runs WHERE details->>'final' = 'true'";
    let failed_thrice = eventually(Duration::from_secs(40), || async {
        ctx.scalar_i64(finals).await >= 3
    })
    .await;
    // Both replicas have evaluated since the third failure.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    common::signal(&a, SIGTERM);
    common::signal(&b, SIGTERM);
    let (ea, eb) = (
        common::exit_within(&mut a, Duration::from_secs(15)).await,
        common::exit_within(&mut b, Duration::from_secs(15)).await,
    );
    let logs = format!(
        "--- a ---\n{}\n--- b ---\n{}",
        common::log_of(&dir, "a"),
        common::log_of(&dir, "b")
    );
    assert!(
        failed_thrice,
        "three runs should have failed after their retries\n{logs}"
    );
    assert!(
        ea.is_some_and(|s| s.success()) && eb.is_some_and(|s| s.success()),
        "{ea:?} {eb:?}\n{logs}"
    );

    let bodies = receiver.bodies();
    assert_eq!(
        bodies.len(),
        1,
        "one alert for the incident, from one replica: {bodies:#?}"
    );
    assert_eq!(bodies[0]["kind"], "run_failed");
    assert_eq!(bodies[0]["job"], "fetch");
    assert_eq!(bodies[0]["status"], "failed");
    assert!(
        logs.contains("alerts on") && logs.contains("alert delivered"),
        "{logs}"
    );
    assert!(!logs.contains(TOKEN), "the webhook's token is in a log");
    assert!(!stored_text(&ctx).await.contains(TOKEN));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_auto_pause_stale_data_and_the_quota_near_its_budget_each_alert_once_and_resolve_once() {
    let ctx = TestContext::new().await;
    let receiver = Receiver::start().await;
    let mut config = alerting(&ctx, &receiver.url());
    config.analytics.max_staleness_secs = 3600;
    config.weatherapi.monthly_call_budget = Some(100);
    let stop = CancellationToken::new();
    let alerts = Alerts::start(&config, ctx.db.clone(), &stop).unwrap().unwrap();
    let exec = |sql: String| {
        let db = ctx.db.clone();
        async move { db.execute_unprepared(&sql).await.expect("test SQL") }
    };
    let one = |sent: Vec<weatherflow::alerts::Message>| {
        assert_eq!(sent.len(), 1, "{sent:?}");
        (
            sent[0].kind,
            sent[0].event,
            sent[0].subject.clone(),
            sent[0].summary.clone(),
        )
    };
    // Nothing paused, no observation, 0 of 100 calls: nothing to say.
    assert!(alerts.evaluate().await.unwrap().is_empty());

    // A person's pause is not an incident; the scheduler's auto-pause is, once, until resumed.
    pause::pause(
        &ctx.db,
        JobName::Analytics,
        "alice",
        Some("maintenance window"),
        false,
    )
    .await
    .unwrap();
    assert!(alerts.evaluate().await.unwrap().is_empty());
    pause::pause(
        &ctx.db,
        JobName::Fetch,
        pause::AUTO,
        Some("3 runs in a row failed; the last: HTTP 401"),
        true,
    )
    .await
    .unwrap();
    let (kind, event, subject, summary) = one(alerts.evaluate().await.unwrap());
    assert_eq!(
        (kind, event, subject.as_str()),
        (Kind::AutoPaused, Event::Opened, "fetch")
    );
    assert!(
        summary.contains("HTTP 401") && summary.contains("weatherflow resume fetch"),
        "{summary}"
    );
    assert!(
        alerts.evaluate().await.unwrap().is_empty(),
        "one alert per incident"
    );
    pause::resume(&ctx.db, JobName::Fetch, "bob").await.unwrap();
    let (kind, event, ..) = one(alerts.evaluate().await.unwrap());
    assert_eq!((kind, event), (Kind::AutoPaused, Event::Resolved));

    // The newest observation is 2 hours old against a bound of 1 hour; a new one makes it fresh.
    let observation = |age: &str, key: &str| {
        format!(
            "INSERT INTO observations (location_key, location_name, region, country, lat, lon, observed_at, \
             temp_c, wind_kph, source, fetched_at) VALUES ('{key}', 'k', 'r', 'c', 0, 0, now() - interval '{age}', \
             1, 1, 'simulated', now())"
        )
    };
    exec(observation("2 hours", "k|1")).await;
    let (kind, event, subject, summary) = one(alerts.evaluate().await.unwrap());
    assert_eq!(
        (kind, event, subject.as_str()),
        (Kind::StaleData, Event::Opened, "observations/simulated")
    );
    assert!(summary.contains("max_staleness_secs = 3600"), "{summary}");
    assert!(alerts.evaluate().await.unwrap().is_empty());
    exec(observation("1 minute", "k|2")).await;
    let (kind, event, ..) = one(alerts.evaluate().await.unwrap());
    assert_eq!((kind, event), (Kind::StaleData, Event::Resolved));

    // 79 of 100 calls: under 80 %; 80: the alert; back under (a new month's count): resolved.
    let calls = |n: i64| {
        format!(
            "INSERT INTO api_calls (month, endpoint, calls) \
             VALUES (date_trunc('month', now() AT TIME ZONE 'UTC')::date, 'current', {n}) \
             ON CONFLICT (month, endpoint) DO UPDATE SET calls = EXCLUDED.calls"
        )
    };
    exec(calls(79)).await;
    assert!(alerts.evaluate().await.unwrap().is_empty());
    exec(calls(80)).await;
    let (kind, event, subject, summary) = one(alerts.evaluate().await.unwrap());
    assert_eq!(
        (kind, event, subject.as_str()),
        (Kind::ApiQuota, Event::Opened, "weatherapi")
    );
    assert!(
        summary.contains("80 of this month's 100") && summary.contains("20 remain"),
        "{summary}"
    );
    exec(calls(5)).await;
    let (kind, event, ..) = one(alerts.evaluate().await.unwrap());
    assert_eq!((kind, event), (Kind::ApiQuota, Event::Resolved));

    // Every message reached the webhook, in order.
    assert!(eventually(Duration::from_secs(10), || async { receiver.bodies().len() == 6 }).await);
    let kinds: Vec<String> = receiver
        .bodies()
        .iter()
        .map(|b| format!("{} {}", b["kind"].as_str().unwrap(), b["event"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            "job_auto_paused opened",
            "job_auto_paused resolved",
            "data_not_fresh opened",
            "data_not_fresh resolved",
            "api_quota opened",
            "api_quota resolved"
        ]
    );
    stop.cancel();
}
