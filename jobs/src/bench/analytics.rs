//! `weatherflow bench analytics`: the analytics job against PostgreSQL's own `regr_*` aggregates on
//! the same synthetic rows, in a scratch database that is dropped afterwards. Prints figures; asserts
//! nothing (the target, job ≤ 2× the in-database aggregates, is read off the output).

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::TryStreamExt;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use secrecy::ExposeSecret;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, redact_url};
use crate::db::ScratchDatabase;
use crate::executor::Executor;
use crate::jobs::analytics::{self, AnalyticsRequest, AnalyticsSummary, SCOPE_ALL};
use crate::runs::JobName;

/// Runs of each timed step; the median is reported.
const REPEATS: usize = 3;

/// Locations the synthetic rows are spread over (a realistic fetch list).
const LOCATIONS: u64 = 50;

/// PostgreSQL's fit of scope `all`.
const AGG_ALL_SQL: &str = "SELECT regr_intercept(temp_c, wind_kph) AS intercept, \
     regr_slope(temp_c, wind_kph) AS slope, regr_r2(temp_c, wind_kph) AS r2, count(*) AS n \
     FROM observations";

/// PostgreSQL's fit of every location.
const AGG_LOCATIONS_SQL: &str = "SELECT location_key, regr_intercept(temp_c, wind_kph) AS intercept, \
     regr_slope(temp_c, wind_kph) AS slope, regr_r2(temp_c, wind_kph) AS r2, count(*) AS n \
     FROM observations GROUP BY location_key";

/// Fills `observations` with `$1` rows over [`LOCATIONS`] locations, every 15 minutes, interleaved
/// in time like the persist job writes them (time-major, so a location's rows are scattered over
/// the table). temp = a + b·wind + daily cycle + noise, with a and b varying by location.
const FILL_SQL: &str = "
INSERT INTO observations (location_key, location_name, region, country, lat, lon, observed_at,
                          temp_c, wind_kph, source, fetched_at)
SELECT 'bench station ' || lpad(l::text, 3, '0') || '||benchland',
       'Bench Station ' || l, '', 'Benchland', 0, 0,
       timestamptz '2026-01-01 00:00:00+00' + make_interval(mins => 15 * t::int),
       8 + 0.3 * l - (0.12 + 0.004 * l) * w
         + 2 * sin(t / 96.0 * 2 * pi())
         + 4 * (random() + random() + random() - 1.5),
       w, 'simulated', now()
FROM generate_series(0, ($1::int8 - 1) / $2::int8) AS t
CROSS JOIN generate_series(0, $2::int8 - 1) AS l
CROSS JOIN LATERAL (SELECT random() * 60 + 0 * t * l AS w) AS wind
WHERE t * $2::int8 + l < $1::int8
ORDER BY t, l";

/// `weatherflow bench analytics --rows N`.
pub async fn run(config: &Config, rows: u64, shutdown: CancellationToken) -> anyhow::Result<()> {
    let scratch = ScratchDatabase::create(&config.database, "wf_bench").await?;
    println!(
        "scratch database {} on {}",
        scratch.name(),
        redact_url(config.database.url.expose_secret())
    );
    let mut bench_config = config.clone();
    bench_config.database = scratch.config().clone();
    let outcome = bench(&bench_config, scratch.conn(), rows, &shutdown).await;
    let name = scratch.name().to_owned();
    match scratch.drop_database().await {
        Ok(()) => println!("dropped {name}"),
        Err(e) => eprintln!("could not drop {name}: {e}; drop it by hand"),
    }
    outcome
}

/// The benchmark proper, on `config`'s scratch database `conn`.
async fn bench(
    config: &Config,
    conn: &DatabaseConnection,
    rows: u64,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let pool = conn.get_postgres_connection_pool();

    let locations = LOCATIONS.min(rows.max(1));
    let t = Instant::now();
    sqlx::query("SELECT setseed(0.42)").execute(pool).await?;
    sqlx::query(FILL_SQL)
        .bind(rows as i64)
        .bind(locations as i64)
        .execute(pool)
        .await
        .context("filling observations")?;
    let fill = t.elapsed();
    let t = Instant::now();
    conn.execute_unprepared("VACUUM ANALYZE observations").await?;
    println!(
        "{rows} observations over {locations} locations, interleaved in time: filled in {} \
         (INSERT … SELECT generate_series), VACUUM ANALYZE {}",
        secs(fill),
        secs(t.elapsed())
    );
    // Warm the cache once so neither side pays for the first read from disk.
    sqlx::query(AGG_ALL_SQL).fetch_one(pool).await?;

    let mut jobs = Vec::new();
    for _ in 0..REPEATS {
        check(shutdown)?;
        jobs.push(run_job(config, conn, shutdown).await?);
    }
    // The same job reading on one connection: what the split read gains, side by side.
    let mut one_connection = config.clone();
    one_connection.analytics.read_connections = 1;
    let mut single = Vec::new();
    for _ in 0..REPEATS {
        check(shutdown)?;
        single.push(run_job(&one_connection, conn, shutdown).await?);
    }
    let mut agg_all = Vec::new();
    let mut agg_loc = Vec::new();
    for _ in 0..REPEATS {
        check(shutdown)?;
        let t = Instant::now();
        sqlx::query(AGG_ALL_SQL).fetch_one(pool).await?;
        agg_all.push(t.elapsed());
        let t = Instant::now();
        sqlx::query(AGG_LOCATIONS_SQL).fetch_all(pool).await?;
        agg_loc.push(t.elapsed());
    }

    // The same aggregates in one backend, as the job's read runs (PostgreSQL 15 cannot run
    // array_agg in parallel workers): the comparison at equal server parallelism.
    let mut serial = pool.acquire().await?;
    sqlx::query("SET max_parallel_workers_per_gather = 0")
        .execute(&mut *serial)
        .await?;
    let mut serial_all = Vec::new();
    let mut serial_loc = Vec::new();
    for _ in 0..REPEATS {
        check(shutdown)?;
        let t = Instant::now();
        sqlx::query(AGG_ALL_SQL).fetch_one(&mut *serial).await?;
        serial_all.push(t.elapsed());
        let t = Instant::now();
        sqlx::query(AGG_LOCATIONS_SQL).fetch_all(&mut *serial).await?;
        serial_loc.push(t.elapsed());
    }
    sqlx::query("RESET max_parallel_workers_per_gather")
        .execute(&mut *serial)
        .await?;
    drop(serial);

    let median_job =
        |f: &dyn Fn(&(Duration, AnalyticsSummary)) -> Duration| median(jobs.iter().map(f).collect());
    let total = median_job(&|j| j.0);
    let (read, fit) = (
        median_job(&|j| j.1.timings.read),
        median_job(&|j| j.1.timings.fit),
    );
    let write = median_job(&|j| j.1.timings.write);
    let (all, loc) = (median(agg_all), median(agg_loc));
    let last = &jobs[jobs.len() - 1].1;
    println!();
    println!("analytics job (median of {REPEATS} runs):");
    println!(
        "  read   (arrays → design matrix, {} connections) {:>9}",
        config.analytics.read_connections,
        ms(read)
    );
    println!(
        "  fit    (all + {} locations, smartcore SVD)     {:>9}",
        last.fits.len().saturating_sub(1),
        ms(fit)
    );
    println!(
        "  write  ({} rows, one transaction)             {:>9}",
        last.results_written,
        ms(write)
    );
    println!("  total  (incl. job_runs bookkeeping)           {:>9}", ms(total));
    let single_read = median(single.iter().map(|j| j.1.timings.read).collect());
    let single_total = median(single.iter().map(|j| j.0).collect());
    println!(
        "  the same job reading on one connection: read {}, total {} (split ÷ one: read {:.2}×, total {:.2}×)",
        ms(single_read),
        ms(single_total),
        read.as_secs_f64() / single_read.as_secs_f64(),
        total.as_secs_f64() / single_total.as_secs_f64()
    );
    println!();
    println!("PostgreSQL regr_intercept/regr_slope/regr_r2 over the same rows (median of {REPEATS}):");
    println!("  scope all                                     {:>9}", ms(all));
    println!("  GROUP BY location_key                         {:>9}", ms(loc));
    println!(
        "  both                                          {:>9}",
        ms(all + loc)
    );
    let (serial_all, serial_loc) = (median(serial_all), median(serial_loc));
    println!(
        "  both, without parallel workers                {:>9}",
        ms(serial_all + serial_loc)
    );
    println!();
    println!(
        "ratio job / in-database aggregates: {:.2}× (target ≤ 2×); without parallel workers: {:.2}×",
        total.as_secs_f64() / (all + loc).as_secs_f64(),
        total.as_secs_f64() / (serial_all + serial_loc).as_secs_f64()
    );
    print_accuracy(pool, last).await?;
    if let Some(peak) = peak_rss_kib() {
        println!(
            "peak resident memory of this process: {:.0} MiB (the design matrix itself: {:.0} MiB)",
            peak as f64 / 1024.0,
            (rows * 16) as f64 / (1024.0 * 1024.0)
        );
    }

    check(shutdown)?;
    println!();
    println!("read alternatives, one row per observation (not used; for comparison):");
    for (label, sql) in [
        (
            "rows ORDER BY location_key",
            "SELECT location_key, wind_kph, temp_c FROM observations ORDER BY location_key",
        ),
        (
            "rows in table order (unordered)",
            "SELECT location_key, wind_kph, temp_c FROM observations",
        ),
    ] {
        let t = Instant::now();
        let n = stream_rows(pool, sql).await?;
        println!("  {label:<44}  {:>9}  ({n} rows)", ms(t.elapsed()));
    }
    let t = Instant::now();
    let (n, groups) = copy_out_grouped(pool).await?;
    println!(
        "  {:<44}  {:>9}  ({n} rows, {groups} locations)",
        "binary COPY out, grouped on the client",
        ms(t.elapsed())
    );
    Ok(())
}

/// The rows as one binary `COPY … TO STDOUT`, grouped by location on the client: the read without
/// the server building arrays, and without a protocol message and a row decode per observation.
async fn copy_out_grouped(pool: &sqlx::PgPool) -> anyhow::Result<(usize, usize)> {
    let mut conn = pool.acquire().await?;
    let mut stream = conn
        .copy_out_raw(
            "COPY (SELECT location_key, wind_kph, temp_c FROM observations) TO STDOUT (FORMAT binary)",
        )
        .await?;
    let mut groups: std::collections::HashMap<Vec<u8>, (Vec<f64>, Vec<f64>)> = Default::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut rows = 0usize;
    let mut header = true;
    while let Some(chunk) = stream.try_next().await? {
        buf.extend_from_slice(&chunk);
        let mut at = 0;
        if header {
            // Signature (11 bytes), flags, header extension length, then the extension.
            if buf.len() < 19 {
                continue;
            }
            let ext = u32::from_be_bytes(buf[15..19].try_into()?) as usize;
            at = 19 + ext;
            header = false;
        }
        while let Some((used, tuple)) = copy_tuple(&buf[at..])? {
            at += used;
            let Some([key, wind, temp]) = tuple else { break };
            let (w, t) = match groups.get_mut(key) {
                Some(g) => g,
                None => groups.entry(key.to_vec()).or_default(),
            };
            w.push(f64::from_be_bytes(wind.try_into()?));
            t.push(f64::from_be_bytes(temp.try_into()?));
            rows += 1;
        }
        buf.drain(..at);
    }
    std::hint::black_box(&groups);
    Ok((rows, groups.len()))
}

/// One binary COPY tuple of three non-null fields at the start of `b`: the bytes it took and its
/// fields (`None` for the trailer); `None` overall when `b` does not hold a whole tuple yet.
#[allow(clippy::type_complexity)]
fn copy_tuple(b: &[u8]) -> anyhow::Result<Option<(usize, Option<[&[u8]; 3]>)>> {
    let Some(count) = b.get(..2) else { return Ok(None) };
    match i16::from_be_bytes(count.try_into()?) {
        -1 => return Ok(Some((2, None))),
        3 => {}
        n => anyhow::bail!("a COPY tuple of {n} fields, not 3"),
    }
    let mut at = 2;
    let mut fields: [&[u8]; 3] = [&[]; 3];
    for field in &mut fields {
        let Some(len) = b.get(at..at + 4) else {
            return Ok(None);
        };
        let len = i32::from_be_bytes(len.try_into()?);
        anyhow::ensure!(len >= 0, "a NULL in the COPY out");
        let Some(bytes) = b.get(at + 4..at + 4 + len as usize) else {
            return Ok(None);
        };
        *field = bytes;
        at += 4 + len as usize;
    }
    Ok(Some((at, Some(fields))))
}

/// One recorded analytics run over everything; its wall time and summary.
async fn run_job(
    config: &Config,
    conn: &DatabaseConnection,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Duration, AnalyticsSummary)> {
    let t = Instant::now();
    let exec = Executor::from_config(conn.clone(), config);
    let (_, summary) = exec
        .run_by_hand(JobName::Analytics, shutdown, |ctx| {
            // Every row: this benchmark compares the job with regr_* over the whole table.
            let req = AnalyticsRequest {
                all_history: true,
                ..AnalyticsRequest::default()
            };
            analytics::run(config, conn, ctx.run_id, req, ctx.cancel)
        })
        .await?;
    Ok((t.elapsed(), summary))
}

/// Largest relative difference between the job's coefficients and PostgreSQL's.
async fn print_accuracy(pool: &sqlx::PgPool, job: &AnalyticsSummary) -> anyhow::Result<()> {
    let mut reference = sqlx::query(AGG_LOCATIONS_SQL).fetch_all(pool).await?;
    reference.push(sqlx::query(AGG_ALL_SQL).fetch_one(pool).await?);
    let mut worst = [0.0f64; 3];
    for row in &reference {
        let scope: String = row
            .try_get("location_key")
            .unwrap_or_else(|_| SCOPE_ALL.to_owned());
        let Some(fit) = job.fits.iter().find(|f| f.scope == scope) else {
            continue;
        };
        let want: [f64; 3] = [
            row.try_get("intercept")?,
            row.try_get("slope")?,
            row.try_get("r2")?,
        ];
        let got = [fit.fit.intercept, fit.fit.slope, fit.fit.r_squared];
        for i in 0..3 {
            worst[i] = worst[i].max(((got[i] - want[i]) / want[i]).abs());
        }
    }
    println!(
        "largest relative difference to PostgreSQL over all scopes: intercept {:.1e}, slope {:.1e}, r² {:.1e}",
        worst[0], worst[1], worst[2]
    );
    Ok(())
}

/// Streams a row-per-observation query into two columns, as a row-based reader would.
async fn stream_rows(pool: &sqlx::PgPool, sql: &'static str) -> anyhow::Result<usize> {
    let mut stream = sqlx::query(sql).fetch(pool);
    let (mut wind, mut temp) = (Vec::new(), Vec::new());
    let mut last_key = String::new();
    let mut groups = 0usize;
    while let Some(row) = stream.try_next().await? {
        let key: &str = row.try_get(0)?;
        if key != last_key {
            last_key = key.to_owned();
            groups += 1;
        }
        wind.push(row.try_get::<f64, _>(1)?);
        temp.push(row.try_get::<f64, _>(2)?);
    }
    std::hint::black_box((groups, &temp));
    Ok(wind.len())
}

fn check(shutdown: &CancellationToken) -> anyhow::Result<()> {
    anyhow::ensure!(!shutdown.is_cancelled(), "interrupted");
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Peak resident set size (VmHWM) in KiB, on Linux.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
