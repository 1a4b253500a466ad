//! `weatherflow bench web`: requests per second, p50 and p99 of `/api/v1/results`, `/api/v1/status`
//! and `/` under 200 connections from `wrk` (Debian's package; scripts/web-tools.sh installs it), on
//! a scratch database of 1M observations with a regression over them. Prints figures; asserts
//! nothing (the target, ≥ 5,000 requests/s with p99 ≤ 50 ms on `/api/v1/results`, is read off).

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use sea_orm::ConnectionTrait;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::ScratchDatabase;
use crate::executor::Executor;
use crate::jobs::analytics::{self, AnalyticsRequest};
use crate::runs::JobName;

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
    errors: u64,
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
    sqlx::query(FILL_SQL)
        .bind(rows as i64)
        .execute(db.get_postgres_connection_pool())
        .await?;
    db.execute_unprepared("ANALYZE observations").await?;
    println!(
        "filled {rows} observations in {:.1} s",
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

    let state = crate::web::AppState::start(Arc::new(config.clone()), db.clone(), shutdown.clone(), None)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = tokio::spawn(crate::web::server::serve(
        listener,
        crate::web::app(state.clone()),
        std::time::Duration::from_secs(10),
        shutdown.clone(),
    ));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "wrk -t2 -c{connections} -d{seconds}s --latency; server in this process; {cores} cores shared by both"
    );
    let mut figures = Vec::new();
    for path in ["/api/v1/results", "/api/v1/status", "/"] {
        let target = format!("http://127.0.0.1:{port}{path}");
        // One request first, so the figures are of the steady state (the cache filled).
        reqwest::get(&target).await?.error_for_status()?;
        figures.push(wrk(path, &target, seconds, connections)?);
    }
    shutdown.cancel();
    let _ = server.await;
    db.close().await.ok();

    println!(
        "\n{:<18} {:>10} {:>9} {:>9} {:>7}",
        "endpoint", "req/s", "p50 ms", "p99 ms", "errors"
    );
    for f in &figures {
        println!(
            "{:<18} {:>10.0} {:>9.2} {:>9.2} {:>7}",
            f.path, f.rps, f.p50_ms, f.p99_ms, f.errors
        );
    }
    Ok(())
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
