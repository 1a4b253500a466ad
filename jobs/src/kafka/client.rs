//! The one client builder every producer, consumer and admin client starts from, with the `[kafka]`
//! security settings (TLS, SASL) and the `[kafka.client]` pass-through applied.

use std::path::PathBuf;

use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;
use secrecy::{ExposeSecret, SecretString};

use super::error::KafkaSetupError;
use crate::config::KafkaConfig;

/// The one client builder: bootstrap servers, the security settings and the `[kafka.client]` table
/// ([`apply_security`]); callers add their role's settings, which win over the table.
pub fn base_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("client.id", "weatherflow")
        .set("socket.timeout.ms", (cfg.request_timeout_secs * 1000).to_string());
    apply_security(cfg, &mut c);
    c
}

/// The producer every job uses: idempotent, `acks=all`, compressed, so a retried send can never
/// duplicate or reorder a message within a partition.
pub fn producer(cfg: &KafkaConfig) -> Result<FutureProducer, KafkaSetupError> {
    producer_config(cfg)
        .set("message.timeout.ms", "120000")
        .create()
        .map_err(KafkaSetupError::Client)
}

/// Every producer's settings: idempotent, `acks=all`, lz4, `kafka.linger_ms`. Callers add their
/// delivery timeout and size limits.
///
/// A producer never has the broker create a topic: each topic it writes to is made by
/// [`ensure_topic`] with its partition count and settings, and a broker's auto-creation (with the
/// broker's defaults) could win the race when a first send overlaps that call.
pub(crate) fn producer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = base_config(cfg);
    c.set("allow.auto.create.topics", "false")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", cfg.linger_ms.to_string());
    c
}

/// Drops a client (an admin client, a producer whose reports are all in) on a blocking thread. Each
/// rdkafka client's drop joins its polling thread, which polls every 100 ms, and then destroys the
/// librdkafka handle: up to 100 ms and more that would otherwise block the caller's async task.
pub(crate) fn close_off_task<T: Send + 'static>(client: T) {
    tokio::task::spawn_blocking(move || drop(client));
}

/// The SASL password: `sasl_password`, else the trimmed content of `sasl_password_file`.
pub fn sasl_password(cfg: &KafkaConfig) -> Result<Option<SecretString>, KafkaSetupError> {
    crate::config::secret_or_file(cfg.sasl_password.as_ref(), cfg.sasl_password_file.as_deref()).map_err(
        |source| KafkaSetupError::PasswordFile {
            path: cfg.sasl_password_file.clone().unwrap_or_default(),
            source,
        },
    )
}

/// Adds the `[kafka]` security settings, then the `[kafka.client]` table (which wins over them), to
/// `c`. An unreadable password file leaves the password unset; [`check_settings`], run at start,
/// reports it.
fn apply_security(cfg: &KafkaConfig, c: &mut ClientConfig) {
    let paths: [(&str, &Option<PathBuf>); 3] = [
        ("ssl.ca.location", &cfg.ssl_ca_location),
        ("ssl.certificate.location", &cfg.ssl_certificate_location),
        ("ssl.key.location", &cfg.ssl_key_location),
    ];
    if let Some(p) = &cfg.security_protocol {
        c.set("security.protocol", p);
    }
    if let Some(m) = &cfg.sasl_mechanism {
        c.set("sasl.mechanism", m);
    }
    if let Some(u) = &cfg.sasl_username {
        c.set("sasl.username", u);
    }
    if let Ok(Some(p)) = sasl_password(cfg) {
        c.set("sasl.password", p.expose_secret());
    }
    for (name, path) in paths {
        if let Some(p) = path {
            c.set(name, p.display().to_string());
        }
    }
    for (name, value) in cfg.client.iter() {
        c.set(name, value);
    }
}
