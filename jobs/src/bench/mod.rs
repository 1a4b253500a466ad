//! Benchmarks that print figures (`weatherflow bench …`, docs/performance.md); not used by the jobs.
//! Compiled only with the `bench` feature, so the binary that ships has none of it.

pub mod analytics;
pub mod fetch;
pub mod history;
pub mod persist;
pub mod web;
