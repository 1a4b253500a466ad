//! The health faces every service serves. `/readyz` answers from state the process keeps
//! (`web::readiness`): probes cost no broker or database round trip, a stopped broker or a silent
//! database shows within the bound, and the answer names the failing check in words that carry no
//! address, user name or SQL error. HSTS goes out only when `web.behind_tls` says TLS is in front.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestContext;
use common::broker::OwnBroker;
use common::proxy::Proxy;
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use weatherflow::web::readiness::STALE_AFTER;

/// The user name given to the Kafka client: it must never reach an answer.
const KAFKA_USER: &str = "readyz-probe-user";

/// `GET /readyz`: the status code and the body.
async fn readyz(http: &reqwest::Client, base: &str) -> (u16, Value) {
    let resp = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON body"))
}

/// Threads of this test process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Polls `/readyz` every 200 ms until `check` of the body fails; returns the body and how long it
/// took, or panics after `within`.
async fn until_failing(
    http: &reqwest::Client,
    base: &str,
    check: &str,
    within: Duration,
) -> (Value, Duration) {
    let t0 = Instant::now();
    loop {
        let (status, body) = readyz(http, base).await;
        let failing = body["failing"]
            .as_array()
            .is_some_and(|f| f.iter().any(|c| c == check));
        if status == 503 && failing {
            return (body, t0.elapsed());
        }
        assert!(
            t0.elapsed() < within,
            "/readyz did not name {check} within {within:?}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_is_kept_state_and_names_failures_without_internals() {
    let ctx = TestContext::new().await;
    let broker = OwnBroker::start();
    let proxy = Proxy::to_database(&ctx.config.database).await;
    let mut config = ctx.config.clone();
    config.kafka.bootstrap_servers = broker.bootstrap();
    config.kafka.sasl_username = Some(KAFKA_USER.into());
    config.database = proxy.database_config(&ctx.config.database);
    let db = weatherflow::db::connect(&config.database).await.unwrap();
    let db_url = url::Url::parse(config.database.url.expose_secret()).unwrap();

    let shutdown = CancellationToken::new();
    let state = weatherflow::web::AppState::start(Arc::new(config), db, shutdown.clone(), None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(axum::serve(listener, weatherflow::web::ops_app(state)).into_future());
    let http = reqwest::Client::new();

    let mut ready = (0, Value::Null);
    for _ in 0..100 {
        ready = readyz(&http, &base).await;
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ready.0, 200, "{}", ready.1);
    assert_eq!(ready.1["status"], "ready");

    // Probes read kept state: 2,000 of them, 16 at a time, make no client, no thread and no round
    // trip (a probe used to build a librdkafka client and run two queries).
    let before = threads();
    let t0 = Instant::now();
    let mut most = before;
    for _ in 0..125 {
        let wave: Vec<_> = (0..16).map(|_| readyz(&http, &base)).collect();
        for (status, body) in futures::future::join_all(wave).await {
            assert_eq!(status, 200, "{body}");
        }
        most = most.max(threads());
    }
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(10), "2,000 probes took {took:?}");
    assert!(
        most <= before + 2,
        "threads went from {before} to {most} under probes"
    );

    // The broker dies: Kafka fails within STALE_AFTER of its last answer (one round, 2 s, before
    // the kill at most), and the answer names neither the broker nor the user.
    broker.kill();
    let (body, after) = until_failing(&http, &base, "kafka", STALE_AFTER + Duration::from_secs(4)).await;
    println!("kafka failing {after:?} after the broker was killed: {body}");
    assert_eq!(body["checks"]["postgres"], "ok", "{body}");
    let text = body.to_string();
    for secret in [
        broker.bootstrap(),
        broker.port.to_string(),
        "127.0.0.1".to_owned(),
        KAFKA_USER.to_owned(),
    ] {
        assert!(!text.contains(&secret), "{secret:?} in {text}");
    }
    assert!(
        body["checks"]["kafka"]
            .as_str()
            .is_some_and(|s| s.starts_with("no metadata answer from the brokers for ")),
        "{body}"
    );

    // The database goes silent: the same, naming no host, port, user or database.
    proxy.go_silent(true);
    let (body, after) = until_failing(&http, &base, "postgres", STALE_AFTER + Duration::from_secs(4)).await;
    println!("postgres failing {after:?} after the database went silent: {body}");
    let text = body.to_string();
    let user = db_url.username().to_owned();
    let port = db_url.port().unwrap_or(5432).to_string();
    for secret in [
        user,
        port,
        ctx.db_name.clone(),
        "127.0.0.1".to_owned(),
        "SQLSTATE".to_owned(),
    ] {
        assert!(!text.contains(&secret), "{secret:?} in {text}");
    }
    assert!(
        body["checks"]["postgres"]
            .as_str()
            .is_some_and(|s| s.starts_with("PostgreSQL has not answered a query for ")),
        "{body}"
    );

    // It answers again: so does the check, within a round or two.
    proxy.go_silent(false);
    let back = common::eventually(Duration::from_secs(15), || async {
        readyz(&http, &base).await.1["checks"]["postgres"] == "ok"
    })
    .await;
    assert!(back, "postgres still failing after the proxy resumed");

    shutdown.cancel();
    server.abort();
}

/// The `Strict-Transport-Security` header of `GET path` on an application built from `behind_tls`.
async fn hsts_of(ctx: &TestContext, behind_tls: bool, path: &str) -> Option<String> {
    let mut config = ctx.config.clone();
    config.web.behind_tls = behind_tls;
    let shutdown = CancellationToken::new();
    let state =
        weatherflow::web::AppState::start(Arc::new(config), ctx.db.clone(), shutdown.clone(), None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, weatherflow::web::app(state)).into_future());
    let resp = reqwest::get(format!("http://{addr}{path}")).await.expect("GET");
    shutdown.cancel();
    server.abort();
    resp.headers()
        .get("strict-transport-security")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn hsts_only_behind_tls_on_every_answer() {
    let ctx = TestContext::new().await;
    for path in ["/healthz", "/api/v1/nothing-here", "/api/v1/runs?last=0"] {
        assert_eq!(hsts_of(&ctx, false, path).await, None, "{path}");
        assert_eq!(
            hsts_of(&ctx, true, path).await.as_deref(),
            Some(weatherflow::web::STRICT_TRANSPORT_SECURITY),
            "{path}"
        );
    }
}
