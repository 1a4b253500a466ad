//! `weatherflow check`: do Kafka and PostgreSQL answer, and what do they hold.

use crate::config::{Config, redact_url};
use crate::{db, kafka};
use secrecy::ExposeSecret;

/// Prints what it finds; fails naming the setting to fix when a service is unreachable.
pub async fn run(config: &Config) -> anyhow::Result<()> {
    let mut problems = Vec::new();

    let kcfg = config.kafka.clone();
    match tokio::task::spawn_blocking(move || kafka::cluster_info(&kcfg)).await? {
        Ok(info) => {
            println!("kafka: ok ({})", config.kafka.bootstrap_servers);
            for (id, addr) in &info.brokers {
                println!("  broker {id} at {addr}");
            }
            if info.brokers.len() > 1 && config.kafka.replication_factor == 1 {
                println!(
                    "  WARNING: {} brokers, but topics weatherflow creates get replication factor 1: losing \
                     one broker loses their data. Set WEATHERFLOW_KAFKA_REPLICATION_FACTOR=3 and \
                     WEATHERFLOW_KAFKA_MIN_INSYNC_REPLICAS=2 (docs/operations.md)",
                    info.brokers.len()
                );
            }
            if info.topics.is_empty() {
                println!("  no topics yet");
            }
            for (topic, partitions) in &info.topics {
                println!("  topic {topic} ({partitions} partitions)");
            }
        }
        Err(e @ kafka::KafkaSetupError::Unreachable { .. }) => {
            println!("kafka: UNREACHABLE ({})", config.kafka.bootstrap_servers);
            problems.push(format!(
                "{e} — fix KAFKA_BOOTSTRAP_SERVERS or start it with scripts/services.sh up"
            ));
        }
        // Authentication, TLS, a refused setting: the error names what to fix.
        Err(e) => {
            println!("kafka: FAILED ({})", config.kafka.bootstrap_servers);
            problems.push(e.to_string());
        }
    }

    let url = redact_url(config.database.url.expose_secret());
    match db::connect(&config.database).await {
        Ok(conn) => {
            let version = db::server_version(&conn).await?;
            println!("postgresql: ok ({url})");
            println!("  server version {version}");
            let state = super::migrate::status(&conn).await?;
            let pending = state.iter().filter(|(_, applied)| !applied).count();
            println!(
                "  migrations: {} applied, {pending} pending{}",
                state.len() - pending,
                if pending > 0 {
                    " (run `weatherflow migrate`)"
                } else {
                    ""
                }
            );
        }
        Err(e @ db::DbSetupError::Tls { .. }) => {
            println!("postgresql: FAILED ({url})");
            problems.push(e.to_string());
        }
        Err(e) => {
            println!("postgresql: UNREACHABLE ({url})");
            problems.push(format!(
                "{e} — fix DATABASE_URL or start it with scripts/services.sh up"
            ));
        }
    }

    if problems.is_empty() {
        println!("all services healthy");
        Ok(())
    } else {
        anyhow::bail!(problems.join("\n"))
    }
}
