//! SVG scatter plots with the fitted line (owned by the analytics job).
//!
//! Text needs no font files: without plotters' `ttf`/`ab_glyph` features its SVG backend writes
//! `<text>` elements and lets the viewer pick the font, laying out labels from a size estimate. That
//! works on a fresh machine with no fonts installed (a bitmap backend would need real glyph metrics).

use std::ops::Range;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use tokio_util::sync::CancellationToken;

use super::fit::LineFit;
use super::fitter::FitResults;
use super::read::Samples;
use super::{AnalyticsError, AnalyticsRequest, SCOPE_ALL, SkippedScope};
use crate::config::Config;

/// Plotting failures; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// plotters could not draw.
    #[error("drawing {path}: {message}")]
    Draw {
        /// The target file.
        path: PathBuf,
        /// plotters' message.
        message: String,
    },
    /// The SVG could not be written.
    #[error("writing {path}")]
    Write {
        /// The target file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One scope's scatter: the samples (relative to `origin`, as the design matrix stores them) and the
/// line fitted to them.
#[derive(Debug, Clone, Copy)]
pub struct Scatter<'a> {
    /// `all` or a location key; goes into the title.
    pub scope: &'a str,
    /// Wind speeds, km/h, relative to `origin.0`.
    pub wind: &'a [f64],
    /// Temperatures, °C, relative to `origin.1`.
    pub temp: &'a [f64],
    /// What to add to `wind` and `temp` for absolute values.
    pub origin: (f64, f64),
    /// The fitted line.
    pub fit: &'a LineFit,
    /// At most this many points are drawn (an even stride through the samples) so a million rows
    /// still make a file a browser opens; the title says when points were thinned.
    pub max_points: usize,
}

/// Picture size in pixels.
const SIZE: (u32, u32) = (960, 640);

/// The plotted points' colour; the fitted line is drawn in red.
const POINT_COLOR: RGBColor = RGBColor(31, 119, 180);

/// Draws `scatter` into an SVG file at `path`.
pub fn write_svg(path: &Path, scatter: &Scatter<'_>) -> Result<(), PlotError> {
    let mut svg = String::new();
    render(&mut svg, scatter).map_err(|message| PlotError::Draw {
        path: path.to_path_buf(),
        message,
    })?;
    std::fs::write(path, svg).map_err(|source| PlotError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Draws `scatter` as SVG text (the dashboard inlines it).
pub fn svg(scatter: &Scatter<'_>) -> Result<String, String> {
    let mut svg = String::new();
    render(&mut svg, scatter)?;
    Ok(svg)
}

/// The file for `scope` next to the main plot: `out.svg` → `out-<scope slug>.svg`.
pub fn scope_path(main: &Path, scope: &str) -> PathBuf {
    let stem = main.file_stem().and_then(|s| s.to_str()).unwrap_or("plot");
    let ext = main.extension().and_then(|s| s.to_str()).unwrap_or("svg");
    main.with_file_name(format!("{stem}-{}.{ext}", slug(scope)))
}

/// A file-name-safe form of a location key: lower-case ASCII letters and digits, other runs → `-`.
fn slug(scope: &str) -> String {
    let mut out = String::with_capacity(scope.len());
    for c in scope.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_matches('-');
    if trimmed.is_empty() {
        "scope".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Stride that keeps at most `max` of `n` points.
fn stride(n: usize, max: usize) -> usize {
    n.div_ceil(max.max(1)).max(1)
}

fn render(svg: &mut String, s: &Scatter<'_>) -> Result<(), String> {
    let (x0, y0) = s.origin;
    let step = stride(s.wind.len(), s.max_points);
    let points = || {
        s.wind
            .iter()
            .zip(s.temp)
            .step_by(step)
            .map(move |(x, y)| (x + x0, y + y0))
    };
    let (xr, yr) = ranges(points(), s.fit);
    let shown = s.wind.len().div_ceil(step);
    let title = if shown < s.wind.len() {
        format!(
            "Temperature vs wind speed — {} (n = {}, {shown} shown)",
            s.scope, s.fit.n
        )
    } else {
        format!("Temperature vs wind speed — {} (n = {})", s.scope, s.fit.n)
    };

    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(xr.clone(), yr)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("Wind speed (km/h)")
        .y_desc("Temperature (°C)")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 18))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(points().map(|p| Circle::new(p, 2, POINT_COLOR.mix(0.5).filled())))
        .map_err(|e| e.to_string())?
        .label("observations")
        .legend(|(x, y)| Circle::new((x + 10, y), 3, POINT_COLOR.filled()));
    let line = [xr.start, xr.end].map(|x| (x, s.fit.predict(x)));
    let label = format!(
        "fit: temp = {:.3} {} {:.4} × wind, R² = {:.3}",
        s.fit.intercept,
        if s.fit.slope < 0.0 { "−" } else { "+" },
        s.fit.slope.abs(),
        s.fit.r_squared
    );
    chart
        .draw_series(LineSeries::new(line, RED.stroke_width(2)))
        .map_err(|e| e.to_string())?
        .label(label)
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

/// Axis ranges covering the points and the line over them, with a margin; never empty.
fn ranges(
    points: impl Iterator<Item = (f64, f64)>,
    fit: &LineFit,
) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let (mut xlo, mut xhi, mut ylo, mut yhi) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in points {
        (xlo, xhi, ylo, yhi) = (xlo.min(x), xhi.max(x), ylo.min(y), yhi.max(y));
    }
    if xlo > xhi {
        (xlo, xhi, ylo, yhi) = (0.0, 1.0, 0.0, 1.0);
    }
    for y in [fit.predict(xlo), fit.predict(xhi)] {
        (ylo, yhi) = (ylo.min(y), yhi.max(y));
    }
    let pad = |lo: f64, hi: f64| {
        let m = ((hi - lo) * 0.05).max(1e-9 * lo.abs().max(1.0));
        (lo - m)..(hi + m)
    };
    (pad(xlo, xhi), pad(ylo, yhi))
}
/// Which scopes to draw, and where.
#[derive(Debug, Clone)]
pub(crate) struct PlotPlan {
    /// The file of scope `all`.
    main: PathBuf,
    /// Locations asked for by name.
    scopes: Vec<String>,
    /// Every fitted location.
    every_scope: bool,
    /// Points drawn per plot at most.
    max_points: usize,
}

impl PlotPlan {
    /// The plan of a request; `None` without `--plot`.
    pub(crate) fn from_request(req: &AnalyticsRequest, config: &Config) -> Option<Self> {
        Some(Self {
            main: req.plot.clone()?,
            scopes: req.plot_scopes.clone(),
            every_scope: req.plot_all_scopes,
            max_points: config.analytics.plot_max_points,
        })
    }
}

/// Draws the requested plots. Returns the files written and the requested scopes not drawn.
pub(crate) fn draw_plots(
    samples: &Samples,
    results: &FitResults,
    plan: &PlotPlan,
    cancel: &CancellationToken,
) -> Result<(Vec<PathBuf>, Vec<SkippedScope>), AnalyticsError> {
    let matrix = &samples.matrix;
    let one = |scope: &str, rows: Range<usize>, fit: &LineFit, path: PathBuf| {
        let scatter = Scatter {
            scope,
            wind: matrix.wind(rows.clone()),
            temp: matrix.temp(rows),
            origin: matrix.origin(),
            fit,
            max_points: plan.max_points,
        };
        write_svg(&path, &scatter).map(|()| path)
    };
    let mut plots = Vec::new();
    let mut not_drawn = Vec::new();
    match results.fits.first() {
        Some(all) => plots.push(one(SCOPE_ALL, 0..matrix.len(), &all.fit, plan.main.clone())?),
        None => not_drawn.push(SkippedScope {
            scope: SCOPE_ALL.to_owned(),
            n: matrix.len(),
            reason: "scope all was not fitted".into(),
        }),
    }
    let wanted: Vec<String> = if plan.every_scope {
        results.fits.iter().skip(1).map(|f| f.scope.clone()).collect()
    } else {
        plan.scopes.iter().filter(|s| *s != SCOPE_ALL).cloned().collect()
    };
    for scope in wanted {
        if cancel.is_cancelled() {
            return Err(AnalyticsError::Interrupted);
        }
        let fitted = results.fits.iter().skip(1).position(|f| f.scope == scope);
        let Some(k) = fitted else {
            let n = samples
                .locations
                .iter()
                .find(|l| l.key == scope)
                .map_or(0, |l| l.rows.len());
            let reason = if n == 0 {
                "no observations for this location in the window".to_owned()
            } else {
                "this location was not fitted (see skipped)".to_owned()
            };
            tracing::warn!(scope, reason, "plot not drawn");
            not_drawn.push(SkippedScope { scope, n, reason });
            continue;
        };
        let rows = samples.locations[results.fitted_locations[k]].rows.clone();
        let path = scope_path(&plan.main, &scope);
        plots.push(one(&scope, rows, &results.fits[k + 1].fit, path)?);
    }
    Ok((plots, not_drawn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_files_sit_next_to_the_main_plot() {
        let p = scope_path(
            Path::new("/tmp/out/fit.svg"),
            "london|city of london|united kingdom",
        );
        assert_eq!(
            p,
            Path::new("/tmp/out/fit-london-city-of-london-united-kingdom.svg")
        );
        assert_eq!(scope_path(Path::new("x.svg"), "|||"), Path::new("x-scope.svg"));
    }

    #[test]
    fn stride_caps_points() {
        assert_eq!(stride(10, 20_000), 1);
        assert_eq!(stride(1_000_000, 20_000), 50);
        assert_eq!(1_000_001usize.div_ceil(stride(1_000_001, 20_000)), 19_608);
        assert_eq!(stride(5, 0), 5);
    }
}
