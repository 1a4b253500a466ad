//! `weatherflow bench fetch`: the fetch job against the same requests sent by a bare HTTP client, both
//! at a local stub answering after a fixed latency. Their ratio says how HTTP-bound the job is: what
//! is left is the job's own start-up (producer, topic check, lock, run history) and finish (delivery
//! reports, the run's row). Prints figures; asserts nothing.
//!
//! The two alternate, one run of each per round, in turn first, so a noisy neighbour weighs on both.
//! The job runs as a scheduled run does: the advisory lock, a `job_runs` row, then the job, over a
//! connection already open. Its database is a scratch one (`wf_bench_fetch_<random>`) and its topic
//! a scratch topic, both dropped at the end.

mod stub;

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::ScratchDatabase;
use crate::executor::Executor;
use crate::jobs::fetch::{self, FetchRequest, SourceChoice};
use crate::runs::JobName;
use stub::{KEY, Stub, Window};

/// What `weatherflow bench fetch` measures.
#[derive(Debug, Clone, Copy)]
pub struct FetchBench {
    /// Locations per run.
    pub locations: usize,
    /// The stub's answer latency.
    pub latency: Duration,
    /// Requests in flight, for both clients.
    pub concurrency: usize,
    /// Rounds (one bare HTTP run and one job run each).
    pub runs: usize,
}

/// One run's time and where it went.
#[derive(Debug, Clone, Copy)]
struct Timed {
    total: Duration,
    /// Start → first request at the stub.
    start_up: Duration,
    /// First request → last answer.
    http: Duration,
    /// Last answer → done.
    finish: Duration,
}

impl Timed {
    /// The split of a run that asked for `asked` locations. Both clients must send exactly one
    /// request per location, or the two times would not be of the same work.
    fn of(started: Instant, ended: Instant, w: Window, asked: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(
            w.requests == asked,
            "the stub answered {} requests for {asked} locations",
            w.requests
        );
        let (Some(first), Some(last)) = (w.first_request, w.last_answer) else {
            anyhow::bail!("the stub saw no request");
        };
        Ok(Self {
            total: ended - started,
            start_up: first.saturating_duration_since(started),
            http: last.saturating_duration_since(first),
            finish: ended.saturating_duration_since(last),
        })
    }
}

/// Runs the benchmark.
pub async fn run(config: &Config, bench: FetchBench, shutdown: CancellationToken) -> anyhow::Result<()> {
    anyhow::ensure!(
        bench.locations > 0 && bench.concurrency > 0 && bench.runs > 0,
        "--locations, --concurrency and --runs must be at least 1"
    );
    let stop = shutdown.child_token();
    let stub = Stub::start(bench.latency, stop.clone()).await?;
    let database = ScratchDatabase::create(&config.database, "wf_bench_fetch").await?;
    let mut config = config.clone();
    config.database = database.config().clone();
    config.kafka.observations_topic = format!("wf-bench-fetch-{:016x}", rand::random::<u64>());
    config.weatherapi.base_url = stub.base_url.clone();
    config.weatherapi.api_key = Some(SecretString::from(KEY));
    config.weatherapi.key_file = None;
    // The bare client has no rate limit either; the stub's latency is the only bound.
    config.fetch.rate_per_sec = 0.0;
    config.fetch.concurrency = bench.concurrency;
    let result = tokio::select! {
        r = measure(&config, database.conn(), &stub, bench) => r,
        _ = shutdown.cancelled() => Err(anyhow::anyhow!("interrupted")),
    };
    stop.cancel();
    database.conn().clone().close().await.ok();
    if let Err(e) = crate::kafka::delete_topics(&config.kafka, &[&config.kafka.observations_topic]).await {
        eprintln!("warning: could not delete the bench topic: {e}");
    }
    if let Err(e) = database.drop_database().await {
        eprintln!("warning: could not drop the bench database: {e}");
    }
    result
}

async fn measure(
    config: &Config,
    conn: &sea_orm::DatabaseConnection,
    stub: &Stub,
    bench: FetchBench,
) -> anyhow::Result<()> {
    let locations: Vec<String> = (0..bench.locations).map(|i| format!("Bench Town {i}")).collect();
    let waves = bench.locations.div_ceil(bench.concurrency) as u32;
    let floor = bench.latency * waves;
    println!(
        "weatherflow bench fetch: {} locations, stub latency {} ms, concurrency {}, {} rounds, {} build",
        bench.locations,
        bench.latency.as_millis(),
        bench.concurrency,
        bench.runs,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!(
        "floor: {waves} waves x {} ms = {:.2} s; the job runs under its lock with a job_runs row, the topic exists",
        bench.latency.as_millis(),
        floor.as_secs_f64()
    );
    // The topic exists before the first round, as it does for every scheduled run but the first.
    crate::kafka::ensure_topic(
        &config.kafka,
        &config.kafka.observations_topic,
        config.kafka.partitions,
    )
    .await?;
    let url = format!("{}/current.json", stub.base_url);
    let mut ratios = Vec::with_capacity(bench.runs);
    for round in 0..bench.runs {
        let (http, job) = if round % 2 == 0 {
            let http = bare_http(&url, &locations, bench.concurrency, stub).await?;
            (http, job_run(config, conn, &locations, stub).await?)
        } else {
            let job = job_run(config, conn, &locations, stub).await?;
            (bare_http(&url, &locations, bench.concurrency, stub).await?, job)
        };
        let ratio = http.total.as_secs_f64() / job.total.as_secs_f64();
        ratios.push(ratio);
        println!(
            "round {}: bare HTTP {:.3} s | job {:.3} s (start-up {:.0} ms, HTTP {:.3} s, finish {:.0} ms) | HTTP / job {ratio:.3}",
            round + 1,
            http.total.as_secs_f64(),
            job.total.as_secs_f64(),
            ms(job.start_up),
            job.http.as_secs_f64(),
            ms(job.finish),
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "HTTP / job over {} rounds: {:.3}-{:.3}, median {:.3} (target >= 0.95)",
        ratios.len(),
        ratios[0],
        ratios[ratios.len() - 1],
        ratios[ratios.len() / 2]
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The same GETs from a fresh client, bodies read and dropped: the floor the job is held to.
async fn bare_http(
    url: &str,
    locations: &[String],
    concurrency: usize,
    stub: &Stub,
) -> anyhow::Result<Timed> {
    stub.reset();
    let started = Instant::now();
    let client = reqwest::Client::new();
    futures::stream::iter(locations)
        .map(|q| {
            let request = client.get(url).query(&[("key", KEY), ("q", q.as_str())]);
            async move { request.send().await?.error_for_status()?.bytes().await }
        })
        .buffer_unordered(concurrency)
        .try_for_each(|_| async { Ok(()) })
        .await
        .context("bare HTTP request")?;
    Timed::of(started, Instant::now(), stub.reset(), locations.len())
}

/// One fetch as the scheduler runs it: lock, recorded run, release.
async fn job_run(
    config: &Config,
    conn: &sea_orm::DatabaseConnection,
    locations: &[String],
    stub: &Stub,
) -> anyhow::Result<Timed> {
    stub.reset();
    let started = Instant::now();
    let req = FetchRequest {
        locations: locations.to_vec(),
        source: SourceChoice::Weatherapi,
        ..FetchRequest::default()
    };
    let exec = Executor::from_config(conn.clone(), config);
    let (_, summary) = exec
        .run_by_hand(JobName::Fetch, &CancellationToken::new(), |ctx| {
            fetch::run(config, req.clone(), ctx.cancel)
        })
        .await?;
    let ended = Instant::now();
    anyhow::ensure!(
        summary.produced == locations.len(),
        "the job produced {} of {} locations",
        summary.produced,
        locations.len()
    );
    Timed::of(started, ended, stub.reset(), locations.len())
}
