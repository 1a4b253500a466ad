//! `weatherflow bench`: benchmarks that print figures.

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// `weatherflow bench persist`.
pub async fn persist(_config: &Config, _messages: u64, _shutdown: CancellationToken) -> anyhow::Result<()> {
    anyhow::bail!("`weatherflow bench persist` is not implemented yet")
}

/// `weatherflow bench analytics`.
pub async fn analytics(config: &Config, rows: u64, shutdown: CancellationToken) -> anyhow::Result<()> {
    crate::bench_analytics::run(config, rows, shutdown).await
}
