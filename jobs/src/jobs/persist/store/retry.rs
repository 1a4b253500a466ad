//! Outages and row-level refusals: which database errors split a batch and which retry it, and the
//! retry policy the store and the dead-letter producer share.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

/// How a database error is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Caused by the data of some rows (SQLSTATE class 22 or 23, or a value the driver cannot
    /// encode): split the batch to find them.
    RowLevel,
    /// Anything else (connection, outage, deadlock, server shutdown): retry the whole batch.
    Outage,
}

/// Tells row-level errors from outages.
pub(crate) fn classify(err: &sqlx::Error) -> Failure {
    match err {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) if code.starts_with("22") || code.starts_with("23") => Failure::RowLevel,
            _ => Failure::Outage,
        },
        sqlx::Error::Encode(_) => Failure::RowLevel,
        _ => Failure::Outage,
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
    fn data_errors_split_and_outages_retry() {
        // 22021 invalid byte sequence (NUL in text), 22003 numeric out of range, 23505 unique, 23514 check.
        for code in ["22021", "22003", "23505", "23514", "23502"] {
            assert_eq!(classify(&db_error(code)), Failure::RowLevel, "{code}");
        }
        // 57P01 admin shutdown, 08006 connection failure, 55000 database not accepting connections,
        // 40P01 deadlock, 53300 too many connections, 42P01 missing table (fixable, so retried).
        for code in ["57P01", "08006", "55000", "40P01", "53300", "42P01"] {
            assert_eq!(classify(&db_error(code)), Failure::Outage, "{code}");
        }
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), Failure::Outage);
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(classify(&sqlx::Error::Io(io)), Failure::Outage);
    }
}
