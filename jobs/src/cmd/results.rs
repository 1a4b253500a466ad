//! `weatherflow results`: the latest regression coefficients, as a table.
//!
//! The reads (published fits only, the latest of each scope, one scope's history) and the SQL the
//! manual shows live in [`crate::jobs::analytics::results`]; this command only formats.

use chrono::{DateTime, Utc};
use entity::regression_results;

use crate::config::Config;
use crate::db;
use crate::jobs::analytics::results::{history, latest_per_scope, source_label};

/// Prints the latest results as an aligned table: the latest fit of each scope, or with `scope`
/// that scope's last `last` fits, newest first.
pub async fn run(config: &Config, scope: Option<&str>, last: u64) -> anyhow::Result<()> {
    let conn = db::connect(&config.database).await?;
    let rows = match scope {
        Some(scope) => history(&conn, scope, last).await?,
        None => latest_per_scope(&conn, last).await?,
    };
    if rows.is_empty() {
        match scope {
            Some(scope) => println!("no results for scope '{scope}'"),
            None => println!("no results yet; run `weatherflow run analytics`"),
        }
        return Ok(());
    }
    print!("{}", render(&rows));
    Ok(())
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
    super::table::render(
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
