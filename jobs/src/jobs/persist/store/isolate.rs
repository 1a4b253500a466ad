//! Finding the rows PostgreSQL refuses, and telling a refused row from a database that refuses
//! everything.
//!
//! A transaction refused for a row-level reason ([`Failure::RowLevel`]) is split in halves until the
//! refused rows are isolated; what PostgreSQL takes is stored on the way. Then the refused rows are
//! judged, in one place ([`judge`]):
//! - a rejection row (bound for `rejected_records`) is never quarantined further: the quarantine is
//!   not a sink, so its refusal is an outage, waited out with backoff;
//! - observation rows refused the same way (same SQLSTATE, constraint and message), with nothing
//!   stored in between, by this batch or any other writer's, are a database that refuses everything
//!   (an operator's CHECK every row fails, a trigger): an outage too, once two rows agree. Past
//!   `persist.uniform_refusal_patience_secs` they are quarantined after all, so that rows which really
//!   are alike and wrong cannot hold their partitions for ever; `weatherflow rejects redrive` brings
//!   them back once the cause is gone;
//! - any other refused observation is quarantined as `db_rejected`.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::retry::{Failure, Outage, Retry, cause_of, classify, describe};
use super::{CopyStrategy, Row, Stored, write_with_retry};
use crate::jobs::persist::store::Interrupted;
use crate::outages::Cause;

/// Rows refused the same way in a row, across batches and writers; any stored observation resets it.
#[derive(Debug, Clone, Default)]
pub struct Streak(Arc<Mutex<Option<(String, usize)>>>);

impl Streak {
    /// Adds `rows` refused with `signature`; returns how many rows in a row were refused that way.
    fn add(&self, signature: &str, rows: usize) -> usize {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *s {
            Some((sig, n)) if sig == signature => {
                *n += rows;
                *n
            }
            other => {
                *other = Some((signature.to_owned(), rows));
                rows
            }
        }
    }

    /// Something was stored: the database takes rows.
    fn reset(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Rows refused the same way that make a uniform refusal an outage: two rows are already more than
/// one bad record, while a single refused row is quarantined at once.
const UNIFORM_ROWS: usize = 2;

/// What one pass of the split search found.
struct Found<'a> {
    /// Rows refused one by one, with their error.
    refused: Vec<(Row<'a>, sqlx::Error)>,
    /// Whether any observation row was stored.
    stored_any: bool,
}

/// The verdict on a pass's refused rows.
enum Verdict<'a> {
    /// Quarantine these observations (the rest is stored).
    Quarantine(Vec<(Row<'a>, String)>),
    /// Wait, then write these rows again.
    Outage {
        rows: Vec<Row<'a>>,
        cause: Cause,
        uniform: Option<String>,
    },
}

/// Writes `rows` (one transaction's worth): stores what PostgreSQL takes, waits out outages, and
/// returns the observation rows to quarantine with the server's reason.
pub(super) async fn write_chunk<'a>(
    pool: &sqlx::PgPool,
    rows: &[Row<'a>],
    retry: &Retry,
    strategy: &mut CopyStrategy,
    stored: &mut Stored,
) -> Result<Vec<(Row<'a>, String)>, Interrupted> {
    let mut todo = rows.to_vec();
    let mut outage = Outage::database(retry);
    // The signature of a uniform refusal being waited out: its retries first try all rows in one
    // transaction, and only search again when the answer changes.
    let mut expect: Option<String> = None;
    loop {
        let found = search(pool, &todo, expect.as_deref(), retry, strategy, stored).await?;
        if found.stored_any {
            retry.streak.reset();
        }
        match judge(found, &retry.streak, outage.elapsed() >= retry.uniform_patience) {
            Verdict::Quarantine(refused) => {
                outage.end();
                return Ok(refused);
            }
            Verdict::Outage { rows, cause, uniform } => {
                stored.retries += 1;
                outage.wait(cause, rows.len()).await?;
                todo = rows;
                expect = uniform;
            }
        }
    }
}

/// The rule for refused rows (see the module documentation). `patience_over`: a uniform refusal has
/// been waited out for `persist.uniform_refusal_patience_secs` already.
fn judge<'a>(found: Found<'a>, streak: &Streak, patience_over: bool) -> Verdict<'a> {
    if found.refused.is_empty() {
        return Verdict::Quarantine(Vec::new());
    }
    if let Some((_, err)) = found.refused.iter().find(|(r, _)| matches!(r, Row::Rejected(_))) {
        let cause = cause_of(err);
        // Every refused row waits, the observations too: they are written again with the rejections.
        let rows = found.refused.iter().map(|(r, _)| *r).collect();
        return Verdict::Outage {
            rows,
            cause: Cause {
                class: cause.class,
                detail: format!("rejected_records refused a quarantined record: {}", cause.detail),
            },
            uniform: None,
        };
    }
    let first = signature(&found.refused[0].1);
    let alike = found.refused.iter().all(|(_, e)| signature(e) == first);
    if !found.stored_any && alike && !patience_over {
        let in_a_row = streak.add(&first, found.refused.len());
        if in_a_row >= UNIFORM_ROWS {
            let cause = cause_of(&found.refused[0].1);
            return Verdict::Outage {
                rows: found.refused.iter().map(|(r, _)| *r).collect(),
                cause: Cause {
                    class: cause.class,
                    detail: format!(
                        "{in_a_row} rows in a row refused the same way, nothing stored: {}",
                        cause.detail
                    ),
                },
                uniform: Some(first),
            };
        }
    }
    let prefix = if patience_over {
        "refused the same way past persist.uniform_refusal_patience_secs: "
    } else {
        ""
    };
    Verdict::Quarantine(
        found
            .refused
            .into_iter()
            .map(|(row, err)| (row, format!("{prefix}{}", describe(&err))))
            .collect(),
    )
}

/// What makes two refusals the same: SQLSTATE, constraint and message (not the detail, which names
/// the failing row).
fn signature(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => format!(
            "{}|{}|{}",
            db.code().unwrap_or_default(),
            db.constraint().unwrap_or_default(),
            db.message()
        ),
        other => other.to_string(),
    }
}

/// The split search over `rows`, in offset order. Outages are waited out inside
/// ([`write_with_retry`]). With `expect`, a first whole-range refusal of that signature ends the
/// search at once: the uniform refusal goes on, and searching again would cost two transactions a
/// row for the same answer.
async fn search<'a>(
    pool: &sqlx::PgPool,
    rows: &[Row<'a>],
    expect: Option<&str>,
    retry: &Retry,
    strategy: &mut CopyStrategy,
    stored: &mut Stored,
) -> Result<Found<'a>, Interrupted> {
    let mut found = Found {
        refused: Vec::new(),
        stored_any: false,
    };
    // Ranges still to write; the left half is popped first so rows are written in offset order.
    let mut pending: Vec<Range<usize>> = Vec::with_capacity(16);
    pending.push(0..rows.len());
    let mut first = true;
    while let Some(range) = pending.pop() {
        if range.is_empty() {
            continue;
        }
        let slice = &rows[range.clone()];
        match write_with_retry(pool, slice, retry, strategy, stored).await? {
            // Only an observation stored says the database takes rows: a rejection row stored
            // after a refusal (the quarantine write) is the refusal's own consequence.
            Ok(()) => found.stored_any |= slice.iter().any(|r| matches!(r, Row::Valid(_))),
            Err(err) if first && expect.is_some_and(|e| e == signature(&err)) => {
                found.refused = rows.iter().map(|r| (*r, clone_refusal(&err))).collect();
                return Ok(found);
            }
            Err(err) if slice.len() == 1 => found.refused.push((slice[0], err)),
            Err(err) => {
                debug_assert_eq!(classify(&err), Failure::RowLevel);
                tracing::debug!(rows = slice.len(), error = %err, "batch refused for row-level reasons; splitting");
                let mid = range.start + slice.len() / 2;
                pending.push(mid..range.end);
                pending.push(range.start..mid);
            }
        }
        first = false;
    }
    Ok(found)
}

/// A stand-in for `err` for each row of a whole-range refusal: sqlx errors cannot be cloned, and
/// only what [`signature`], [`cause_of`] and [`describe`] read is needed.
fn clone_refusal(err: &sqlx::Error) -> sqlx::Error {
    match err {
        sqlx::Error::Database(db) => refusal(db.code().as_deref(), db.constraint(), db.message()),
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

/// A server error with this SQLSTATE, constraint and message.
pub(super) fn refusal(code: Option<&str>, constraint: Option<&str>, message: &str) -> sqlx::Error {
    sqlx::Error::Database(Box::new(Refusal {
        code: code.map(str::to_owned),
        constraint: constraint.map(str::to_owned),
        message: message.to_owned(),
    }))
}

/// A copy of a server refusal (see [`clone_refusal`]).
#[derive(Debug)]
struct Refusal {
    code: Option<String>,
    constraint: Option<String>,
    message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

impl sqlx::error::DatabaseError for Refusal {
    fn message(&self) -> &str {
        &self.message
    }
    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.code.as_deref().map(Into::into)
    }
    fn constraint(&self) -> Option<&str> {
        self.constraint.as_deref()
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

#[cfg(test)]
mod tests {
    use super::super::record::sample::record;
    use super::super::{RejectedRecord, ValidRecord};
    use super::*;
    use crate::jobs::persist::validate::{Rejection, RejectionClass};

    fn check(constraint: &str) -> sqlx::Error {
        refusal(
            Some("23514"),
            Some(constraint),
            "new row violates check constraint",
        )
    }

    fn found<'a>(rows: &[&'a ValidRecord], err: impl Fn() -> sqlx::Error, stored_any: bool) -> Found<'a> {
        Found {
            refused: rows.iter().map(|r| (Row::Valid(r), err())).collect(),
            stored_any,
        }
    }

    fn reasons(v: Verdict<'_>) -> Vec<String> {
        match v {
            Verdict::Quarantine(rows) => rows.into_iter().map(|(_, reason)| reason).collect(),
            Verdict::Outage { cause, .. } => panic!("an outage: {cause:?}"),
        }
    }

    fn outage(v: Verdict<'_>) -> (usize, Cause, Option<String>) {
        match v {
            Verdict::Outage { rows, cause, uniform } => (rows.len(), cause, uniform),
            Verdict::Quarantine(rows) => panic!("quarantined {} rows", rows.len()),
        }
    }

    #[test]
    fn rows_refused_beside_stored_ones_are_quarantined_with_the_servers_reason() {
        let (a, b) = (record("a", 1, 1), record("b", 2, 2));
        let streak = Streak::default();
        let v = judge(found(&[&a, &b], || check("c"), true), &streak, false);
        assert_eq!(
            reasons(v),
            ["SQLSTATE 23514: new row violates check constraint"; 2]
        );
    }

    #[test]
    fn rows_all_refused_alike_with_nothing_stored_are_an_outage_from_the_second_row() {
        let (a, b, c) = (record("a", 1, 1), record("b", 2, 2), record("c", 3, 3));
        // One row: quarantined at once, but it starts the streak.
        let streak = Streak::default();
        assert_eq!(
            reasons(judge(found(&[&a], || check("c"), false), &streak, false)).len(),
            1
        );
        let (rows, cause, uniform) = outage(judge(found(&[&b], || check("c"), false), &streak, false));
        assert_eq!((rows, cause.class.as_str()), (1, "23"));
        assert!(
            cause.detail.starts_with("2 rows in a row refused the same way"),
            "{cause:?}"
        );
        assert!(uniform.is_some());
        // A batch of two alike is an outage by itself.
        let fresh = Streak::default();
        assert_eq!(
            outage(judge(found(&[&b, &c], || check("c"), false), &fresh, false)).0,
            2
        );
        // Different refusals, or a stored row in between, break the streak.
        let fresh = Streak::default();
        reasons(judge(found(&[&a], || check("c"), false), &fresh, false));
        reasons(judge(found(&[&b], || check("other"), false), &fresh, false));
        fresh.reset();
        reasons(judge(found(&[&c], || check("other"), false), &fresh, false));
    }

    #[test]
    fn past_the_patience_a_uniform_refusal_is_quarantined_saying_so() {
        let (a, b) = (record("a", 1, 1), record("b", 2, 2));
        let v = judge(found(&[&a, &b], || check("c"), false), &Streak::default(), true);
        let reasons = reasons(v);
        assert!(
            reasons[0].starts_with(
                "refused the same way past persist.uniform_refusal_patience_secs: SQLSTATE 23514"
            ),
            "{reasons:?}"
        );
    }

    #[test]
    fn a_refused_rejection_row_is_an_outage_for_every_refused_row() {
        let a = record("a", 1, 1);
        let r = RejectedRecord {
            lineage: a.lineage.clone(),
            raw: a.raw.clone(),
            rejection: Rejection::new(RejectionClass::InvalidJson, "x"),
        };
        let f = Found {
            refused: vec![(Row::Valid(&a), check("c")), (Row::Rejected(&r), check("r"))],
            stored_any: true,
        };
        let (rows, cause, uniform) = outage(judge(f, &Streak::default(), true));
        assert_eq!(rows, 2);
        assert!(
            cause
                .detail
                .starts_with("rejected_records refused a quarantined record"),
            "{cause:?}"
        );
        assert!(uniform.is_none());
    }
}
