//! The error at the job boundary: what a job's `run` returns when it fails, typed by what its caller
//! should do next. The scheduler retries only [`JobErrorKind::Retryable`] failures: a fatal one (a bad
//! key, a used-up quota, a plan without access, a bad configuration) fails the same way on every
//! attempt, and an interrupted one was stopped on purpose.
//!
//! The message is the failure's whole cause chain on one line (`writing regression_results: error
//! returned from database: ...`), which is what `job_runs.error` stores; the kind is what callers
//! decide on. A failed run may still carry what it did before it stopped ([`JobError::with_report`]),
//! so that its row keeps the partial summary.

use std::error::Error as StdError;

use crate::report::{Report, StoredReport};

/// What the caller of a failed job should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobErrorKind {
    /// Another attempt would fail the same way (bad key, quota, plan, configuration, bad request):
    /// record it and wait for a person, or the next tick.
    Fatal,
    /// A transient failure (network, HTTP 5xx, throttling, database or broker outage): worth another
    /// attempt after a backoff.
    Retryable,
    /// The run was stopped on purpose (shutdown, cancellation, a lost lock) before it finished.
    Interrupted,
}

impl JobErrorKind {
    /// The name used in logs and `job_runs.details.error_kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobErrorKind::Fatal => "fatal",
            JobErrorKind::Retryable => "retryable",
            JobErrorKind::Interrupted => "interrupted",
        }
    }
}

/// A failed job run: its kind, its cause chain, and optionally the partial report of what it did.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    /// Whether to retry.
    kind: JobErrorKind,
    /// The cause chain, `outer: inner: innermost`. Never holds a secret: the jobs' own errors are
    /// already free of keys and passwords (see `weatherapi::ApiError`, `config::redact_url`).
    message: String,
    /// What the run did before it failed (e.g. a persist run's counts), stored in its row.
    report: Option<Box<StoredReport>>,
}

/// Anything a job can fail with: its own typed errors, driver errors, or a message.
pub type Cause = Box<dyn StdError + Send + Sync + 'static>;

impl JobError {
    /// A failure of `kind` caused by `cause`.
    pub fn new(kind: JobErrorKind, cause: impl Into<Cause>) -> Self {
        Self {
            kind,
            message: chain(&*cause.into()),
            report: None,
        }
    }

    /// A failure that another attempt would repeat.
    pub fn fatal(cause: impl Into<Cause>) -> Self {
        Self::new(JobErrorKind::Fatal, cause)
    }

    /// A transient failure, worth another attempt.
    pub fn retryable(cause: impl Into<Cause>) -> Self {
        Self::new(JobErrorKind::Retryable, cause)
    }

    /// A run stopped on purpose before it finished.
    pub fn interrupted(cause: impl Into<Cause>) -> Self {
        Self::new(JobErrorKind::Interrupted, cause)
    }

    /// The same failure, with `what` it was doing in front: `what: cause`.
    pub fn context(mut self, what: impl std::fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// The same failure, carrying `report`: what the run did before it failed.
    pub fn with_report<R: Report + ?Sized>(mut self, report: &R) -> Self {
        self.report = Some(Box::new(StoredReport::of(report)));
        self
    }

    /// Whether to retry.
    pub fn kind(&self) -> JobErrorKind {
        self.kind
    }

    /// Whether the scheduler should try again.
    pub fn is_retryable(&self) -> bool {
        self.kind == JobErrorKind::Retryable
    }

    /// The partial report, when the run had one.
    pub fn report(&self) -> Option<&StoredReport> {
        self.report.as_deref()
    }
}

/// Adds a kind and a context to a fallible step of a job: `step.await.job(Retryable, "reading")?`.
pub trait JobResultExt<T> {
    /// Turns the error into a [`JobError`] of `kind`, saying `what` was being done.
    fn job(self, kind: JobErrorKind, what: impl std::fmt::Display) -> Result<T, JobError>;
}

impl<T, E: Into<Cause>> JobResultExt<T> for Result<T, E> {
    fn job(self, kind: JobErrorKind, what: impl std::fmt::Display) -> Result<T, JobError> {
        self.map_err(|e| JobError::new(kind, e).context(what))
    }
}

/// An error and its sources on one line, each cause once (a source whose text already ends the line,
/// as wrapping errors often repeat it, is not added again).
pub(crate) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_the_cause_chain_with_context() {
        let inner = std::io::Error::other("connection refused");
        let outer = anyhow::Error::new(inner).context("reading observations");
        let err = JobError::retryable(outer).context("analytics");
        assert_eq!(
            err.to_string(),
            "analytics: reading observations: connection refused"
        );
        assert!(err.is_retryable());
        assert_eq!(JobError::fatal("bad key").kind(), JobErrorKind::Fatal);
        assert!(!JobError::interrupted("stopped").is_retryable());
    }
}
