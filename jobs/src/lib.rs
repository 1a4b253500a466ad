//! weatherflow: a scheduled, streaming weather-data pipeline.
//!
//! Data flows one way: [`jobs::fetch::weatherapi`] (or [`jobs::fetch::simulate`]) → [`jobs::fetch`] → Kafka →
//! [`jobs::persist`] → PostgreSQL → [`jobs::analytics`]. The [`scheduler`] calls jobs; jobs never call
//! the scheduler. Shared plumbing ([`config`], [`kafka`], [`db`], [`shutdown`], [`runs`]) sits beside
//! them.

pub mod backoff;
#[cfg(feature = "bench")]
pub mod bench;
pub mod cmd;
pub mod config;
pub mod db;
pub mod envelope;
pub mod job_error;
pub mod jobs;
pub mod kafka;
pub mod kafka_security;
pub mod metrics;
pub mod outages;
pub mod partitions;
pub mod runs;
pub mod scheduler;
pub mod schedules;
pub mod shutdown;
pub mod telemetry;
pub mod web;
