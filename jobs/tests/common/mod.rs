//! Test harness shared by the integration tests (zero2prod's `spawn_app`, for a pipeline).
//!
//! [`TestContext::new`] gives each test its own freshly migrated PostgreSQL database and its own Kafka
//! topic names and consumer group, all on the real services started by `scripts/services.sh up`.
//! Everything is dropped again when the context goes out of scope, so tests run in parallel and leave
//! nothing behind. An unreachable broker or database fails the test; nothing is skipped.
#![allow(dead_code)]

pub mod weatherapi_stub;

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use secrecy::{ExposeSecret, SecretString};
use weatherflow::config::Config;

/// A unique lower-case suffix for names (databases, topics, groups).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// One test's private slice of the platform.
pub struct TestContext {
    /// Configuration pointing at this test's database, topics and consumer group.
    pub config: Config,
    /// A connection pool on this test's database.
    pub db: DatabaseConnection,
    /// Name of this test's database.
    pub db_name: String,
    /// The settings of the database that creates and drops this test's database.
    admin: weatherflow::config::DatabaseConfig,
}

impl TestContext {
    /// Creates a fresh migrated database and unique topic names. Topics are not created here: the code
    /// under test creates them, as it does in production.
    pub async fn new() -> Self {
        let ctx = Self::unmigrated().await;
        Migrator::up(&ctx.db, None)
            .await
            .expect("migrating the test database");
        ctx
    }

    /// Like [`TestContext::new`] but without running migrations (for migration tests).
    pub async fn unmigrated() -> Self {
        let mut config = Config::load_from(None, std::env::vars()).expect("test configuration");
        let admin = config.database.clone();
        let db_name = unique("wf_test");
        // Through the project's connect, so `database.ssl_root_cert` applies (TLS stage).
        let conn = weatherflow::db::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL unreachable (run scripts/services.sh up): {e}"));
        conn.execute_unprepared(&format!("CREATE DATABASE {db_name}"))
            .await
            .expect("creating the test database");
        conn.close().await.ok();
        let url = replace_db_name(admin.url.expose_secret(), &db_name);
        config.database.url = SecretString::from(url);
        config.database.max_connections = 5;
        let id = unique("t");
        config.kafka.observations_topic = format!("wf-test-obs-{id}");
        config.kafka.dlq_topic = format!("wf-test-obs-{id}.dlq");
        config.kafka.consumer_group = format!("wf-test-group-{id}");
        config.kafka.partitions = 3;
        let db = weatherflow::db::connect(&config.database)
            .await
            .expect("connecting to the test database");
        TestContext {
            config,
            db,
            db_name,
            admin,
        }
    }

    /// The single integer a query returns (counts, sums), e.g. `SELECT count(*) FROM observations`.
    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        let row = self
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                self.db.get_database_backend(),
                sql,
            ))
            .await
            .expect(sql)
            .expect("one row");
        row.try_get_by_index::<i64>(0).expect("an integer")
    }

    /// The single text a query returns.
    pub async fn scalar_text(&self, sql: &str) -> String {
        let row = self
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                self.db.get_database_backend(),
                sql,
            ))
            .await
            .expect(sql)
            .expect("one row");
        row.try_get_by_index::<String>(0).expect("a text")
    }

    /// The Kafka topics this test may have created.
    pub fn topics(&self) -> [String; 2] {
        [
            self.config.kafka.observations_topic.clone(),
            self.config.kafka.dlq_topic.clone(),
        ]
    }
}

fn replace_db_name(url: &str, name: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("DATABASE_URL is a URL");
    parsed.set_path(&format!("/{name}"));
    parsed.to_string()
}

impl Drop for TestContext {
    fn drop(&mut self) {
        let admin_cfg = self.admin.clone();
        let db_name = self.db_name.clone();
        let kafka = self.config.kafka.clone();
        let topics = self.topics();
        // Drop runs inside the test's runtime; clean up on a thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    weatherflow::kafka::delete_topics(&kafka, &refs),
                )
                .await;
                if let Ok(admin) = weatherflow::db::connect(&admin_cfg).await {
                    let _ = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
                        .await;
                    admin.close().await.ok();
                }
            });
        });
        let _ = cleanup.join();
    }
}
