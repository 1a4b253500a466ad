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
    },
    /// Analytics job time vs PostgreSQL's regr_* aggregates.
    Analytics {
        /// Synthetic observations.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
    },
}

/// Runs the chosen benchmark.
pub async fn run(config: &Config, which: BenchKind, shutdown: CancellationToken) -> anyhow::Result<()> {
    match which {
        BenchKind::Persist { messages } => crate::bench::persist::run(config, messages, shutdown).await,
        BenchKind::Analytics { rows } => crate::bench::analytics::run(config, rows, shutdown).await,
    }
}
