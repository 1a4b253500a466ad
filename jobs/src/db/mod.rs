//! PostgreSQL plumbing: one connection pool per process, the migration state, and the scratch
//! databases the tests and benchmarks work in; and the reads about the database itself that the
//! faces show (row counts, write refusals).

mod counts;
pub mod grants;
mod refusals;

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, Statement};
use secrecy::{ExposeSecret, SecretString};

pub use self::counts::{
    COUNTED_TABLES, EXACT_BELOW, SourceCount, TableCount, row_estimate, source_counts, table_counts,
};
pub use self::refusals::write_refusals;
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
        // sqlx pings every connection it hands out: one more round trip before each persist batch,
        // whose latency is its round trips (`docs/performance.md`). A connection in use a moment
        // ago is alive; one idle for a second or more may have lost its server and is still
        // pinged. A connection that died in between fails its statement, which the caller retries.
        .test_before_acquire_if_idle_for(Duration::from_secs(1))
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

/// Why a [`ScratchDatabase`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    /// The server did not accept a connection.
    #[error(transparent)]
    Connect(#[from] DbSetupError),
    /// The configured URL is not a URL (the error does not repeat it: it holds the password).
    #[error("the database url does not parse: {0}")]
    Url(#[from] url::ParseError),
    /// A statement on the server failed.
    #[error("{what}: {source}")]
    Sql {
        /// What was being done, naming the database.
        what: String,
        /// The driver's error.
        source: DbErr,
    },
}

/// A database of its own on a possibly shared server: uniquely named, created from the configured
/// one, migrated, and dropped again. The integration tests and the benchmarks each work in one, so
/// they run side by side and leave nothing behind.
///
/// [`ScratchDatabase::drop_database`] drops it and says whether that worked; a scratch database
/// still there when the value goes out of scope (a failed assertion, an early `?`) is dropped from
/// `Drop`, on a thread with a runtime of its own, so it is gone even when the caller panicked.
pub struct ScratchDatabase {
    /// `<prefix>_<32 random hex digits>`: a valid identifier, so it is spliced into the SQL as is.
    name: String,
    /// The configured settings with the database in the URL replaced by this one.
    config: DatabaseConfig,
    /// The configured settings: the database the scratch one is created and dropped through.
    admin: DatabaseConfig,
    /// A pool on the scratch database.
    conn: DatabaseConnection,
    /// Set once the database is dropped, so `Drop` does not drop it again.
    dropped: bool,
}

impl ScratchDatabase {
    /// Creates `<prefix>_<random>` next to the database `base` points at and migrates it.
    pub async fn create(base: &DatabaseConfig, prefix: &str) -> Result<Self, ScratchError> {
        let scratch = Self::create_unmigrated(base, prefix).await?;
        use migration::MigratorTrait as _;
        migration::Migrator::up(&scratch.conn, None)
            .await
            .map_err(|source| ScratchError::Sql {
                what: format!("migrating database {}", scratch.name),
                source,
            })?;
        Ok(scratch)
    }

    /// Like [`ScratchDatabase::create`], without running the migrations (for migration tests).
    pub async fn create_unmigrated(base: &DatabaseConfig, prefix: &str) -> Result<Self, ScratchError> {
        let name = format!("{prefix}_{:032x}", rand::random::<u128>());
        let mut url = url::Url::parse(base.url.expose_secret())?;
        url.set_path(&format!("/{name}"));
        let mut config = base.clone();
        config.url = SecretString::from(url.to_string());
        let admin = connect(base).await?;
        let created = admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await;
        admin.close().await.ok();
        created.map_err(|source| ScratchError::Sql {
            what: format!("creating database {name}"),
            source,
        })?;
        // From here on `Drop` removes the database whatever fails next.
        let conn = match connect(&config).await {
            Ok(conn) => conn,
            Err(e) => {
                drop_named(base, &name).await.ok();
                return Err(e.into());
            }
        };
        Ok(Self {
            name,
            config,
            admin: base.clone(),
            conn,
            dropped: false,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Settings pointing at the scratch database (the base settings otherwise).
    pub fn config(&self) -> &DatabaseConfig {
        &self.config
    }

    /// A pool on the scratch database.
    pub fn conn(&self) -> &DatabaseConnection {
        &self.conn
    }

    /// Closes the pool and drops the database (`WITH (FORCE)`: connections still open are ended).
    pub async fn drop_database(mut self) -> Result<(), ScratchError> {
        self.dropped = true;
        self.conn.clone().close().await.ok();
        drop_named(&self.admin, &self.name).await
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop may run inside a runtime (a test's, a benchmark's), where blocking on a future
        // panics: the drop runs on a thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(drop_named(&admin, &name))
                .map_err(std::io::Error::other)
        });
        if let Ok(Err(e)) = cleanup.join() {
            eprintln!("could not drop database {}: {e}; drop it by hand", self.name);
        }
    }
}

/// `DROP DATABASE IF EXISTS <name> WITH (FORCE)` through the configured database, or without
/// `FORCE` when that is refused.
///
/// `FORCE` terminates the sessions left on the database, and refuses if one of them is a process
/// our role may not signal: an autovacuum worker, which a benchmark's bulk load starts on the
/// scratch tables ("must be a member of the role whose process is being terminated"). A plain
/// `DROP DATABASE` stops autovacuum workers itself and waits a few seconds for other sessions.
async fn drop_named(admin: &DatabaseConfig, name: &str) -> Result<(), ScratchError> {
    let admin = connect(admin).await?;
    let mut dropped = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    if dropped.is_err() {
        dropped = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
            .await;
    }
    admin.close().await.ok();
    dropped.map_err(|source| ScratchError::Sql {
        what: format!("dropping database {name}"),
        source,
    })?;
    Ok(())
}
