//! `schedules.toml`: when each job runs and with which arguments.
//!
//! ```toml
//! [fetch]
//! cron = "0 */10 * * * *"      # sec min hour day-of-month month day-of-week
//! timezone = "UTC"             # IANA name, default UTC
//! enabled = true
//! timeout_secs = 300
//! retries = 2                  # extra attempts after a failure
//! retry_backoff_secs = 30      # first delay, doubled per attempt
//! missed = "skip"              # after downtime: skip | run-once
//! pause_after_failures = 3     # pause the job after 3 failed runs in a row (absent: never)
//! [fetch.args]
//! source = "auto"              # auto | weatherapi | simulated
//! concurrency = 8
//! locations = ["London", "48.8567,2.3508"]
//!
//! [analytics]
//! cron = "0 0 2 * * *"
//! [analytics.args]
//! window_days = 30             # omit for analytics.window_days (30)
//! all_history = false          # true (without window_days): fit every row
//! min_samples = 30
//! source = "auto"              # auto | weatherapi | simulated: which observations to fit
//!
//! [maintenance]                # optional; without it: 01:30 UTC daily, missed = "run-once"
//! cron = "0 30 1 * * *"        # no args: its settings are [maintenance] in the configuration
//! ```
//!
//! Every problem is reported with the job and field it is in. The fire times of a [`Timing`] are
//! the scheduler's ([`super::next_fires`]), for every reader.

use std::path::Path;
use std::str::FromStr;

use anyhow::Context;
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::Deserialize;

use crate::config::Config;
use crate::jobs::analytics::FitSource;
use crate::jobs::fetch::FetchRequest;
use crate::runs::JobName;

/// The jobs `schedules.toml` schedules; persist runs continuously beside the scheduler instead.
pub const SCHEDULED: [JobName; 3] = [JobName::Fetch, JobName::Analytics, JobName::Maintenance];

/// The maintenance job's schedule when the file has no `[maintenance]` section: daily at 01:30 UTC,
/// half an hour before the shipped nightly analytics run, and caught up once after downtime (a month
/// boundary missed would leave the new month's rows in the default partition until the next run).
const MAINTENANCE_DEFAULT: &str = "cron = \"0 30 1 * * *\"\ntimeout_secs = 600\nretries = 1\n\
     retry_backoff_secs = 60\nmissed = \"run-once\"\n";

/// A problem in the schedules file, naming the job and field.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A job's section has a bad or missing field.
    #[error("schedules: job '{job}', field '{field}': {message}")]
    Field {
        /// The job.
        job: JobName,
        /// The field (dotted for arguments, e.g. `args.locations`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A section names no known job.
    #[error("schedules: unknown job '{0}' (known jobs: fetch, analytics, maintenance)")]
    UnknownJob(String),
}

/// What to do with ticks that fell while no scheduler was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissedPolicy {
    /// Forget them; wait for the next tick.
    Skip,
    /// Run the job once at start-up if at least one tick was missed.
    RunOnce,
}

/// Timing and retry settings shared by every scheduled job.
#[derive(Debug, Clone)]
pub struct Timing {
    /// The cron expression as written (six fields, with seconds).
    pub cron_expr: String,
    /// The parsed expression.
    pub cron: Cron,
    /// Time zone the expression is read in.
    pub timezone: Tz,
    /// A disabled job is validated but never scheduled.
    pub enabled: bool,
    /// A run past this is cancelled and recorded failed.
    pub timeout_secs: u64,
    /// Extra attempts after a failed run.
    pub retries: u32,
    /// First delay between attempts; doubled per attempt.
    pub retry_backoff_secs: u64,
    /// Policy for ticks missed during downtime.
    pub missed: MissedPolicy,
    /// Pause the job (`paused_by` = `auto`) once this many runs in a row failed after their
    /// retries; `None`: never.
    pub pause_after_failures: Option<u32>,
}

/// Arguments of the analytics job.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsArgs {
    /// Fit over the last N days; `None` uses the configuration's `analytics.window_days`.
    pub window_days: Option<u32>,
    /// Fit over all rows (when `window_days` is not set).
    #[serde(default)]
    pub all_history: bool,
    /// Minimum samples for a per-location fit; `None` uses the configuration's value.
    pub min_samples: Option<u64>,
    /// Which observations to fit: `auto` (WeatherAPI's when the window has any, else the
    /// simulated), `weatherapi` or `simulated`.
    #[serde(default)]
    pub source: FitSource,
}

/// One scheduled job: its timing and its typed arguments.
#[derive(Debug, Clone)]
pub struct JobSchedule<A> {
    /// When and how it runs.
    pub timing: Timing,
    /// What it runs with.
    pub args: A,
}

/// The whole file.
#[derive(Debug, Clone)]
pub struct Schedules {
    /// The fetch job.
    pub fetch: JobSchedule<FetchRequest>,
    /// The analytics job.
    pub analytics: JobSchedule<AnalyticsArgs>,
    /// The partition maintenance job; it takes no arguments (its settings are the configuration's
    /// `[maintenance]`).
    pub maintenance: Timing,
}

impl Schedules {
    /// The timing of `job`, if the file schedules it.
    pub fn timing(&self, job: JobName) -> Option<&Timing> {
        match job {
            JobName::Fetch => Some(&self.fetch.timing),
            JobName::Analytics => Some(&self.analytics.timing),
            JobName::Maintenance => Some(&self.maintenance),
            JobName::Persist | JobName::Redrive | JobName::Replay => None,
        }
    }
}

/// Loads the schedules file named by `file`, else by the configuration (`scheduler.schedules_path`):
/// the one way every reader (the scheduler, the CLI, the web) gets it.
pub fn load(config: &Config, file: Option<&Path>) -> anyhow::Result<Schedules> {
    let path = file.unwrap_or(&config.scheduler.schedules_path);
    Schedules::load(path).with_context(|| format!("loading schedules from {}", path.display()))
}

/// The raw timing fields as written, before cron and time zone are parsed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    cron: String,
    #[serde(default = "default_tz")]
    timezone: String,
    #[serde(default = "default_true")]
    enabled: bool,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    #[serde(default)]
    retries: u32,
    #[serde(default = "default_backoff")]
    retry_backoff_secs: u64,
    #[serde(default = "default_missed")]
    missed: MissedPolicy,
    pause_after_failures: Option<u32>,
    args: Option<toml::Value>,
}

fn default_tz() -> String {
    "UTC".into()
}
fn default_true() -> bool {
    true
}
fn default_timeout() -> u64 {
    3600
}
fn default_backoff() -> u64 {
    30
}
fn default_missed() -> MissedPolicy {
    MissedPolicy::Skip
}

/// Parses a six-field cron expression (seconds first), the dialect tokio-cron-scheduler runs.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| format!("invalid cron expression {expr:?} (six fields, seconds first): {e}"))
}

impl Schedules {
    /// Reads and validates a schedules file.
    pub fn load(path: &Path) -> Result<Self, ScheduleError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScheduleError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates the text of a schedules file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ScheduleError> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| ScheduleError::Syntax {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        if let Some(unknown) = table
            .keys()
            .find(|k| !SCHEDULED.iter().any(|j| j.as_str() == k.as_str()))
        {
            return Err(ScheduleError::UnknownJob(unknown.clone()));
        }
        let fetch = job(&mut table, JobName::Fetch)?;
        let analytics = job(&mut table, JobName::Analytics)?;
        if !table.contains_key(JobName::Maintenance.as_str()) {
            let default: toml::Table = MAINTENANCE_DEFAULT.parse().expect("the default parses");
            table.insert(JobName::Maintenance.as_str().into(), default.into());
        }
        let (maintenance, maintenance_args) = job(&mut table, JobName::Maintenance)?;
        if maintenance_args.is_some() {
            return Err(field_err(
                JobName::Maintenance,
                "args",
                "the maintenance job takes no arguments (its settings are [maintenance] in the configuration)",
            ));
        }
        let fetch = JobSchedule {
            timing: fetch.0,
            args: args::<FetchRequest>(JobName::Fetch, fetch.1)?,
        };
        let analytics = JobSchedule {
            timing: analytics.0,
            args: args::<AnalyticsArgs>(JobName::Analytics, analytics.1)?,
        };
        if fetch.args.locations.is_empty() {
            return Err(field_err(
                JobName::Fetch,
                "args.locations",
                "at least one location is needed",
            ));
        }
        if let Some(i) = fetch.args.locations.iter().position(|l| l.trim().is_empty()) {
            return Err(field_err(
                JobName::Fetch,
                "args.locations",
                &format!("entry {i} is empty"),
            ));
        }
        if fetch.args.concurrency == Some(0) {
            return Err(field_err(
                JobName::Fetch,
                "args.concurrency",
                "must be at least 1",
            ));
        }
        if analytics.args.min_samples.is_some_and(|m| m < 2) {
            return Err(field_err(
                JobName::Analytics,
                "args.min_samples",
                "must be at least 2",
            ));
        }
        Ok(Schedules {
            fetch,
            analytics,
            maintenance,
        })
    }
}

fn field_err(job: JobName, field: &str, message: &str) -> ScheduleError {
    ScheduleError::Field {
        job,
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

/// A deserialisation error as a field error. serde reports an unknown or missing field at its
/// parent's path with the name in backquotes; take the name from the message then.
fn path_err(job: JobName, prefix: &str, e: serde_path_to_error::Error<toml::de::Error>) -> ScheduleError {
    let message = e.inner().message().to_owned();
    let path = e.path().to_string();
    let field = if path == "." {
        let start = message.find('`').map(|i| i + 1);
        let name = start.and_then(|s| message[s..].find('`').map(|len| &message[s..s + len]));
        name.unwrap_or("?").to_owned()
    } else {
        path
    };
    ScheduleError::Field {
        job,
        field: format!("{prefix}{field}"),
        message,
    }
}

fn job(table: &mut toml::Table, name: JobName) -> Result<(Timing, Option<toml::Value>), ScheduleError> {
    let value = table
        .remove(name.as_str())
        .ok_or_else(|| field_err(name, "cron", "the job's section is missing"))?;
    let raw: RawJob = serde_path_to_error::deserialize(value).map_err(|e| path_err(name, "", e))?;
    let cron = parse_cron(&raw.cron).map_err(|m| field_err(name, "cron", &m))?;
    let timezone = Tz::from_str(&raw.timezone).map_err(|_| {
        field_err(
            name,
            "timezone",
            &format!("unknown IANA time zone {:?}", raw.timezone),
        )
    })?;
    if raw.timeout_secs == 0 {
        return Err(field_err(name, "timeout_secs", "must be at least 1"));
    }
    if raw.pause_after_failures == Some(0) {
        return Err(field_err(
            name,
            "pause_after_failures",
            "must be at least 1 (leave it out to never pause)",
        ));
    }
    let timing = Timing {
        cron_expr: raw.cron,
        cron,
        timezone,
        enabled: raw.enabled,
        timeout_secs: raw.timeout_secs,
        retries: raw.retries,
        retry_backoff_secs: raw.retry_backoff_secs,
        missed: raw.missed,
        pause_after_failures: raw.pause_after_failures,
    };
    Ok((timing, raw.args))
}

fn args<A: for<'de> Deserialize<'de>>(job: JobName, value: Option<toml::Value>) -> Result<A, ScheduleError> {
    let value = value.unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
    serde_path_to_error::deserialize(value).map_err(|e| path_err(job, "args.", e))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::jobs::fetch::SourceChoice;
    use crate::scheduler::next_fires;

    const GOOD: &str = r#"
[fetch]
cron = "0 */10 * * * *"
[fetch.args]
locations = ["London", "48.8567,2.3508"]

[analytics]
cron = "0 0 2 * * *"
timezone = "Europe/Paris"
missed = "run-once"
"#;

    fn err(text: &str) -> String {
        Schedules::parse(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn good_file_parses_with_defaults() {
        let s = Schedules::parse(GOOD, "t.toml").unwrap();
        assert_eq!(s.fetch.args.locations.len(), 2);
        assert_eq!(s.fetch.timing.timezone, chrono_tz::UTC);
        assert_eq!(s.fetch.timing.missed, MissedPolicy::Skip);
        assert_eq!(s.analytics.timing.missed, MissedPolicy::RunOnce);
        assert_eq!(s.analytics.args.window_days, None);
        assert_eq!(s.analytics.args.source, FitSource::Auto);
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:05:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let next = next_fires(&s.fetch.timing, start, 2);
        assert_eq!(next[0].to_rfc3339(), "2026-01-01T00:10:00+00:00");
        assert_eq!(next[1].to_rfc3339(), "2026-01-01T00:20:00+00:00");
        let nightly = next_fires(&s.analytics.timing, start, 1);
        assert_eq!(
            nightly[0].to_rfc3339(),
            "2026-01-01T01:00:00+00:00",
            "02:00 in Paris"
        );
        // No [maintenance] section: the default schedule.
        assert_eq!(s.maintenance.cron_expr, "0 30 1 * * *");
        assert_eq!(s.maintenance.missed, MissedPolicy::RunOnce);
        assert!(s.maintenance.enabled);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (
                GOOD.replace("0 */10 * * * *", "*/10 * * * *"),
                "job 'fetch', field 'cron'",
            ),
            (
                GOOD.replace("Europe/Paris", "Mars/Olympus"),
                "job 'analytics', field 'timezone'",
            ),
            (
                GOOD.replace("\"run-once\"", "\"sometimes\""),
                "job 'analytics', field 'missed'",
            ),
            (
                GOOD.replace("locations = [\"London\", \"48.8567,2.3508\"]", "locations = []"),
                "field 'args.locations'",
            ),
            (
                GOOD.replace("locations", "places"),
                "job 'fetch', field 'args.places'",
            ),
            (
                GOOD.replace(
                    "cron = \"0 0 2 * * *\"",
                    "cron = \"0 0 2 * * *\"\ntimeout_secs = \"soon\"",
                ),
                "field 'timeout_secs'",
            ),
            (
                GOOD.replace("cron = \"0 */10 * * * *\"", "schedule = \"x\""),
                "job 'fetch', field 'schedule'",
            ),
            (
                GOOD.replace("[analytics]", "[analytic]"),
                "unknown job 'analytic'",
            ),
            (
                format!("{GOOD}[maintenance]\ncron = \"0 0 1 * *\"\n"),
                "job 'maintenance', field 'cron'",
            ),
            (
                format!("{GOOD}[maintenance]\ncron = \"0 0 1 * * *\"\n[maintenance.args]\nmonths = 3\n"),
                "job 'maintenance', field 'args': the maintenance job takes no arguments",
            ),
            (GOOD.replace("[fetch]", "[fetch"), "not valid TOML"),
            (
                GOOD.replace(
                    "cron = \"0 0 2 * * *\"",
                    "cron = \"0 0 2 * * *\"\nenabled = \"yes\"",
                ),
                "job 'analytics', field 'enabled'",
            ),
            (
                GOOD.replace("cron = \"0 0 2 * * *\"", "cron = \"0 0 2 * * *\"\nretries = -1"),
                "job 'analytics', field 'retries'",
            ),
            (
                GOOD.replace(
                    "cron = \"0 0 2 * * *\"",
                    "cron = \"0 0 2 * * *\"\nretry_backoff_secs = 1.5",
                ),
                "job 'analytics', field 'retry_backoff_secs'",
            ),
            (
                GOOD.replace(
                    "cron = \"0 0 2 * * *\"",
                    "cron = \"0 0 2 * * *\"\ntimeout_secs = 0",
                ),
                "job 'analytics', field 'timeout_secs': must be at least 1",
            ),
            (
                GOOD.replace("cron = \"0 0 2 * * *\"", "cron = \"0 0 2 * * 8\""),
                "job 'analytics', field 'cron'",
            ),
            (
                GOOD.replace("[fetch.args]", "[fetch.args]\nconcurrency = 0"),
                "job 'fetch', field 'args.concurrency': must be at least 1",
            ),
            (
                GOOD.replace("[fetch.args]", "[fetch.args]\nsource = \"satellite\""),
                "job 'fetch', field 'args.source'",
            ),
            (
                GOOD.replace("[fetch.args]", "[fetch.args]\nseed = \"lucky\""),
                "job 'fetch', field 'args.seed'",
            ),
            (
                GOOD.replace("\"48.8567,2.3508\"", "\" \""),
                "job 'fetch', field 'args.locations': entry 1 is empty",
            ),
            (
                format!("{GOOD}[analytics.args]\nmin_samples = 1\n"),
                "job 'analytics', field 'args.min_samples': must be at least 2",
            ),
            (
                format!("{GOOD}[analytics.args]\nwindow_days = -3\n"),
                "job 'analytics', field 'args.window_days'",
            ),
            (
                format!("{GOOD}[analytics.args]\nwindow = 3\n"),
                "job 'analytics', field 'args.window'",
            ),
            (
                format!("{GOOD}[analytics.args]\nsource = \"mixed\"\n"),
                "job 'analytics', field 'args.source'",
            ),
            (
                GOOD.replace(
                    "[analytics]\ncron = \"0 0 2 * * *\"\ntimezone = \"Europe/Paris\"\nmissed = \"run-once\"",
                    "",
                ),
                "job 'analytics', field 'cron': the job's section is missing",
            ),
        ];
        for (text, want) in cases {
            let got = err(&text);
            assert!(got.contains(want), "want {want:?} in {got:?}");
        }
    }

    #[test]
    fn every_field_is_read() {
        let text = r#"
[fetch]
cron = "30 */5 * * * 1-5"
timezone = "America/New_York"
enabled = false
timeout_secs = 45
retries = 4
retry_backoff_secs = 2
missed = "run-once"
[fetch.args]
source = "simulated"
concurrency = 3
seed = 42
locations = ["Denver"]

[analytics]
cron = "0 15 3 * * SUN"
[analytics.args]
window_days = 7
min_samples = 10
source = "weatherapi"
"#;
        let s = Schedules::parse(text, "t.toml").unwrap();
        let f = &s.fetch.timing;
        assert_eq!(f.timezone, chrono_tz::America::New_York);
        assert!(!f.enabled);
        assert_eq!((f.timeout_secs, f.retries, f.retry_backoff_secs), (45, 4, 2));
        assert_eq!(f.missed, MissedPolicy::RunOnce);
        assert_eq!(s.fetch.args.source, SourceChoice::Simulated);
        assert_eq!((s.fetch.args.concurrency, s.fetch.args.seed), (Some(3), Some(42)));
        assert_eq!(s.analytics.args.window_days, Some(7));
        assert_eq!(s.analytics.args.min_samples, Some(10));
        assert_eq!(s.analytics.args.source, FitSource::Weatherapi);
        // Defaults of the fields left out.
        let a = &s.analytics.timing;
        assert_eq!(
            (a.timezone, a.enabled, a.timeout_secs),
            (chrono_tz::UTC, true, 3600)
        );
        assert_eq!(
            (a.retries, a.retry_backoff_secs, a.missed),
            (0, 30, MissedPolicy::Skip)
        );
        // Seconds and weekdays as written: Friday 2026-01-02 10:05:30 New York time is next.
        let next = next_fires(
            f,
            DateTime::parse_from_rfc3339("2026-01-02T15:01:00Z")
                .unwrap()
                .with_timezone(&Utc),
            1,
        );
        assert_eq!(
            next[0].to_rfc3339(),
            "2026-01-02T15:05:30+00:00",
            "10:05:30 in New York"
        );
        // Day of month AND day of week, as tokio-cron-scheduler reads them: the first Monday.
        let first_monday = parse_cron("0 0 9 1-7 * MON").unwrap();
        let after = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let next = first_monday.find_next_occurrence(&after, false).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-01-05T09:00:00+00:00");
    }

    #[test]
    fn pause_after_failures_is_optional_and_at_least_one() {
        let s = Schedules::parse(GOOD, "t.toml").unwrap();
        assert_eq!(s.fetch.timing.pause_after_failures, None);
        let three = GOOD.replace("missed = \"run-once\"", "missed = \"run-once\"\npause_after_failures = 3");
        let s = Schedules::parse(&three, "t.toml").unwrap();
        assert_eq!(s.analytics.timing.pause_after_failures, Some(3));
        let zero = GOOD.replace("missed = \"run-once\"", "pause_after_failures = 0");
        assert!(err(&zero).contains("job 'analytics', field 'pause_after_failures'"));
    }

    #[test]
    fn shipped_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schedules.toml");
        let s = Schedules::load(&path).unwrap();
        assert_eq!(s.fetch.timing.cron_expr, "0 */10 * * * *");
        assert_eq!(s.analytics.timing.cron_expr, "0 0 2 * * *");
        assert_eq!(s.analytics.timing.timezone, chrono_tz::UTC);
        assert_eq!(s.maintenance.cron_expr, "0 30 1 * * *");
    }
}

/// Helpers for the scheduler's unit tests: a fetch [`Timing`] from a cron and a zone, and instants.
#[cfg(test)]
pub(crate) mod test_support {
    use chrono::{DateTime, Utc};

    use super::*;

    /// The fetch job's timing in a minimal valid file with this cron and time zone.
    pub(crate) fn timing(cron: &str, tz: &str) -> Timing {
        let text = format!(
            "[fetch]\ncron = \"{cron}\"\ntimezone = \"{tz}\"\n[fetch.args]\nlocations = [\"x\"]\n\
             [analytics]\ncron = \"0 0 2 * * *\"\n"
        );
        Schedules::parse(&text, "t.toml").unwrap().fetch.timing
    }

    /// An RFC 3339 instant.
    pub(crate) fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
}
