//! What a finished run reports about itself: the [`Report`] every job's summary implements, and the
//! [`StoredReport`] it is stored as in its `job_runs` row. Below both the run history ([`crate::runs`])
//! and the job error ([`crate::job_error`]), which carries a failed run's partial report, so neither
//! of the two imports the other for it.

use serde_json::Value;

use entity::job_runs::RunStatus;

/// How a run that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// It did its work.
    Succeeded,
    /// It had nothing it could do (e.g. too little data to fit), said why in `details`.
    Skipped,
}

/// What a job reports about a finished run, stored in its `job_runs` row.
pub trait Report {
    /// Succeeded or skipped.
    fn completion(&self) -> Completion {
        Completion::Succeeded
    }
    /// Records read (fetch: locations asked; persist: messages consumed; analytics: rows read).
    fn records_in(&self) -> Option<i64>;
    /// Records written (fetch: messages produced; persist: rows stored; analytics: results stored).
    fn records_out(&self) -> Option<i64>;
    /// A job-specific summary as JSON (fetch: the per-location outcomes).
    fn details(&self) -> Value;
}

/// A finished run's report in the form it is stored: what every [`Report`] boils down to. Lets the
/// scheduler run any job body, whatever its summary type.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReport {
    /// Succeeded or skipped.
    pub completion: Completion,
    /// Records read.
    pub records_in: Option<i64>,
    /// Records written.
    pub records_out: Option<i64>,
    /// The job-specific summary.
    pub details: Value,
}

impl StoredReport {
    /// A success with nothing to report (test bodies, trivial jobs).
    pub fn succeeded() -> Self {
        Self {
            completion: Completion::Succeeded,
            records_in: None,
            records_out: None,
            details: Value::Null,
        }
    }

    /// The stored form of `report`.
    pub fn of<R: Report + ?Sized>(report: &R) -> Self {
        Self {
            completion: report.completion(),
            records_in: report.records_in(),
            records_out: report.records_out(),
            details: report.details(),
        }
    }

    /// The `job_runs.status` this outcome is recorded with.
    pub fn status(&self) -> RunStatus {
        match self.completion {
            Completion::Succeeded => RunStatus::Succeeded,
            Completion::Skipped => RunStatus::Skipped,
        }
    }
}

impl Report for StoredReport {
    fn completion(&self) -> Completion {
        self.completion
    }
    fn records_in(&self) -> Option<i64> {
        self.records_in
    }
    fn records_out(&self) -> Option<i64> {
        self.records_out
    }
    fn details(&self) -> Value {
        self.details.clone()
    }
}
