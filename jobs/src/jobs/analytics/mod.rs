//! The analytics job: a linear regression of temp_c on wind_kph, stored in regression_results.
//!
//! Every fit uses the observations of one source ([`source`]): WeatherAPI's when the window has
//! any, the simulated ones only when it has nothing else, or the one `--source` names; the source
//! is stored with the fit. [`read`] → [`fit`] → [`draw`] → [`write`]. The observations of the window are streamed into one
//! design matrix, ordered by location; scope `all` is fitted on the whole matrix and every
//! location with enough samples on its own rows. All results of a run are written in one
//! transaction, linked to the run's `job_runs` row, or none are (a failure or a cancellation before
//! the commit leaves the table untouched; the token is checked inside the transaction, just before
//! it commits). Rows are results only once their run is recorded `succeeded`: a run stopped just
//! after its commit (a timeout that fired during it) is recorded failed, and every reader
//! (`weatherflow results`, the web API, the `latest_regression` view) leaves its rows out.

pub mod draw;
pub mod fit;
mod fitter;
pub mod freshness;
mod pg_array;
mod read;
pub mod results;
pub mod source;
mod write;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use self::draw::PlotPlan;
use self::fit::LineFit;
use self::fitter::FITTER_QUEUE;
use self::read::Samples;
pub use self::source::FitSource;
use crate::config::Config;
use crate::envelope::Source;
use crate::job_error::{JobError, JobErrorKind, JobResultExt};
use crate::runs::{Completion, Report};

/// The scope of the fit over every location.
pub const SCOPE_ALL: &str = "all";

/// What to fit.
#[derive(Debug, Clone, Default)]
pub struct AnalyticsRequest {
    /// Only observations at or after this time. Unset: the last `analytics.window_days` days before
    /// `until` (or now), unless `all_history` is set.
    pub since: Option<DateTime<Utc>>,
    /// Without `since`, fit every row instead of the default window.
    pub all_history: bool,
    /// Only observations before this time.
    pub until: Option<DateTime<Utc>>,
    /// Minimum samples for a per-location fit; `None` uses the configuration.
    pub min_samples: Option<u64>,
    /// Write an SVG scatter plot with the fitted line of scope `all` here.
    pub plot: Option<PathBuf>,
    /// Also plot these locations, each to a file named after the location next to `plot`.
    pub plot_scopes: Vec<String>,
    /// Plot every fitted location, each to a file named after the location next to `plot`.
    pub plot_all_scopes: bool,
    /// Which observations to fit (default `auto`: WeatherAPI's when the window has any).
    pub source: FitSource,
}

/// Failures a caller may want to tell apart from plain errors.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// The shutdown token fired before the results were committed; nothing was stored.
    #[error("interrupted by shutdown before the results were written; nothing was stored")]
    Interrupted,
    /// `--since` is not before `--until`.
    #[error("empty window: since ({since}) must be before until ({until})")]
    EmptyWindow {
        /// The window's start.
        since: DateTime<Utc>,
        /// The window's end.
        until: DateTime<Utc>,
    },
    /// A requested plot could not be written (nothing was stored: plots are drawn before the write).
    #[error(transparent)]
    Plot(#[from] draw::PlotError),
}

impl From<AnalyticsError> for JobError {
    fn from(e: AnalyticsError) -> Self {
        match e {
            AnalyticsError::Interrupted => JobError::interrupted(e),
            // The same window and the same plot directory fail the same way on another attempt.
            AnalyticsError::EmptyWindow { .. } | AnalyticsError::Plot(_) => JobError::fatal(e),
        }
    }
}

/// One fitted scope.
#[derive(Debug, Clone)]
pub struct ScopeFit {
    /// `all` or a location key.
    pub scope: String,
    /// The line and its figures.
    pub fit: LineFit,
}

/// A scope that got no result row, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SkippedScope {
    /// `all` or a location key.
    pub scope: String,
    /// Samples it had in the window.
    pub n: usize,
    /// Why it was not fitted.
    pub reason: String,
}

/// Wall time of each phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Streaming the observations into the design matrix.
    pub read: Duration,
    /// All fits, scope `all` and per location.
    pub fit: Duration,
    /// Writing the SVG files.
    pub plot: Duration,
    /// The results transaction.
    pub write: Duration,
}

/// The outcome of an analytics run.
#[derive(Debug, Clone)]
pub struct AnalyticsSummary {
    /// Start of the window (inclusive), if bounded.
    pub since: Option<DateTime<Utc>>,
    /// End of the window (exclusive), if bounded.
    pub until: Option<DateTime<Utc>>,
    /// The per-location threshold in force.
    pub min_samples: u64,
    /// The observations' source every fit of the run used.
    pub source: Source,
    /// Why that source: the choice, and for `auto` what the window held.
    pub source_reason: &'static str,
    /// Observations read into the fit (finite wind and temperature).
    pub rows_read: u64,
    /// Observations left out because a value was NaN or infinite.
    pub non_finite_rows: u64,
    /// Distinct locations among them.
    pub locations: usize,
    /// Fitted scopes, `all` first, then locations in key order.
    pub fits: Vec<ScopeFit>,
    /// Scopes without a result, with the reason.
    pub skipped: Vec<SkippedScope>,
    /// `regression_results` rows written.
    pub results_written: u64,
    /// SVG files written.
    pub plots: Vec<PathBuf>,
    /// Requested plots that were not drawn, with the reason.
    pub plots_skipped: Vec<SkippedScope>,
    /// Time per phase.
    pub timings: Timings,
}

impl AnalyticsSummary {
    /// Why scope `all` could not be fitted, when it could not.
    pub fn skip_reason(&self) -> Option<&str> {
        self.skipped
            .iter()
            .find(|s| s.scope == SCOPE_ALL)
            .map(|s| s.reason.as_str())
    }
}

impl Report for AnalyticsSummary {
    fn completion(&self) -> Completion {
        if self.skip_reason().is_some() {
            Completion::Skipped
        } else {
            Completion::Succeeded
        }
    }
    fn records_in(&self) -> Option<i64> {
        i64::try_from(self.rows_read).ok()
    }
    fn records_out(&self) -> Option<i64> {
        i64::try_from(self.results_written).ok()
    }
    fn details(&self) -> serde_json::Value {
        let ms = |d: Duration| (d.as_secs_f64() * 10_000.0).round() / 10.0;
        let all = self.fits.iter().find(|f| f.scope == SCOPE_ALL).map(|f| {
            json!({
                "n": f.fit.n,
                "intercept": f.fit.intercept,
                "slope": f.fit.slope,
                "r_squared": f.fit.r_squared,
                "rmse": f.fit.rmse,
                "slope_stderr": f.fit.slope_stderr,
            })
        });
        let mut details = json!({
            "window": { "since": self.since, "until": self.until },
            "min_samples": self.min_samples,
            "source": self.source.as_str(),
            "source_reason": self.source_reason,
            "rows_read": self.rows_read,
            "non_finite_rows": self.non_finite_rows,
            "locations": self.locations,
            "scopes_fitted": self.fits.len(),
            "all": all,
            "skipped": self.skipped,
            "plots": self.plots,
            "plots_skipped": self.plots_skipped,
            "timings_ms": {
                "read": ms(self.timings.read),
                "fit": ms(self.timings.fit),
                "plot": ms(self.timings.plot),
                "write": ms(self.timings.write),
            },
        });
        if let (Some(reason), Some(map)) = (self.skip_reason(), details.as_object_mut()) {
            map.insert("reason".into(), json!(format!("scope all not fitted: {reason}")));
        }
        details
    }
}

/// Runs the analytics job; `run_id` is the `job_runs` row its results link to.
pub async fn run(
    config: &Config,
    db: &DatabaseConnection,
    run_id: i64,
    req: AnalyticsRequest,
    shutdown: CancellationToken,
) -> Result<AnalyticsSummary, JobError> {
    if let (Some(since), Some(until)) = (req.since, req.until)
        && since >= until
    {
        return Err(AnalyticsError::EmptyWindow { since, until }.into());
    }
    if config.analytics.read_connections == 0 {
        return Err(JobError::fatal("analytics.read_connections must be at least 1"));
    }
    let window = (
        default_since(&req, config.analytics.window_days, Utc::now()),
        req.until,
    );
    let min_samples = req.min_samples.unwrap_or(config.analytics.min_samples);
    let mut timings = Timings::default();
    let pool = db.get_postgres_connection_pool();

    let (source, source_reason) = interruptible(&shutdown, source::resolve(pool, window, req.source))
        .await?
        .job(JobErrorKind::Retryable, "finding the source to fit")?;
    tracing::info!(
        source = source.as_str(),
        reason = source_reason,
        "fitting one source"
    );

    // Fitting and drawing are CPU-bound: they run on blocking threads, off the async workers (the
    // scheduler runs the consumer on the same runtime). Locations are fitted on one thread while
    // later locations still stream in.
    let started = Instant::now();
    let (to_fitter, queue) = tokio::sync::mpsc::channel(FITTER_QUEUE);
    let cancel = shutdown.clone();
    let fitter = tokio::task::spawn_blocking(move || fitter::fit_locations(queue, &cancel));
    let connections = config.analytics.read_connections;
    let samples = read::read(
        pool,
        window,
        source,
        connections,
        min_samples,
        to_fitter,
        &shutdown,
    )
    .await?;
    timings.read = started.elapsed();
    log_read(&samples, timings.read);
    let samples = Arc::new(samples);

    let started = Instant::now();
    // A panicking fit is a bug, and panics again on the same data.
    let fitted = fitter::fit_all_and_collect(Arc::clone(&samples), fitter, min_samples)
        .await
        .map_err(JobError::fatal)?;
    timings.fit = started.elapsed();
    interrupted(&shutdown)?;

    let started = Instant::now();
    let (plots, plots_skipped) = match PlotPlan::from_request(&req, config) {
        None => (Vec::new(), Vec::new()),
        Some(plan) => {
            let (fitted, cancel) = (fitted.clone(), shutdown.clone());
            tokio::task::spawn_blocking(move || draw::draw_plots(&samples, &fitted, &plan, &cancel))
                .await
                .job(JobErrorKind::Fatal, "the plotting task panicked")?
                .map_err(JobError::from)?
        }
    };
    timings.plot = started.elapsed();
    interrupted(&shutdown)?;

    let started = Instant::now();
    let results_written = write::write(db, run_id, window, source, &fitted.fits, &shutdown).await?;
    timings.write = started.elapsed();

    let summary = AnalyticsSummary {
        since: window.0,
        until: window.1,
        min_samples,
        source,
        source_reason,
        rows_read: fitted.rows as u64,
        non_finite_rows: fitted.non_finite,
        locations: fitted.locations,
        fits: fitted.fits,
        skipped: fitted.skipped,
        results_written,
        plots,
        plots_skipped,
        timings,
    };
    log_summary(&summary);
    Ok(summary)
}

/// The window's start: `since` when given; else nothing with `all_history` or a `window_days` of 0;
/// else `window_days` before the window's end (`until`, or `now`). A nightly run's cost then follows
/// the window, not the history: the read touches the window's partitions only.
fn default_since(req: &AnalyticsRequest, window_days: u32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if req.since.is_some() || req.all_history || window_days == 0 {
        return req.since;
    }
    Some(req.until.unwrap_or(now) - chrono::Duration::days(i64::from(window_days)))
}

/// `fut`, unless the shutdown token fires first.
async fn interruptible<T>(
    shutdown: &CancellationToken,
    fut: impl Future<Output = T>,
) -> Result<T, AnalyticsError> {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Err(AnalyticsError::Interrupted),
        out = fut => Ok(out),
    }
}

fn interrupted(shutdown: &CancellationToken) -> Result<(), AnalyticsError> {
    if shutdown.is_cancelled() {
        return Err(AnalyticsError::Interrupted);
    }
    Ok(())
}

fn log_read(samples: &Samples, took: Duration) {
    if samples.non_finite > 0 {
        tracing::warn!(
            rows = samples.non_finite,
            "observations with a NaN or infinite value left out"
        );
    }
    tracing::info!(
        rows = samples.matrix.len(),
        locations = samples.locations.len(),
        ms = took.as_millis() as u64,
        "observations read"
    );
}

fn log_summary(summary: &AnalyticsSummary) {
    match summary.skip_reason() {
        Some(reason) => tracing::warn!(reason, "scope all not fitted; run skipped"),
        None => tracing::info!(
            fitted = summary.fits.len(),
            skipped = summary.skipped.len(),
            written = summary.results_written,
            "regressions stored"
        ),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn the_default_window_is_window_days_before_the_end_unless_all_history() {
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 8, 0, 0).unwrap();
        let req = AnalyticsRequest::default();
        assert_eq!(
            default_since(&req, 30, now),
            Some(now - chrono::Duration::days(30))
        );
        assert_eq!(default_since(&req, 0, now), None);
        let until = now - chrono::Duration::days(100);
        let bounded = AnalyticsRequest {
            until: Some(until),
            ..AnalyticsRequest::default()
        };
        assert_eq!(
            default_since(&bounded, 7, now),
            Some(until - chrono::Duration::days(7))
        );
        let all = AnalyticsRequest {
            all_history: true,
            ..AnalyticsRequest::default()
        };
        assert_eq!(default_since(&all, 30, now), None);
        let given = AnalyticsRequest {
            since: Some(until),
            all_history: true,
            ..AnalyticsRequest::default()
        };
        assert_eq!(default_since(&given, 30, now), Some(until));
    }
}
