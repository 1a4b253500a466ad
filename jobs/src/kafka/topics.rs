//! Topics: idempotent creation, deletion, and the cluster's metadata for `check` and `/readyz`.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::client::{base_config, close_off_task};
use super::error::KafkaSetupError;
use super::security;
use crate::config::KafkaConfig;

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
    security::check_settings(cfg)?;
    if !security::is_secured(cfg) {
        return create_topic(cfg, topic, partitions, settings).await;
    }
    let create = create_topic(cfg, topic, partitions, settings);
    let probe = security::probe_async(cfg);
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
        .map_err(|e| security::creation_error(cfg, e))?;
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
    let md = security::probe(cfg)?;
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
