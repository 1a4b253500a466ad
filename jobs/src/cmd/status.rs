//! `weatherflow status`: last runs, next fire times, consumer lag, row counts.

use crate::config::Config;

/// Prints the platform's status.
pub async fn run(_config: &Config) -> anyhow::Result<()> {
    anyhow::bail!("`weatherflow status` is not implemented yet")
}
