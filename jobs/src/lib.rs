//! weatherflow: a scheduled, streaming weather-data pipeline.
//!
//! Data flows one way: [`jobs::fetch::weatherapi`] (or [`jobs::fetch::simulate`]) → [`jobs::fetch`] → Kafka →
//! [`jobs::persist`] → PostgreSQL → [`jobs::analytics`]. Every run of a job goes through the
//! [`executor`], which the [`scheduler`], the command line and the web trigger call; jobs never call
//! either. Shared plumbing ([`config`], [`kafka`], [`db`], [`shutdown`], [`runs`], [`report`]) sits
//! below them.

//! The library's API is small: [`execute`] runs the command line (the binary is a shell over it),
//! [`init_telemetry`] sets up logging, and the [`envelope`] types are the topic's contract for other
//! Rust producers and consumers. The modules stay private; the `testing` feature (which the
//! integration tests enable through a dev-dependency on this crate) makes them public, so the tests
//! drive the real code without it being an API.

// Without `testing`, the items only the integration tests use (the scratch databases, topic deletion,
// the re-exports they import) are unused, and these lints would only say so. With it (every
// `cargo clippy --all-targets` and `cargo test`), every module is public as before.
#![cfg_attr(not(feature = "testing"), allow(dead_code, unused_imports))]

/// Declares modules private, or public with the `testing` feature.
macro_rules! internal {
    ($($(#[$attr:meta])* $name:ident;)*) => {
        $(
            $(#[$attr])*
            #[cfg(feature = "testing")]
            pub mod $name;
            $(#[$attr])*
            #[cfg(not(feature = "testing"))]
            mod $name;
        )*
    };
}

internal! {
    alerts;
    backoff;
    #[cfg(feature = "bench")]
    bench;
    build_info;
    cmd;
    config;
    db;
    executor;
    job_error;
    jobs;
    kafka;
    metrics;
    outages;
    partitions;
    progress;
    quota;
    report;
    runs;
    scheduler;
    shutdown;
    telemetry;
    web;
}

pub mod envelope;

pub use cmd::execute;
pub use config::Config;
pub use envelope::{Envelope, SCHEMA_VERSION, Source, location_key};
pub use telemetry::init as init_telemetry;
