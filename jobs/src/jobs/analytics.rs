//! The analytics job: a linear regression of temp_c on wind_kph, stored in regression_results.
//!
//! read → fit → plot → write. The observations of the window are streamed into one
//! [`DesignMatrix`], ordered by location; scope `all` is fitted on the whole matrix and every
//! location with enough samples on its own rows. All results of a run are written in one
//! transaction, linked to the run's `job_runs` row, or none are (a failure or a shutdown before the
//! commit leaves the table untouched).

use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use entity::regression_results;
use futures::TryStreamExt;
use sea_orm::{ActiveValue::Set, DatabaseConnection, DbErr, EntityTrait, TransactionTrait};
use serde_json::json;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::plot::{self, Scatter};
use crate::regression::{DesignMatrix, LineFit};
use crate::runs::{Completion, Report};

/// The scope of the fit over every location.
pub const SCOPE_ALL: &str = "all";

/// The stored `target` and `feature` columns.
const TARGET: &str = "temp_c";
const FEATURE: &str = "wind_kph";

/// What to fit.
#[derive(Debug, Clone, Default)]
pub struct AnalyticsRequest {
    /// Only observations at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only observations before this time.
    pub until: Option<DateTime<Utc>>,
    /// Minimum samples for a per-location fit; `None` uses the configuration.
    pub min_samples: Option<u64>,
    /// Write an SVG scatter plot with the fitted line of scope `all` here.
    pub plot: Option<PathBuf>,
    /// Also plot these locations, each to [`plot::scope_path`] next to `plot`.
    pub plot_scopes: Vec<String>,
    /// Plot every fitted location, each to [`plot::scope_path`] next to `plot`.
    pub plot_all_scopes: bool,
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
    Plot(#[from] plot::PlotError),
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
    /// Observations read.
    pub rows_read: u64,
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
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
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
            "rows_read": self.rows_read,
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
) -> anyhow::Result<AnalyticsSummary> {
    if let (Some(since), Some(until)) = (req.since, req.until)
        && since >= until
    {
        return Err(AnalyticsError::EmptyWindow { since, until }.into());
    }
    let min_samples = req.min_samples.unwrap_or(config.analytics.min_samples);
    let mut timings = Timings::default();

    let started = Instant::now();
    let samples = read(db.get_postgres_connection_pool(), req.since, req.until, &shutdown)
        .await
        .context("reading observations")?;
    timings.read = started.elapsed();
    let rows_read = samples.matrix.len() as u64;
    let locations = samples.locations.len();
    tracing::info!(rows = rows_read, locations, ms = timings.read.as_millis() as u64, "observations read");

    // Fitting and drawing are CPU-bound: keep them off the async workers (the scheduler runs the
    // consumer on the same runtime).
    let max_points = config.analytics.plot_max_points;
    let cancel = shutdown.clone();
    let plan = PlotPlan::from_request(&req);
    let computed = tokio::task::spawn_blocking(move || {
        compute(samples, min_samples, &plan, max_points, &cancel)
    })
    .await
    .context("the fitting task panicked")??;
    timings.fit = computed.fit_time;
    timings.plot = computed.plot_time;

    if shutdown.is_cancelled() {
        return Err(AnalyticsError::Interrupted.into());
    }
    let started = Instant::now();
    let results_written = write(db, run_id, (req.since, req.until), &computed.fits)
        .await
        .context("writing regression_results")?;
    timings.write = started.elapsed();

    let summary = AnalyticsSummary {
        since: req.since,
        until: req.until,
        min_samples,
        rows_read,
        locations,
        fits: computed.fits,
        skipped: computed.skipped,
        results_written,
        plots: computed.plots,
        plots_skipped: computed.plots_skipped,
        timings,
    };
    match summary.skip_reason() {
        Some(reason) => tracing::warn!(reason, "scope all not fitted; run skipped"),
        None => tracing::info!(
            fitted = summary.fits.len(),
            skipped = summary.skipped.len(),
            written = results_written,
            "regressions stored"
        ),
    }
    Ok(summary)
}

/// The rows of one location inside the design matrix.
#[derive(Debug, Clone)]
struct LocationRows {
    /// `observations.location_key`.
    key: String,
    /// Its rows in the design matrix.
    rows: Range<usize>,
}

/// Everything a run reads: the design matrix, rows grouped by location.
#[derive(Debug)]
struct Samples {
    /// Wind and temperature of every observation in the window, each once.
    matrix: DesignMatrix,
    /// Location groups in key order, covering the matrix without gaps.
    locations: Vec<LocationRows>,
}

/// One row per location, in key order, each carrying that location's two columns as arrays, and
/// the window's total row count on every row (so the client sizes its buffers once).
///
/// Why arrays rather than one row per observation: on 10⁶ observations interleaved in time (as the
/// persist job writes them), `ORDER BY location_key` costs PostgreSQL 2.1 s through the unique
/// index or 0.7 s as an in-memory sort, against 0.25 s for this hash aggregate; the stream then
/// carries one message per location instead of one per row. `array_agg` feeds every aggregate of a
/// group the same rows in the same order, so the two arrays stay aligned. Non-finite values (float8
/// admits NaN and ±Infinity) are left out: they have no place in a least-squares fit.
///
/// The window bounds are `COALESCE`d rather than `$1 IS NULL OR ...` so the condition stays usable
/// by the `observed_at` index under a generic plan.
pub const READ_SQL: &str = r#"
SELECT location_key,
       (sum(count(*)) OVER ())::int8 AS total_rows,
       array_agg(wind_kph)           AS wind_kph,
       array_agg(temp_c)             AS temp_c
FROM observations
WHERE observed_at >= COALESCE($1::timestamptz, '-infinity'::timestamptz)
  AND observed_at <  COALESCE($2::timestamptz, 'infinity'::timestamptz)
  AND wind_kph > '-Infinity'::float8 AND wind_kph < 'Infinity'::float8
  AND temp_c   > '-Infinity'::float8 AND temp_c   < 'Infinity'::float8
GROUP BY location_key
ORDER BY location_key
"#;

/// Streams the window's observations into a design matrix, one location at a time.
async fn read(
    pool: &sqlx::PgPool,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Samples> {
    let mut stream = sqlx::query(READ_SQL).bind(since).bind(until).fetch(pool);
    let (mut wind, mut temp) = (Vec::<f64>::new(), Vec::<f64>::new());
    let mut locations = Vec::new();
    loop {
        let row = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Err(AnalyticsError::Interrupted.into()),
            row = stream.try_next() => row?,
        };
        let Some(row) = row else { break };
        if locations.is_empty() {
            let total: i64 = row.try_get("total_rows")?;
            let total = usize::try_from(total).context("negative row count")?;
            wind.reserve_exact(total);
            temp.reserve_exact(total);
        }
        let key: String = row.try_get("location_key")?;
        // Decoded per location, then appended: the transient copy is one location's columns.
        let w: Vec<f64> = row.try_get("wind_kph")?;
        let t: Vec<f64> = row.try_get("temp_c")?;
        anyhow::ensure!(
            w.len() == t.len(),
            "location {key}: {} wind values but {} temperatures",
            w.len(),
            t.len()
        );
        let start = wind.len();
        wind.extend_from_slice(&w);
        temp.extend_from_slice(&t);
        locations.push(LocationRows {
            key,
            rows: start..wind.len(),
        });
    }
    let matrix = DesignMatrix::new(wind, temp)?;
    Ok(Samples { matrix, locations })
}

/// Which scopes to draw, and where.
#[derive(Debug, Clone, Default)]
struct PlotPlan {
    /// The file of scope `all`; no plots at all without it.
    main: Option<PathBuf>,
    /// Locations asked for by name.
    scopes: Vec<String>,
    /// Every fitted location.
    every_scope: bool,
}

impl PlotPlan {
    fn from_request(req: &AnalyticsRequest) -> Self {
        Self {
            main: req.plot.clone(),
            scopes: req.plot_scopes.clone(),
            every_scope: req.plot_all_scopes,
        }
    }
}

/// What the CPU-bound phase produces.
#[derive(Debug)]
struct Computed {
    fits: Vec<ScopeFit>,
    skipped: Vec<SkippedScope>,
    plots: Vec<PathBuf>,
    plots_skipped: Vec<SkippedScope>,
    fit_time: Duration,
    plot_time: Duration,
}

/// Fits every scope, then draws the requested plots. Checks the shutdown token between locations.
fn compute(
    samples: Samples,
    min_samples: u64,
    plan: &PlotPlan,
    max_points: usize,
    cancel: &CancellationToken,
) -> Result<Computed, AnalyticsError> {
    let started = Instant::now();
    let Samples { matrix, locations } = samples;
    let mut fits = Vec::new();
    let mut skipped = Vec::new();
    // Index into `locations` of each fitted location, for plotting.
    let mut fitted_rows: Vec<(usize, usize)> = Vec::new();
    match matrix.fit_all() {
        Ok(fit) => {
            fits.push(ScopeFit {
                scope: SCOPE_ALL.to_owned(),
                fit,
            });
            for (i, loc) in locations.iter().enumerate() {
                if cancel.is_cancelled() {
                    return Err(AnalyticsError::Interrupted);
                }
                let n = loc.rows.len();
                if (n as u64) < min_samples {
                    skipped.push(SkippedScope {
                        scope: loc.key.clone(),
                        n,
                        reason: format!("{n} samples, fewer than min_samples ({min_samples})"),
                    });
                    continue;
                }
                match matrix.fit_rows(loc.rows.clone()) {
                    Ok(fit) => {
                        fitted_rows.push((i, fits.len()));
                        fits.push(ScopeFit {
                            scope: loc.key.clone(),
                            fit,
                        });
                    }
                    Err(e) => skipped.push(SkippedScope {
                        scope: loc.key.clone(),
                        n,
                        reason: e.to_string(),
                    }),
                }
            }
        }
        // Every location is a subset of scope all: when all cannot be fitted (no rows, one row, a
        // single wind speed) nor can any location, and the run is skipped as a whole.
        Err(e) => skipped.push(SkippedScope {
            scope: SCOPE_ALL.to_owned(),
            n: matrix.len(),
            reason: e.to_string(),
        }),
    }
    let fit_time = started.elapsed();

    let started = Instant::now();
    let mut plots = Vec::new();
    let mut plots_skipped = Vec::new();
    if let Some(main) = &plan.main {
        let draw = |scope: &str, rows: Range<usize>, fit: &LineFit, path: PathBuf| {
            let scatter = Scatter {
                scope,
                wind: matrix.wind(rows.clone()),
                temp: matrix.temp(rows),
                origin: matrix.origin(),
                fit,
                max_points,
            };
            plot::write_svg(&path, &scatter).map(|()| path)
        };
        let mut wanted = Vec::new();
        match fits.first().filter(|f| f.scope == SCOPE_ALL) {
            Some(all) => plots.push(draw(SCOPE_ALL, 0..matrix.len(), &all.fit, main.clone())?),
            None => plots_skipped.push(SkippedScope {
                scope: SCOPE_ALL.to_owned(),
                n: matrix.len(),
                reason: "scope all was not fitted".into(),
            }),
        }
        if plan.every_scope {
            wanted.extend(fitted_rows.iter().map(|&(loc, _)| locations[loc].key.clone()));
        } else {
            wanted.extend(plan.scopes.iter().filter(|s| *s != SCOPE_ALL).cloned());
        }
        for scope in wanted {
            if cancel.is_cancelled() {
                return Err(AnalyticsError::Interrupted);
            }
            let found = fitted_rows
                .iter()
                .find(|&&(loc, _)| locations[loc].key == scope);
            let Some(&(loc, fit)) = found else {
                let n = locations
                    .iter()
                    .find(|l| l.key == scope)
                    .map_or(0, |l| l.rows.len());
                let reason = if n == 0 {
                    "no observations for this location in the window".to_owned()
                } else {
                    "this location was not fitted (see skipped)".to_owned()
                };
                tracing::warn!(scope, reason, "plot not drawn");
                plots_skipped.push(SkippedScope { scope, n, reason });
                continue;
            };
            let path = plot::scope_path(main, &scope);
            plots.push(draw(&scope, locations[loc].rows.clone(), &fits[fit].fit, path)?);
        }
    }
    let plot_time = started.elapsed();
    Ok(Computed {
        fits,
        skipped,
        plots,
        plots_skipped,
        fit_time,
        plot_time,
    })
}

/// Inserts one row per fit in a single transaction. Returns the rows written.
async fn write(
    db: &DatabaseConnection,
    run_id: i64,
    (since, until): (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    fits: &[ScopeFit],
) -> Result<u64, DbErr> {
    if fits.is_empty() {
        return Ok(0);
    }
    let fitted_at = Utc::now();
    let txn = db.begin().await?;
    let mut written = 0;
    // 14 bind parameters per row; 1000 rows stay far below PostgreSQL's 65535-parameter limit.
    for chunk in fits.chunks(1000) {
        let rows = chunk.iter().map(|f| regression_results::ActiveModel {
            job_run_id: Set(run_id),
            fitted_at: Set(fitted_at),
            scope: Set(f.scope.clone()),
            target: Set(TARGET.to_owned()),
            feature: Set(FEATURE.to_owned()),
            window_start: Set(since),
            window_end: Set(until),
            n_samples: Set(f.fit.n as i64),
            intercept: Set(f.fit.intercept),
            slope: Set(f.fit.slope),
            r_squared: Set(f.fit.r_squared),
            rmse: Set(f.fit.rmse),
            slope_stderr: Set(f.fit.slope_stderr),
            ..Default::default()
        });
        written += regression_results::Entity::insert_many(rows)
            .exec_without_returning(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(written)
}
