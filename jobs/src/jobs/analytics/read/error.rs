//! Why a read of observations stopped, and what the run does about it: fatal, retryable or
//! interrupted.

use tokio::task::JoinError;

use super::super::AnalyticsError;
use super::super::fit::FitError;
use crate::job_error::{JobError, JobErrorKind};

/// Why the read stopped. The caller decides on [`ReadError::kind`]: before this type, every
/// failure but a shutdown was retried, including rows that decode wrongly every time and a panic.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The shutdown token fired: nothing was fitted or stored.
    #[error("interrupted by shutdown before the results were written; nothing was stored")]
    Interrupted,
    /// A query or the connection failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A row did not have the shape the read query makes (array format, lengths, counts).
    #[error("{0}")]
    Malformed(String),
    /// A part of the read panicked: its rows would be missing from the fit.
    #[error("a part of the read panicked")]
    PartPanicked(#[source] JoinError),
    /// The fitter thread stopped taking locations (it panicked).
    #[error("the location fitter stopped")]
    FitterStopped,
    /// The rows read do not make a design matrix.
    #[error("building the design matrix")]
    Matrix(#[source] FitError),
}

impl ReadError {
    /// Fatal, retryable or interrupted. A database that is down, slow or refusing (a revoked grant,
    /// a failover) may be back on the next attempt; rows that do not decode, a schema that does
    /// not match the query, and panics fail the same way again.
    pub(crate) fn kind(&self) -> JobErrorKind {
        match self {
            ReadError::Interrupted => JobErrorKind::Interrupted,
            ReadError::Database(
                sqlx::Error::ColumnNotFound(_)
                | sqlx::Error::ColumnIndexOutOfBounds { .. }
                | sqlx::Error::ColumnDecode { .. }
                | sqlx::Error::Decode(_)
                | sqlx::Error::TypeNotFound { .. }
                | sqlx::Error::Configuration(_),
            ) => JobErrorKind::Fatal,
            ReadError::Database(_) => JobErrorKind::Retryable,
            ReadError::Malformed(_)
            | ReadError::PartPanicked(_)
            | ReadError::FitterStopped
            | ReadError::Matrix(_) => JobErrorKind::Fatal,
        }
    }
}

impl From<ReadError> for JobError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Interrupted => AnalyticsError::Interrupted.into(),
            e => JobError::new(e.kind(), e).context("reading observations"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_outage_is_retryable_and_a_shutdown_interrupted() {
        let err = JobError::from(ReadError::Database(sqlx::Error::PoolTimedOut));
        assert!(err.is_retryable());
        assert!(err.to_string().starts_with("reading observations: "), "{err}");
        let io = ReadError::Database(sqlx::Error::Io(std::io::Error::other("connection reset")));
        assert_eq!(io.kind(), JobErrorKind::Retryable);
        let err = JobError::from(ReadError::Interrupted);
        assert_eq!(err.kind(), JobErrorKind::Interrupted);
        assert_eq!(err.to_string(), AnalyticsError::Interrupted.to_string());
    }

    #[tokio::test]
    async fn rows_that_do_not_decode_and_panics_are_fatal() {
        let missing = ReadError::Database(sqlx::Error::ColumnNotFound("temp_c".into()));
        assert_eq!(missing.kind(), JobErrorKind::Fatal);
        let malformed = JobError::from(ReadError::Malformed(
            "location x: 2 wind values but 1 temperatures".into(),
        ));
        assert_eq!(malformed.kind(), JobErrorKind::Fatal);
        assert_eq!(
            malformed.to_string(),
            "reading observations: location x: 2 wind values but 1 temperatures"
        );
        let panicked = tokio::spawn(async { panic!("boom") }).await.unwrap_err();
        assert_eq!(ReadError::PartPanicked(panicked).kind(), JobErrorKind::Fatal);
        assert_eq!(ReadError::FitterStopped.kind(), JobErrorKind::Fatal);
        let matrix = ReadError::Matrix(FitError::TooFewSamples { n: 1 });
        assert_eq!(JobError::from(matrix).kind(), JobErrorKind::Fatal);
    }
}
