//! `weatherflow bench analytics --history-rows H --window-days D`: does the nightly job's cost follow
//! the window or the history? Two scratch databases hold the same window rows (the last D days); one
//! also holds H rows of older history, in month partitions before the window. The nightly job (the
//! default window, as scheduled) runs on both alternately, and PostgreSQL's `regr_*` aggregates run
//! over the same window, so the figures are ratios measured side by side in one run. Prints figures;
//! asserts nothing (the targets, history ≤ 1.2× no history and job ≤ 2× `regr_*`, are read off).

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::ScratchDatabase;
use crate::executor::Executor;
use crate::jobs::analytics::{self, AnalyticsRequest, AnalyticsSummary};
use crate::jobs::persist::store::{copy_header, copy_trailer};
use crate::partitions;
use crate::runs::JobName;

/// Alternating runs of each side; the median and the range are reported.
const REPEATS: usize = 5;

/// Locations the rows are spread over, as in the plain analytics benchmark.
const LOCATIONS: u64 = 50;

/// The columns the loader's binary COPY writes, in tuple order.
const COPY_SQL: &str = "COPY observations (location_key, location_name, region, country, lat, lon, \
     observed_at, temp_c, wind_kph, source, fetched_at) FROM STDIN (FORMAT binary)";

/// PostgreSQL's fit of scope `all` and of every location over the window (both, as the job does).
const AGG_SQL: [&str; 2] = [
    "SELECT regr_intercept(temp_c, wind_kph), regr_slope(temp_c, wind_kph), regr_r2(temp_c, wind_kph), \
     count(*) FROM observations WHERE observed_at >= $1",
    "SELECT location_key, regr_intercept(temp_c, wind_kph), regr_slope(temp_c, wind_kph), \
     regr_r2(temp_c, wind_kph), count(*) FROM observations WHERE observed_at >= $1 GROUP BY location_key",
];

/// One side of the comparison: a scratch database and its configuration.
struct Side {
    label: &'static str,
    scratch: ScratchDatabase,
    config: Config,
}

/// Runs the comparison: `rows` in the window of `window_days`, `history_rows` before it.
pub async fn run(
    config: &Config,
    rows: u64,
    history_rows: u64,
    window_days: u32,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    anyhow::ensure!(window_days > 0, "--window-days must be at least 1");
    let mut sides = Vec::new();
    for label in ["no history", "with history"] {
        let scratch = ScratchDatabase::create(&config.database, "wf_bench").await?;
        let mut c = config.clone();
        c.database = scratch.config().clone();
        c.analytics.window_days = window_days;
        println!("{label}: scratch database {}", scratch.name());
        sides.push(Side {
            label,
            scratch,
            config: c,
        });
    }
    let outcome = bench(&sides, rows, history_rows, window_days, &shutdown).await;
    for side in sides {
        let name = side.scratch.name().to_owned();
        match side.scratch.drop_database().await {
            Ok(()) => println!("dropped {name}"),
            Err(e) => eprintln!("could not drop {name}: {e}; drop it by hand"),
        }
    }
    outcome
}

async fn bench(
    sides: &[Side],
    rows: u64,
    history_rows: u64,
    window_days: u32,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    // The window's rows start an hour after its start as the job will compute it, so the minutes
    // the benchmark takes do not move any row out of the window.
    let now = Utc::now();
    let window_start = now - chrono::Duration::days(i64::from(window_days));
    let first_row = window_start + chrono::Duration::hours(1);
    let step = (now - chrono::Duration::hours(1) - first_row) / (rows.div_ceil(LOCATIONS).max(1) as i32);
    let history_step = chrono::Duration::minutes(15);
    let history_start = window_start - history_step * (history_rows.div_ceil(LOCATIONS) as i32);

    for (i, side) in sides.iter().enumerate() {
        let pool = side.scratch.conn().get_postgres_connection_pool();
        if i == 1 && history_rows > 0 {
            partitions::create_months(
                pool,
                partitions::month_of(history_start),
                partitions::month_of(now),
            )
            .await?;
            let t = Instant::now();
            load(pool, history_rows, history_start, history_step, 1).await?;
            let took = t.elapsed();
            println!(
                "{}: {history_rows} history rows from {} loaded in {:.1} s ({:.0} rows/s, binary COPY into the partitions)",
                side.label,
                history_start.format("%Y-%m-%d"),
                took.as_secs_f64(),
                history_rows as f64 / took.as_secs_f64()
            );
        }
        let t = Instant::now();
        load(pool, rows, first_row, step, 2).await?;
        let load_window = t.elapsed();
        let t = Instant::now();
        side.scratch
            .conn()
            .execute_unprepared("VACUUM ANALYZE observations")
            .await?;
        println!(
            "{}: {rows} window rows loaded in {:.1} s, VACUUM ANALYZE {:.1} s, table {}",
            side.label,
            load_window.as_secs_f64(),
            t.elapsed().as_secs_f64(),
            table_size(side.scratch.conn()).await?
        );
    }
    let t = Instant::now();
    let maintained = partitions::maintain(
        sides[1].scratch.conn().get_postgres_connection_pool(),
        Utc::now(),
        partitions::Policy {
            months_ahead: 2,
            retention_months: None,
        },
    )
    .await?;
    println!(
        "maintenance step on the history side (nothing to do: {}): {:.1} ms",
        maintained == partitions::Maintenance::default(),
        t.elapsed().as_secs_f64() * 1000.0
    );

    // Warm both caches once, then alternate the sides so drift on a noisy machine hits both.
    for side in sides {
        run_job(side, shutdown).await?;
    }
    let mut runs: [Vec<(Duration, u64, AnalyticsSummary)>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..REPEATS {
        for (i, side) in sides.iter().enumerate() {
            anyhow::ensure!(!shutdown.is_cancelled(), "interrupted");
            runs[i].push(run_job(side, shutdown).await?);
        }
    }
    let since = runs[1][0].2.since.context("the nightly run has a window")?;
    let mut regr = Vec::new();
    for _ in 0..REPEATS {
        let pool = sides[1].scratch.conn().get_postgres_connection_pool();
        let t = Instant::now();
        for sql in AGG_SQL {
            sqlx::query(sql).bind(since).fetch_all(pool).await?;
        }
        regr.push(t.elapsed());
    }
    report(sides, &runs, &regr, history_rows, window_days);
    Ok(())
}

/// One nightly run (the default window, as scheduled, without the maintenance step, which is timed
/// apart): wall time, peak RSS of the process during it (KiB), summary.
async fn run_job(
    side: &Side,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Duration, u64, AnalyticsSummary)> {
    reset_peak_rss();
    let conn = side.scratch.conn();
    let t = Instant::now();
    let exec = Executor::from_config(conn.clone(), &side.config);
    let (_, summary) = exec
        .run_by_hand(JobName::Analytics, shutdown, |ctx| {
            analytics::run(
                &side.config,
                conn,
                ctx.run_id,
                AnalyticsRequest::default(),
                ctx.cancel,
            )
        })
        .await?;
    Ok((t.elapsed(), peak_rss_kib().unwrap_or(0), summary))
}

fn report(
    sides: &[Side],
    runs: &[Vec<(Duration, u64, AnalyticsSummary)>; 2],
    regr: &[Duration],
    history_rows: u64,
    window_days: u32,
) {
    println!();
    println!(
        "nightly analytics job, default window of {window_days} days ({REPEATS} alternating runs each):"
    );
    for (side, r) in sides.iter().zip(runs) {
        let times: Vec<Duration> = r.iter().map(|x| x.0).collect();
        let rss: Vec<u64> = r.iter().map(|x| x.1).collect();
        println!(
            "  {:<13} rows read {:>9}  time median {:>7} (range {}–{})  peak RSS median {:>4.0} MiB (range {:.0}–{:.0})",
            side.label,
            r[0].2.rows_read,
            ms(median(&times)),
            ms(*times.iter().min().unwrap_or(&Duration::ZERO)),
            ms(*times.iter().max().unwrap_or(&Duration::ZERO)),
            median_u64(&rss) as f64 / 1024.0,
            *rss.iter().min().unwrap_or(&0) as f64 / 1024.0,
            *rss.iter().max().unwrap_or(&0) as f64 / 1024.0,
        );
    }
    let ratios: Vec<f64> = runs[1]
        .iter()
        .zip(&runs[0])
        .map(|(h, n)| h.0.as_secs_f64() / n.0.as_secs_f64())
        .collect();
    let (lo, hi) = min_max(&ratios);
    let time_ratio = median(&runs[1].iter().map(|x| x.0).collect::<Vec<_>>()).as_secs_f64()
        / median(&runs[0].iter().map(|x| x.0).collect::<Vec<_>>()).as_secs_f64();
    let rss_ratio = median_u64(&runs[1].iter().map(|x| x.1).collect::<Vec<_>>()) as f64
        / median_u64(&runs[0].iter().map(|x| x.1).collect::<Vec<_>>()).max(1) as f64;
    println!(
        "  with {history_rows} history rows ÷ without: time {time_ratio:.2}× (pairwise {lo:.2}–{hi:.2}×), \
         peak RSS {rss_ratio:.2}× (target ≤ 1.20×)"
    );
    let job = median(&runs[1].iter().map(|x| x.0).collect::<Vec<_>>());
    println!(
        "  regr_* (all + GROUP BY location_key) over the same window, with history: median {} \
         → job ÷ regr_* {:.2}× (target ≤ 2×)",
        ms(median(regr)),
        job.as_secs_f64() / median(regr).as_secs_f64()
    );
}

/// Binary-COPYs `rows` synthetic observations over [`LOCATIONS`] locations, time-major (as the
/// persist job writes them), the first at `start` and one time step `step` apart. temp = a + b·wind
/// + daily cycle + noise, with a and b varying by location; `seed` picks the noise.
async fn load(
    pool: &sqlx::PgPool,
    rows: u64,
    start: DateTime<Utc>,
    step: chrono::Duration,
    seed: u64,
) -> anyhow::Result<()> {
    let keys: Vec<(String, String)> = (0..LOCATIONS)
        .map(|l| {
            (
                format!("bench station {l:03}||benchland"),
                format!("Bench Station {l}"),
            )
        })
        .collect();
    let mut conn = pool.acquire().await?;
    let mut copy = conn.copy_in_raw(COPY_SQL).await?;
    let mut buf = Vec::with_capacity(1 << 20);
    copy_header(&mut buf);
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut uniform = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    for i in 0..rows {
        let (t, l) = (i / LOCATIONS, i % LOCATIONS);
        let at = start + step * (t as i32);
        let wind = uniform() * 60.0;
        let noise = 4.0 * (uniform() + uniform() + uniform() - 1.5);
        let (lf, tf) = (l as f64, t as f64);
        let temp = 8.0 + 0.3 * lf - (0.12 + 0.004 * lf) * wind
            + 2.0 * (tf / 96.0 * std::f64::consts::TAU).sin()
            + noise;
        let (key, name) = &keys[l as usize];
        buf.extend_from_slice(&11i16.to_be_bytes());
        for text in [key.as_str(), name.as_str(), "", "Benchland"] {
            field(&mut buf, text.as_bytes());
        }
        field(&mut buf, &0f64.to_be_bytes());
        field(&mut buf, &0f64.to_be_bytes());
        field(&mut buf, &pg_time(at).to_be_bytes());
        field(&mut buf, &temp.to_be_bytes());
        field(&mut buf, &wind.to_be_bytes());
        field(&mut buf, b"simulated");
        field(&mut buf, &pg_time(at).to_be_bytes());
        if buf.len() >= 1 << 20 {
            copy.send(std::mem::take(&mut buf)).await?;
            buf.reserve(1 << 20);
        }
    }
    copy_trailer(&mut buf);
    copy.send(buf).await?;
    let copied = copy.finish().await?;
    anyhow::ensure!(copied == rows, "COPY stored {copied} of {rows} rows");
    Ok(())
}

/// One binary COPY field: its length, then its bytes.
fn field(buf: &mut Vec<u8>, v: &[u8]) {
    buf.extend_from_slice(&(v.len() as i32).to_be_bytes());
    buf.extend_from_slice(v);
}

/// `timestamptz` on the wire: microseconds since 2000-01-01 UTC.
fn pg_time(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros() - 946_684_800_000_000
}

async fn table_size(conn: &DatabaseConnection) -> anyhow::Result<String> {
    let pool = conn.get_postgres_connection_pool();
    let size: String = sqlx::query_scalar(
        "SELECT pg_size_pretty(sum(pg_total_relation_size(inhrelid))) FROM pg_inherits \
         WHERE inhparent = 'observations'::regclass",
    )
    .fetch_one(pool)
    .await?;
    Ok(size)
}

/// Resets the process's peak RSS (VmHWM) to its current RSS, so each run's peak is its own (Linux:
/// writing 5 to clear_refs). Silently does nothing elsewhere.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size (VmHWM) in KiB, on Linux.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn median_u64(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(*x), hi.max(*x))
    })
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}
