//! Loading: layers, typed environment values, errors that name their source, secrets.

use secrecy::ExposeSecret;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A scratch directory of this test's own, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wf-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, text: &str) -> PathBuf {
        let path = self.0.join("weatherflow.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
}

#[test]
fn environment_overrides_file() {
    let dir = Scratch::new("layers");
    let file = dir.file("[persist]\nbatch_size = 10\nbatch_timeout_ms = 7\n");
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
}

#[test]
fn string_fields_stay_strings_whatever_their_text() {
    let c = Config::load_from(
        None,
        env(&[
            ("WEATHERFLOW_SCHEDULER_REPLICA", "1"),
            ("WEATHERFLOW_KAFKA_CONSUMER_GROUP", "2024"),
            ("WEATHERFLOW_KAFKA_OBSERVATIONS_TOPIC", "true"),
            ("WEATHERFLOW_FETCH_RATE_PER_SEC", "10"),
            ("WEATHERFLOW_WEATHERAPI_BULK", "true"),
        ]),
    )
    .unwrap();
    assert_eq!(c.scheduler.replica.as_deref(), Some("1"));
    assert_eq!(c.kafka.consumer_group, "2024");
    assert_eq!(c.kafka.observations_topic, "true");
    assert_eq!(c.fetch.rate_per_sec, 10.0);
    assert!(c.weatherapi.bulk);
}

#[test]
fn an_empty_variable_unsets_an_optional_field() {
    let c = Config::load_from(
        None,
        env(&[("WEATHERAPI_KEY", ""), ("WEATHERFLOW_WEATHERAPI_KEY_FILE", "")]),
    )
    .unwrap();
    assert!(c.weatherapi.api_key.is_none() && c.weatherapi.key_file.is_none());
}

#[test]
fn bad_environment_values_name_the_variable() {
    let err = Config::load_from(None, env(&[("WEATHERFLOW_PERSIST_BATCH_SIZE", "lots")])).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConfigError::Env { .. }), "{text}");
    assert!(
        text.contains("WEATHERFLOW_PERSIST_BATCH_SIZE") && text.contains("persist.batch_size"),
        "{text}"
    );
    let err = Config::load_from(None, env(&[("WEATHERFLOW_DATABASE_MAX_CONNECTIONS", "-3")])).unwrap_err();
    assert!(
        err.to_string().contains("WEATHERFLOW_DATABASE_MAX_CONNECTIONS"),
        "{err}"
    );
    let err = Config::load_from(None, env(&[("WEATHERFLOW_NOPE_X", "1")])).unwrap_err();
    assert!(err.to_string().contains("WEATHERFLOW_NOPE_X"), "{err}");
    // A misspelt field of a known section is refused too, not ignored.
    let err = Config::load_from(None, env(&[("WEATHERFLOW_PERSIST_BATCHSIZE", "1")])).unwrap_err();
    assert!(matches!(err, ConfigError::UnknownVariable { .. }), "{err}");
}

#[test]
fn bad_file_values_name_the_file_and_field() {
    let dir = Scratch::new("bad-file");
    let file = dir.file("[scheduler]\nreplica = 1\n");
    let err = Config::load_from(Some(&file), env(&[])).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConfigError::Invalid { .. }), "{text}");
    assert!(
        text.contains(&file.display().to_string()) && text.contains("scheduler.replica"),
        "{text}"
    );
    let file = dir.file("[persist]\nbatch_sise = 1\n");
    let err = Config::load_from(Some(&file), env(&[])).unwrap_err().to_string();
    assert!(
        err.contains(&file.display().to_string()) && err.contains("batch_sise"),
        "{err}"
    );
    // The environment fixes nothing the file broke: the error still names the file.
    let file = dir.file("[persist\n");
    let err = Config::load_from(Some(&file), env(&[("WEATHERFLOW_PERSIST_BATCH_SIZE", "5")])).unwrap_err();
    assert!(err.to_string().contains(&file.display().to_string()), "{err}");
}

#[test]
fn origins_say_default_file_or_variable() {
    let dir = Scratch::new("origins");
    let file = dir.file("[persist]\nbatch_size = 10\nwriters = 2\n");
    let (c, origins) = Config::load_traced(
        Some(&file),
        env(&[
            ("WEATHERFLOW_PERSIST_WRITERS", "1"),
            ("WEATHERFLOW_LOG_FORMAT", "json"),
        ]),
    )
    .unwrap();
    assert_eq!(c.persist.writers, 1);
    assert_eq!(origins.of("persist.batch_size"), &Origin::File(file.clone()));
    assert_eq!(
        origins.of("persist.writers"),
        &Origin::Env("WEATHERFLOW_PERSIST_WRITERS".into())
    );
    assert_eq!(origins.of("kafka.partitions"), &Origin::Default);
    assert_eq!(origins.file.as_deref(), Some(file.as_path()));
}

#[test]
fn secrets_do_not_print() {
    let (c, origins) = Config::load_traced(
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
    let rows = reference::effective(&c, &origins);
    let listing = format!("{rows:?}");
    assert!(
        !listing.contains("sekrit-123") && !listing.contains("pw-xyz"),
        "{listing}"
    );
    let url = rows.iter().find(|r| r.path == "database.url").unwrap();
    assert_eq!(
        (url.value.as_str(), url.origin.as_str()),
        ("postgres://u:***@h/d", "env DATABASE_URL")
    );
    assert_eq!(redact_url("postgres://u:pw-xyz@h:5/d"), "postgres://u:***@h:5/d");
    assert!(!redact_url("http://x/v1/current.json?key=abc&q=London").contains("abc"));
    let shown = redact_url("postgres://u@h/d?sslmode=verify-full&password=pw-q&sslpassword=pw-k");
    assert!(!shown.contains("pw-q") && !shown.contains("pw-k"), "{shown}");
    assert!(shown.contains("sslmode=verify-full"), "{shown}");
}

#[test]
fn cluster_settings_from_the_environment() {
    assert_eq!(Config::default().kafka.min_insync_replicas, None);
    let c = Config::load_from(
        None,
        env(&[
            ("WEATHERFLOW_KAFKA_REPLICATION_FACTOR", "3"),
            ("WEATHERFLOW_KAFKA_MIN_INSYNC_REPLICAS", "2"),
            // The scripts' own variables are not the binary's business.
            ("SERVICES_TEST_CLUSTER_PORT", "19092"),
        ]),
    )
    .unwrap();
    assert_eq!(
        (c.kafka.replication_factor, c.kafka.min_insync_replicas),
        (3, Some(2))
    );
}

#[test]
fn moved_partition_settings_are_refused_with_their_new_names() {
    let dir = Scratch::new("moved");
    let file = dir.file("[persist]\nretention_months = 12\n");
    let err = Config::load_from(Some(&file), env(&[])).unwrap_err().to_string();
    assert!(
        err.contains("persist.retention_months is now maintenance.retention_months"),
        "{err}"
    );
    let err = Config::load_from(None, env(&[("WEATHERFLOW_PERSIST_PARTITION_MONTHS_AHEAD", "3")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("maintenance.months_ahead") && err.contains("WEATHERFLOW_MAINTENANCE_MONTHS_AHEAD"),
        "{err}"
    );
    let c = Config::load_from(None, env(&[("WEATHERFLOW_MAINTENANCE_RETENTION_MONTHS", "6")])).unwrap();
    assert_eq!(
        (c.maintenance.months_ahead, c.maintenance.retention_months),
        (2, Some(6))
    );
}

#[test]
fn inline_secrets_are_trimmed_like_files() {
    use secrecy::{ExposeSecret, SecretString};
    let inline = SecretString::from("token-1\n".to_owned());
    let got = super::secret_or_file(Some(&inline), None).unwrap().unwrap();
    assert_eq!(got.expose_secret(), "token-1");
    let dir = std::env::temp_dir().join(format!("wf-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, " token-2 \r\n").unwrap();
    let blank = SecretString::from("  \n".to_owned());
    let got = super::secret_or_file(Some(&blank), Some(&file)).unwrap().unwrap();
    assert_eq!(got.expose_secret(), "token-2");
    std::fs::remove_dir_all(&dir).unwrap();
}
