//! `weatherflow results`: the latest regression coefficients, as a table.
//!
//! The reads (published fits only, the latest of each scope, one scope's history) and the SQL the
//! manual shows live in [`crate::jobs::analytics::results`]; this command only formats.

use chrono::{DateTime, Utc};
use entity::regression_results;
use serde::Serialize;

use super::table::{self, Format};
use crate::config::Config;
use crate::db;
use crate::jobs::analytics::results::{history, latest_per_scope, source_label};

/// One fit as `--format json|csv` prints it.
#[derive(Debug, Serialize)]
pub struct ResultRecord {
    /// `all` or a location key.
    scope: String,
    /// When the fit ran (RFC 3339, UTC).
    fitted_at: DateTime<Utc>,
    /// The observations' source it used: `weatherapi`, `simulated`, or `any` (before sources were told apart).
    source: String,
    /// Samples used.
    n_samples: i64,
    /// °C at zero wind.
    intercept: f64,
    /// °C per km/h.
    slope: f64,
    /// Standard error of the slope, when defined.
    slope_stderr: Option<f64>,
    /// Coefficient of determination.
    r_squared: f64,
    /// Root mean squared error, °C.
    rmse: f64,
    /// The window's start; null when open.
    window_start: Option<DateTime<Utc>>,
    /// The window's end; null when open.
    window_end: Option<DateTime<Utc>>,
    /// The run that wrote it.
    run_id: i64,
}

/// The field names of [`ResultRecord`], the CSV header.
const COLUMNS: [&str; 12] = [
    "scope",
    "fitted_at",
    "source",
    "n_samples",
    "intercept",
    "slope",
    "slope_stderr",
    "r_squared",
    "rmse",
    "window_start",
    "window_end",
    "run_id",
];

/// Prints the latest results: the latest fit of each scope, or with `scope` that scope's last
/// `last` fits, newest first.
pub async fn run(config: &Config, scope: Option<&str>, last: u64, format: Format) -> anyhow::Result<()> {
    let conn = db::connect(&config.database).await?;
    let rows = match scope {
        Some(scope) => history(&conn, scope, last).await?,
        None => latest_per_scope(&conn, last).await?,
    };
    if rows.is_empty() && format == Format::Table {
        match scope {
            Some(scope) => println!("no results for scope '{scope}'"),
            None => println!("no results yet; run `weatherflow run analytics`"),
        }
        return Ok(());
    }
    let records: Vec<ResultRecord> = rows
        .iter()
        .map(|r| ResultRecord {
            scope: r.scope.clone(),
            fitted_at: r.fitted_at,
            source: source_label(r.source.as_deref()).to_owned(),
            n_samples: r.n_samples,
            intercept: r.intercept,
            slope: r.slope,
            slope_stderr: r.slope_stderr,
            r_squared: r.r_squared,
            rmse: r.rmse,
            window_start: r.window_start,
            window_end: r.window_end,
            run_id: r.job_run_id,
        })
        .collect();
    table::print_records(format, "results", &COLUMNS, &records, || render(&rows))
}

/// The table `weatherflow results` prints.
pub fn render(rows: &[regression_results::Model]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.scope.clone(),
                r.fitted_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                source_label(r.source.as_deref()).to_owned(),
                r.n_samples.to_string(),
                format!("{:.4}", r.intercept),
                format!("{:.5}", r.slope),
                r.slope_stderr.map_or_else(|| "-".into(), |s| format!("{s:.5}")),
                format!("{:.4}", r.r_squared),
                format!("{:.3}", r.rmse),
                window(r.window_start, r.window_end),
                r.job_run_id.to_string(),
            ]
        })
        .collect();
    table::render(
        &[
            "scope",
            "fitted (UTC)",
            "source",
            "n",
            "intercept °C",
            "slope °C/(km/h)",
            "stderr",
            "r²",
            "rmse °C",
            "window",
            "run",
        ],
        &cells,
    )
}

fn window(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> String {
    let t = |d: Option<DateTime<Utc>>| {
        d.map_or_else(|| "…".to_owned(), |d| d.format("%Y-%m-%d %H:%M").to_string())
    };
    match (start, end) {
        (None, None) => "all rows".into(),
        _ => format!("{} – {}", t(start), t(end)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(scope: &str, stderr: Option<f64>) -> regression_results::Model {
        regression_results::Model {
            id: 1,
            job_run_id: 7,
            fitted_at: "2026-11-25T02:00:00Z".parse().unwrap(),
            scope: scope.into(),
            target: "temp_c".into(),
            feature: "wind_kph".into(),
            window_start: None,
            window_end: None,
            n_samples: 1234,
            intercept: 21.5,
            slope: -0.25,
            r_squared: 0.61,
            rmse: 1.73,
            slope_stderr: stderr,
            source: Some("weatherapi".into()),
        }
    }

    #[test]
    fn table_lines_up_and_shows_missing_stderr() {
        let t = render(&[model("all", Some(0.001)), model("paris||france", None)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[2].starts_with("all            2026-11-25 02:00:00  weatherapi  1234"),
            "{t}"
        );
        assert!(lines[3].contains("-0.25000  -        0.6100"), "{t}");
        // Every row is as wide as the header's columns: the figures line up.
        let chars = |l: &str| l.chars().collect::<Vec<_>>();
        let (head, row) = (chars(lines[0]), chars(lines[2]));
        let col = (0..head.len())
            .find(|&i| head[i..].starts_with(&['s', 'l', 'o']))
            .unwrap();
        assert_eq!(row[col..col + 15].iter().collect::<String>(), "       -0.25000");
        assert!(lines[2].contains("all rows"), "{t}");
        // A fit from before sources were told apart used every row.
        let old = regression_results::Model {
            source: None,
            ..model("all", None)
        };
        assert!(render(&[old]).lines().nth(2).unwrap().contains("  any  "), "{t}");
    }

    #[test]
    fn window_shows_open_ends() {
        let s: DateTime<Utc> = "2026-11-01T00:00:00Z".parse().unwrap();
        assert_eq!(window(Some(s), None), "2026-11-01 00:00 – …");
    }
}
