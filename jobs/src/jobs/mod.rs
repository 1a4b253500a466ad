//! The jobs, one per file: each owns its request type, its `run` function and its summary.

pub mod analytics;
pub mod fetch;
pub mod maintenance;
pub mod persist;
