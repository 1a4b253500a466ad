//! What a fetch run reports: one line per location asked, and the run's totals (stored in
//! `job_runs.details` and logged as one line).

use std::fmt::Write;

use serde::Serialize;

use crate::envelope::Source;
use crate::runs::Report;

/// Locations named one by one in a summary line; the rest are counted (`… and 12 more`).
pub const LINE_ENTRIES: usize = 20;

/// Appends `entries` to `line`, `; `-separated, the first [`LINE_ENTRIES`] written by `write`.
fn bounded<'a>(
    line: &mut String,
    entries: impl Iterator<Item = &'a LocationOutcome>,
    write: impl Fn(&mut String, &LocationOutcome),
) {
    let mut more = 0usize;
    for (i, l) in entries.enumerate() {
        if i >= LINE_ENTRIES {
            more += 1;
            continue;
        }
        if !line.is_empty() {
            line.push_str("; ");
        }
        write(line, l);
    }
    if more > 0 {
        let _ = write!(line, "; … and {more} more");
    }
}

/// How one location's fetch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LocationStatus {
    /// Fetched and produced.
    Ok,
    /// Failed; `reason` says why.
    Failed,
    /// Never completed: the run stopped first (shutdown, or a key error on another request).
    Skipped,
}

/// One location's line in the run summary.
#[derive(Debug, Clone, Serialize)]
pub struct LocationOutcome {
    /// The `q` asked for.
    pub query: String,
    /// How it ended.
    pub status: LocationStatus,
    /// The Kafka message key (the normalized location), when fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Why it failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// HTTP requests sent for it (for bulk: for its batch); 0 for the simulated source.
    pub attempts: u32,
}

impl LocationOutcome {
    pub(crate) fn skipped(query: &str) -> Self {
        Self {
            query: query.to_owned(),
            status: LocationStatus::Skipped,
            key: None,
            reason: Some("not fetched: the run stopped first".into()),
            attempts: 0,
        }
    }

    pub(crate) fn failed(&mut self, reason: String, attempts: u32) {
        self.status = LocationStatus::Failed;
        self.key = None;
        self.reason = Some(reason);
        self.attempts = attempts;
    }
}

/// The outcome of a fetch run.
#[derive(Debug, Clone)]
pub struct FetchSummary {
    /// Where the data came from.
    pub source: Source,
    /// Whether the bulk endpoint was used.
    pub bulk: bool,
    /// The topic produced to.
    pub topic: String,
    /// One entry per location asked, in the order asked.
    pub locations: Vec<LocationOutcome>,
    /// Messages produced and acknowledged by the broker.
    pub produced: usize,
}

impl FetchSummary {
    /// Locations that failed.
    pub fn failed(&self) -> usize {
        self.count(LocationStatus::Failed)
    }

    pub(crate) fn count(&self, status: LocationStatus) -> usize {
        self.locations.iter().filter(|l| l.status == status).count()
    }

    /// The run on one bounded line: how many locations came at their first request, then each
    /// other one (retried, failed or skipped) with its reason, at most [`LINE_ENTRIES`] of them:
    /// `998 ok at first request; London=ok/3; Atlantis=failed/1 (no matching location)`. Every
    /// location is in the run's details; the log line and the run's error stay short at 1,000
    /// locations.
    pub fn line(&self) -> String {
        let plain = self
            .locations
            .iter()
            .filter(|l| l.status == LocationStatus::Ok && l.attempts <= 1)
            .count();
        let mut line = String::new();
        if plain > 0 {
            let _ = write!(line, "{plain} ok at first request");
        }
        let notable = self
            .locations
            .iter()
            .filter(|l| !(l.status == LocationStatus::Ok && l.attempts <= 1));
        bounded(&mut line, notable, |line, l| {
            let status = match l.status {
                LocationStatus::Ok => "ok",
                LocationStatus::Failed => "failed",
                LocationStatus::Skipped => "skipped",
            };
            // Writing into a String cannot fail.
            let _ = write!(line, "{}={status}/{}", l.query, l.attempts);
            if let Some(reason) = &l.reason {
                let _ = write!(line, " ({reason})");
            }
        });
        line
    }

    /// The failed locations only, each with its reason, at most [`LINE_ENTRIES`]:
    /// `Atlantis (no matching location …); …`.
    pub fn failed_line(&self) -> String {
        let mut line = String::new();
        let failed = self
            .locations
            .iter()
            .filter(|l| l.status == LocationStatus::Failed);
        bounded(&mut line, failed, |line, l| {
            let _ = write!(line, "{}", l.query);
            if let Some(reason) = &l.reason {
                let _ = write!(line, " ({reason})");
            }
        });
        line
    }

    pub(crate) fn log(&self, outcome: &str) {
        let (asked, failed, skipped) = (
            self.locations.len(),
            self.failed(),
            self.count(LocationStatus::Skipped),
        );
        let source = self.source.as_str();
        let summary = self.line();
        let failed_locations = self.failed_line();
        if outcome == "ok" {
            tracing::info!(source, topic = %self.topic, bulk = self.bulk, asked, produced = self.produced, failed, skipped, %failed_locations, %summary, "fetch finished");
        } else {
            tracing::warn!(source, topic = %self.topic, bulk = self.bulk, asked, produced = self.produced, failed, skipped, %failed_locations, %summary, outcome, "fetch stopped");
        }
    }
}

impl Report for FetchSummary {
    fn records_in(&self) -> Option<i64> {
        Some(self.locations.len() as i64)
    }
    fn records_out(&self) -> Option<i64> {
        Some(self.produced as i64)
    }
    fn details(&self) -> serde_json::Value {
        serde_json::json!({
            "source": self.source.as_str(),
            "mode": if self.bulk { "bulk" } else { "single" },
            "topic": self.topic,
            "produced": self.produced,
            "failed": self.failed(),
            "locations": self.locations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_and_details_name_every_location() {
        let summary = FetchSummary {
            source: Source::Weatherapi,
            bulk: false,
            topic: "t".into(),
            produced: 1,
            locations: vec![
                LocationOutcome {
                    query: "London".into(),
                    status: LocationStatus::Ok,
                    key: Some("london|city of london, greater london|united kingdom".into()),
                    reason: None,
                    attempts: 3,
                },
                LocationOutcome {
                    query: "Atlantis".into(),
                    status: LocationStatus::Failed,
                    key: None,
                    reason: Some("no matching location".into()),
                    attempts: 1,
                },
            ],
        };
        assert_eq!(
            summary.line(),
            "London=ok/3; Atlantis=failed/1 (no matching location)"
        );
        let mut big = summary.clone();
        for i in 0..1000 {
            big.locations.push(LocationOutcome {
                query: format!("City {i}"),
                status: if i % 40 == 0 {
                    LocationStatus::Failed
                } else {
                    LocationStatus::Ok
                },
                key: None,
                reason: (i % 40 == 0).then(|| "HTTP 400".into()),
                attempts: 1,
            });
        }
        // 975 plain, 2 + 25 notable: 20 named, 7 counted; the line stays short.
        assert!(
            big.line()
                .starts_with("975 ok at first request; London=ok/3; Atlantis=failed/1"),
            "{}",
            big.line()
        );
        assert!(big.line().ends_with("; … and 7 more"), "{}", big.line());
        assert!(big.line().len() < 1_000, "{}", big.line().len());
        assert!(
            big.failed_line().ends_with("; … and 6 more"),
            "{}",
            big.failed_line()
        );
        assert_eq!(summary.failed_line(), "Atlantis (no matching location)");
        assert_eq!(summary.records_in(), Some(2));
        assert_eq!(summary.records_out(), Some(1));
        let d = summary.details();
        assert_eq!(d["failed"], 1);
        assert_eq!(d["locations"][1]["status"], "failed");
        assert_eq!(d["locations"][0]["attempts"], 3);
    }
}
