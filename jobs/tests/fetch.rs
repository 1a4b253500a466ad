//! The fetch job against the real broker and a local WeatherAPI stub: messages, retries, fail-fast
//! key errors, per-location failures, bulk, key redaction, the simulated source, shutdown.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::TestContext;
use common::weatherapi_stub::{self, Failure, WeatherApiStub};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use weatherflow::config::Config;
use weatherflow::envelope::{Envelope, location_key};
use weatherflow::job_error::JobErrorKind;
use weatherflow::jobs::fetch::{self, FetchRequest, FetchSummary, LocationStatus, SourceChoice};
use weatherflow::runs::Report;

/// The test context's configuration pointed at `stub` with short timeouts and backoffs.
fn api_config(ctx: &TestContext, stub: &WeatherApiStub) -> Config {
    let mut config = ctx.config.clone();
    let w = &mut config.weatherapi;
    w.base_url = stub.base_url.clone();
    w.api_key = Some(SecretString::from(weatherapi_stub::KEY));
    w.key_file = None;
    w.timeout_secs = 1;
    w.max_attempts = 4;
    w.backoff_initial_ms = 10;
    w.backoff_max_ms = 50;
    w.max_total_secs = 10;
    w.bulk = false;
    w.aqi = false;
    config.fetch.rate_per_sec = 0.0;
    config
}

fn request(locations: &[&str]) -> FetchRequest {
    FetchRequest {
        locations: locations.iter().map(|l| l.to_string()).collect(),
        source: SourceChoice::Weatherapi,
        seed: None,
        concurrency: None,
        backfill_hours: None,
        history: None,
    }
}

async fn fetch_ok(config: &Config, req: FetchRequest) -> FetchSummary {
    fetch::run(config, req, CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("fetch failed: {e:#}"))
}

fn envelope(bytes: &[u8]) -> Envelope {
    serde_json::from_slice(bytes).expect("an envelope")
}

fn outcome<'a>(summary: &'a FetchSummary, q: &str) -> &'a fetch::LocationOutcome {
    summary.locations.iter().find(|o| o.query == q).unwrap()
}

fn stub_key(stub: &WeatherApiStub, q: &str) -> String {
    let (name, region, country) = stub.fixture(q).names();
    location_key(&name, &region, &country)
}

#[tokio::test]
async fn produces_one_message_per_location_with_the_served_body_verbatim() {
    let ctx = TestContext::new().await;
    let stub = WeatherApiStub::start().await;
    let mut config = api_config(&ctx, &stub);
    config.weatherapi.aqi = true;
    let before = Utc::now();

    let summary = fetch_ok(&config, request(&["London", "Roswell", "New Delhi"])).await;

    assert_eq!((summary.records_in(), summary.records_out()), (Some(3), Some(3)));
    assert!(
        summary
            .locations
            .iter()
            .all(|o| o.status == LocationStatus::Ok && o.attempts == 1)
    );
    assert_eq!(summary.details()["locations"].as_array().unwrap().len(), 3);
    let messages = common::topic_messages(&config).await;
    assert_eq!(messages.len(), 3);
    for q in ["London", "Roswell", "New Delhi"] {
        let (key, bytes) = messages
            .iter()
            .find(|(_, b)| envelope(b).query == q)
            .unwrap_or_else(|| panic!("no message for {q}"));
        assert_eq!(key, &stub_key(&stub, q));
        let env = envelope(bytes);
        assert_eq!(env.schema_version, 1);
        assert_eq!(env.source, weatherflow::envelope::Source::Weatherapi);
        assert!(env.fetched_at >= before && env.fetched_at <= Utc::now());
        assert_eq!(
            env.payload.get(),
            stub.fixture(q).body(true),
            "payload of {q} is byte-equal"
        );
        assert!(String::from_utf8_lossy(bytes).contains("\"source\":\"weatherapi\""));
    }
    assert!(
        stub.requests()
            .iter()
            .all(|r| r.aqi.as_deref() == Some("yes") && r.method == "GET")
    );
    assert_eq!(
        key_of(&messages, "London"),
        "london|city of london, greater london|united kingdom"
    );
}

fn key_of(messages: &[(String, Vec<u8>)], q: &str) -> String {
    messages
        .iter()
        .find(|(_, b)| envelope(b).query == q)
        .unwrap()
        .0
        .clone()
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_with_retry_after_honoured() {
    let ctx = TestContext::new().await;
    let stub = WeatherApiStub::start().await;
    let mut config = api_config(&ctx, &stub);
    config.weatherapi.max_attempts = 3;
    stub.fail_next("London", 2, Failure::Status(503));
    stub.fail_next(
        "New Delhi",
        1,
        Failure::RateLimited {
            retry_after_secs: Some(1),
        },
    );
    stub.fail_next("Roswell", 10, Failure::Status(502));

    let summary = fetch_ok(&config, request(&["London", "New Delhi", "Roswell"])).await;

    let london = outcome(&summary, "London");
    assert_eq!((london.status, london.attempts), (LocationStatus::Ok, 3));
    assert_eq!(stub.requests_for("London").len(), 3);
    let delhi = outcome(&summary, "New Delhi");
    assert_eq!((delhi.status, delhi.attempts), (LocationStatus::Ok, 2));
    let delhi_requests = stub.requests_for("New Delhi");
    let gap = delhi_requests[1].at.duration_since(delhi_requests[0].at);
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 honoured, waited {gap:?}"
    );
    let roswell = outcome(&summary, "Roswell");
    assert_eq!((roswell.status, roswell.attempts), (LocationStatus::Failed, 3));
    assert!(
        roswell.reason.as_deref().unwrap().contains("HTTP 502"),
        "{roswell:?}"
    );
    assert_eq!(stub.requests_for("Roswell").len(), 3, "bounded attempts");
    assert_eq!(summary.produced, 2);
    assert_eq!(common::topic_messages(&config).await.len(), 2);
}

#[tokio::test]
async fn key_and_account_errors_fail_fast_without_retry() {
    let ctx = TestContext::new().await;
    let cases = [
        ("wrong-key-123", "rejected the API key (code 2006"),
        (weatherapi_stub::QUOTA_KEY, "monthly call quota (code 2007"),
        (weatherapi_stub::DISABLED_KEY, "disabled (code 2008"),
    ];
    for (key, want) in cases {
        let stub = WeatherApiStub::start().await;
        let mut config = api_config(&ctx, &stub);
        config.weatherapi.api_key = Some(SecretString::from(key));
        let mut req = request(&["London", "Roswell", "New Delhi"]);
        req.concurrency = Some(1);
        let err = fetch::run(&config, req, CancellationToken::new())
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains(want), "{key}: {text}");
        assert_eq!(
            err.kind(),
            JobErrorKind::Fatal,
            "{key}: the scheduler must not retry it"
        );
        assert_eq!(stub.requests().len(), 1, "{key}: exactly one request, no retry");
    }

    // Bulk on a free-plan key: 2009, also fatal.
    let stub = WeatherApiStub::start().await;
    let mut config = api_config(&ctx, &stub);
    config.weatherapi.api_key = Some(SecretString::from(weatherapi_stub::FREE_PLAN_KEY));
    config.weatherapi.bulk = true;
    let err = fetch::run(&config, request(&["London", "Roswell"]), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("code 2009"), "{err:#}");
    assert_eq!(stub.requests().len(), 1);

    // No key at all with --source weatherapi: refused before any request.
    let stub = WeatherApiStub::start().await;
    let mut config = api_config(&ctx, &stub);
    config.weatherapi.api_key = None;
    let err = fetch::run(&config, request(&["London"]), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("WEATHERAPI_KEY"), "{err:#}");
    assert!(stub.requests().is_empty());
    assert!(common::topic_messages(&config).await.is_empty());
}

#[tokio::test]
async fn an_unknown_location_or_a_bad_body_fails_alone() {
    let ctx = TestContext::new().await;
    let stub = WeatherApiStub::start().await;
    let mut config = api_config(&ctx, &stub);
    // Two of three failed is over the default bound; this test is about each failing alone.
    config.fetch.max_failed_ratio = 1.0;
    stub.fail_next("Roswell", 1, Failure::Garbage("<html>maintenance</html>"));

    let summary = fetch_ok(&config, request(&["London", "Atlantis", "Roswell"])).await;

    let atlantis = outcome(&summary, "Atlantis");
    assert_eq!((atlantis.status, atlantis.attempts), (LocationStatus::Failed, 1));
    assert!(
        atlantis.reason.as_deref().unwrap().contains("code 1006"),
        "{atlantis:?}"
    );
    let roswell = outcome(&summary, "Roswell");
    assert_eq!((roswell.status, roswell.attempts), (LocationStatus::Failed, 1));
    assert!(
        roswell.reason.as_deref().unwrap().contains("unparsable"),
        "{roswell:?}"
    );
    assert_eq!(outcome(&summary, "London").status, LocationStatus::Ok);
    assert_eq!((summary.records_in(), summary.records_out()), (Some(3), Some(1)));
    assert_eq!(summary.details()["failed"], 2);
    let messages = common::topic_messages(&config).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].0, stub_key(&stub, "London"));

    // A run where nothing could be fetched fails, naming each location.
    let err = fetch::run(&config, request(&["Atlantis"]), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("Atlantis=failed/1"), "{err:#}");
}

#[tokio::test]
async fn a_run_with_more_than_max_failed_ratio_of_its_locations_failed_fails_naming_each() {
    let ctx = TestContext::new().await;
    let stub = WeatherApiStub::start().await;
    let dir = common::scratch_dir("fetch-ratio");
    let unknown: Vec<String> = (1..=11).map(|i| format!("Nowhere{i}")).collect();
    let mut args = vec!["run", "fetch", "--source", "weatherapi", "--location", "London"];
    for q in &unknown {
        args.extend(["--location", q.as_str()]);
    }
    let env = ctx.child_env_with(&[
        ("WEATHERAPI_KEY", weatherapi_stub::KEY),
        ("WEATHERFLOW_WEATHERAPI_BASE_URL", &stub.base_url),
        ("WEATHERFLOW_FETCH_RATE_PER_SEC", "0"),
    ]);

    let (ok, _, stderr) = common::run_cli(&dir, &args, &env).await;

    assert!(!ok, "11 of 12 locations failed, yet the run succeeded:\n{stderr}");
    let log_line = stderr
        .lines()
        .find(|l| l.contains("fetch stopped"))
        .unwrap_or_else(|| panic!("no fetch summary line in\n{stderr}"));
    let status = ctx
        .scalar_text("SELECT status::text FROM job_runs WHERE job = 'fetch' ORDER BY id DESC LIMIT 1")
        .await;
    assert_eq!(status, "failed");
    let error = ctx
        .scalar_text("SELECT error FROM job_runs WHERE job = 'fetch' ORDER BY id DESC LIMIT 1")
        .await;
    assert!(error.contains("11 of 12 locations failed"), "{error}");
    let (ok, out, err) = common::run_cli(&dir, &["status"], &env).await;
    assert!(ok, "{err}");
    for q in &unknown {
        assert!(
            log_line.contains(q.as_str()),
            "{q} not in the log line: {log_line}"
        );
        assert!(error.contains(q.as_str()), "{q} not in the run's error: {error}");
        assert!(out.contains(q.as_str()), "{q} not in status:\n{out}");
    }
    assert_eq!(stub.requests_for("London").len(), 1);

    // Within the bound (1 of 12), the run succeeds, and status still names the failed location.
    let args = [
        "run",
        "fetch",
        "--source",
        "weatherapi",
        "--location",
        "London",
        "--location",
        "Nowhere1",
    ];
    let (ok, _, stderr) = common::run_cli(&dir, &args, &env).await;
    assert!(ok, "{stderr}");
    let (ok, out, err) = common::run_cli(&dir, &["status"], &env).await;
    assert!(ok, "{err}");
    assert!(out.contains("Nowhere1: ") && out.contains("code 1006"), "{out}");
}

#[tokio::test]
async fn a_timeout_is_retried() {
    let ctx = TestContext::new().await;
    let stub = WeatherApiStub::start().await;
    let config = api_config(&ctx, &stub);
    stub.fail_next("London", 1, Failure::Delay(Duration::from_millis(2500)));

    let summary = fetch_ok(&config, request(&["London"])).await;

    let london = outcome(&summary, "London");
    assert_eq!((london.status, london.attempts), (LocationStatus::Ok, 2));
    assert_eq!(stub.requests_for("London").len(), 2);
    let messages = common::topic_messages(&config).await;
    assert_eq!(
        envelope(&messages[0].1).payload.get(),
        stub.fixture("London").body(false)
    );
}

#[tokio::test]
async fn bulk_mode_batches_locations_and_slices_payloads_byte_exact() {
    let ctx = TestContext::new().await;
    let stub = WeatherApiStub::start().await;
    let mut config = api_config(&ctx, &stub);
    config.weatherapi.bulk = true;
    config.weatherapi.bulk_batch_size = 2;
    stub.fail_next("bulk", 1, Failure::Status(503));
    let queries = ["London", "Roswell", "Atlantis", "New Delhi", "53,-0.12"];
    let mut req = request(&queries);
    req.concurrency = Some(1);

    let summary = fetch_ok(&config, req).await;

    let posts = stub.requests();
    assert!(
        posts
            .iter()
            .all(|r| r.method == "POST" && r.q.as_deref() == Some("bulk"))
    );
    assert_eq!(posts.len(), 4, "3 batches of <= 2, the first retried once");
    let first: serde_json::Value = serde_json::from_str(posts[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(first["locations"][0]["q"], "London");
    assert_eq!(first["locations"].as_array().unwrap().len(), 2);
    assert_eq!(outcome(&summary, "London").attempts, 2);
    assert_eq!(outcome(&summary, "53,-0.12").attempts, 1);
    let atlantis = outcome(&summary, "Atlantis");
    assert_eq!(atlantis.status, LocationStatus::Failed);
    assert!(atlantis.reason.as_deref().unwrap().contains("code 1006"));
    assert_eq!(summary.produced, 4);
    assert_eq!(summary.details()["mode"], "bulk");

    let messages = common::topic_messages(&config).await;
    assert_eq!(messages.len(), 4);
    for q in ["London", "Roswell", "New Delhi", "53,-0.12"] {
        let (key, bytes) = messages.iter().find(|(_, b)| envelope(b).query == q).unwrap();
        assert_eq!(key, &stub_key(&stub, q));
        // The per-location {location,current} of the bulk body, sliced byte for byte.
        assert_eq!(envelope(bytes).payload.get(), stub.fixture(q).body(false), "{q}");
    }
}

/// A tracing writer into a shared buffer, to inspect what a run logged.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Captures everything logged on this thread (the test runtime is single-threaded), at every level,
/// including the `log` records of reqwest and hyper.
fn capture_logs() -> (LogBuffer, tracing::subscriber::DefaultGuard) {
    let _ = tracing_log::LogTracer::init();
    let buffer = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(buffer.clone())
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn the_api_key_never_appears_in_logs_or_errors() {
    let ctx = TestContext::new().await;
    let (logs, _guard) = capture_logs();
    let good = "wf-SECRET-good-7b1e9";
    let bad = "wf-SECRET-bad-c2d40";
    let stub = WeatherApiStub::start().await;
    stub.add_key(good, weatherapi_stub::KeyKind::Valid);
    stub.fail_next("London", 1, Failure::Status(503));
    stub.fail_next("Roswell", 1, Failure::Delay(Duration::from_millis(1500)));
    let mut config = api_config(&ctx, &stub);
    config.weatherapi.api_key = Some(SecretString::from(good));

    // A run with a retried 503, a timeout and an unknown location, and the summary logged.
    let summary = fetch_ok(&config, request(&["London", "Roswell", "Atlantis"])).await;
    assert_eq!(summary.produced, 2);
    assert!(!format!("{summary:?}").contains(good));

    // A rejected key.
    config.weatherapi.api_key = Some(SecretString::from(bad));
    let err = fetch::run(&config, request(&["London"]), CancellationToken::new())
        .await
        .unwrap_err();
    let shown = format!("{err:#} {err:?}");
    assert!(shown.contains("2006") && !shown.contains(bad), "{shown}");

    // Connection refused: reqwest's error carries the URL (with the key) unless stripped.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    config.weatherapi.base_url = format!("http://{closed}/v1");
    config.weatherapi.api_key = Some(SecretString::from(good));
    config.weatherapi.max_attempts = 2;
    let err = fetch::run(&config, request(&["London"]), CancellationToken::new())
        .await
        .unwrap_err();
    let shown = format!("{err:#} {err:?} {config:?}");
    assert!(
        shown.contains("Connection refused") && !shown.contains(good),
        "cause kept, key gone: {shown}"
    );

    let text = logs.text();
    assert!(
        text.contains("fetch finished") && text.contains("retrying"),
        "logs were captured: {text}"
    );
    assert!(text.contains("Atlantis=failed/1"), "the one-line summary: {text}");
    assert!(
        !text.contains(good) && !text.contains(bad),
        "key in logs:\n{text}"
    );
    assert!(!text.contains("SECRET"), "key in logs:\n{text}");
}

#[tokio::test]
async fn simulated_source_is_deterministic_and_marked() {
    use weatherflow::jobs::fetch::simulate;
    let t = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .with_timezone(&Utc)
    };
    let a = simulate::payload("Denver", t("2026-07-04T18:00:00Z"), 11);
    assert_eq!(
        a,
        simulate::payload("Denver", t("2026-07-04T18:14:59Z"), 11),
        "same seed and bucket"
    );
    assert_ne!(
        a,
        simulate::payload("Denver", t("2026-07-04T18:00:00Z"), 12),
        "another seed"
    );

    let ctx = TestContext::new().await;
    let (logs, _guard) = capture_logs();
    let mut config = ctx.config.clone();
    config.weatherapi.api_key = None;
    config.weatherapi.key_file = None;
    let req = FetchRequest {
        locations: vec!["London".into(), "Denver".into(), "48.8567,2.3508".into()],
        source: SourceChoice::Auto,
        seed: Some(11),
        concurrency: None,
        backfill_hours: None,
        history: None,
    };
    let first = fetch_ok(&config, req.clone()).await;
    let second = fetch_ok(&config, req).await;
    assert_eq!(first.source.as_str(), "simulated");
    assert_eq!((first.produced, second.produced), (3, 3));
    assert!(
        logs.text().contains("using the SIMULATED source"),
        "{}",
        logs.text()
    );

    let messages = common::topic_messages(&config).await;
    assert_eq!(messages.len(), 6);
    for (key, bytes) in &messages {
        let env = envelope(bytes);
        assert_eq!(env.source, weatherflow::envelope::Source::Simulated);
        assert!(String::from_utf8_lossy(bytes).contains("\"source\":\"simulated\""));
        assert_eq!(
            env.payload.get(),
            simulate::payload(&env.query, env.fetched_at, 11)
        );
        let place = simulate::place(&env.query);
        assert_eq!(key, &location_key(&place.name, &place.region, &place.country));
        let v: serde_json::Value = serde_json::from_str(env.payload.get()).unwrap();
        let observed = v["current"]["last_updated_epoch"].as_i64().unwrap();
        assert_eq!(observed % 900, 0, "observation time on the 15-minute grid");
        assert!(env.fetched_at.timestamp() - observed < 900);
    }
    // Both runs within one bucket produced the same observations, byte for byte.
    let bucket = |b: &[u8]| simulate::observation_time(envelope(b).fetched_at);
    if bucket(&messages[0].1) == messages.iter().map(|m| bucket(&m.1)).max().unwrap() {
        for (_, bytes) in &messages {
            let env = envelope(bytes);
            let twin = messages
                .iter()
                .filter(|(_, b)| !std::ptr::eq(b.as_slice(), bytes.as_slice()))
                .map(|(_, b)| envelope(b))
                .find(|e| e.query == env.query)
                .unwrap();
            assert_eq!(twin.payload.get(), env.payload.get());
        }
    }
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_then_stops() {
    let ctx = TestContext::new().await;
    let stub = WeatherApiStub::start().await;
    let mut config = api_config(&ctx, &stub);
    config.weatherapi.timeout_secs = 5;
    stub.fail_next("London", 1, Failure::Delay(Duration::from_millis(700)));
    let mut req = request(&["London", "Roswell", "New Delhi"]);
    req.concurrency = Some(1);
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        trigger.cancel();
    });
    let started = Instant::now();

    let err = fetch::run(&config, req, shutdown).await.unwrap_err();

    assert!(
        format!("{err:#}").contains("interrupted by shutdown: 1 of 3"),
        "{err:#}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(650),
        "London's request was finished"
    );
    assert_eq!(stub.requests().len(), 1, "nothing new started after the signal");
    let messages = common::topic_messages(&config).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].0, stub_key(&stub, "London"));
}

#[tokio::test]
async fn a_broker_that_is_down_costs_one_wave_of_requests_and_fails_retryable() {
    let ctx = TestContext::new().await;
    let stub = WeatherApiStub::start().await;
    let mut config = api_config(&ctx, &stub);
    // Nothing listens on port 1: the producer is created, the topic check times out.
    config.kafka.bootstrap_servers = "127.0.0.1:1".into();
    config.kafka.request_timeout_secs = 2;
    let places: Vec<String> = (0..20).map(|i| format!("London {i}")).collect();
    let mut req = request(&places.iter().map(String::as_str).collect::<Vec<_>>());
    req.concurrency = Some(4);
    let started = Instant::now();

    let err = fetch::run(&config, req, CancellationToken::new())
        .await
        .unwrap_err();

    assert_eq!(err.kind(), JobErrorKind::Retryable, "{err:#}");
    assert!(format!("{err:#}").contains("creating topic"), "{err:#}");
    let sent = stub.requests().len();
    assert!(
        (1..=4).contains(&sent),
        "the first wave overlaps the topic check, the rest waits for it: {sent} requests"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "queued messages are dropped, not awaited for the delivery timeout"
    );
    let report = err.report().expect("the run's partial report");
    assert_eq!(report.records_out, Some(0), "nothing reached the broker");
}

#[tokio::test]
async fn the_stub_answers_like_the_real_api() {
    let stub = WeatherApiStub::start().await;
    let http = reqwest::Client::new();
    let get = |query: &'static str, path: &'static str| {
        let url = format!("{}/{path}?{query}", stub.base_url);
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            (status, headers, r.text().await.unwrap())
        }
    };
    let code =
        |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap()["error"]["code"].as_i64();
    let key = weatherapi_stub::KEY;
    assert_eq!(key, "stub-valid-key-0001");
    let (s, _, b) = get("q=London", "current.json").await;
    assert_eq!((s, code(&b)), (401, Some(1002)));
    let (s, _, b) = get("key=&q=London", "current.json").await;
    assert_eq!((s, code(&b)), (401, Some(1002)));
    let (s, _, b) = get("key=nope&q=London", "current.json").await;
    assert_eq!((s, code(&b)), (401, Some(2006)));
    let (s, _, b) = get("key=stub-valid-key-0001", "current.json").await;
    assert_eq!((s, code(&b)), (400, Some(1003)));
    let (s, _, b) = get("key=stub-valid-key-0001&q=Nowhere", "current.json").await;
    assert_eq!((s, code(&b)), (400, Some(1006)));
    let (s, _, b) = get("key=stub-valid-key-0001&q=London", "nope.json").await;
    assert_eq!((s, code(&b)), (400, Some(1005)));
    let (s, h, b) = get("key=stub-valid-key-0001&q=51.5171%2C-0.1062", "current.json").await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["cache-control"], "public, max-age=180");
    assert!(h.contains_key("x-weatherapi-qpm-left"));
    assert_eq!(b, stub.fixture("London").body(false));
    assert!(!b.contains("air_quality") && b.contains("\"short_rad\":0"));
    let (_, _, b) = get(
        "key=stub-valid-key-0001&q=51.5171,-0.1062&aqi=yes",
        "current.json",
    )
    .await;
    assert!(b.contains("\"air_quality\":{\"co\":258.85"));
    let (s, _, b) = get("key=stub-valid-key-0001&q=Lon", "search.json").await;
    assert_eq!(s, 200);
    assert!(
        b.starts_with("[{\"id\":") && b.contains("\"name\":\"London\""),
        "{b}"
    );
    assert!(
        b.contains("\"url\":\"london-city-of-london-greater-london-united-kingdom\""),
        "{b}"
    );

    let post = |body: String| {
        let url = format!("{}/current.json?key={key}&q=bulk", stub.base_url);
        let http = http.clone();
        async move {
            let r = http.post(url).body(body).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (s, b) = post("{not json".into()).await;
    assert_eq!((s, code(&b)), (400, Some(9000)));
    let many: Vec<_> = (0..51).map(|_| serde_json::json!({"q": "London"})).collect();
    let (s, b) = post(serde_json::json!({ "locations": many }).to_string()).await;
    assert_eq!((s, code(&b)), (400, Some(9001)));
    let (s, b) = post(r#"{"locations":[{"q":"90201","custom_id":"x-1"},{"q":"London"}]}"#.into()).await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["bulk"][0]["query"]["custom_id"], "x-1");
    assert_eq!(v["bulk"][0]["query"]["location"]["name"], "Bell");
    assert!(
        v["bulk"][1]["query"].get("custom_id").is_none(),
        "custom_id echoed only when sent"
    );
}

#[tokio::test]
async fn simulated_backfill_produces_every_interval_and_refuses_the_api_source() {
    let ctx = TestContext::new().await;
    let req = FetchRequest {
        locations: vec!["London".into(), "Tokyo".into()],
        source: SourceChoice::Simulated,
        seed: Some(3),
        concurrency: None,
        backfill_hours: Some(2),
        history: None,
    };
    let summary = fetch_ok(&ctx.config, req.clone()).await;
    // 2 hours at one observation per 15 minutes, plus the current one: 9 per location.
    assert_eq!(summary.produced, 18);
    let messages = common::topic_messages(&ctx.config).await;
    assert_eq!(messages.len(), 18);
    let mut times: Vec<(String, i64)> = messages
        .iter()
        .map(|(key, value)| {
            let env = envelope(value);
            let body: serde_json::Value = serde_json::from_str(env.payload.get()).unwrap();
            (
                key.clone(),
                body["current"]["last_updated_epoch"].as_i64().unwrap(),
            )
        })
        .collect();
    times.sort();
    times.dedup();
    assert_eq!(times.len(), 18, "every message is a distinct observation");

    let api = FetchRequest {
        source: SourceChoice::Weatherapi,
        ..req
    };
    let mut config = ctx.config.clone();
    config.weatherapi.api_key = Some("some-key".to_owned().into());
    let err = fetch::run(&config, api, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("--backfill-hours needs the simulated source"),
        "{err:#}"
    );
}
