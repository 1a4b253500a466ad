//! Logging setup in one place: `RUST_LOG` filters (default `info`), human-readable on a terminal,
//! JSON lines when `WEATHERFLOW_LOG_FORMAT=json` (for log shippers).

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber, writing to stderr. Safe to call once per process.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "info,tokio_cron_scheduler=warn,rdkafka=warn,sqlx=warn,sea_orm=warn,sea_orm_migration=warn",
        )
    });
    let json = std::env::var("WEATHERFLOW_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or a collector gets plain `key=value` text.
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
