//! PostgreSQL plumbing: one connection pool per process, and the migration state.

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, Statement};
use secrecy::ExposeSecret;

use crate::config::{DatabaseConfig, redact_url};

/// Database failures the callers tell apart.
#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    /// The server did not accept a connection.
    #[error("postgresql at {url} unreachable (set DATABASE_URL): {source}")]
    Unreachable {
        /// The URL with its password redacted.
        url: String,
        /// The driver's error.
        source: DbErr,
    },
    /// The TLS handshake failed: the server's certificate is not trusted or not for this host.
    #[error(
        "postgresql at {url}: TLS failed (check database.ssl_root_cert, the CA that signed the server's \
         certificate, and the URL's sslmode): {source}"
    )]
    Tls {
        /// The URL with its password redacted.
        url: String,
        /// The driver's error.
        source: DbErr,
    },
}

/// Opens the pool. The password never reaches a log line: SQL logging is off and errors carry the
/// redacted URL only.
pub async fn connect(cfg: &DatabaseConfig) -> Result<DatabaseConnection, DbSetupError> {
    let mut opts = ConnectOptions::new(cfg.url.expose_secret().to_owned());
    opts.max_connections(cfg.max_connections)
        .min_connections(0)
        .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
        .acquire_timeout(Duration::from_secs(cfg.connect_timeout_secs))
        .sqlx_logging(false);
    if let Some(ca) = cfg.ssl_root_cert.clone() {
        // The URL's `sslmode` decides whether and how the certificate is checked.
        opts.map_sqlx_postgres_opts(move |pg| pg.ssl_root_cert(&ca));
    }
    Database::connect(opts).await.map_err(|source| {
        let url = redact_url(cfg.url.expose_secret());
        if is_tls_failure(&source) {
            DbSetupError::Tls { url, source }
        } else {
            DbSetupError::Unreachable { url, source }
        }
    })
}

/// Whether a connection failed in the TLS handshake (sqlx reports it as `Error::Tls`).
fn is_tls_failure(err: &DbErr) -> bool {
    let shown = err.to_string();
    shown.contains("TLS") || shown.contains("certificate")
}

/// `SELECT version()`.
pub async fn server_version(db: &DatabaseConnection) -> Result<String, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SHOW server_version",
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("SHOW server_version returned no row".into()))?;
    row.try_get_by_index::<String>(0)
}
