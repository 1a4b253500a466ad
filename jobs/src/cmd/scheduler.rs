//! `weatherflow scheduler`: the long-running service.

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Runs the scheduler until shutdown.
pub async fn run(_config: &Config, _with_consumer: bool, _shutdown: CancellationToken) -> anyhow::Result<()> {
    anyhow::bail!("`weatherflow scheduler` is not implemented yet")
}
