//! weatherflow: a scheduled, streaming weather-data pipeline.
//!
//! Data flows one way: [`jobs::fetch::weatherapi`] (or [`jobs::fetch::simulate`]) → [`jobs::fetch`] → Kafka →
//! [`jobs::persist`] → PostgreSQL → [`jobs::analytics`]. Every run of a job goes through the
//! [`executor`], which the [`scheduler`], the command line and the web trigger call; jobs never call
//! either. Shared plumbing ([`config`], [`kafka`], [`db`], [`shutdown`], [`runs`], [`report`]) sits
//! below them.

pub mod backoff;
#[cfg(feature = "bench")]
pub mod bench;
pub mod build_info;
pub mod cmd;
pub mod config;
pub mod db;
pub mod envelope;
pub mod executor;
pub mod job_error;
pub mod jobs;
pub mod kafka;
pub mod metrics;
pub mod outages;
pub mod partitions;
pub mod report;
pub mod runs;
pub mod scheduler;
pub mod shutdown;
pub mod telemetry;
pub mod web;
