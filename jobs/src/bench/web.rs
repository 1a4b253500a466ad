//! `weatherflow bench web`: requests per second, p50, p99 and errors of `/readyz`, `/api/v1/status`,
//! `/` and `/api/v1/results` under `wrk` (Debian's package; scripts/web-tools.sh installs it), on a
//! scratch database of synthetic observations with a regression over them, never analysed (autovacuum
//! off on every partition, as a large history can be between autovacuum's passes). Beside `/readyz`,
//! the same load on a per-request readiness check as `/readyz` was before it answered from kept
//! state (a librdkafka client and two queries per probe). With each endpoint, this process's threads
//! and open sockets before, at most during, and after the load. Prints figures; asserts nothing
//! (targets, read off: no 408 or 5xx, `/readyz` within an order of magnitude of the cached status
//! API, threads and sockets flat).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use sea_orm::ConnectionTrait;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::ScratchDatabase;
use crate::executor::Executor;
use crate::jobs::analytics::{self, AnalyticsRequest};
use crate::runs::JobName;
use crate::web::AppState;

/// The route of the per-request readiness check, served by this benchmark only.
const PER_REQUEST_READYZ: &str = "/bench/readyz-per-request";

/// Synthetic observations: 50 locations every 15 minutes, temp = a + b·wind + noise.
const FILL_SQL: &str = "
INSERT INTO observations (location_key, location_name, region, country, lat, lon, observed_at,
                          temp_c, wind_kph, humidity, condition_text, source, fetched_at)
SELECT 'station ' || l || '||benchland', 'Station ' || l, '', 'Benchland', 0, 0,
       timestamptz '2026-01-01 00:00:00+00' + make_interval(mins => 15 * t::int),
       8 + 0.3 * l - (0.12 + 0.004 * l) * w + 4 * (random() - 0.5), w, 60, 'Clear', 'simulated', now()
FROM generate_series(0, ($1::int8 - 1) / 50) AS t
CROSS JOIN generate_series(0, 49) AS l
CROSS JOIN LATERAL (SELECT random() * 60 + 0 * t * l AS w) AS wind
WHERE t * 50 + l < $1::int8";

/// One endpoint's figures.
struct Figures {
    path: &'static str,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Non-2xx answers and socket errors (timeouts included).
    errors: u64,
    /// This process's threads: before, at most during, after.
    threads: (usize, usize, usize),
    /// This process's open sockets: before, at most during, after.
    sockets: (usize, usize, usize),
}

/// This process's threads and open sockets now.
fn threads_and_sockets() -> (usize, usize) {
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    let sockets = std::fs::read_dir("/proc/self/fd").map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| {
                std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
            })
            .count()
    });
    (threads, sockets)
}

/// `/readyz` as it was: each probe builds a Kafka client on a blocking thread for one metadata
/// request, and runs `SELECT 1` and the pending-migrations query. Kept here only to be measured.
async fn readyz_per_request(State(state): State<AppState>) -> StatusCode {
    let cfg = state.config.kafka.clone();
    let kafka = tokio::task::spawn_blocking(move || crate::kafka::cluster_info(&cfg));
    let postgres = state.db.execute_unprepared("SELECT 1");
    let (kafka, postgres) = tokio::join!(kafka, postgres);
    let migrations = <migration::Migrator as migration::MigratorTrait>::get_pending_migrations(&state.db).await;
    let ok = matches!(kafka, Ok(Ok(_))) && postgres.is_ok() && migrations.is_ok_and(|p| p.is_empty());
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// `weatherflow bench web --rows N --seconds S --connections C`.
pub async fn run(config: &Config, rows: u64, seconds: u64, connections: u64) -> anyhow::Result<()> {
    let scratch = ScratchDatabase::create(&config.database, "wf_bench_web").await?;
    let result = bench(config, &scratch, rows, seconds, connections).await;
    if let Err(e) = scratch.drop_database().await {
        eprintln!("warning: could not drop the bench database: {e}");
    }
    result
}

async fn bench(
    config: &Config,
    scratch: &ScratchDatabase,
    rows: u64,
    seconds: u64,
    connections: u64,
) -> anyhow::Result<()> {
    let name = scratch.name();
    let mut config = config.clone();
    config.database = scratch.config().clone();
    config.kafka.observations_topic = format!("{name}-none");
    config.kafka.consumer_group = format!("{name}-none");
    let db = scratch.conn().clone();

    let started = Instant::now();
    // Never analysed: the migration analysed the empty partitions, and autovacuum may not since.
    let partitions: Vec<(String,)> = sqlx::query_as(
        "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'observations'::regclass",
    )
    .fetch_all(db.get_postgres_connection_pool())
    .await?;
    for (p,) in &partitions {
        db.execute_unprepared(&format!("ALTER TABLE {p} SET (autovacuum_enabled = false)"))
            .await?;
    }
    sqlx::query(FILL_SQL)
        .bind(rows as i64)
        .execute(db.get_postgres_connection_pool())
        .await?;
    println!(
        "filled {rows} observations in {:.1} s, never analysed",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    Executor::from_config(db.clone(), &config)
        .run_by_hand(JobName::Analytics, &shutdown, |ctx| {
            // The synthetic rows start in January 2026: fit them all, not the default window.
            let req = AnalyticsRequest {
                all_history: true,
                ..AnalyticsRequest::default()
            };
            analytics::run(&config, &db, ctx.run_id, req, ctx.cancel)
        })
        .await?;
    println!("analytics over them in {:.1} s", started.elapsed().as_secs_f64());

    let state = AppState::start(Arc::new(config.clone()), db.clone(), shutdown.clone(), None)?;
    let router = crate::web::app(state.clone()).merge(
        axum::Router::new()
            .route(PER_REQUEST_READYZ, get(readyz_per_request))
            .with_state(state.clone()),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = tokio::spawn(crate::web::server::serve(
        listener,
        router,
        Duration::from_secs(state.config.web.request_timeout_secs.max(1)),
        shutdown.clone(),
    ));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "wrk -t2 -c{connections} -d{seconds}s --latency; server in this process; {cores} cores shared by both"
    );
    let mut figures = Vec::new();
    for path in ["/readyz", PER_REQUEST_READYZ, "/api/v1/status", "/", "/api/v1/results"] {
        let target = format!("http://127.0.0.1:{port}{path}");
        // One request first, so the figures are of the steady state (the cache filled).
        reqwest::get(&target).await?.error_for_status()?;
        figures.push(measured(path, &target, seconds, connections)?);
        // The per-request check's clients close on their own threads: let them go before the next.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    shutdown.cancel();
    let _ = server.await;
    db.close().await.ok();

    println!(
        "\n{:<28} {:>9} {:>8} {:>8} {:>7} {:>17} {:>17}",
        "endpoint", "req/s", "p50 ms", "p99 ms", "errors", "threads b/max/a", "sockets b/max/a"
    );
    for f in &figures {
        let (t, s) = (f.threads, f.sockets);
        println!(
            "{:<28} {:>9.0} {:>8.2} {:>8.2} {:>7} {:>17} {:>17}",
            f.path,
            f.rps,
            f.p50_ms,
            f.p99_ms,
            f.errors,
            format!("{}/{}/{}", t.0, t.1, t.2),
            format!("{}/{}/{}", s.0, s.1, s.2),
        );
    }
    Ok(())
}

/// [`wrk`] on `url`, with this process's threads and sockets sampled every 100 ms meanwhile.
fn measured(path: &'static str, url: &str, seconds: u64, connections: u64) -> anyhow::Result<Figures> {
    let before = threads_and_sockets();
    let most = Arc::new((AtomicUsize::new(before.0), AtomicUsize::new(before.1)));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (most, done) = (most.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let (t, s) = threads_and_sockets();
                most.0.fetch_max(t, Ordering::Relaxed);
                most.1.fetch_max(s, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let result = wrk(path, url, seconds, connections);
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    // wrk's connections are closed by now; the server's side closes as it reads their end.
    std::thread::sleep(Duration::from_millis(500));
    let after = threads_and_sockets();
    let mut f = result?;
    // The sampler is a thread of this process too: leave it out of the maximum.
    f.threads = (before.0, most.0.load(Ordering::Relaxed).saturating_sub(1).max(before.0), after.0);
    f.sockets = (before.1, most.1.load(Ordering::Relaxed), after.1);
    Ok(f)
}

/// Runs wrk against `url` and reads its figures.
fn wrk(path: &'static str, url: &str, seconds: u64, connections: u64) -> anyhow::Result<Figures> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            url,
        ])
        .output()
        .context("running wrk (scripts/web-tools.sh installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |label: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(label))
            .and_then(|l| l[label.len()..].split_whitespace().next())
    };
    let rps = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .context("wrk: no Requests/sec")?;
    let p50_ms = field("50%").and_then(millis).context("wrk: no p50")?;
    let p99_ms = field("99%").and_then(millis).context("wrk: no p99")?;
    let non_2xx: u64 = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let socket: u64 = text
        .lines()
        .find(|l| l.trim_start().starts_with("Socket errors:"))
        .map(|l| {
            l.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Ok(Figures {
        path,
        rps,
        p50_ms,
        p99_ms,
        errors: non_2xx + socket,
        threads: (0, 0, 0),
        sockets: (0, 0, 0),
    })
}

/// wrk's `812.00us`, `1.25ms`, `1.01s` in milliseconds.
fn millis(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    match unit {
        "us" => Some(n / 1000.0),
        "ms" => Some(n),
        "s" => Some(n * 1000.0),
        "m" => Some(n * 60_000.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::millis;

    #[test]
    fn wrk_units() {
        assert_eq!(millis("812.00us"), Some(0.812));
        assert_eq!(millis("1.25ms"), Some(1.25));
        assert_eq!(millis("1.01s"), Some(1010.0));
    }
}
