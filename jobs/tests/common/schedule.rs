//! The scheduler's inputs for tests that drive `Scheduler` directly: a fetch timing from
//! `schedules.toml` fields, a tick at a given instant, and the options with a short shutdown grace.

use std::time::Duration;

use chrono::{DateTime, Utc};
use weatherflow::scheduler::schedules::{Schedules, Timing};
use weatherflow::scheduler::{SchedulerOptions, Tick};

/// The fetch job's timing from `fields` (e.g. `cron = "* * * * * *"`), parsed as `schedules.toml` is.
pub fn timing(fields: &str) -> Timing {
    let text = format!(
        "[fetch]\n{fields}\n[fetch.args]\nlocations = [\"x\"]\n[analytics]\ncron = \"0 0 2 * * *\"\n"
    );
    Schedules::parse(&text, "test").expect("test timing").fetch.timing
}

/// A scheduled (not missed) tick at the RFC 3339 instant `s`.
pub fn tick(s: &str) -> Tick {
    Tick {
        at: DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc),
        missed: false,
    }
}

/// Options for a scheduler named `replica`: a 2 s shutdown grace and the given cancel wait.
pub fn options(replica: &str, cancel_wait: Duration) -> SchedulerOptions {
    SchedulerOptions {
        shutdown_grace: Duration::from_secs(2),
        cancel_wait,
        replica: replica.to_owned(),
    }
}
