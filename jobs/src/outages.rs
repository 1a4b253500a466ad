//! The outages this process's writers are waiting out right now: what `/readyz` reports and what the
//! `weatherflow_persist_outage_seconds` gauge shows.
//!
//! The persist job's writers register an outage while they retry a batch the database (or the
//! dead-letter topic) will not take, and drop it when the batch is through; the web module only reads.
//! It lives at the crate root because those two owners share it; it knows nothing of either.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// PostgreSQL refuses or does not answer the writes.
    Database,
    /// The dead-letter topic cannot be written.
    DeadLetterTopic,
}

impl Target {
    /// The metric label and the readiness wording.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Database => "database",
            Target::DeadLetterTopic => "dead_letter_topic",
        }
    }
}

/// Why: a short class for the metric label (`25` for a SQLSTATE class, `io`, `timeout`, `kafka`) and
/// the detail a person reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Low-cardinality class: the SQLSTATE class, or `io`, `timeout`, `pool`, `kafka`.
    pub class: String,
    /// What the server or the client said, with the SQLSTATE when there is one.
    pub detail: String,
}

/// One writer's current outage.
#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    target: Target,
    since: Instant,
    cause: Cause,
    /// Readiness fails only once the outage is this old (the dead-letter topic's grace).
    grace: Duration,
    /// Said in the readiness message: the setting or the action that fixes it.
    hint: String,
}

static ENTRIES: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A registered outage; dropping it ends it (the batch went through, or the job stopped).
#[derive(Debug)]
pub struct Guard {
    id: u64,
    target: Target,
}

/// Registers an outage of `target` that began at `since` (the first attempt that failed was sent
/// then), readiness failing once it lasted `grace`.
pub fn begin(
    target: Target,
    since: Instant,
    cause: Cause,
    grace: Duration,
    hint: impl Into<String>,
) -> Guard {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let entry = Entry {
        id,
        target,
        since,
        cause,
        grace,
        hint: hint.into(),
    };
    entries().push(entry);
    refresh_gauges();
    Guard { id, target }
}

impl Guard {
    /// The outage goes on, now for `cause`.
    pub fn update(&self, cause: Cause) {
        let old = entries()
            .iter_mut()
            .find(|e| e.id == self.id)
            .map(|e| std::mem::replace(&mut e.cause, cause));
        if let Some(old) = old {
            settle(self.target, &old.class);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let gone = {
            let mut all = entries();
            let at = all.iter().position(|e| e.id == self.id);
            at.map(|i| all.swap_remove(i))
        };
        if let Some(gone) = gone {
            settle(self.target, &gone.cause.class);
        }
    }
}

/// A class this guard no longer waits on: its series goes to 0 instead of keeping its last age,
/// then every current outage sets its own again (another writer may still wait on that class).
fn settle(target: Target, class: &str) {
    crate::metrics::persist_outage(target.as_str(), class, Duration::ZERO);
    refresh_gauges();
}

fn entries() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    // A writer that panicked while holding the lock leaves a consistent Vec behind.
    ENTRIES.lock().unwrap_or_else(|e| e.into_inner())
}

/// The readiness verdict: one line per target in an outage past its grace, oldest first; empty when
/// nothing keeps the writers from storing. Each line carries what the server said (an SQL error):
/// for the log and the tests; a probe's answer uses [`not_ready_public`].
pub fn not_ready() -> Vec<String> {
    verdict_lines(true)
}

/// [`not_ready`] without what the server said: how long, how many writers, the cause's class
/// (`25`, `timeout`, ...) and the hint, words that name no address, user or SQL error.
pub fn not_ready_public() -> Vec<String> {
    verdict_lines(false)
}

fn verdict_lines(with_detail: bool) -> Vec<String> {
    let all = entries().clone();
    let mut lines = Vec::new();
    for target in [Target::Database, Target::DeadLetterTopic] {
        let mine: Vec<&Entry> = all.iter().filter(|e| e.target == target).collect();
        let Some(oldest) = mine.iter().max_by_key(|e| e.since.elapsed()) else {
            continue;
        };
        let age = oldest.since.elapsed();
        if age < oldest.grace {
            continue;
        }
        let newest = mine.iter().min_by_key(|e| e.since.elapsed()).unwrap_or(oldest);
        let cause = if with_detail {
            newest.cause.detail.clone()
        } else {
            format!("cause class {} (details in the log)", newest.cause.class)
        };
        lines.push(format!(
            "{} unavailable for {:.0} s ({} writer{} waiting): {}; retrying with backoff, offsets not committed; {}",
            target.as_str().replace('_', " "),
            age.as_secs_f64(),
            mine.len(),
            if mine.len() == 1 { "" } else { "s" },
            cause,
            oldest.hint,
        ));
    }
    lines
}

/// The database outage this process's writers are waiting out, whatever its age, as one line (none
/// when there is none): the alerts' outage condition, which applies a duration of its own.
pub fn database_outage() -> Option<String> {
    let all = entries().clone();
    let mine = all.iter().filter(|e| e.target == Target::Database);
    let oldest = mine.max_by_key(|e| e.since.elapsed())?;
    Some(format!(
        "this process's writers have waited {:.0} s: {}",
        oldest.since.elapsed().as_secs_f64(),
        oldest.cause.detail
    ))
}

/// Sets `weatherflow_persist_outage_seconds{target, class}` to each current outage's age (the oldest
/// per target and class). Called when outages change and before every render of `/metrics`.
pub fn refresh_gauges() {
    let all = entries().clone();
    let mut seen: Vec<(Target, &str, Duration)> = Vec::new();
    for e in &all {
        let age = e.since.elapsed();
        match seen
            .iter_mut()
            .find(|(t, c, _)| *t == e.target && *c == e.cause.class)
        {
            Some(s) => s.2 = s.2.max(age),
            None => seen.push((e.target, &e.cause.class, age)),
        }
    }
    for (target, class, age) in seen {
        crate::metrics::persist_outage(target.as_str(), class, age);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cause(class: &str) -> Cause {
        Cause {
            class: class.into(),
            detail: format!("detail {class}"),
        }
    }

    #[test]
    fn readiness_names_the_outage_until_its_guard_drops_and_honours_the_grace() {
        // The registry is process-wide: this is the only test that registers outages.
        assert!(not_ready().is_empty());
        let db = begin(
            Target::Database,
            Instant::now(),
            cause("25"),
            Duration::ZERO,
            "see runbook",
        );
        let dlq = begin(
            Target::DeadLetterTopic,
            Instant::now(),
            cause("kafka"),
            Duration::from_secs(3600),
            "kafka.dlq_topic",
        );
        let lines = not_ready();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("database unavailable for 0 s (1 writer waiting): detail 25;"),
            "{}",
            lines[0]
        );
        assert!(lines[0].ends_with("see runbook"), "{}", lines[0]);
        let public = not_ready_public();
        assert!(
            public[0].starts_with("database unavailable for 0 s (1 writer waiting): cause class 25 (details in the log);"),
            "{}",
            public[0]
        );
        assert!(!public[0].contains("detail 25"), "{}", public[0]);
        db.update(cause("42"));
        assert!(not_ready()[0].contains("detail 42"));
        let second = begin(
            Target::Database,
            Instant::now(),
            cause("57"),
            Duration::ZERO,
            "see runbook",
        );
        assert!(
            not_ready()[0].contains("(2 writers waiting): detail 57"),
            "{:?}",
            not_ready()
        );
        drop(db);
        drop(second);
        assert!(
            not_ready().is_empty(),
            "the dead-letter outage is within its grace"
        );
        drop(dlq);
        // The grace counts from the first attempt, not from its failure (a send to a deleted topic
        // fails only at the producer's message timeout).
        let late = begin(
            Target::DeadLetterTopic,
            Instant::now() - Duration::from_secs(2),
            cause("kafka"),
            Duration::from_secs(1),
            "kafka.dlq_topic",
        );
        let lines = not_ready();
        assert!(
            lines[0].starts_with("dead letter topic unavailable for 2 s"),
            "{lines:?}"
        );
        drop(late);
        assert!(entries().is_empty());
    }
}
