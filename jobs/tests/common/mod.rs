//! Test harness shared by the integration tests (zero2prod's `spawn_app`, for a pipeline).
//!
//! [`TestContext::new`] gives each test its own freshly migrated PostgreSQL database and its own Kafka
//! topic names and consumer group, all on the real services started by `scripts/services.sh up`.
//! Everything is dropped again when the context goes out of scope, so tests run in parallel and leave
//! nothing behind. An unreachable broker or database fails the test; nothing is skipped.
//!
//! The same context drives the real binary: [`TestContext::child_env`] is the environment that points
//! a `weatherflow` process at this test's database, topics and group, and [`spawn`], [`run_cli`],
//! [`signal`] and [`exit_within`] start it, signal it and wait for it. [`topic_reader`] and
//! [`next_messages`] read what landed on a topic.
#![allow(dead_code)]

pub mod broker;
pub mod proxy;
pub mod records;
pub mod schedule;
pub mod stream;
pub mod weatherapi_stub;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use secrecy::ExposeSecret;
use tokio::process::{Child, Command};
use weatherflow::config::{Config, KafkaConfig};
use weatherflow::db::ScratchDatabase;

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
    /// The database itself, dropped with the context (after the topics, see `Drop`).
    database: ScratchDatabase,
}

impl TestContext {
    /// Creates a fresh migrated database and unique topic names. Topics are not created here: the code
    /// under test creates them, as it does in production.
    pub async fn new() -> Self {
        Self::create(true).await
    }

    /// Like [`TestContext::new`] but without running migrations (for migration tests).
    pub async fn unmigrated() -> Self {
        Self::create(false).await
    }

    async fn create(migrated: bool) -> Self {
        let mut config = Config::load_from(None, std::env::vars()).expect("test configuration");
        config.database.max_connections = 5;
        let database = if migrated {
            ScratchDatabase::create(&config.database, "wf_test").await
        } else {
            ScratchDatabase::create_unmigrated(&config.database, "wf_test").await
        }
        .unwrap_or_else(|e| panic!("test database (run scripts/services.sh up): {e}"));
        config.database = database.config().clone();
        let id = unique("t");
        config.kafka.observations_topic = format!("wf-test-obs-{id}");
        config.kafka.dlq_topic = format!("wf-test-obs-{id}.dlq");
        config.kafka.consumer_group = format!("wf-test-group-{id}");
        config.kafka.partitions = 3;
        TestContext {
            config,
            db: database.conn().clone(),
            db_name: database.name().to_owned(),
            database,
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

    /// The environment pointing a `weatherflow` process at this test's database, broker, topics and
    /// group. `RUST_LOG` is `TEST_CHILD_LOG` when set, so a failing test can be rerun verbosely.
    pub fn child_env(&self) -> Vec<(String, String)> {
        let (d, k) = (&self.config.database, &self.config.kafka);
        let log = std::env::var("TEST_CHILD_LOG")
            .unwrap_or_else(|_| "info,rdkafka=warn,sqlx=warn,sea_orm=warn".to_owned());
        [
            ("DATABASE_URL", d.url.expose_secret().to_owned()),
            (
                "WEATHERFLOW_DATABASE_MAX_CONNECTIONS",
                d.max_connections.to_string(),
            ),
            ("KAFKA_BOOTSTRAP_SERVERS", k.bootstrap_servers.clone()),
            (
                "WEATHERFLOW_KAFKA_OBSERVATIONS_TOPIC",
                k.observations_topic.clone(),
            ),
            ("WEATHERFLOW_KAFKA_DLQ_TOPIC", k.dlq_topic.clone()),
            ("WEATHERFLOW_KAFKA_CONSUMER_GROUP", k.consumer_group.clone()),
            ("WEATHERFLOW_KAFKA_PARTITIONS", k.partitions.to_string()),
            ("RUST_LOG", log),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// [`TestContext::child_env`] with `extra` added (later entries win).
    pub fn child_env_with(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = self.child_env();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }
}

/// A scratch directory for a test's files (schedules files, process logs, plots).
pub fn scratch_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir).expect("creating a scratch directory");
    dir
}

/// `weatherflow <args>` in `dir` with exactly `env` on top of the test's own environment (no
/// `WEATHERFLOW_CONFIG`, so a developer's file cannot leak in).
fn command(dir: &Path, args: &[&str], env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weatherflow"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("WEATHERFLOW_CONFIG")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .kill_on_drop(true);
    cmd
}

/// Starts `weatherflow <args>` in `dir` with `env`, its stderr in `dir/<name>.log` (see [`log_of`]).
pub fn spawn(dir: &Path, name: &str, args: &[&str], env: &[(String, String)]) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("creating a log file");
    command(dir, args, env)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawning weatherflow")
}

/// What a process started by [`spawn`] as `name` in `dir` wrote to stderr.
pub fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// Runs `weatherflow <args>` to completion and returns (success, stdout, stderr).
pub async fn run_cli(dir: &Path, args: &[&str], env: &[(String, String)]) -> (bool, String, String) {
    let out = command(dir, args, env)
        .output()
        .await
        .expect("running weatherflow");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `check` every 100 ms until it holds or `within` passes; returns whether it held.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check().await
}

/// Sends `sig` to a running child.
pub fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(child.id().expect("a running child") as i32);
    nix::sys::signal::kill(pid, sig).expect("signalling the child");
}

/// The child's exit status, or `None` when it is still running after `within` (it is killed when
/// dropped).
pub async fn exit_within(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    tokio::time::timeout(within, child.wait())
        .await
        .ok()
        .map(|r| r.expect("waiting for the child"))
}

/// A consumer of `topic` in a group of its own, from the earliest offset, committing nothing.
pub fn topic_reader(k: &KafkaConfig, topic: &str, group: &str) -> StreamConsumer {
    let consumer: StreamConsumer = weatherflow::kafka::base_config(k)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("creating a topic reader");
    consumer.subscribe(&[topic]).expect("subscribing");
    consumer
}

/// The next `n` messages of `consumer`, each within 30 s.
pub async fn next_messages(consumer: &StreamConsumer, n: usize) -> Vec<OwnedMessage> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("message within 30 s")
            .expect("consume");
        out.push(m.detach());
    }
    out
}

/// Every message on the observations topic of `config` as (key, value). The count is taken from the
/// high watermarks first, so an extra message fails the test instead of going unseen.
pub async fn topic_messages(config: &Config) -> Vec<(String, Vec<u8>)> {
    use rdkafka::Message;
    let k = &config.kafka;
    let probe: rdkafka::consumer::BaseConsumer = weatherflow::kafka::base_config(k).create().unwrap();
    let mut total = 0;
    for p in 0..k.partitions {
        let (low, high) = probe
            .fetch_watermarks(&k.observations_topic, p, Duration::from_secs(10))
            .unwrap();
        total += high - low;
    }
    let group = format!("{}-reader", k.consumer_group);
    let consumer = topic_reader(k, &k.observations_topic, &group);
    let total = usize::try_from(total).expect("a message count");
    next_messages(&consumer, total)
        .await
        .into_iter()
        .map(|msg| {
            let key = String::from_utf8(msg.key().unwrap().to_vec()).unwrap();
            (key, msg.payload().unwrap().to_vec())
        })
        .collect()
}

impl Drop for TestContext {
    fn drop(&mut self) {
        let kafka = self.config.kafka.clone();
        let topics = self.topics();
        // Drop runs inside the test's runtime; clean up on a thread with a runtime of its own. The
        // database goes when `database` is dropped, right after this.
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
            });
        });
        let _ = cleanup.join();
    }
}

/// How many migrations come after the one named `name` (e.g. `m20261202_073000_partition_observations`):
/// the steps `Migrator::down` takes to revert everything after it, whatever later migrations are added.
pub fn migrations_after(name: &str) -> u32 {
    use migration::MigratorTrait as _;
    let names: Vec<String> = migration::Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    let at = names
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no migration {name} in {names:?}"));
    (names.len() - at - 1) as u32
}
