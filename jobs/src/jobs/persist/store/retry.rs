//! Outages and row-level refusals: which database errors split a batch and which retry it, and the
//! retry policy the store and the dead-letter producer share.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

/// How a database error is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Not about the connection or the server's state, so possibly caused by the data of some rows
    /// (a data exception, a constraint, an index row too large, a value the driver cannot encode...):
    /// split the batch to find them.
    RowLevel,
    /// The connection or the server is unavailable (connection refused or reset, SQLSTATE class 08,
    /// 57P01–57P03, class 53, a pool timeout), or the transaction lost a race (class 40): retry the
    /// whole batch.
    Outage,
}

/// Tells outages from row-level errors by the state of the connection and the server, not by the
/// error class: whatever is not known to be an outage splits the batch, so that a row PostgreSQL
/// refuses for a reason nobody foresaw is quarantined instead of blocking its partition.
pub(crate) fn classify(err: &sqlx::Error) -> Failure {
    match err {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) if is_outage_code(&code) => Failure::Outage,
            _ => Failure::RowLevel,
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => Failure::Outage,
        _ => Failure::RowLevel,
    }
}

/// SQLSTATEs that describe the connection or the server rather than the rows: class 08 (connection
/// exception), 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now, class 53
/// (insufficient resources: disk full, out of memory, too many connections), and class 40
/// (serialization failure, deadlock), which a retry of the same rows resolves.
fn is_outage_code(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("40")
        || matches!(code, "57P01" | "57P02" | "57P03")
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
}

impl Retry {
    /// Waits `delay` before the next attempt; [`Interrupted`] when the job is stopped meanwhile, so
    /// the caller gives the batch up instead of waiting out the outage.
    pub(crate) async fn wait(&self, delay: Duration) -> Result<(), Interrupted> {
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = self.shutdown.cancelled() => Err(Interrupted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_error(code: &str) -> sqlx::Error {
        #[derive(Debug)]
        struct Fake(String);
        impl std::fmt::Display for Fake {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "fake {}", self.0)
            }
        }
        impl std::error::Error for Fake {}
        impl sqlx::error::DatabaseError for Fake {
            fn message(&self) -> &str {
                "fake"
            }
            fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
                Some(self.0.as_str().into())
            }
            fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
                self
            }
            fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
                self
            }
            fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
                self
            }
            fn kind(&self) -> sqlx::error::ErrorKind {
                sqlx::error::ErrorKind::Other
            }
        }
        sqlx::Error::Database(Box::new(Fake(code.to_owned())))
    }

    #[test]
    fn server_and_connection_states_retry_and_everything_else_splits() {
        // 22021 NUL in text, 22003 numeric out of range, 23505 unique, 23514 check, 54000 index row
        // too large, 42P01 missing table, 55000 object not in prerequisite state, XX000 internal.
        for code in [
            "22021", "22003", "23505", "23514", "23502", "54000", "42P01", "55000", "XX000",
        ] {
            assert_eq!(classify(&db_error(code)), Failure::RowLevel, "{code}");
        }
        // 57P01-57P03 shutdown/starting up, 08006 connection failure, 53300 too many connections,
        // 53100 disk full, 40P01 deadlock, 40001 serialization failure.
        for code in [
            "57P01", "57P02", "57P03", "08006", "08001", "53300", "53100", "40P01", "40001",
        ] {
            assert_eq!(classify(&db_error(code)), Failure::Outage, "{code}");
        }
        assert_eq!(classify(&db_error("57014")), Failure::RowLevel, "query cancelled");
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), Failure::Outage);
        for kind in [
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::ConnectionRefused,
        ] {
            let io = std::io::Error::new(kind, "down");
            assert_eq!(classify(&sqlx::Error::Io(io)), Failure::Outage);
        }
        assert_eq!(classify(&sqlx::Error::Encode("bad".into())), Failure::RowLevel);
    }
}
