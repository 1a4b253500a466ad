//! Outages and row-level refusals: which database errors split a batch and which retry it, the
//! retry policy the store and the dead-letter producer share, and how an outage is waited out and
//! reported.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::outages::{self, Cause, Target};

/// How a database error is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The error depends on the content of a row ([`ROW_LEVEL`]): split the batch to find the rows
    /// and quarantine them.
    RowLevel,
    /// Anything else: the database refuses or cannot take the batch whatever its rows hold. Retry the
    /// whole batch with backoff; nothing is quarantined and no offset moves.
    Outage,
}

/// The closed list of SQLSTATEs (a class of two characters, or one code) that depend on a row's
/// content, each with why. Everything not on it is an outage: a read-only node (25006), a revoked
/// grant (42501), a lock or statement timeout (55P03, 57014), a full disk (53100), a system or
/// internal error (58xxx, XX000), a lost connection (08), a serialization failure (40), and any code
/// nobody has seen yet. Guessing "row" for an unknown code moves valid data out of the table;
/// guessing "outage" only waits.
pub(crate) const ROW_LEVEL: &[(&str, &str)] = &[
    (
        "22",
        "data exception: a value of the row itself (a NUL in text, a number out of range, an invalid date)",
    ),
    (
        "23",
        "integrity constraint violation: the row breaks a CHECK, NOT NULL or UNIQUE constraint",
    ),
    (
        "54000",
        "program limit exceeded: a value too large for an index row (a key over 2,704 bytes)",
    ),
];

/// Tells row-level refusals from outages: only a SQL error whose SQLSTATE is on [`ROW_LEVEL`] is about
/// the row. Errors that are not SQL errors (I/O, TLS, pool, protocol, encoding) are outages too.
pub(crate) fn classify(err: &sqlx::Error) -> Failure {
    match err {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) if is_row_level(&code) => Failure::RowLevel,
            _ => Failure::Outage,
        },
        _ => Failure::Outage,
    }
}

fn is_row_level(code: &str) -> bool {
    ROW_LEVEL.iter().any(|(prefix, _)| code.starts_with(prefix))
}

/// The outage [`Cause`] of `err`: its SQLSTATE class and message, or the kind of client error.
pub(crate) fn cause_of(err: &sqlx::Error) -> Cause {
    let class = match err {
        sqlx::Error::Database(db) => db
            .code()
            .map_or_else(|| "unknown".to_owned(), |c| c.chars().take(2).collect()),
        sqlx::Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => "timeout".to_owned(),
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => "io".to_owned(),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => "pool".to_owned(),
        _ => "client".to_owned(),
    };
    Cause {
        class,
        detail: describe(err),
    }
}

/// The error as one line a person can act on, with the SQLSTATE when there is one. The driver's
/// messages never hold the connection URL, so no password reaches a log or `/readyz`.
pub(crate) fn describe(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("SQLSTATE {code}: {}", db.message()),
            None => db.message().to_owned(),
        },
        other => other.to_string(),
    }
}

/// The job was stopped while the database was unavailable; the batch was not stored and its offsets
/// must not be committed.
#[derive(Debug, thiserror::Error)]
#[error("stopped while waiting for the database; the batch was not stored")]
pub struct Interrupted;

/// How outages are retried.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Delays between attempts.
    pub backoff: Backoff,
    /// Cancelled on shutdown: a retry wait ends early and the batch is given up (not committed).
    pub shutdown: CancellationToken,
    /// Client-side bound on one write transaction (`persist.write_timeout_secs`): a connection that
    /// goes silent without closing fails the attempt as an outage instead of hanging the writer.
    pub write_timeout: Duration,
    /// How long a refusal that every row meets the same way is waited out before its rows are
    /// quarantined after all (`persist.uniform_refusal_patience_secs`).
    pub uniform_patience: Duration,
    /// Readiness fails once the dead-letter topic has refused writes this long
    /// (`persist.dlq_unavailable_secs`).
    pub dlq_grace: Duration,
    /// Rows refused the same way in a row, shared by every writer of the job.
    pub streak: super::Streak,
}

impl Retry {
    /// A policy with the given backoff and the defaults of the other settings.
    pub fn new(backoff: Backoff, shutdown: CancellationToken) -> Self {
        Self {
            backoff,
            shutdown,
            write_timeout: Duration::from_secs(30),
            uniform_patience: Duration::from_secs(300),
            dlq_grace: Duration::from_secs(30),
            streak: super::Streak::default(),
        }
    }

    /// Waits `delay` before the next attempt; [`Interrupted`] when the job is stopped meanwhile, so
    /// the caller gives the batch up instead of waiting out the outage.
    pub(crate) async fn wait(&self, delay: Duration) -> Result<(), Interrupted> {
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = self.shutdown.cancelled() => Err(Interrupted),
        }
    }
}

/// An outage's log lines go from WARN to ERROR once it lasted this long: a failover or a restart is
/// over in seconds, anything longer needs a person.
const ERROR_AFTER: Duration = Duration::from_secs(30);

/// What [`Outage`] tells the operator to check, in `/readyz`.
const DATABASE_HINT: &str = "docs/operations.md, \"The database refuses writes\"";

/// One batch waiting out an outage: counts the attempts, registers the outage for `/readyz` and the
/// gauge, logs each retry (WARN, then ERROR after [`ERROR_AFTER`]) and says when it is over.
pub(crate) struct Outage<'a> {
    retry: &'a Retry,
    target: Target,
    hint: String,
    attempt: u32,
    /// When the first attempt was sent: an outage counts from there, since a send to a deleted
    /// dead-letter topic fails only at the producer's message timeout (30 s).
    created: Instant,
    started: Option<Instant>,
    guard: Option<outages::Guard>,
}

impl<'a> Outage<'a> {
    /// Nothing wrong yet: the first [`Outage::wait`] starts the outage, counted from now (make it
    /// just before the first attempt).
    pub(crate) fn database(retry: &'a Retry) -> Self {
        Self::of(retry, Target::Database, DATABASE_HINT.to_owned())
    }

    /// Like [`Outage::database`], for the dead-letter topic `topic`.
    pub(crate) fn dead_letter(retry: &'a Retry, topic: &str) -> Self {
        let hint = format!(
            "the dead-letter topic {topic} (kafka.dlq_topic) must exist and be writable by this client \
             (created by the job at start; with auto.create.topics.enable off, recreate it)"
        );
        Self::of(retry, Target::DeadLetterTopic, hint)
    }

    fn of(retry: &'a Retry, target: Target, hint: String) -> Self {
        Self {
            retry,
            target,
            hint,
            attempt: 0,
            created: Instant::now(),
            started: None,
            guard: None,
        }
    }

    /// Attempts that failed so far.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempt
    }

    /// How long this outage has lasted; zero before the first failure.
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// Records one failed attempt for `cause`, then waits the backoff delay.
    pub(crate) async fn wait(&mut self, cause: Cause, rows: usize) -> Result<(), Interrupted> {
        let delay = self.retry.backoff.delay(self.attempt);
        let started = *self.started.get_or_insert(self.created);
        let grace = match self.target {
            Target::Database => Duration::ZERO,
            Target::DeadLetterTopic => self.retry.dlq_grace,
        };
        let (class, detail) = (cause.class.clone(), cause.detail.clone());
        match &self.guard {
            Some(guard) => guard.update(cause),
            None => {
                let guard = outages::begin(self.target, started, cause, grace, self.hint.clone());
                self.guard = Some(guard);
            }
        }
        self.attempt = self.attempt.saturating_add(1);
        let lasted = started.elapsed();
        let (target, attempt, retry_in_ms) = (self.target.as_str(), self.attempt, delay.as_millis() as u64);
        let lasted_s = lasted.as_secs();
        if lasted >= ERROR_AFTER.max(grace) {
            tracing::error!(
                target_service = target, class, error = %detail, attempt, lasted_s, retry_in_ms, rows,
                "{target} outage: the batch waits (offsets are not committed)"
            );
        } else {
            tracing::warn!(
                target_service = target, class, error = %detail, attempt, lasted_s, retry_in_ms, rows,
                "{target} outage: retrying the whole batch (offsets are not committed)"
            );
        }
        self.retry.wait(delay).await
    }

    /// The batch went through: logs how long the outage lasted, if there was one.
    pub(crate) fn end(self) {
        if let Some(started) = self.started {
            tracing::info!(
                target_service = self.target.as_str(),
                attempts = self.attempt,
                lasted_ms = started.elapsed().as_millis() as u64,
                "{} is back; batch stored",
                self.target.as_str().replace('_', " ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_error(code: &str) -> sqlx::Error {
        super::super::isolate::refusal(Some(code), None, "fake")
    }

    #[test]
    fn only_the_allowlist_is_row_level_and_everything_else_is_an_outage() {
        // 22021 NUL in text, 22003 numeric out of range, 22P02 invalid text, 23505 unique,
        // 23514 check, 23502 not null, 54000 index row too large.
        for code in ["22021", "22003", "22P02", "23505", "23514", "23502", "54000"] {
            assert_eq!(classify(&db_error(code)), Failure::RowLevel, "{code}");
        }
        // 25006 read-only transaction, 42501 insufficient privilege, 42P01 missing table, 55P03
        // lock not available, 57014 statement timeout, 57P01 admin shutdown, 53100 disk full, 53300
        // too many connections, 58030 I/O error, XX000 internal, 08006 connection failure, 40P01
        // deadlock, 40001 serialization failure, 54001 statement too complex, a code never seen.
        for code in [
            "25006", "42501", "42P01", "55P03", "57014", "57P01", "53100", "53300", "58030", "XX000",
            "08006", "40P01", "40001", "54001", "ZZ999",
        ] {
            assert_eq!(classify(&db_error(code)), Failure::Outage, "{code}");
        }
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), Failure::Outage);
        for kind in [
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::ConnectionRefused,
            std::io::ErrorKind::TimedOut,
        ] {
            let io = std::io::Error::new(kind, "down");
            assert_eq!(classify(&sqlx::Error::Io(io)), Failure::Outage);
        }
        assert_eq!(classify(&sqlx::Error::Encode("bad".into())), Failure::Outage);
    }

    #[test]
    fn causes_carry_the_sqlstate_class_and_message() {
        let c = cause_of(&db_error("25006"));
        assert_eq!(c.class, "25");
        assert_eq!(c.detail, "SQLSTATE 25006: fake");
        let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer");
        assert_eq!(cause_of(&sqlx::Error::Io(timeout)).class, "timeout");
        assert_eq!(cause_of(&sqlx::Error::PoolTimedOut).class, "pool");
    }
}
