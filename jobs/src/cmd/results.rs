//! `weatherflow results`: the latest regression coefficients.

use crate::config::Config;

/// Prints the latest results as an aligned table.
pub async fn run(_config: &Config, _scope: Option<&str>, _last: u64) -> anyhow::Result<()> {
    anyhow::bail!("`weatherflow results` is not implemented yet")
}
