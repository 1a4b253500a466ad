//! One file per CLI command; `cli.rs` dispatches here.

pub mod bench;
pub mod check;
pub mod migrate;
pub mod results;
pub mod run;
pub mod runs;
pub mod scheduler;
pub mod schedules;
pub mod serve;
pub mod status;
pub mod table;
