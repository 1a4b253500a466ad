//! `weatherflow check`: do Kafka and PostgreSQL answer, and what do they hold.

use secrecy::ExposeSecret;
use serde::Serialize;

use super::table::{self, Format};
use crate::config::{Config, redact_url};
use crate::{db, kafka};

/// What `check` found: the table's lines and `--format json`'s document come from it.
#[derive(Debug, Serialize)]
struct Report {
    /// The broker.
    kafka: KafkaReport,
    /// The database.
    postgresql: PostgresReport,
    /// Both answered.
    healthy: bool,
}

/// The broker's side of [`Report`].
#[derive(Debug, Serialize)]
struct KafkaReport {
    /// `ok`, `unreachable` or `failed` (authentication, TLS, a refused setting).
    state: &'static str,
    /// `kafka.bootstrap_servers`.
    bootstrap_servers: String,
    /// Broker ids and addresses.
    brokers: Vec<Broker>,
    /// Topics with their partition counts, internal ones left out.
    topics: Vec<Topic>,
    /// Topics weatherflow creates get replication factor 1 on a cluster of several brokers.
    replication_warning: bool,
    /// What failed and what to fix.
    error: Option<String>,
}

/// One broker.
#[derive(Debug, Serialize)]
struct Broker {
    id: i32,
    address: String,
}

/// One topic.
#[derive(Debug, Serialize)]
struct Topic {
    name: String,
    partitions: usize,
}

/// The database's side of [`Report`].
#[derive(Debug, Serialize)]
struct PostgresReport {
    /// `ok`, `unreachable` or `failed` (TLS).
    state: &'static str,
    /// `database.url`, password masked.
    url: String,
    /// The server's version string.
    server_version: Option<String>,
    /// Migrations applied.
    migrations_applied: Option<usize>,
    /// Migrations pending (`weatherflow migrate` applies them).
    migrations_pending: Option<usize>,
    /// What failed and what to fix.
    error: Option<String>,
}

/// Prints what it finds; fails naming the setting to fix when a service is unreachable.
pub async fn run(config: &Config, format: Format) -> anyhow::Result<()> {
    let report = Report::gather(config).await?;
    match format {
        Format::Table => table::emit(&report.text())?,
        Format::Json => table::print_json(&report)?,
        Format::Csv => table::emit(&table::csv_pairs(&serde_json::to_value(&report)?))?,
    }
    if report.healthy {
        return Ok(());
    }
    let problems: Vec<&str> = [&report.kafka.error, &report.postgresql.error]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    anyhow::bail!(problems.join("\n"))
}

impl Report {
    async fn gather(config: &Config) -> anyhow::Result<Self> {
        let kcfg = config.kafka.clone();
        let bootstrap_servers = config.kafka.bootstrap_servers.clone();
        let mut kafka = KafkaReport {
            state: "ok",
            bootstrap_servers,
            brokers: Vec::new(),
            topics: Vec::new(),
            replication_warning: false,
            error: None,
        };
        match tokio::task::spawn_blocking(move || kafka::cluster_info(&kcfg)).await? {
            Ok(info) => {
                kafka.replication_warning = info.brokers.len() > 1 && config.kafka.replication_factor == 1;
                kafka.brokers = info
                    .brokers
                    .into_iter()
                    .map(|(id, address)| Broker { id, address })
                    .collect();
                kafka.topics = info
                    .topics
                    .into_iter()
                    .map(|(name, partitions)| Topic { name, partitions })
                    .collect();
            }
            Err(e @ kafka::KafkaSetupError::Unreachable { .. }) => {
                kafka.state = "unreachable";
                kafka.error = Some(format!(
                    "{e} — fix KAFKA_BOOTSTRAP_SERVERS or start it with scripts/services.sh up"
                ));
            }
            // Authentication, TLS, a refused setting: the error names what to fix.
            Err(e) => {
                kafka.state = "failed";
                kafka.error = Some(e.to_string());
            }
        }

        let mut postgresql = PostgresReport {
            state: "ok",
            url: redact_url(config.database.url.expose_secret()),
            server_version: None,
            migrations_applied: None,
            migrations_pending: None,
            error: None,
        };
        match db::connect(&config.database).await {
            Ok(conn) => {
                postgresql.server_version = Some(db::server_version(&conn).await?);
                let state = super::migrate::status(&conn).await?;
                let pending = state.iter().filter(|(_, applied)| !applied).count();
                postgresql.migrations_applied = Some(state.len() - pending);
                postgresql.migrations_pending = Some(pending);
            }
            Err(e @ db::DbSetupError::Tls { .. }) => {
                postgresql.state = "failed";
                postgresql.error = Some(e.to_string());
            }
            Err(e) => {
                postgresql.state = "unreachable";
                postgresql.error = Some(format!(
                    "{e} — fix DATABASE_URL or start it with scripts/services.sh up"
                ));
            }
        }
        let healthy = kafka.error.is_none() && postgresql.error.is_none();
        Ok(Self {
            kafka,
            postgresql,
            healthy,
        })
    }

    /// The lines `check` prints for people (README shows an example).
    fn text(&self) -> String {
        let mut out = String::new();
        let k = &self.kafka;
        out.push_str(&format!(
            "kafka: {} ({})\n",
            headline(k.state),
            k.bootstrap_servers
        ));
        for b in &k.brokers {
            out.push_str(&format!("  broker {} at {}\n", b.id, b.address));
        }
        if k.replication_warning {
            out.push_str(&format!(
                "  WARNING: {} brokers, but topics weatherflow creates get replication factor 1: losing \
                 one broker loses their data. Set WEATHERFLOW_KAFKA_REPLICATION_FACTOR=3 and \
                 WEATHERFLOW_KAFKA_MIN_INSYNC_REPLICAS=2 (docs/operations.md)\n",
                k.brokers.len()
            ));
        }
        if k.state == "ok" && k.topics.is_empty() {
            out.push_str("  no topics yet\n");
        }
        for t in &k.topics {
            out.push_str(&format!("  topic {} ({} partitions)\n", t.name, t.partitions));
        }
        let p = &self.postgresql;
        out.push_str(&format!("postgresql: {} ({})\n", headline(p.state), p.url));
        if let (Some(version), Some(applied), Some(pending)) =
            (&p.server_version, p.migrations_applied, p.migrations_pending)
        {
            out.push_str(&format!("  server version {version}\n"));
            out.push_str(&format!(
                "  migrations: {applied} applied, {pending} pending{}\n",
                if pending > 0 {
                    " (run `weatherflow migrate`)"
                } else {
                    ""
                }
            ));
        }
        if self.healthy {
            out.push_str("all services healthy\n");
        }
        out
    }
}

/// A service's state as the table's headline says it.
fn headline(state: &str) -> &'static str {
    match state {
        "ok" => "ok",
        "unreachable" => "UNREACHABLE",
        _ => "FAILED",
    }
}
