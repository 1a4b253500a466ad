//! `weatherflow bench`: benchmarks that print figures.

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// `weatherflow bench <which>`.
#[derive(Debug, clap::Subcommand)]
pub enum BenchKind {
    /// Consumer throughput vs binary COPY, and end-to-end latency.
    Persist {
        /// Messages to produce and drain.
        #[arg(long, default_value_t = 200_000)]
        messages: u64,
        /// Pairs of persist and COPY runs over the same backlog; the ratio's median and lowest are
        /// printed.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// Analytics job time vs PostgreSQL's regr_* aggregates; with `--history-rows`, the nightly
    /// job with that much history before its window against the same run without.
    Analytics {
        /// Synthetic observations (with `--history-rows`: those in the window).
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Also load this many rows of history, older than the window, into a second database.
        #[arg(long)]
        history_rows: Option<u64>,
        /// The nightly job's window, in days (with `--history-rows`).
        #[arg(long, default_value_t = 30, requires = "history_rows")]
        window_days: u32,
    },
    /// The fetch job against a bare HTTP client, both at a local stub answering after a fixed latency.
    Fetch {
        /// Locations per run.
        #[arg(long, default_value_t = 1000)]
        locations: usize,
        /// The stub's answer latency, in milliseconds.
        #[arg(long, default_value_t = 50)]
        latency_ms: u64,
        /// Requests in flight.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Rounds, each one bare HTTP run and one job run.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Web mode under load: wrk against /readyz (kept state, and per request as it was),
    /// /api/v1/status, / and /api/v1/results on a history never analysed.
    Web {
        /// Synthetic observations.
        #[arg(long, default_value_t = 3_000_000)]
        rows: u64,
        /// Seconds per endpoint.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Concurrent connections.
        #[arg(long, default_value_t = 64)]
        connections: u64,
    },
}

/// Runs the chosen benchmark.
pub async fn run(config: &Config, which: BenchKind, shutdown: CancellationToken) -> anyhow::Result<()> {
    match which {
        BenchKind::Persist { messages, rounds } => {
            crate::bench::persist::run(config, messages, rounds, shutdown).await
        }
        BenchKind::Analytics {
            rows,
            history_rows: None,
            ..
        } => crate::bench::analytics::run(config, rows, shutdown).await,
        BenchKind::Analytics {
            rows,
            history_rows: Some(history),
            window_days,
        } => crate::bench::history::run(config, rows, history, window_days, shutdown).await,
        BenchKind::Fetch {
            locations,
            latency_ms,
            concurrency,
            runs,
        } => {
            let bench = crate::bench::fetch::FetchBench {
                locations,
                latency: std::time::Duration::from_millis(latency_ms),
                concurrency,
                runs,
            };
            crate::bench::fetch::run(config, bench, shutdown).await
        }
        BenchKind::Web {
            rows,
            seconds,
            connections,
        } => crate::bench::web::run(config, rows, seconds, connections).await,
    }
}
