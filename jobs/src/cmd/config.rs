//! `weatherflow config`: the effective configuration and where each value came from, or with
//! `--reference` every field with its variable, type, default and description (the table in
//! `docs/configuration.md`).

use std::path::Path;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::table::{self, Format};
use crate::config::{Config, reference};

/// Arguments of `weatherflow config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print every field (environment variable, type, default, description) as a Markdown table,
    /// instead of the effective values.
    #[arg(long, conflicts_with = "format")]
    pub reference: bool,
    /// Output format of the effective values.
    #[command(flatten)]
    pub output: table::Output,
}

/// One field of the effective configuration as `--format json|csv` prints it.
#[derive(Debug, Serialize)]
struct FieldRecord<'a> {
    /// The field's path (`kafka.bootstrap_servers`).
    field: &'a str,
    /// Its value, secrets masked.
    value: &'a str,
    /// Where it came from: `default`, the file, or the environment variable.
    origin: &'a str,
}

/// Runs `weatherflow config`. Loads the configuration itself, to know each value's origin; the
/// reference needs no configuration at all, so it prints even when the configuration is broken.
pub fn run(file: Option<&Path>, args: &ConfigArgs) -> anyhow::Result<()> {
    if args.reference {
        print!("{}", reference::markdown());
        return Ok(());
    }
    let (config, origins) = Config::load_traced(file, std::env::vars()).context("loading configuration")?;
    let effective = reference::effective(&config, &origins);
    let records: Vec<FieldRecord> = effective
        .iter()
        .map(|row| FieldRecord {
            field: &row.path,
            value: &row.value,
            origin: &row.origin,
        })
        .collect();
    match args.output.format {
        Format::Json => table::print_json(&serde_json::json!({
            "file": origins.file.as_ref().map(|p| p.display().to_string()),
            "fields": records,
        })),
        Format::Csv => table::print_records(Format::Csv, "fields", &["field", "value", "origin"], &records, String::new),
        Format::Table => {
            let file = origins
                .file
                .as_ref()
                .map_or_else(|| "none".to_owned(), |p| p.display().to_string());
            let rows: Vec<Vec<String>> = records
                .iter()
                .map(|r| vec![r.field.to_owned(), r.value.to_owned(), r.origin.to_owned()])
                .collect();
            table::emit(&format!(
                "configuration file: {file}\n{}",
                table::render(&["field", "value", "origin"], &rows)
            ))
        }
    }
}
