//! weatherflow: a scheduled, streaming weather-data pipeline.
//!
//! Data flows one way: [`weatherapi`] (or [`simulate`]) → [`jobs::fetch`] → Kafka →
//! [`jobs::persist`] → PostgreSQL → [`jobs::analytics`]. The [`scheduler`] calls jobs; jobs never call
//! the scheduler. Shared plumbing ([`config`], [`kafka`], [`db`], [`shutdown`], [`runs`]) sits beside
//! them.

pub mod backoff;
pub mod bench_analytics;
pub mod bench_persist;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod db;
pub mod envelope;
pub mod jobs;
pub mod kafka;
pub mod metrics;
pub mod plot;
pub mod ratelimit;
pub mod regression;
pub mod runs;
pub mod scheduler;
pub mod schedules;
pub mod shutdown;
pub mod simulate;
pub mod store;
pub mod telemetry;
pub mod validate;
pub mod weatherapi;
pub mod web;
