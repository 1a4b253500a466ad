//! `weatherflow run fetch --history --from DATE [--to DATE]`: WeatherAPI's `history.json`, one call
//! per location and day, each hour produced like any observation.
//!
//! * **Same record as live.** Each hour becomes a `current.json`-shaped payload
//!   ([`weatherapi::HistoryDay`]) in the usual envelope (`source = weatherapi`), keyed by the
//!   normalized location from the response. Persist stores it in the `(location_key, observed_at,
//!   source)` slot a live fetch of that hour would take, so a backfill never stores anything twice,
//!   whether the hour came live, from an earlier backfill or both.
//! * **Resumable.** A (location, day) is written to `history_backfill` once every hour of it has been
//!   acknowledged by Kafka and the day is over; a later backfill skips it. A run stopped halfway
//!   (SIGINT, a lost lock) finishes the days in flight, records them, and the next run does the rest.
//! * **Bounded.** `--from` may reach `weatherapi.history_days` back (the plan's depth), no further;
//!   the calls are counted (and the budget checked) before the first one; the fetch job's token
//!   bucket paces them.
//! * **Seen.** Progress goes to standard error ([`Progress`]) and, every few seconds, to the run's
//!   `job_runs.details`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use futures::StreamExt;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::ratelimit::TokenBucket;
use super::weatherapi::{ApiError, ApiErrorAction, WeatherApi};
use crate::config::Config;
use crate::envelope::{self, Envelope, Source};
use crate::job_error::{JobError, JobErrorKind, JobResultExt};
use crate::kafka;
use crate::progress::Progress;
use crate::quota::{CallMeter, Endpoint};
use crate::report::Report;

/// The earliest day `history.json` serves.
const EARLIEST: NaiveDate = NaiveDate::from_ymd_opt(2010, 1, 1).expect("a valid date");

/// How often a running backfill writes its progress into its `job_runs` row.
const ROW_EVERY: Duration = Duration::from_secs(2);

/// The days a backfill covers: `weatherflow run fetch --history --from D [--to D] [--dry-run]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRange {
    /// The first local day.
    pub from: NaiveDate,
    /// The last local day; `None` is today (UTC).
    pub to: Option<NaiveDate>,
    /// Count the calls it would make, print them, call nothing.
    pub dry_run: bool,
}

/// One (location, day) that failed, with why.
#[derive(Debug, Clone, Serialize)]
pub struct FailedDay {
    /// The location as asked.
    pub query: String,
    /// The local day.
    pub day: NaiveDate,
    /// The API's or Kafka's error.
    pub reason: String,
}

/// What a backfill did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackfillSummary {
    /// First day.
    pub from: Option<NaiveDate>,
    /// Last day.
    pub to: Option<NaiveDate>,
    /// Locations asked.
    pub locations: usize,
    /// (location, day) pairs in the range.
    pub days_total: usize,
    /// Pairs an earlier backfill had already completed, skipped without a call.
    pub days_already_done: usize,
    /// Pairs fetched and produced by this run.
    pub days_done: usize,
    /// API calls this run makes (dry run: would make), one per remaining pair.
    pub calls: usize,
    /// Hours produced to Kafka and acknowledged.
    pub hours_produced: usize,
    /// Pairs that failed.
    pub failed: Vec<FailedDay>,
    /// Whether nothing was called.
    pub dry_run: bool,
}

impl Report for BackfillSummary {
    fn records_in(&self) -> Option<i64> {
        Some(self.calls as i64)
    }
    fn records_out(&self) -> Option<i64> {
        Some(self.hours_produced as i64)
    }
    fn details(&self) -> Value {
        json!({ "history": self })
    }
}

impl BackfillSummary {
    /// One line for the log, the progress report and the dry run.
    pub fn line(&self) -> String {
        let (from, to) = (self.from.map(|d| d.to_string()), self.to.map(|d| d.to_string()));
        format!(
            "{} location(s) x {} to {}: {} day(s), {} already done, {} API call(s){}, {} hour(s) produced, {} failed",
            self.locations,
            from.unwrap_or_default(),
            to.unwrap_or_default(),
            self.days_total,
            self.days_already_done,
            self.calls,
            if self.dry_run { " would be made" } else { "" },
            self.hours_produced,
            self.failed.len()
        )
    }
}

/// The range checked against the calendar and the plan's depth: `(from, to)`.
pub fn check_range(range: &HistoryRange, today: NaiveDate, history_days: u32) -> Result<(NaiveDate, NaiveDate), JobError> {
    let to = range.to.unwrap_or(today);
    let from = range.from;
    if from > to {
        return Err(JobError::fatal(format!("--from {from} is after --to {to}")));
    }
    if to > today {
        return Err(JobError::fatal(format!(
            "--to {to} is in the future (today is {today} UTC); history.json serves past days only"
        )));
    }
    if from < EARLIEST {
        return Err(JobError::fatal(format!(
            "--from {from} is before {EARLIEST}, the first day history.json serves"
        )));
    }
    let back = (today - from).num_days();
    if back > i64::from(history_days) {
        return Err(JobError::fatal(format!(
            "--from {from} is {back} days back, beyond the plan's history depth: weatherapi.history_days = {history_days} \
             (WeatherAPI's Free plan reaches 1 day back in its 2026 terms, 7 in older ones; Pro+ and above 365). \
             Start at {} or later, or raise weatherapi.history_days if your plan reaches further",
            today - chrono::Duration::days(i64::from(history_days))
        )));
    }
    Ok((from, to))
}

/// Every local day from `from` to `to`, inclusive.
fn days(from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
    from.iter_days().take_while(|d| *d <= to).collect()
}

/// The (query, day) pairs of `queries` in the range that an earlier backfill completed.
async fn done_pairs(
    db: &DatabaseConnection,
    queries: &[String],
    from: NaiveDate,
    to: NaiveDate,
) -> Result<HashSet<(String, NaiveDate)>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT query, day FROM history_backfill WHERE query = ANY($1) AND day BETWEEN $2 AND $3",
            [queries.to_vec().into(), from.into(), to.into()],
        ))
        .await?;
    rows.into_iter()
        .map(|r| Ok((r.try_get_by_index::<String>(0)?, r.try_get_by_index::<NaiveDate>(1)?)))
        .collect()
}

/// Records a completed (query, day).
async fn mark_done(
    db: &DatabaseConnection,
    pair: &(String, NaiveDate),
    hours: usize,
    key: Option<&str>,
    run_id: Option<i64>,
) -> Result<(), DbErr> {
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO history_backfill (query, day, hours, location_key, run_id) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (query, day) DO UPDATE SET hours = EXCLUDED.hours, location_key = EXCLUDED.location_key, \
         run_id = EXCLUDED.run_id, completed_at = now()",
        [
            pair.0.clone().into(),
            pair.1.into(),
            (hours as i32).into(),
            key.map(str::to_owned).into(),
            run_id.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// What one (location, day) came to.
enum DayOutcome {
    /// Every hour acknowledged; `complete` when the day is over (recorded as done).
    Produced { hours: usize, key: String, complete: bool },
    /// Failed for this pair only.
    Failed(String),
    /// Stops the run: a key or account problem, the budget.
    Fatal(ApiError),
    /// Not called: the run was stopped first.
    Cancelled,
}

/// Fetches one day of one location and produces its past hours; returns once Kafka acknowledged all.
async fn one_day(api: &WeatherApi, producer: &FutureProducer, topic: &str, pair: &(String, NaiveDate), cancel: &CancellationToken) -> DayOutcome {
    let (q, day) = pair;
    let got = api.history(q, *day, cancel).await;
    let body = match got.result {
        Ok(body) => body,
        Err(ApiError::Cancelled) => return DayOutcome::Cancelled,
        Err(e) if e.class() == ApiErrorAction::Fatal => return DayOutcome::Fatal(e),
        Err(e) => return DayOutcome::Failed(e.to_string()),
    };
    let now = Utc::now().timestamp();
    let loc = &body.location;
    let key = envelope::location_key(&loc.name, &loc.region, &loc.country);
    // Hours still ahead (today's) are forecasts, not observations: left for a later run.
    let past: Vec<_> = body.hours.into_iter().filter(|h| h.epoch <= now).collect();
    let complete = !past.is_empty() && past.iter().all(|h| h.epoch + 3600 <= now);
    let mut deliveries = Vec::with_capacity(past.len());
    for hour in past {
        let value = Envelope::new(Source::Weatherapi, Utc::now(), q, hour.payload).to_bytes();
        loop {
            match producer.send_result(FutureRecord::to(topic).key(&key).payload(&value)) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => return DayOutcome::Failed(format!("cannot enqueue the message: {e}")),
            }
        }
    }
    let hours = deliveries.len();
    for report in futures::future::join_all(deliveries).await {
        match report {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return DayOutcome::Failed(format!("delivery to Kafka failed: {e}")),
            Err(_) => return DayOutcome::Failed("the producer was dropped before reporting".into()),
        }
    }
    DayOutcome::Produced { hours, key, complete }
}

/// The backfill's inputs once the fetch job has checked them.
pub(super) struct Backfill<'a> {
    pub config: &'a Config,
    pub db: &'a DatabaseConnection,
    pub run_id: Option<i64>,
    pub locations: &'a [String],
    pub concurrency: usize,
    pub range: HistoryRange,
}

impl Backfill<'_> {
    /// Runs it (or, dry, counts its calls). `key` is the WeatherAPI key.
    pub(super) async fn run(self, key: SecretString, shutdown: CancellationToken) -> Result<BackfillSummary, JobError> {
        let today = Utc::now().date_naive();
        let (from, to) = check_range(&self.range, today, self.config.weatherapi.history_days)?;
        let queries: Vec<String> = self.locations.to_vec();
        let done = done_pairs(self.db, &queries, from, to)
            .await
            .job(JobErrorKind::Retryable, "reading history_backfill")?;
        let all: Vec<(String, NaiveDate)> = queries
            .iter()
            .flat_map(|q| days(from, to).into_iter().map(move |d| (q.clone(), d)))
            .collect();
        let todo: Vec<(String, NaiveDate)> = all.iter().filter(|p| !done.contains(*p)).cloned().collect();
        let mut summary = BackfillSummary {
            from: Some(from),
            to: Some(to),
            locations: queries.len(),
            days_total: all.len(),
            days_already_done: all.len() - todo.len(),
            calls: todo.len(),
            dry_run: self.range.dry_run,
            ..Default::default()
        };
        if self.range.dry_run || todo.is_empty() {
            tracing::info!(summary = %summary.line(), "history backfill: nothing to call");
            return Ok(summary);
        }
        // Counted, and the budget checked, before the first call.
        let meter = CallMeter::open(self.db, &self.config.weatherapi, Endpoint::History, todo.len() as u64)
            .await
            .map(Arc::new)
            .map_err(|e| JobError::fatal(e).with_report(&summary))?;
        let result = self.produce(key, &todo, &meter, &mut summary, shutdown).await;
        if let Ok(meter) = Arc::try_unwrap(meter)
            && let Err(e) = meter.close().await
        {
            tracing::warn!(error = %e, "giving back the unused reserved WeatherAPI calls failed; the month's count errs high");
        }
        result.map(|()| summary)
    }

    async fn produce(
        &self,
        key: SecretString,
        todo: &[(String, NaiveDate)],
        meter: &Arc<CallMeter>,
        summary: &mut BackfillSummary,
        shutdown: CancellationToken,
    ) -> Result<(), JobError> {
        let config = self.config;
        let limiter = TokenBucket::new(config.fetch.rate_per_sec, config.fetch.burst).job(JobErrorKind::Fatal, "fetch.rate_per_sec")?;
        let api = WeatherApi::new(&config.weatherapi, key, Arc::new(limiter))
            .map_err(JobError::fatal)?
            .with_meter(meter.clone());
        let topic = config.kafka.observations_topic.clone();
        kafka::ensure_topic(&config.kafka, &topic, config.kafka.partitions)
            .await
            .job(JobErrorKind::Retryable, format!("creating topic {topic}"))?;
        let producer = kafka::producer(&config.kafka).job(JobErrorKind::Fatal, "creating the Kafka producer")?;
        let progress = Progress::stderr("history backfill", Some(todo.len() as u64));
        let stop = shutdown.child_token();
        let mut fatal: Option<ApiError> = None;
        let mut last_row = Instant::now();
        {
            let (api, producer, topic, stop) = (&api, &producer, topic.as_str(), &stop);
            // The futures are built up front (lazily started by the stream): a stream mapping a
            // borrowing closure is not provably `Send` for every lifetime, which the executor needs.
            let days: Vec<_> = todo
                .iter()
                .map(|pair| async move { (pair, one_day(api, producer, topic, pair, stop).await) })
                .collect();
            let mut results = futures::stream::iter(days).buffer_unordered(self.concurrency.max(1));
            while let Some((pair, outcome)) = results.next().await {
                match outcome {
                    DayOutcome::Produced { hours, key, complete } => {
                        if complete {
                            mark_done(self.db, pair, hours, Some(&key), self.run_id)
                                .await
                                .job(JobErrorKind::Retryable, "recording history_backfill")?;
                        }
                        summary.days_done += 1;
                        summary.hours_produced += hours;
                    }
                    DayOutcome::Failed(reason) => summary.failed.push(FailedDay {
                        query: pair.0.clone(),
                        day: pair.1,
                        reason,
                    }),
                    DayOutcome::Fatal(e) => {
                        fatal.get_or_insert(e);
                        stop.cancel();
                    }
                    DayOutcome::Cancelled => {}
                }
                progress.update(
                    (summary.days_done + summary.failed.len()) as u64,
                    format!("{} ({}): {} hours produced", pair.0, pair.1, summary.hours_produced),
                );
                if last_row.elapsed() >= ROW_EVERY {
                    last_row = Instant::now();
                    self.record_progress(summary).await;
                }
            }
        }
        kafka::close_off_task(producer);
        progress.finish(summary.line());
        self.end(summary, fatal, shutdown.is_cancelled(), todo.len())
    }

    /// Writes the progress so far into the run's row; a failure only costs the view of it.
    async fn record_progress(&self, summary: &BackfillSummary) {
        if let Some(id) = self.run_id
            && let Err(e) = crate::runs::record_progress(self.db, id, &summary.details()).await
        {
            tracing::warn!(run_id = id, error = %e, "recording the backfill's progress failed");
        }
    }

    /// How the run ends, from what stopped it.
    fn end(&self, summary: &BackfillSummary, fatal: Option<ApiError>, stopped: bool, todo: usize) -> Result<(), JobError> {
        tracing::info!(summary = %summary.line(), "history backfill finished");
        if let Some(e) = fatal {
            let e = match e {
                ApiError::NoAccess { code, message } => JobError::fatal(format!(
                    "WeatherAPI refused history.json on this key's plan (code {}: {message}); \
                     the plan's history depth is below weatherapi.history_days = {}: lower it",
                    code.unwrap_or(403),
                    self.config.weatherapi.history_days
                )),
                e => JobError::new(JobErrorKind::Fatal, e),
            };
            return Err(e.context("history backfill stopped").with_report(summary));
        }
        let finished = summary.days_done + summary.failed.len();
        if stopped && finished < todo {
            return Err(JobError::interrupted(format!(
                "history backfill interrupted by shutdown after {finished} of {todo} days; run it again to resume"
            ))
            .with_report(summary));
        }
        if !summary.failed.is_empty() {
            let names: Vec<String> = summary
                .failed
                .iter()
                .take(10)
                .map(|f| format!("{} {} ({})", f.query, f.day, f.reason))
                .collect();
            return Err(JobError::retryable(format!(
                "{} of {todo} days failed: {}; run it again to fetch them",
                summary.failed.len(),
                names.join("; ")
            ))
            .with_report(summary));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn range(from: &str, to: Option<&str>) -> HistoryRange {
        HistoryRange {
            from: d(from),
            to: to.map(d),
            dry_run: false,
        }
    }

    #[test]
    fn the_range_is_checked_against_the_plan_depth() {
        let today = d("2026-12-07");
        assert_eq!(check_range(&range("2026-12-05", None), today, 7).unwrap(), (d("2026-12-05"), today));
        assert_eq!(check_range(&range("2026-11-30", Some("2026-12-01")), today, 7).unwrap(), (d("2026-11-30"), d("2026-12-01")));
        let e = check_range(&range("2026-11-29", None), today, 7).unwrap_err().to_string();
        assert!(e.contains("8 days back") && e.contains("weatherapi.history_days = 7") && e.contains("2026-11-30"), "{e}");
        assert!(check_range(&range("2026-12-06", Some("2026-12-05")), today, 7).is_err());
        assert!(check_range(&range("2026-12-06", Some("2026-12-08")), today, 7).is_err());
        assert!(check_range(&range("2009-12-31", None), today, 10_000).is_err());
    }

    #[test]
    fn days_are_inclusive() {
        assert_eq!(days(d("2026-12-05"), d("2026-12-07")).len(), 3);
        assert_eq!(days(d("2026-12-07"), d("2026-12-07")), [d("2026-12-07")]);
    }
}
