//! Kafka plumbing shared by the jobs: the one client builder with the security settings, checks of
//! those settings, idempotent topic creation, the cluster's metadata and the persist group's lag.
//!
//! The parts sit in layers, each using only the ones above it in this list: [`error`], the
//! builder ([`client`]), the checks and the probe ([`security`]), then [`topics`] and [`lag`].

mod client;
mod error;
mod lag;
mod security;
mod topics;

pub use client::{base_config, producer, sasl_password};
pub(crate) use client::{close_off_task, producer_config};
pub use error::KafkaSetupError;
pub use lag::{PartitionLag, consumer_lag, consumer_lag_on, lag_client};
pub(crate) use security::creation_error;
pub use security::{check_settings, is_secured, probe, probe_async};
pub use topics::{ClusterInfo, cluster_info, delete_topics, ensure_topic, ensure_topic_with};
