//! Kafka plumbing shared by the jobs: client configuration, idempotent topic creation, metadata.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
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
    /// The broker refused to create a topic.
    #[error("cannot create topic {topic}: {code}")]
    CreateTopic {
        /// The topic's name.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
}

/// A client configuration with the bootstrap servers set; callers add their role's settings.
pub fn base_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("client.id", "weatherflow")
        .set("socket.timeout.ms", (cfg.request_timeout_secs * 1000).to_string());
    c
}

/// The producer every job uses: idempotent, `acks=all`, compressed, so a retried send can never
/// duplicate or reorder a message within a partition.
pub fn producer(cfg: &KafkaConfig) -> Result<FutureProducer, KafkaSetupError> {
    base_config(cfg)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .create()
        .map_err(KafkaSetupError::Client)
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
    let admin: AdminClient<DefaultClientContext> =
        base_config(cfg).create().map_err(KafkaSetupError::Client)?;
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
    let consumer: BaseConsumer = base_config(cfg).create().map_err(KafkaSetupError::Client)?;
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(cfg.request_timeout_secs))
        .map_err(|source| KafkaSetupError::Unreachable {
            bootstrap: cfg.bootstrap_servers.clone(),
            source,
        })?;
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
