//! Prometheus metrics: one registry per process, and one function per thing the jobs count, so each
//! call site in a job is a single line and the metric names live in one place (docs/web.md lists them).
//!
//! The recorder is the `metrics` facade's global one, rendered by `metrics-exporter-prometheus` on
//! `GET /metrics`. Until [`install`] runs (every command that does not serve HTTP), the facade's
//! calls are no-ops, so recording costs nothing in a one-shot `weatherflow run`.
//!
//! Job runs, the last success per job, the last fit per scope and the consumer lag are read from
//! PostgreSQL and Kafka at scrape time instead (see `web::health`): they describe the platform, not
//! one process, so `serve` shows them as well as the scheduler that ran the jobs.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The installed recorder's handle; `None` until [`install`].
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets, seconds: WeatherAPI answers in 50–500 ms; a batch write of 5,000 rows takes
/// tens of ms (`weatherflow bench persist`); HTTP handlers answer from cache in well under 1 ms.
const LATENCY_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Rows-per-batch buckets, up to the default `persist.batch_size` of 5,000 and beyond.
const ROW_BUCKETS: [f64; 9] = [1.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0];

/// Installs the process-wide recorder (idempotent) and returns its handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_ROWS.into()), &ROW_BUCKETS))
            .expect("bucket lists are not empty");
        let handle = match builder.install_recorder() {
            Ok(handle) => handle,
            // Another recorder is already global (a test harness): keep a private one for rendering.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        };
        describe();
        handle
    })
}

/// The registry in the Prometheus text format; empty before [`install`]. Gauges set from state
/// elsewhere (the outages' ages) are as fresh as their owner last set them: a scrape refreshes them
/// first.
pub fn render() -> String {
    match HANDLE.get() {
        Some(handle) => {
            // Without the exporter's own runtime task, histograms are drained here.
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    }
}

const BATCH_ROWS: &str = "weatherflow_persist_batch_rows";

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "weatherflow_fetch_requests_total",
        "WeatherAPI requests by outcome class."
    );
    describe_histogram!(
        "weatherflow_fetch_api_latency_seconds",
        Unit::Seconds,
        "WeatherAPI request latency."
    );
    describe_gauge!(
        "weatherflow_fetch_api_calls_month",
        "WeatherAPI calls this process made in the current calendar month (UTC)."
    );
    describe_gauge!(
        "weatherflow_weatherapi_calls_month",
        "WeatherAPI calls every process made this calendar month (UTC), from api_calls at scrape time."
    );
    describe_gauge!(
        "weatherflow_job_paused",
        "1 while the job is paused (weatherflow pause, or its auto-pause), from job_pauses at scrape time."
    );
    describe_gauge!(
        "weatherflow_job_auto_paused",
        "1 while the job is paused by the scheduler after pause_after_failures failed runs in a row."
    );
    describe_gauge!(
        "weatherflow_weatherapi_call_budget",
        "weatherapi.monthly_call_budget, when set."
    );
    describe_counter!("weatherflow_persist_consumed_total", "Kafka records consumed.");
    describe_counter!("weatherflow_persist_stored_total", "Observations inserted.");
    describe_counter!(
        "weatherflow_persist_duplicates_total",
        "Observations already stored (same location and time)."
    );
    describe_counter!(
        "weatherflow_persist_rejected_total",
        "Records quarantined, by class."
    );
    describe_histogram!(
        "weatherflow_persist_batch_write_seconds",
        Unit::Seconds,
        "Time to write one batch to PostgreSQL."
    );
    describe_histogram!(BATCH_ROWS, "Records per written batch.");
    describe_gauge!(
        "weatherflow_persist_outage_seconds",
        Unit::Seconds,
        "How long the writers have been retrying batches the database or the dead-letter topic will not take (0: no outage), by target and cause class."
    );
    describe_gauge!(
        "weatherflow_persist_paused_partitions",
        "Partitions the consumer has paused for backpressure."
    );
    describe_gauge!(
        "weatherflow_persist_buffered_bytes",
        Unit::Bytes,
        "Bytes of records read and not yet stored (bounded by persist.max_buffered_bytes)."
    );
    describe_counter!(
        "weatherflow_job_runs_total",
        "Runs by job and status, from the run history (every replica's)."
    );
    describe_gauge!(
        "weatherflow_job_last_success_timestamp_seconds",
        Unit::Seconds,
        "When each job last finished successfully (Unix time)."
    );
    describe_gauge!(
        "weatherflow_data_staleness_seconds",
        Unit::Seconds,
        "Age of the newest observation the analytics job would fit, when last checked."
    );
    describe_gauge!(
        "weatherflow_analytics_fit_samples",
        "Samples of the latest fit, by scope."
    );
    describe_gauge!(
        "weatherflow_analytics_fit_r_squared",
        "R² of the latest fit, by scope."
    );
    describe_gauge!(
        "weatherflow_analytics_fit_slope",
        "Slope of the latest fit, °C per km/h, by scope."
    );
    describe_gauge!(
        "weatherflow_persist_consumer_lag",
        "Records the persist group has still to consume, by partition (sampled every 5 s)."
    );
    describe_gauge!(
        "weatherflow_database_up",
        "1 when the last scrape could read PostgreSQL, else 0."
    );
    describe_counter!(
        "weatherflow_http_requests_total",
        "HTTP requests by route and status."
    );
    describe_histogram!(
        "weatherflow_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request handling time by route."
    );
}

/// The month (`year * 12 + month`) whose calls [`fetch_request`] is counting.
static CALLS_MONTH: AtomicU64 = AtomicU64::new(0);
/// WeatherAPI calls in `CALLS_MONTH`.
static CALLS: AtomicU64 = AtomicU64::new(0);

/// fetch: one WeatherAPI HTTP request finished with `outcome` (its class: `ok`, `retryable`,
/// `location`, `fatal`) after `latency`.
pub fn fetch_request(outcome: &'static str, latency: Duration) {
    counter!("weatherflow_fetch_requests_total", "outcome" => outcome).increment(1);
    histogram!("weatherflow_fetch_api_latency_seconds").record(latency.as_secs_f64());
    let now = chrono::Utc::now();
    let month = chrono::Datelike::year(&now) as u64 * 12 + u64::from(chrono::Datelike::month(&now));
    if CALLS_MONTH.swap(month, Ordering::Relaxed) != month {
        CALLS.store(0, Ordering::Relaxed);
    }
    let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    gauge!("weatherflow_fetch_api_calls_month").set(calls as f64);
}

/// persist: `n` records read from Kafka.
pub fn persist_consumed(n: u64) {
    counter!("weatherflow_persist_consumed_total").increment(n);
}

/// persist: one batch of `records` records written in `took`: `inserted` stored, `duplicates`
/// already stored, and quarantined by class.
pub(crate) fn persist_batch<'a>(
    records: usize,
    inserted: u64,
    duplicates: u64,
    rejected: impl IntoIterator<Item = (&'a &'static str, &'a u64)>,
    took: Duration,
) {
    counter!("weatherflow_persist_stored_total").increment(inserted);
    counter!("weatherflow_persist_duplicates_total").increment(duplicates);
    persist_rejected(rejected);
    histogram!(BATCH_ROWS).record(records as f64);
    histogram!("weatherflow_persist_batch_write_seconds").record(took.as_secs_f64());
}

/// persist: records quarantined, by class.
pub fn persist_rejected<'a>(by_class: impl IntoIterator<Item = (&'a &'static str, &'a u64)>) {
    for (class, n) in by_class {
        counter!("weatherflow_persist_rejected_total", "class" => *class).increment(*n);
    }
}

/// persist: how many partitions are paused now.
pub fn persist_paused_partitions(n: i32) {
    gauge!("weatherflow_persist_paused_partitions").set(n as f64);
}

/// analytics: the age of the newest observation it would fit (`analytics::freshness`).
pub(crate) fn data_staleness(age: Duration) {
    gauge!("weatherflow_data_staleness_seconds").set(age.as_secs_f64());
}

/// persist: bytes of records read and not yet stored.
pub(crate) fn persist_buffered_bytes(bytes: usize) {
    gauge!("weatherflow_persist_buffered_bytes").set(bytes as f64);
}

/// persist: how long the writers have waited out the current outage of `target` ("database",
/// "dead_letter_topic") for `class` (a SQLSTATE class, `io`, `timeout`...); 0 once it ended.
pub(crate) fn persist_outage(target: &'static str, class: &str, age: Duration) {
    gauge!("weatherflow_persist_outage_seconds", "target" => target, "class" => class.to_owned())
        .set(age.as_secs_f64());
}

/// HTTP: one request answered.
pub(crate) fn http_request(route: &str, status: u16, took: Duration) {
    let route = route.to_owned();
    counter!("weatherflow_http_requests_total", "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    histogram!("weatherflow_http_request_duration_seconds", "route" => route).record(took.as_secs_f64());
}
