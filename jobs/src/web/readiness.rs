//! What `/readyz` answers from: state the process keeps, refreshed in the background every
//! [`EVERY`], never per request. A probe costs a lock and a clock read.
//!
//! One long-lived Kafka client (which also samples the consumer lag, see [`super::lag`]) remembers
//! its last successful metadata call; a `SELECT 1` on the pool remembers its last success; the
//! migrations are read at start and again each round only until none is pending. A check fails once
//! its last success is older than [`STALE_AFTER`], so one slow round does not flap readiness and a
//! stopped broker or database shows within that bound.
//!
//! A check per probe (a librdkafka client, with its threads and broker connection, and two queries)
//! served 244 probes/s and grew the process to 262 threads under 64 connections, where kept state
//! serves 4,565 with 9 threads throughout (`bench web`, debug build, docs/performance.md). The
//! answer's words name the failing check and how long it has failed; the errors themselves (broker
//! addresses, user names, SQL errors) go to the log, once per failure.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use migration::{Migrator, MigratorTrait};
use rdkafka::consumer::{BaseConsumer, Consumer};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::lag::{self, LagSample, LagSampler};
use crate::config::KafkaConfig;

/// How often the checks run: each round is one metadata request and one `SELECT 1`, whatever the
/// number of probes.
pub(crate) const EVERY: Duration = Duration::from_secs(2);

/// A check fails once its last success is this old: three rounds, so a stopped broker or database
/// shows on `/readyz` within 6 s.
pub const STALE_AFTER: Duration = Duration::from_secs(6);

/// How long a probe that arrives before the first round has finished waits for it.
const FIRST_ROUND_WAIT: Duration = Duration::from_secs(3);

/// One check's memory: its last success and whether its last attempt failed (for logging once).
#[derive(Debug, Default)]
struct Check {
    last_ok: Option<Instant>,
    failing: bool,
}

/// What the migrations looked like the last time they were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Migrations {
    /// Not read yet (PostgreSQL has not answered).
    Unknown,
    /// This many are pending.
    Pending(usize),
    /// None pending; not read again.
    Applied,
}

/// The kept state every probe reads.
#[derive(Debug)]
pub struct Readiness {
    kafka: Mutex<Check>,
    postgres: Mutex<Check>,
    migrations: Mutex<Migrations>,
    /// How many of the two loops (Kafka, PostgreSQL) finished their first round: a probe in the
    /// first moments waits for both rather than answer "not checked yet".
    first_round: watch::Sender<u8>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            kafka: Mutex::default(),
            postgres: Mutex::default(),
            migrations: Mutex::new(Migrations::Unknown),
            first_round: watch::Sender::new(0),
        }
    }
}

/// The verdict of one check: `Ok`, or the words a probe shows.
pub type Verdict = Result<(), String>;

/// The checks' verdicts, in the order `/readyz` lists them.
#[derive(Debug)]
pub struct Verdicts {
    /// The broker answered a metadata request within [`STALE_AFTER`].
    pub kafka: Verdict,
    /// PostgreSQL answered a query within [`STALE_AFTER`].
    pub postgres: Verdict,
    /// No migration is pending.
    pub migrations: Verdict,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Readiness {
    /// The verdicts now, waiting (at most [`FIRST_ROUND_WAIT`]) for the first round if it has not
    /// finished yet.
    pub async fn verdicts(&self) -> Verdicts {
        let mut first = self.first_round.subscribe();
        let _ = tokio::time::timeout(FIRST_ROUND_WAIT, first.wait_for(|done| *done >= 2)).await;
        let now = Instant::now();
        let postgres = fresh(&lock(&self.postgres), now, "PostgreSQL has not answered a query");
        let migrations = match (*lock(&self.migrations), &postgres) {
            (Migrations::Applied, _) => Ok(()),
            (Migrations::Pending(n), _) => Err(format!("{n} migration(s) pending; run `weatherflow migrate up`")),
            (Migrations::Unknown, Ok(())) => Err("the migration table could not be read (details in the log)".to_owned()),
            (Migrations::Unknown, Err(_)) => Err("not checked yet: PostgreSQL has not answered".to_owned()),
        };
        Verdicts {
            kafka: fresh(&lock(&self.kafka), now, "no metadata answer from the brokers"),
            postgres,
            migrations,
        }
    }

    /// Notes one attempt of `check`: a success, or a failure whose `detail` goes to the log when the
    /// check starts failing (not every round).
    fn note(&self, which: &'static str, check: &Mutex<Check>, outcome: Result<(), String>) {
        let mut c = lock(check);
        match outcome {
            Ok(()) => {
                if c.failing {
                    tracing::info!(check = which, "readiness: {which} answers again");
                }
                c.last_ok = Some(Instant::now());
                c.failing = false;
            }
            Err(detail) => {
                if !c.failing {
                    tracing::warn!(check = which, error = %detail, "readiness: {which} check failed");
                }
                c.failing = true;
            }
        }
    }
}

/// `Ok` when `check` succeeded within [`STALE_AFTER`] of `now`, else `what` and for how long.
fn fresh(check: &Check, now: Instant, what: &str) -> Verdict {
    match check.last_ok {
        Some(t) if now.saturating_duration_since(t) < STALE_AFTER => Ok(()),
        Some(t) => Err(format!(
            "{what} for {} s (details in the log)",
            now.saturating_duration_since(t).as_secs()
        )),
        None => Err(format!("{what} since the process started (details in the log)")),
    }
}

/// Refreshes `ready` and the lag sample `lag` every [`EVERY`] until `shutdown`. Kafka and
/// PostgreSQL have a loop each, so a broker that times out does not delay the database's check.
pub(crate) async fn watch(
    kafka: KafkaConfig,
    db: DatabaseConnection,
    ready: Arc<Readiness>,
    lag: Arc<LagSampler>,
    shutdown: CancellationToken,
) {
    tokio::join!(
        kafka_loop(kafka, &ready, &lag, &shutdown),
        postgres_loop(db, &ready, &shutdown)
    );
}

/// Counts one loop's first round; a probe waits until both are in.
fn first_round_done(ready: &Readiness) {
    ready.first_round.send_modify(|n| *n += 1);
}

async fn kafka_loop(kafka: KafkaConfig, ready: &Readiness, lag: &LagSampler, shutdown: &CancellationToken) {
    let mut client: Option<Arc<BaseConsumer>> = None;
    let mut last_lag: Option<Instant> = None;
    let mut first = true;
    loop {
        let lag_due = last_lag.is_none_or(|t| t.elapsed() >= lag::EVERY);
        tokio::select! {
            _ = kafka_round(&kafka, &mut client, ready, lag, lag_due) => {},
            _ = shutdown.cancelled() => break,
        }
        if lag_due {
            last_lag = Some(Instant::now());
        }
        if std::mem::take(&mut first) {
            first_round_done(ready);
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {},
            _ = shutdown.cancelled() => break,
        }
    }
    if let Some(c) = client {
        crate::kafka::close_off_task(c);
    }
}

async fn postgres_loop(db: DatabaseConnection, ready: &Readiness, shutdown: &CancellationToken) {
    let mut first = true;
    loop {
        tokio::select! {
            _ = postgres_round(&db, ready) => {},
            _ = shutdown.cancelled() => return,
        }
        if std::mem::take(&mut first) {
            first_round_done(ready);
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {},
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One metadata request on the long-lived client (made on first use, again after a failed
/// creation), and the lag sample when `lag_due`.
async fn kafka_round(
    cfg: &KafkaConfig,
    client: &mut Option<Arc<BaseConsumer>>,
    ready: &Readiness,
    into: &LagSampler,
    lag_due: bool,
) {
    if client.is_none() {
        match crate::kafka::lag_client(cfg) {
            Ok(c) => *client = Some(Arc::new(c)),
            Err(e) => {
                ready.note("kafka", &ready.kafka, Err(format!("creating the client: {e}")));
                if lag_due {
                    into.record(LagSample::Unreachable(e.to_string()));
                }
                return;
            }
        }
    }
    let Some(c) = client.clone() else { return };
    let cfg = cfg.clone();
    let task = tokio::task::spawn_blocking(move || {
        let md = c.fetch_metadata(None, EVERY.min(Duration::from_secs(cfg.request_timeout_secs.max(1))));
        let metadata = match md {
            Ok(md) if md.brokers().is_empty() => Err("metadata lists no broker".to_owned()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("metadata request: {e}")),
        };
        // The lag needs the broker: with it gone, the sample says so at once instead of waiting
        // out three more timeouts.
        let sample = match (&metadata, lag_due) {
            (_, false) => None,
            (Err(e), true) => Some(LagSample::Unreachable(e.clone())),
            (Ok(()), true) => {
                let timeout = Duration::from_secs(cfg.request_timeout_secs.clamp(1, 4));
                Some(match crate::kafka::consumer_lag_on(&c, &cfg, timeout) {
                    Ok(Some(parts)) => LagSample::Partitions(parts),
                    Ok(None) => LagSample::NoTopic,
                    Err(e) => LagSample::Unreachable(e.to_string()),
                })
            }
        };
        (metadata, sample)
    });
    match task.await {
        Ok((metadata, sample)) => {
            ready.note("kafka", &ready.kafka, metadata);
            if let Some(s) = sample {
                into.record(s);
            }
        }
        Err(e) => ready.note("kafka", &ready.kafka, Err(format!("metadata task: {e}"))),
    }
}

/// One `SELECT 1`, and the migrations until none is pending.
async fn postgres_round(db: &DatabaseConnection, ready: &Readiness) {
    let ping = db.execute_raw(Statement::from_string(DbBackend::Postgres, "SELECT 1"));
    let outcome = match tokio::time::timeout(EVERY, ping).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("SELECT 1: {e}")),
        Err(_) => Err(format!("SELECT 1: no answer within {} s", EVERY.as_secs())),
    };
    let answered = outcome.is_ok();
    ready.note("postgres", &ready.postgres, outcome);
    if !answered || *lock(&ready.migrations) == Migrations::Applied {
        return;
    }
    match tokio::time::timeout(EVERY, pending_migrations(db)).await {
        Ok(Ok(pending)) => {
            let now = if pending == 0 {
                Migrations::Applied
            } else {
                Migrations::Pending(pending)
            };
            *lock(&ready.migrations) = now;
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "readiness: cannot read the migration table"),
        Err(_) => tracing::warn!("readiness: reading the migration table timed out"),
    }
}

/// How many of this binary's migrations the database has not applied. Read with a plain `SELECT`:
/// sea-orm's own check first creates its table if missing, which a read-only role may not.
async fn pending_migrations(db: &DatabaseConnection) -> Result<usize, sea_orm::DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT version FROM seaql_migrations",
        ))
        .await?;
    let applied = rows
        .iter()
        .map(|r| r.try_get_by_index::<String>(0))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Migrator::migrations()
        .iter()
        .filter(|m| !applied.iter().any(|a| a == m.name()))
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_fails_once_its_last_success_is_stale_and_names_no_detail() {
        let t0 = Instant::now();
        let never = Check::default();
        let recent = Check {
            last_ok: Some(t0),
            failing: true,
        };
        assert!(fresh(&recent, t0 + Duration::from_secs(5), "x").is_ok());
        let old = fresh(&recent, t0 + STALE_AFTER + Duration::from_secs(1), "no answer").unwrap_err();
        assert_eq!(old, "no answer for 7 s (details in the log)");
        let none = fresh(&never, t0, "no answer").unwrap_err();
        assert_eq!(none, "no answer since the process started (details in the log)");
    }
}
