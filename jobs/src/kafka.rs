//! Kafka plumbing shared by the jobs: client configuration, idempotent topic creation, metadata.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;

/// Kafka failures the callers tell apart.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// The client could not be created (bad configuration).
    #[error("kafka client configuration rejected: {0}")]
    Client(#[source] KafkaError),
    /// The broker did not answer (down, wrong address, or timeout).
    #[error("kafka broker at {bootstrap} unreachable (set KAFKA_BOOTSTRAP_SERVERS): {source}")]
    Unreachable {
        /// The configured bootstrap servers.
        bootstrap: String,
        /// The client's error.
        source: KafkaError,
    },
    /// The broker refused the SASL credentials.
    #[error(
        "kafka authentication failed at {bootstrap} for user '{username}' ({mechanism}): {reason} — check \
         kafka.sasl_username and kafka.sasl_password (WEATHERFLOW_KAFKA_SASL_PASSWORD or kafka.sasl_password_file)"
    )]
    Authentication {
        /// The configured bootstrap servers.
        bootstrap: String,
        /// `kafka.sasl_username`.
        username: String,
        /// `kafka.sasl_mechanism`.
        mechanism: String,
        /// librdkafka's reason (it never holds the password).
        reason: String,
    },
    /// The TLS handshake failed (untrusted or unreadable certificate, wrong protocol).
    #[error(
        "kafka TLS handshake with {bootstrap} failed: {reason} — check kafka.ssl_ca_location (the CA that \
         signed the broker's certificate) and kafka.security_protocol"
    )]
    Tls {
        /// The configured bootstrap servers.
        bootstrap: String,
        /// librdkafka's (OpenSSL's) reason.
        reason: String,
    },
    /// librdkafka does not know a property, or refuses its value.
    #[error("{setting}: rejected by librdkafka: {reason}")]
    Property {
        /// The setting, e.g. `kafka.security_protocol` or `kafka.client."linger.ms"`.
        setting: String,
        /// librdkafka's reason (without the value when it is a secret).
        reason: String,
    },
    /// `kafka.sasl_password_file` could not be read.
    #[error("cannot read kafka.sasl_password_file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The broker refused to create a topic.
    #[error("cannot create topic {topic}: {code}")]
    CreateTopic {
        /// The topic's name.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
}

/// The one client builder: bootstrap servers, the security settings and the `[kafka.client]` table
/// (see [`crate::kafka_security`]); callers add their role's settings, which win over the table.
pub fn base_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("client.id", "weatherflow")
        .set("socket.timeout.ms", (cfg.request_timeout_secs * 1000).to_string());
    crate::kafka_security::apply(cfg, &mut c);
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

/// Creates `topic` with `partitions` partitions unless it exists already (idempotent: an existing topic
/// is success, whatever its partition count).
pub async fn ensure_topic(cfg: &KafkaConfig, topic: &str, partitions: i32) -> Result<(), KafkaSetupError> {
    ensure_topic_with(cfg, topic, partitions, &[]).await
}

/// Like [`ensure_topic`], with topic-level settings (`(name, value)`, e.g. `max.message.bytes`) used
/// when the topic is created. An existing topic keeps the settings it has.
pub async fn ensure_topic_with(
    cfg: &KafkaConfig,
    topic: &str,
    partitions: i32,
    settings: &[(&str, &str)],
) -> Result<(), KafkaSetupError> {
    // The first Kafka call of every job. A refused password or certificate would only show as the
    // admin request's timeout, so a probe that sees them at once runs beside it; beside, not
    // before, so a healthy start pays no extra round trip.
    crate::kafka_security::check_settings(cfg)?;
    if !crate::kafka_security::is_secured(cfg) {
        return create_topic(cfg, topic, partitions, settings).await;
    }
    let create = create_topic(cfg, topic, partitions, settings);
    let probe = crate::kafka_security::probe_async(cfg);
    tokio::pin!(create, probe);
    tokio::select! {
        created = &mut create => created,
        probed = &mut probe => {
            probed?;
            create.await
        }
    }
}

/// The admin request behind [`ensure_topic_with`].
async fn create_topic(
    cfg: &KafkaConfig,
    topic: &str,
    partitions: i32,
    settings: &[(&str, &str)],
) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> = base_config(cfg)
        .create()
        .map_err(|e| crate::kafka_security::creation_error(cfg, e))?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(cfg.replication_factor));
    let min_isr = cfg.min_insync_replicas.map(|n| n.to_string());
    if let Some(n) = &min_isr {
        new = new.set("min.insync.replicas", n);
    }
    for (name, value) in settings {
        new = new.set(name, value);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(cfg.request_timeout_secs)));
    let results =
        admin
            .create_topics([&new], &opts)
            .await
            .map_err(|source| KafkaSetupError::Unreachable {
                bootstrap: cfg.bootstrap_servers.clone(),
                source,
            })?;
    close_off_task(admin);
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaSetupError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// Deletes topics (test clean-up and benchmarks). Missing topics are not an error.
pub async fn delete_topics(cfg: &KafkaConfig, topics: &[&str]) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> =
        base_config(cfg).create().map_err(KafkaSetupError::Client)?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(cfg.request_timeout_secs)));
    admin
        .delete_topics(topics, &opts)
        .await
        .map_err(|source| KafkaSetupError::Unreachable {
            bootstrap: cfg.bootstrap_servers.clone(),
            source,
        })?;
    Ok(())
}

/// What `weatherflow check` reports about the cluster.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    /// Broker ids with their host:port.
    pub brokers: Vec<(i32, String)>,
    /// Topics with their partition counts, internal topics left out.
    pub topics: Vec<(String, usize)>,
}

/// Asks the cluster for its metadata; blocking, so run it on a blocking thread.
pub fn cluster_info(cfg: &KafkaConfig) -> Result<ClusterInfo, KafkaSetupError> {
    let md = crate::kafka_security::probe(cfg)?;
    let brokers = md
        .brokers()
        .iter()
        .map(|b| (b.id(), format!("{}:{}", b.host(), b.port())))
        .collect();
    let mut topics: Vec<(String, usize)> = md
        .topics()
        .iter()
        .filter(|t| !t.name().starts_with("__"))
        .map(|t| (t.name().to_owned(), t.partitions().len()))
        .collect();
    topics.sort();
    Ok(ClusterInfo { brokers, topics })
}
