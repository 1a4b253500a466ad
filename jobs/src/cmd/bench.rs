//! `weatherflow bench`: benchmarks that print figures.

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// `weatherflow bench persist`.
pub async fn persist(config: &Config, messages: u64, shutdown: CancellationToken) -> anyhow::Result<()> {
    crate::bench::persist::run(config, messages, shutdown).await
}

/// `weatherflow bench analytics`.
pub async fn analytics(config: &Config, rows: u64, shutdown: CancellationToken) -> anyhow::Result<()> {
    crate::bench::analytics::run(config, rows, shutdown).await
}
