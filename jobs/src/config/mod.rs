//! One typed configuration, loaded once in `main` and passed down.
//!
//! Layers, later wins: built-in defaults (matching `scripts/services.sh`), then an optional TOML file
//! (`--config` / `WEATHERFLOW_CONFIG`, or `./weatherflow.toml` when present), then the environment:
//! one variable per field, `WEATHERFLOW_<SECTION>_<FIELD>` (e.g. `WEATHERFLOW_PERSIST_BATCH_SIZE`)
//! except the conventional `DATABASE_URL`, `KAFKA_BOOTSTRAP_SERVERS` and `WEATHERAPI_KEY`.
//!
//! An environment value is converted by its field's type, so `WEATHERFLOW_SCHEDULER_REPLICA=1` is
//! the string `"1"`. Every field is declared once, in [`sections`], with its doc comment; `weatherflow
//! config --reference` prints them and `docs/configuration.md` is checked against that output.

mod alerts;
pub(crate) mod field;
mod kafka_client;
pub(crate) mod reference;
mod sections;
mod web;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

pub use alerts::{AlertsConfig, WebhookUrls, webhook_origin};
pub use kafka_client::ClientProperties;
pub(crate) use kafka_client::is_secret_property;
pub use sections::{
    AnalyticsConfig, DatabaseConfig, FetchConfig, KafkaConfig, MaintenanceConfig, OnStale, PersistConfig,
    SchedulerConfig, WeatherApiConfig,
};
pub use web::WebConfig;

use field::Section;

/// Errors while loading configuration; each names the file, variable or field to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a value in it does not fit its field.
    #[error("invalid configuration in {path}: {message}")]
    Invalid {
        /// The file the bad value came from.
        path: PathBuf,
        /// The parser's message, naming the field.
        message: String,
    },
    /// An environment variable's value does not fit its field's type.
    #[error("environment variable {var} ({field}): {message}")]
    Env {
        /// The variable's name.
        var: String,
        /// The field it sets, `section.field`.
        field: String,
        /// What was expected (never the value of a secret).
        message: String,
    },
    /// A setting that moved: its old name, in the file or the environment, is refused with the new one.
    #[error("{old} is now {new}: rename it (in the configuration file, or the variable {new_var})")]
    Moved {
        /// The old `section.field` or variable.
        old: String,
        /// The new `section.field`.
        new: &'static str,
        /// The new field's environment variable.
        new_var: &'static str,
    },
    /// A `WEATHERFLOW_*` variable that is neither a field nor one of [`OTHER_VARIABLES`]; most
    /// likely a typo, which would otherwise be ignored silently.
    #[error(
        "environment variable {var} is not a weatherflow setting (`weatherflow config --reference` lists them)"
    )]
    UnknownVariable {
        /// The variable's name.
        var: String,
    },
}

/// `WEATHERFLOW_*` variables the binary reads that are not configuration fields, with what they do.
/// Scripts keep their own variables under `SERVICES_*`, so no other name is allowed here.
pub const OTHER_VARIABLES: &[(&str, &str)] = &[
    (
        "WEATHERFLOW_CONFIG",
        "The configuration file, like `--config`. Default: `./weatherflow.toml` when it exists.",
    ),
    (
        "WEATHERFLOW_LOG_FORMAT",
        "`json` writes the log as JSON lines; logging follows `RUST_LOG`.",
    ),
];

/// Settings that moved to another section: `(old section.field, old variable, new section.field, new
/// variable)`. The old names are refused with the new one rather than ignored, so a deployment that
/// still sets them learns at start that its value no longer applies.
const MOVED: &[(&str, &str, &str, &str)] = &[
    (
        "persist.partition_months_ahead",
        "WEATHERFLOW_PERSIST_PARTITION_MONTHS_AHEAD",
        "maintenance.months_ahead",
        "WEATHERFLOW_MAINTENANCE_MONTHS_AHEAD",
    ),
    (
        "persist.retention_months",
        "WEATHERFLOW_PERSIST_RETENTION_MONTHS",
        "maintenance.retention_months",
        "WEATHERFLOW_MAINTENANCE_RETENTION_MONTHS",
    ),
];

/// The [`ConfigError::Moved`] of `name` (a `section.field` or a variable), if it is an old name.
fn moved(name: &str) -> Option<ConfigError> {
    MOVED
        .iter()
        .find(|(path, var, _, _)| *path == name || *var == name)
        .map(|&(_, _, new, new_var)| ConfigError::Moved {
            old: name.to_owned(),
            new,
            new_var,
        })
}

/// The whole configuration of weatherflow.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// PostgreSQL.
    pub database: DatabaseConfig,
    /// Apache Kafka.
    pub kafka: KafkaConfig,
    /// The WeatherAPI.com client.
    pub weatherapi: WeatherApiConfig,
    /// The fetch job.
    pub fetch: FetchConfig,
    /// The persist consumer.
    pub persist: PersistConfig,
    /// The analytics job.
    pub analytics: AnalyticsConfig,
    /// The partition maintenance job.
    pub maintenance: MaintenanceConfig,
    /// The scheduler service.
    pub scheduler: SchedulerConfig,
    /// Web mode: `weatherflow serve` and the `--http` listeners.
    pub web: WebConfig,
    /// Webhook alerts.
    pub alerts: AlertsConfig,
}

/// Where a field's effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Nothing set it.
    Default,
    /// The configuration file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Env(var) => write!(f, "env {var}"),
        }
    }
}

/// The origin of every field that did not keep its default, by `section.field`.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    set: BTreeMap<String, Origin>,
}

impl Origins {
    /// Where the field `section.field` got its value.
    pub fn of(&self, path: &str) -> &Origin {
        self.set.get(path).unwrap_or(&Origin::Default)
    }
}

impl Config {
    /// Loads the configuration from `file` (or `./weatherflow.toml` when present) and the process
    /// environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Like [`Config::load`], with the environment given explicitly (tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::load_traced(file, env).map(|(config, _)| config)
    }

    /// Like [`Config::load_from`], also telling where each value came from (`weatherflow config`).
    pub fn load_traced(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Self, Origins), ConfigError> {
        let default_file = Path::new("weatherflow.toml");
        let path = file.or(default_file.exists().then_some(default_file));
        let mut origins = Origins::default();
        let mut config = match path {
            Some(path) => Self::from_file(path, &mut origins)?,
            None => Config::default(),
        };
        config.apply_env(env, &mut origins)?;
        Ok((config, origins))
    }

    /// The sections, in the order the reference lists them.
    pub(crate) fn sections(&self) -> [&dyn Section; 10] {
        [
            &self.database,
            &self.kafka,
            &self.weatherapi,
            &self.fetch,
            &self.persist,
            &self.analytics,
            &self.maintenance,
            &self.scheduler,
            &self.web,
            &self.alerts,
        ]
    }

    fn sections_mut(&mut self) -> [&mut dyn Section; 10] {
        [
            &mut self.database,
            &mut self.kafka,
            &mut self.weatherapi,
            &mut self.fetch,
            &mut self.persist,
            &mut self.analytics,
            &mut self.maintenance,
            &mut self.scheduler,
            &mut self.web,
            &mut self.alerts,
        ]
    }

    fn from_file(path: &Path, origins: &mut Origins) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| invalid(e.to_string()))?;
        for (section, value) in &table {
            let Some(fields) = value.as_table() else { continue };
            for name in fields.keys() {
                if let Some(e) = moved(&format!("{section}.{name}")) {
                    return Err(e);
                }
                origins
                    .set
                    .insert(format!("{section}.{name}"), Origin::File(path.to_path_buf()));
            }
        }
        origins.file = Some(path.to_path_buf());
        serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| invalid(format!("field '{}': {}", e.path(), e.inner().message())))
    }

    /// Sets each field whose variable is present, converting the text by the field's type.
    fn apply_env(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
        origins: &mut Origins,
    ) -> Result<(), ConfigError> {
        let mut by_var: BTreeMap<String, (usize, &'static field::FieldDoc)> = BTreeMap::new();
        for (i, section) in self.sections().into_iter().enumerate() {
            for doc in section.fields() {
                by_var.insert(doc.env_var().into_owned(), (i, doc));
            }
        }
        for (var, text) in env {
            let Some(&(i, doc)) = by_var.get(&var) else {
                if let Some(e) = moved(&var) {
                    return Err(e);
                }
                let ours = var.starts_with("WEATHERFLOW_");
                if ours && !OTHER_VARIABLES.iter().any(|(name, _)| *name == var) {
                    return Err(ConfigError::UnknownVariable { var });
                }
                continue;
            };
            self.sections_mut()[i]
                .set_from_env(doc.name, &text)
                .map_err(|message| ConfigError::Env {
                    var: var.clone(),
                    field: doc.path(),
                    message,
                })?;
            origins.set.insert(doc.path(), Origin::Env(var));
        }
        Ok(())
    }
}

/// A secret given inline, else the content of `file`, either one trimmed: the one rule for every secret that may
/// come from a file (the API key, the SASL password, the web token). `Ok(None)` when neither is set
/// or both are blank; the error is the file's, for the caller to name the setting.
pub fn secret_or_file(
    value: Option<&SecretString>,
    file: Option<&Path>,
) -> Result<Option<SecretString>, std::io::Error> {
    // Trimmed like a file's contents: a value copied with its newline (`export X="$(cat f)"` keeps
    // none, but an env file or a secret manager may) must not make a token or key differ.
    if let Some(v) = value {
        let v = v.expose_secret().trim();
        if !v.is_empty() {
            return Ok(Some(SecretString::from(v.to_owned())));
        }
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)?;
    let secret = text.trim();
    Ok((!secret.is_empty()).then(|| SecretString::from(secret.to_owned())))
}

/// Query parameters whose values are secrets: WeatherAPI's `key`, and PostgreSQL's `password` and
/// `sslpassword`, which a connection URL may carry instead of its user-info part.
const SECRET_QUERY_KEYS: [&str; 3] = ["key", "password", "sslpassword"];

/// A URL with its password (and any `key=` query parameter) replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<unparsable url>".into();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed
        .query_pairs()
        .any(|(k, _)| SECRET_QUERY_KEYS.contains(&k.as_ref()))
    {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if SECRET_QUERY_KEYS.contains(&k.as_ref()) {
                    "***".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests;
