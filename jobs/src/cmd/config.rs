//! `weatherflow config`: the effective configuration and where each value came from, or with
//! `--reference` every field with its variable, type, default and description (the table in
//! `docs/configuration.md`).

use std::path::Path;

use anyhow::Context;
use clap::Args;

use crate::config::{Config, reference};

/// Arguments of `weatherflow config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print every field (environment variable, type, default, description) as a Markdown table,
    /// instead of the effective values.
    #[arg(long)]
    pub reference: bool,
}

/// Runs `weatherflow config`. Loads the configuration itself, to know each value's origin; the
/// reference needs no configuration at all, so it prints even when the configuration is broken.
pub fn run(file: Option<&Path>, args: &ConfigArgs) -> anyhow::Result<()> {
    if args.reference {
        print!("{}", reference::markdown());
        return Ok(());
    }
    let (config, origins) = Config::load_traced(file, std::env::vars()).context("loading configuration")?;
    match &origins.file {
        Some(path) => println!("configuration file: {}", path.display()),
        None => println!("configuration file: none"),
    }
    let rows: Vec<Vec<String>> = reference::effective(&config, &origins)
        .into_iter()
        .map(|row| vec![row.path, row.value, row.origin])
        .collect();
    print!("{}", super::table::render(&["field", "value", "origin"], &rows));
    Ok(())
}
