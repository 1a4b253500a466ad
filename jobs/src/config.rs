//! One typed configuration, loaded once in `main` and passed down.
//!
//! Layers, later wins: built-in defaults (matching `scripts/services.sh`), then an optional TOML file
//! (`--config`, `WEATHERFLOW_CONFIG`, or `./weatherflow.toml` when present), then the environment:
//! `DATABASE_URL`, `KAFKA_BOOTSTRAP_SERVERS`, `WEATHERAPI_KEY`, and `WEATHERFLOW_<SECTION>_<FIELD>` for
//! every other field (e.g. `WEATHERFLOW_PERSIST_BATCH_SIZE=2000`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

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
    /// The file, or the file merged with the environment, is not a valid configuration.
    #[error("invalid configuration{}: {message}", origin.as_deref().map(|o| format!(" in {o}")).unwrap_or_default())]
    Invalid {
        /// Where the bad value came from (a file path), when known.
        origin: Option<String>,
        /// The parser's message, naming the field.
        message: String,
    },
    /// An environment variable names a section that does not exist.
    #[error("environment variable {var}: unknown section (expected one of {expected})")]
    UnknownSection {
        /// The variable's name.
        var: String,
        /// The known section names.
        expected: String,
    },
}

/// The whole configuration of weatherflow.
#[derive(Debug, Clone, Default, Deserialize)]
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
    /// The scheduler service.
    pub scheduler: SchedulerConfig,
}

/// PostgreSQL settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Connection URL; holds the password, so it is never printed (see [`redact_url`]).
    pub url: SecretString,
    /// Upper bound of the connection pool.
    pub max_connections: u32,
    /// How long to wait for a connection before giving up.
    pub connect_timeout_secs: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://weatherflow:weatherflow@127.0.0.1:5432/weatherflow"),
            max_connections: 10,
            connect_timeout_secs: 5,
        }
    }
}

/// Kafka settings shared by producers and consumers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Topic the fetch job produces to and the persist job consumes.
    pub observations_topic: String,
    /// Dead-letter topic for records the persist job rejects.
    pub dlq_topic: String,
    /// Partition count used when the project creates a topic.
    pub partitions: i32,
    /// Replication factor used when the project creates a topic: 1 for one broker, 3 on a cluster
    /// (`weatherflow check` warns about 1 on more than one broker).
    pub replication_factor: i32,
    /// `min.insync.replicas` of the topics the project creates; unset, the broker's default applies.
    /// With `acks=all`, a write is acknowledged once this many replicas hold it: 2 with a replication
    /// factor of 3 survives the loss of any one broker without losing an acknowledged message.
    pub min_insync_replicas: Option<i32>,
    /// Consumer group of the persist job.
    pub consumer_group: String,
    /// Timeout of admin and metadata requests.
    pub request_timeout_secs: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            observations_topic: "weather.observations".into(),
            dlq_topic: "weather.observations.dlq".into(),
            partitions: 6,
            replication_factor: 1,
            min_insync_replicas: None,
            consumer_group: "weatherflow-persist".into(),
            request_timeout_secs: 10,
        }
    }
}

/// WeatherAPI.com client settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WeatherApiConfig {
    /// Base URL up to and including `/v1`; tests point it at a local stub.
    pub base_url: String,
    /// The API key (env `WEATHERAPI_KEY`). Redacted in every output.
    pub api_key: Option<SecretString>,
    /// A file holding the API key, used when `api_key` is not set.
    pub key_file: Option<PathBuf>,
    /// Per-request timeout.
    pub timeout_secs: u64,
    /// Attempts per request for retryable failures (429, 5xx, timeouts).
    pub max_attempts: u32,
    /// First backoff delay; doubles each attempt, with jitter.
    pub backoff_initial_ms: u64,
    /// Ceiling of one backoff delay.
    pub backoff_max_ms: u64,
    /// Bound on the total time spent on one location, retries included.
    pub max_total_secs: u64,
    /// Use the bulk endpoint (paid plans only).
    pub bulk: bool,
    /// Locations per bulk request; WeatherAPI accepts at most 50, larger values are capped.
    pub bulk_batch_size: usize,
    /// Pass `aqi=yes`.
    pub aqi: bool,
}

impl Default for WeatherApiConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.weatherapi.com/v1".into(),
            api_key: None,
            key_file: None,
            timeout_secs: 10,
            max_attempts: 5,
            backoff_initial_ms: 500,
            backoff_max_ms: 10_000,
            max_total_secs: 60,
            bulk: false,
            bulk_batch_size: 50,
            aqi: false,
        }
    }
}

impl WeatherApiConfig {
    /// The API key from `api_key`, else from `key_file` (trimmed). `Ok(None)` when neither is set.
    pub fn resolve_key(&self) -> Result<Option<SecretString>, ConfigError> {
        if let Some(k) = &self.api_key
            && !k.expose_secret().trim().is_empty()
        {
            return Ok(Some(k.clone()));
        }
        let Some(path) = &self.key_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let key = text.trim();
        Ok((!key.is_empty()).then(|| SecretString::from(key.to_owned())))
    }
}

/// Fetch job settings (the locations themselves live in `schedules.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FetchConfig {
    /// Requests in flight at once (bulk mode: bulk requests in flight).
    pub concurrency: usize,
    /// Token-bucket refill rate, HTTP requests per second, retries included; 0 = unlimited.
    pub rate_per_sec: f64,
    /// Token-bucket capacity (burst).
    pub burst: u32,
    /// Seed of the simulated source when the run gives none.
    pub simulated_seed: u64,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            rate_per_sec: 10.0,
            burst: 10,
            simulated_seed: 0,
        }
    }
}

/// Persist consumer settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersistConfig {
    /// A batch is written when it holds this many records...
    pub batch_size: usize,
    /// ...or when its oldest record has waited this long. A batch is also written early when the
    /// consumer has nothing more to read and its writer is idle, so a quiet stream is not delayed.
    pub batch_timeout_ms: u64,
    /// First backoff delay after a database or broker failure.
    pub retry_initial_ms: u64,
    /// Ceiling of the backoff delay.
    pub retry_max_ms: u64,
    /// Database writers working in parallel, each on its own connection and its own share of the
    /// partitions (partition modulo writers), so per-partition order is kept. On our 2-core machine
    /// (`weatherflow bench persist`): 1 writer 71 k rows/s, 2 writers 123–131 k, 3 writers 126–142 k.
    pub writers: usize,
    /// `--until-idle`: the job stops after this long without a message, once it has partitions
    /// and has read each of them up to its end.
    pub idle_ms: u64,
    /// Kafka `session.timeout.ms`: how soon the group gives a dead consumer's partitions to the
    /// others. The broker accepts 6000 and up by default.
    pub session_timeout_ms: u64,
    /// Message values larger than this are quarantined as `too_large` (a `current.json` is 1–3 KB).
    pub max_value_bytes: usize,
    /// Observations stamped further ahead than this are quarantined as `future_timestamp`.
    pub max_future_secs: u64,
    /// `max.message.bytes` of the dead-letter topic when the job creates it, and the DLQ producer's
    /// `message.max.bytes`: large enough for any record the observations topic accepts.
    pub dlq_max_message_bytes: usize,
}

impl Default for PersistConfig {
    fn default() -> Self {
        Self {
            batch_size: 5000,
            batch_timeout_ms: 200,
            retry_initial_ms: 200,
            retry_max_ms: 10_000,
            writers: 3,
            idle_ms: 1000,
            session_timeout_ms: 10_000,
            max_value_bytes: 256 * 1024,
            max_future_secs: 3600,
            dlq_max_message_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Analytics job settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// A location gets its own fit only with at least this many samples.
    pub min_samples: u64,
    /// A plot draws at most this many points (an even stride through the samples), so a plot of a
    /// million rows stays a file a browser opens; the fitted line always uses every sample.
    pub plot_max_points: usize,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            min_samples: 30,
            plot_max_points: 20_000,
        }
    }
}

/// Scheduler service settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Path of the schedules file.
    pub schedules_path: PathBuf,
    /// How long running jobs may take to finish after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// After a run is cancelled (timeout, or the grace period ran out), how long it gets to notice and
    /// return before it is dropped. Its row is recorded failed either way.
    pub cancel_wait_secs: u64,
    /// This process's name in the run history (`details.replica`), to tell replicas apart. Default:
    /// `<hostname>:<pid>`.
    pub replica: Option<String>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            schedules_path: PathBuf::from("schedules.toml"),
            shutdown_grace_secs: 30,
            cancel_wait_secs: 5,
            replica: None,
        }
    }
}

impl SchedulerConfig {
    /// The grace period as a [`Duration`].
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// The wait after cancelling a run as a [`Duration`].
    pub fn cancel_wait(&self) -> Duration {
        Duration::from_secs(self.cancel_wait_secs)
    }
}

const SECTIONS: [&str; 7] = [
    "database",
    "kafka",
    "weatherapi",
    "fetch",
    "persist",
    "analytics",
    "scheduler",
];

/// Variables with a `WEATHERFLOW_` prefix that are not configuration fields.
const NOT_FIELDS: &[&str] = &[
    "WEATHERFLOW_CONFIG",
    "WEATHERFLOW_LOG_FORMAT",
    // Read by scripts/services.sh and scripts/demo.sh, not by the binary.
    "WEATHERFLOW_CACHE",
    "WEATHERFLOW_PG_PASSWORD",
    "WEATHERFLOW_KAFKA_PORT",
    "WEATHERFLOW_KAFKA_CONTROLLER_PORT",
    "WEATHERFLOW_KAFKA_HEAP",
    "WEATHERFLOW_KAFKA_START_TIMEOUT",
    "WEATHERFLOW_BIN",
    "WEATHERFLOW_DEMO_PLOT",
    // scripts/lib/zookeeper.sh and scripts/test-cluster.sh.
    "WEATHERFLOW_JARS",
    "WEATHERFLOW_ZOOKEEPER_KAFKA_PORT",
    "WEATHERFLOW_TEST_CLUSTER_PORT",
    "WEATHERFLOW_TEST_CLUSTER_CONTROLLER_PORT",
    "WEATHERFLOW_TEST_ZOOKEEPER_PORT",
    "WEATHERFLOW_TEST_ZOOKEEPER_KAFKA_PORT",
    "WEATHERFLOW_TEST_CLUSTER_STATE",
];

impl Config {
    /// Loads the configuration from `file` (or the default file when present) and the process
    /// environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Like [`Config::load`], with the environment given explicitly (tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let from_env = env
            .iter()
            .find(|(k, _)| k == "WEATHERFLOW_CONFIG")
            .map(|(_, v)| PathBuf::from(v));
        let path = file.map(Path::to_path_buf).or(from_env);
        let (mut table, origin) = match path {
            Some(p) => (read_table(&p)?, Some(p.display().to_string())),
            None if Path::new("weatherflow.toml").exists() => (
                read_table(Path::new("weatherflow.toml"))?,
                Some("weatherflow.toml".to_owned()),
            ),
            None => (toml::Table::new(), None),
        };
        apply_env(&mut table, &env)?;
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Invalid {
            origin,
            message: format!("field '{}': {}", e.path(), e.inner().message()),
        })
    }
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|e| ConfigError::Invalid {
        origin: Some(path.display().to_string()),
        message: e.to_string(),
    })
}

fn set(table: &mut toml::Table, section: &str, field: &str, value: toml::Value) {
    let entry = table
        .entry(section)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = entry {
        t.insert(field.to_owned(), value);
    }
}

/// A variable's text as a TOML scalar: integers, floats and booleans keep their type, the rest is a
/// string. Serde then reports a type mismatch naming the field.
fn scalar(text: &str) -> toml::Value {
    if let Ok(i) = text.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = text.parse::<f64>() {
        return toml::Value::Float(f);
    }
    match text {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(text.to_owned()),
    }
}

fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (key, value) in env {
        match key.as_str() {
            "DATABASE_URL" => set(table, "database", "url", toml::Value::String(value.clone())),
            "KAFKA_BOOTSTRAP_SERVERS" => set(
                table,
                "kafka",
                "bootstrap_servers",
                toml::Value::String(value.clone()),
            ),
            "WEATHERAPI_KEY" => set(table, "weatherapi", "api_key", toml::Value::String(value.clone())),
            k if k.starts_with("WEATHERFLOW_") && !NOT_FIELDS.contains(&k) => {
                let rest = k["WEATHERFLOW_".len()..].to_ascii_lowercase();
                let Some((section, field)) = rest.split_once('_') else {
                    continue;
                };
                if !SECTIONS.contains(&section) {
                    return Err(ConfigError::UnknownSection {
                        var: key.clone(),
                        expected: SECTIONS.join(", "),
                    });
                }
                // Secrets and paths stay strings even when they look like numbers.
                let v = if matches!(field, "url" | "api_key" | "key_file" | "base_url") {
                    toml::Value::String(value.clone())
                } else {
                    scalar(value)
                };
                set(table, section, field, v);
            }
            _ => {}
        }
    }
    Ok(())
}

/// A URL with its password (and any `key=` query parameter) replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<unparsable url>".into();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query_pairs().any(|(k, _)| k == "key") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "key" {
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
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_local_scripts() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(c.kafka.bootstrap_servers, "127.0.0.1:9092");
        assert_eq!(
            c.database.url.expose_secret(),
            "postgres://weatherflow:weatherflow@127.0.0.1:5432/weatherflow"
        );
        assert_eq!(c.kafka.partitions, 6);
        assert_eq!(c.kafka.min_insync_replicas, None);
    }

    #[test]
    fn cluster_settings_from_the_environment() {
        let c = Config::load_from(
            None,
            env(&[
                ("WEATHERFLOW_KAFKA_REPLICATION_FACTOR", "3"),
                ("WEATHERFLOW_KAFKA_MIN_INSYNC_REPLICAS", "2"),
                ("WEATHERFLOW_TEST_CLUSTER_PORT", "19092"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (c.kafka.replication_factor, c.kafka.min_insync_replicas),
            (3, Some(2))
        );
    }

    #[test]
    fn environment_overrides_file() {
        let dir = std::env::temp_dir().join(format!("wf-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[persist]\nbatch_size = 10\nbatch_timeout_ms = 7\n").unwrap();
        let c = Config::load_from(
            Some(&file),
            env(&[
                ("WEATHERFLOW_PERSIST_BATCH_SIZE", "99"),
                ("KAFKA_BOOTSTRAP_SERVERS", "h:1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.persist.batch_size, 99);
        assert_eq!(c.persist.batch_timeout_ms, 7);
        assert_eq!(c.kafka.bootstrap_servers, "h:1");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = Config::load_from(None, env(&[("WEATHERFLOW_PERSIST_BATCH_SIZE", "lots")])).unwrap_err();
        assert!(err.to_string().contains("batch_size"), "{err}");
        let err = Config::load_from(None, env(&[("WEATHERFLOW_NOPE_X", "1")])).unwrap_err();
        assert!(err.to_string().contains("WEATHERFLOW_NOPE_X"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let c = Config::load_from(
            None,
            env(&[
                ("WEATHERAPI_KEY", "sekrit-123"),
                ("DATABASE_URL", "postgres://u:pw-xyz@h/d"),
            ]),
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("sekrit-123") && !shown.contains("pw-xyz"),
            "{shown}"
        );
        assert_eq!(redact_url("postgres://u:pw-xyz@h:5/d"), "postgres://u:***@h:5/d");
        assert!(!redact_url("http://x/v1/current.json?key=abc&q=London").contains("abc"));
    }
}
