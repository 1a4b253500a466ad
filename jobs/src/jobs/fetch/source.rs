//! Where a fetch takes its data from, and the rule that keeps simulated weather from joining real
//! weather unannounced.
//!
//! `auto` is decided once per process, when it starts ([`AutoSource::at_start`]): WeatherAPI when a
//! key is configured, else the simulator, logged at INFO with the reason. Every fetch the process
//! starts afterwards (scheduled, over HTTP, by hand) asks for what was decided, so a process never
//! switches source between runs.
//!
//! A run whose source is simulated is refused against a database that already holds WeatherAPI
//! observations ([`check_source`]) unless the operator opted in (`fetch.allow_simulated_beside_real`,
//! or `--allow-simulated-beside-real` for one manual run). Both kinds of rows can be stored side by
//! side; the refusal is there because a process that lost its key (a compose service without the
//! shared environment, a rotated secret) would otherwise write made-up numbers into a real history
//! and say so only in its own log. An empty database, or one holding only simulated rows (the demo,
//! the test stages), is never refused.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};
use secrecy::SecretString;
use serde::Deserialize;

use crate::config::{Config, ConfigError};
use crate::job_error::{JobError, JobErrorKind, JobResultExt};

/// Where fetch takes its data from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SourceChoice {
    /// WeatherAPI.com when the process has a key, else the simulator; decided once when the process
    /// starts and logged then.
    #[default]
    Auto,
    /// WeatherAPI.com; fails without a key.
    Weatherapi,
    /// The built-in simulator.
    Simulated,
}

/// What `auto` means in this process: decided once, at start, from whether a WeatherAPI key is
/// configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoSource {
    /// [`SourceChoice::Weatherapi`] or [`SourceChoice::Simulated`], never `Auto`.
    means: SourceChoice,
}

impl AutoSource {
    /// Decides `auto` for this process and logs the decision at INFO with its reason (never the key).
    /// An unreadable `weatherapi.key_file` is an error here, at start, not at the first run.
    pub fn at_start(config: &Config) -> Result<Self, ConfigError> {
        let w = &config.weatherapi;
        let has_key = w.resolve_key()?.is_some();
        if !has_key {
            tracing::info!(
                "WEATHERAPI_KEY is not set: this process fetches simulated weather (source \"auto\"); \
                 set WEATHERAPI_KEY or weatherapi.key_file for real weather"
            );
            return Ok(Self {
                means: SourceChoice::Simulated,
            });
        }
        match (&w.api_key, &w.key_file) {
            (None, Some(file)) => tracing::info!(
                key_file = %file.display(),
                "weatherapi.key_file is set: this process fetches real weather from WeatherAPI.com (source \"auto\")"
            ),
            _ => tracing::info!(
                "WEATHERAPI_KEY is set: this process fetches real weather from WeatherAPI.com (source \"auto\")"
            ),
        }
        Ok(Self {
            means: SourceChoice::Weatherapi,
        })
    }

    /// `choice` with `auto` replaced by what it means in this process.
    pub fn apply(self, choice: SourceChoice) -> SourceChoice {
        match choice {
            SourceChoice::Auto => self.means,
            other => other,
        }
    }
}

/// Where one run's data comes from.
pub(super) enum Resolved {
    /// WeatherAPI.com with this key.
    Api(SecretString),
    /// The simulator.
    Simulated,
}

/// The run's source. `auto` reaches here only from a caller that did not decide it at start (the
/// library's own tests): it then falls back as the process would, with a WARN line.
pub(super) fn resolve_source(config: &Config, choice: SourceChoice) -> Result<Resolved, JobError> {
    if choice == SourceChoice::Simulated {
        return Ok(Resolved::Simulated);
    }
    let key = config
        .weatherapi
        .resolve_key()
        .job(JobErrorKind::Fatal, "reading the WeatherAPI key")?;
    match (choice, key) {
        (_, Some(key)) => Ok(Resolved::Api(key)),
        (SourceChoice::Weatherapi, None) => Err(JobError::fatal(
            "the weatherapi source needs an API key: set WEATHERAPI_KEY or weatherapi.key_file \
             (or use --source simulated)",
        )),
        _ => {
            tracing::warn!(
                "no WeatherAPI key configured (WEATHERAPI_KEY / weatherapi.key_file): source \"auto\" is \
                 using the SIMULATED source; messages are marked \"source\":\"simulated\" and are not real weather"
            );
            Ok(Resolved::Simulated)
        }
    }
}

/// Why a fetch may not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceCheckError {
    /// The run's source is simulated, the database holds WeatherAPI observations, and the operator did
    /// not opt in. The message says why and how to opt in.
    #[error("{0}")]
    SimulatedBesideReal(String),
    /// The database did not answer the check.
    #[error("checking whether observations hold WeatherAPI rows: {0}")]
    Database(#[from] DbErr),
}

impl From<SourceCheckError> for JobError {
    fn from(e: SourceCheckError) -> Self {
        let kind = match e {
            // The same run would be refused on every attempt until a person acts.
            SourceCheckError::SimulatedBesideReal(_) => JobErrorKind::Fatal,
            SourceCheckError::Database(_) => JobErrorKind::Retryable,
        };
        JobError::new(kind, e)
    }
}

/// Whether the table holds a WeatherAPI row. It stops at the first one, which on a database of real
/// data is among the first rows read; it reads the whole table only when there is none (the demo's
/// and the test stages' few thousand simulated rows).
const HAS_REAL_ROWS: &str = "SELECT EXISTS (SELECT 1 FROM observations WHERE source = 'weatherapi')";

/// Refuses a run whose source (`choice`, `auto` already applied) is simulated against a database that
/// holds WeatherAPI observations, unless `fetch.allow_simulated_beside_real` is set.
pub async fn check_source(
    config: &Config,
    db: &DatabaseConnection,
    choice: SourceChoice,
) -> Result<(), SourceCheckError> {
    let has_key = config.weatherapi.resolve_key().ok().flatten().is_some();
    let simulated = match choice {
        SourceChoice::Simulated => true,
        SourceChoice::Weatherapi => false,
        SourceChoice::Auto => !has_key,
    };
    if !simulated || config.fetch.allow_simulated_beside_real {
        return Ok(());
    }
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, HAS_REAL_ROWS))
        .await?
        .ok_or_else(|| DbErr::Custom("EXISTS returned no row".into()))?;
    if !row.try_get_by_index::<bool>(0)? {
        return Ok(());
    }
    Err(SourceCheckError::SimulatedBesideReal(refusal(has_key)))
}

/// The refusal's text: why this run is simulated, and the two ways out. Names settings, never values.
fn refusal(has_key: bool) -> String {
    let why = if has_key {
        "the run asks for source \"simulated\""
    } else {
        "WEATHERAPI_KEY is not set in this process (nor weatherapi.key_file), so its source is simulated"
    };
    format!(
        "refusing to fetch simulated weather into a database that already holds WeatherAPI observations: \
         {why}. Give this process the WeatherAPI key (WEATHERAPI_KEY or weatherapi.key_file) to fetch real \
         weather, or opt in to simulated rows beside the real ones with fetch.allow_simulated_beside_real = true \
         (WEATHERFLOW_FETCH_ALLOW_SIMULATED_BESIDE_REAL=true), or --allow-simulated-beside-real for one \
         `weatherflow run fetch`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_replaced_and_explicit_choices_are_kept() {
        let sim = AutoSource {
            means: SourceChoice::Simulated,
        };
        assert_eq!(sim.apply(SourceChoice::Auto), SourceChoice::Simulated);
        assert_eq!(sim.apply(SourceChoice::Weatherapi), SourceChoice::Weatherapi);
        let api = AutoSource {
            means: SourceChoice::Weatherapi,
        };
        assert_eq!(api.apply(SourceChoice::Auto), SourceChoice::Weatherapi);
        assert_eq!(api.apply(SourceChoice::Simulated), SourceChoice::Simulated);
    }

    #[test]
    fn the_refusal_says_why_and_how_to_opt_in() {
        let no_key = refusal(false);
        assert!(no_key.contains("WEATHERAPI_KEY is not set"), "{no_key}");
        for text in [no_key, refusal(true)] {
            assert!(
                text.contains("fetch.allow_simulated_beside_real = true"),
                "{text}"
            );
            assert!(
                text.contains("WEATHERFLOW_FETCH_ALLOW_SIMULATED_BESIDE_REAL"),
                "{text}"
            );
            assert!(text.contains("--allow-simulated-beside-real"), "{text}");
        }
        assert!(refusal(true).contains("asks for source \"simulated\""));
    }
}
