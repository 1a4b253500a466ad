//! `weatherflow completions SHELL` and `weatherflow man`: generated from the same clap definitions
//! the parser uses, so they list exactly the commands and flags the binary takes.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use super::Cli;

/// Writes the completion script for `shell` to standard output.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, "weatherflow", &mut out);
    out.flush().context("writing the completion script")
}

/// Writes the man pages: `weatherflow.1` to standard output, or with `dir` one page per command
/// and subcommand (`weatherflow.1`, `weatherflow-run.1`, `weatherflow-run-fetch.1`, ...) into `dir`,
/// the pages the main page's SUBCOMMANDS section names.
pub fn man(dir: Option<&Path>) -> anyhow::Result<()> {
    let cmd = Cli::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))
        }
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .context("writing the man page")?;
            out.flush().context("writing the man page")
        }
    }
}
