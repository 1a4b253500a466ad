//! The configuration's sections. Each field's doc comment is also its line in `docs/configuration.md`
//! (`weatherflow config --reference`), so it is written for the person setting the value.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use super::ConfigError;
use super::field::section;

section! {
    /// PostgreSQL settings.
    pub struct DatabaseConfig in "database" {
        /// PostgreSQL connection URL. It holds the password, so it is only ever shown with the
        /// password masked.
        pub url: SecretString =
            SecretString::from("postgres://weatherflow:weatherflow@127.0.0.1:5432/weatherflow"),
            env = "DATABASE_URL";
        /// Upper bound of the connection pool.
        pub max_connections: u32 = 10;
        /// How long to wait for a connection before giving up, in seconds.
        pub connect_timeout_secs: u64 = 5;
        /// CA certificate (PEM) that signs the server's certificate, for `?sslmode=verify-full` (or
        /// `verify-ca`) in the URL; the same as the URL's `sslrootcert`.
        pub ssl_root_cert: Option<PathBuf> = None;
    }
}

section! {
    /// Kafka settings shared by producers and consumers.
    pub struct KafkaConfig in "kafka" {
        /// Kafka `bootstrap.servers`.
        pub bootstrap_servers: String = "127.0.0.1:9092".into(), env = "KAFKA_BOOTSTRAP_SERVERS";
        /// Topic the fetch job produces to and the persist job consumes.
        pub observations_topic: String = "weather.observations".into();
        /// Dead-letter topic for records the persist job rejects.
        pub dlq_topic: String = "weather.observations.dlq".into();
        /// Partition count used when weatherflow creates a topic.
        pub partitions: i32 = 6;
        /// Replication factor used when weatherflow creates a topic: 1 for one broker, 3 on a
        /// cluster (`weatherflow check` warns about 1 on more than one broker).
        pub replication_factor: i32 = 1;
        /// `min.insync.replicas` of the topics weatherflow creates; unset, the broker's default
        /// applies. With `acks=all`, a write is acknowledged once this many replicas hold it: 2 with a
        /// replication factor of 3 survives the loss of any one broker without losing an acknowledged
        /// message.
        pub min_insync_replicas: Option<i32> = None;
        /// Consumer group of the persist job.
        pub consumer_group: String = "weatherflow-persist".into();
        /// Kafka `group.instance.id` of the persist consumer, for static membership: a consumer
        /// restarted under the same name takes its partitions back at once instead of after
        /// `persist.session_timeout_ms` (`docs/persist.md`, failover). Every replica needs a name of
        /// its own, stable across restarts (compose sets one per service); two live consumers with
        /// one name fence each other. Unset: dynamic membership.
        pub group_instance_id: Option<String> = None;
        /// Timeout of admin and metadata requests, in seconds.
        pub request_timeout_secs: u64 = 10;
        /// The producers' `linger.ms`: how long a message may wait for others to join its batch.
        /// Every millisecond of it is a millisecond of end-to-end latency; at 0 the client still
        /// batches whatever queues while a request is in flight, so a backlog goes out in large
        /// batches anyway (`docs/performance.md`, latency budget).
        pub linger_ms: u64 = 0;
        /// `security.protocol`: `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
        pub security_protocol: Option<String> = None;
        /// `sasl.mechanism`: `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER`.
        pub sasl_mechanism: Option<String> = None;
        /// `sasl.username`.
        pub sasl_username: Option<String> = None;
        /// `sasl.password`. Never shown.
        pub sasl_password: Option<SecretString> = None;
        /// A file holding the SASL password (trimmed), used when `kafka.sasl_password` is not set.
        pub sasl_password_file: Option<PathBuf> = None;
        /// `ssl.ca.location`: the CA certificate(s) that sign the brokers' certificates. Default: the
        /// system's trust store.
        pub ssl_ca_location: Option<PathBuf> = None;
        /// `ssl.certificate.location`: the client certificate, for mutual TLS.
        pub ssl_certificate_location: Option<PathBuf> = None;
        /// `ssl.key.location`: the client certificate's private key, for mutual TLS.
        pub ssl_key_location: Option<PathBuf> = None;
        /// `[kafka.client]`: any librdkafka property, passed to every client (producers, consumers,
        /// admin). It wins over the settings above; the jobs' own per-role settings (idempotence,
        /// acks, commit mode) win over it. Checked at start: an unknown property is an error naming
        /// it. Set in the file only.
        pub client: super::ClientProperties = Default::default();
    }
}

section! {
    /// WeatherAPI.com client settings.
    pub struct WeatherApiConfig in "weatherapi" {
        /// Base URL up to and including `/v1`; tests point it at a local stub.
        pub base_url: String = "https://api.weatherapi.com/v1".into();
        /// The API key. Never shown.
        pub api_key: Option<SecretString> = None, env = "WEATHERAPI_KEY";
        /// A file holding the API key, used when `weatherapi.api_key` is not set.
        pub key_file: Option<PathBuf> = None;
        /// Per-request timeout, in seconds.
        pub timeout_secs: u64 = 10;
        /// Attempts per request for retryable failures (429, 5xx, timeouts).
        pub max_attempts: u32 = 5;
        /// First backoff delay in milliseconds; it doubles each attempt, with jitter.
        pub backoff_initial_ms: u64 = 500;
        /// Ceiling of one backoff delay, in milliseconds.
        pub backoff_max_ms: u64 = 10_000;
        /// Bound on the total time spent on one location, retries included, in seconds.
        pub max_total_secs: u64 = 60;
        /// Use the bulk endpoint (paid plans only).
        pub bulk: bool = false;
        /// Locations per bulk request; WeatherAPI accepts at most 50, larger values are capped.
        pub bulk_batch_size: usize = 50;
        /// Pass `aqi=yes` (air quality).
        pub aqi: bool = false;
        /// How many days back `history.json` reaches on the key's plan (OAS26, 2026: Free 1 day,
        /// Pro+ and above 365; older free plans reached 7). `weatherflow run fetch --history` refuses
        /// a `--from` further back, naming this limit, instead of spending calls on refusals.
        pub history_days: u32 = 7;
        /// WeatherAPI calls allowed per calendar month (UTC), counted in PostgreSQL across every
        /// process. A fetch that would pass it fails before its first call, saying how many calls
        /// remain and when the month resets. Unset: no budget (calls are still counted).
        pub monthly_call_budget: Option<u64> = None;
    }
}

impl WeatherApiConfig {
    /// The API key from `api_key`, else from `key_file` (trimmed). `Ok(None)` when neither is set.
    pub fn resolve_key(&self) -> Result<Option<SecretString>, ConfigError> {
        super::secret_or_file(self.api_key.as_ref(), self.key_file.as_deref()).map_err(|source| {
            ConfigError::Read {
                path: self.key_file.clone().unwrap_or_default(),
                source,
            }
        })
    }
}

section! {
    /// Fetch job settings (the locations themselves live in `schedules.toml`).
    pub struct FetchConfig in "fetch" {
        /// Requests in flight at once (bulk mode: bulk requests in flight).
        pub concurrency: usize = 8;
        /// Token-bucket refill rate in HTTP requests per second, retries included; 0 = unlimited.
        pub rate_per_sec: f64 = 10.0;
        /// Token-bucket capacity (burst).
        pub burst: u32 = 10;
        /// Seed of the simulated source when the run gives none.
        pub simulated_seed: u64 = 0;
        /// A run fails (and the scheduler retries it) when more than this fraction of its locations
        /// failed, from 0 (any failed location fails the run) to 1 (only a run with nothing produced
        /// fails).
        pub max_failed_ratio: f64 = 0.5;
        /// Lets a fetch whose source is simulated (`auto` in a process without a WeatherAPI key, or
        /// `simulated`) run against a database that already holds WeatherAPI observations. Off, such a
        /// scheduled, HTTP-triggered or manual run fails and says why, so made-up weather never joins
        /// real data silently. `weatherflow run fetch --allow-simulated-beside-real` opts in for one run.
        pub allow_simulated_beside_real: bool = false;
    }
}

section! {
    /// Persist consumer settings.
    pub struct PersistConfig in "persist" {
        /// A batch is written when it holds this many records (or earlier, see
        /// `persist.batch_timeout_ms`).
        pub batch_size: usize = 5000;
        /// A batch is also written when its oldest record has waited this long, in milliseconds, and
        /// early when the consumer has nothing more to read and its writer is idle, so a quiet stream
        /// is not delayed.
        pub batch_timeout_ms: u64 = 200;
        /// Offsets of stored batches are committed to Kafka at most this often, in milliseconds
        /// (always at once on a rebalance and at shutdown). Each commit is a write on the broker:
        /// committing after every batch cost the broker a second append per one-record batch at
        /// steady rates. A crash re-reads at most this much more, which the idempotent writes
        /// absorb as duplicates.
        pub commit_interval_ms: u64 = 100;
        /// First backoff delay after a database or broker failure, in milliseconds.
        pub retry_initial_ms: u64 = 200;
        /// Ceiling of the backoff delay, in milliseconds.
        pub retry_max_ms: u64 = 10_000;
        /// Client-side bound, in seconds, on one write transaction (connection in hand). A
        /// connection that goes silent without closing fails the attempt as an outage, is closed,
        /// and the batch is retried, instead of hanging its writer until TCP gives up (hours).
        /// Larger than any healthy batch write (5,000 rows take tens of milliseconds).
        pub write_timeout_secs: u64 = 30;
        /// When rows are refused for a row-level reason (SQLSTATE 22, 23, 54000) all in the same
        /// way with nothing stored in between, the database is refusing everything (an operator's
        /// CHECK, a trigger) and the rows wait as in an outage. After this many seconds of it they
        /// are quarantined after all (`db_rejected`, re-drivable), so that records which really are
        /// alike and wrong cannot hold their partitions for ever.
        pub uniform_refusal_patience_secs: u64 = 300;
        /// Readiness fails, naming the topic, once the dead-letter topic has refused writes for
        /// this many seconds since the first send (a deleted topic with auto-create off, an ACL).
        /// The dead-letter producer's message timeout is this, at most 30 s. The records waiting
        /// for it are not committed meanwhile, however long it lasts.
        pub dlq_unavailable_secs: u64 = 30;
        /// Database writers working in parallel, each on its own connection and its own share of the
        /// partitions (partition modulo writers), so per-partition order is kept. On a 2-core machine
        /// (`weatherflow bench persist`): 1 writer 71 k rows/s, 2 writers 123–131 k, 3 writers
        /// 126–142 k.
        pub writers: usize = 3;
        /// With `--until-idle`, the job stops after this many milliseconds without a message, once it
        /// has partitions and has read each of them up to its end.
        pub idle_ms: u64 = 1000;
        /// Kafka `session.timeout.ms`: how soon the group gives a dead consumer's partitions to the
        /// others. The broker accepts 6000 and up by default.
        pub session_timeout_ms: u64 = 10_000;
        /// Message values larger than this many bytes are quarantined as `too_large` (a
        /// `current.json` is 1–3 KB).
        pub max_value_bytes: usize = 256 * 1024;
        /// Observations stamped further ahead than this many seconds are quarantined as
        /// `future_timestamp`.
        pub max_future_secs: u64 = 3600;
        /// Upper bound, in bytes, of the records the consumer holds between reading and storing:
        /// every writer's open, waiting and in-flight batches together. Fetching pauses at this
        /// bound and resumes below half of it, and librdkafka's own prefetch is held to a quarter of
        /// it (at most its 64 MiB default), so large records during a database outage cannot grow
        /// memory past it (`docs/persist.md`, flow control).
        pub max_buffered_bytes: usize = 256 * 1024 * 1024;
        /// `max.message.bytes` of the dead-letter topic when the job creates it, and the DLQ
        /// producer's `message.max.bytes`: large enough for any record the observations topic
        /// accepts.
        pub dlq_max_message_bytes: usize = 8 * 1024 * 1024;
    }
}

section! {
    /// Partition maintenance job settings (the job's schedule is `[maintenance]` in schedules.toml).
    pub struct MaintenanceConfig in "maintenance" {
        /// `observations` is partitioned by month (UTC); the maintenance job keeps a partition
        /// ready for the current month and this many months after it.
        pub months_ahead: u32 = 2;
        /// Months of observations kept: the maintenance job drops the partitions of months older
        /// than the current month minus this many (12 keeps this month and the 12 before it).
        /// Unset: everything is kept.
        pub retention_months: Option<u32> = None;
        /// Days a quarantined record (`rejected_records`, raw payload included) is kept: the
        /// maintenance job deletes older ones, re-driven or not. Unset: every one is kept.
        pub rejected_retention_days: Option<u32> = None;
    }
}

section! {
    /// Analytics job settings.
    pub struct AnalyticsConfig in "analytics" {
        /// A location gets its own fit only with at least this many samples.
        pub min_samples: u64 = 30;
        /// A plot draws at most this many points (an even stride through the samples), so a plot of
        /// a million rows stays a file a browser opens; the fitted line always uses every sample.
        pub plot_max_points: usize = 20_000;
        /// A run fits the observations of the last this many days (before `--until`, or before
        /// now), unless it gives `--since` or `--all-history`; 0 fits every row. The schedule's
        /// `[analytics.args] window_days` overrides it for scheduled runs.
        pub window_days: u32 = 30;
        /// The read is split into this many consecutive time ranges, each read on a connection of
        /// its own at the same time, so PostgreSQL builds the per-location arrays on as many cores
        /// (it cannot run `array_agg` in parallel workers). 1 reads on one connection.
        pub read_connections: usize = 2;
        /// Before a run fits a window that ends now, the newest observation of the source it fits
        /// must be at most this many seconds old (default 2 h); older, and the run is `skipped`
        /// (or `failed`, `analytics.on_stale`) instead of publishing a fit over old data as new.
        /// 0 turns the check off. A run with `--until` fits a past window and is not checked.
        pub max_staleness_secs: u64 = 7200;
        /// What a stale window makes of the run: `skip` (recorded `skipped`, the default) or
        /// `fail` (recorded `failed`, not retried).
        pub on_stale: OnStale = OnStale::Skip;
    }
}

/// What a run does with stale data (`analytics.on_stale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStale {
    /// Recorded `skipped` with the reason.
    Skip,
    /// Recorded `failed` with the reason.
    Fail,
}

impl super::field::FieldValue for OnStale {
    fn type_name() -> String {
        "`skip` or `fail`".to_owned()
    }
    fn parse_env(text: &str) -> Result<Self, String> {
        match text.trim() {
            "skip" => Ok(OnStale::Skip),
            "fail" => Ok(OnStale::Fail),
            _ => Err(format!("expected skip or fail, got {text:?}")),
        }
    }
    fn show(&self) -> String {
        match self {
            OnStale::Skip => "skip",
            OnStale::Fail => "fail",
        }
        .to_owned()
    }
}

section! {
    /// Scheduler service settings.
    pub struct SchedulerConfig in "scheduler" {
        /// Path of the schedules file.
        pub schedules_path: PathBuf = PathBuf::from("schedules.toml");
        /// How long running jobs may take to finish after SIGTERM, in seconds.
        pub shutdown_grace_secs: u64 = 30;
        /// After a run is cancelled (timeout, a lost job lock, or the grace period ran out; runs by
        /// hand and over HTTP too), how many seconds it gets to notice and return before it is
        /// dropped. Its row is recorded failed either way.
        pub cancel_wait_secs: u64 = 5;
        /// This process's name in the run history (`details.replica`), to tell replicas apart.
        /// Unset: `<hostname>:<pid>`.
        pub replica: Option<String> = None;
    }
}

impl SchedulerConfig {
    /// The grace period as a [`Duration`].
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// The wait after cancelling a run as a [`Duration`].
    pub fn cancel_wait(&self) -> Duration {
        Duration::from_secs(self.cancel_wait_secs)
    }
}
