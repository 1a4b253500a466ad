//! Benchmarks that print figures (`weatherflow bench …`); not used by the jobs.

pub mod analytics;
pub mod fetch;
pub mod history;
pub mod persist;
