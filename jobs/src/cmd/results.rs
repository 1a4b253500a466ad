//! `weatherflow results`: the latest regression coefficients.
//!
//! The SQL a user runs on `regression_results` lives here as constants, so the queries the manual
//! shows are the ones the tests run.
//!
//! Only the results of runs that `succeeded` are shown ([`PUBLISHED`]): a run that timed out, was
//! cancelled or failed may have committed its rows before it was stopped, and a run still going has
//! not been judged yet. The views (`latest_regression`) apply the same rule.
//!
//! Every fit names the observations' source it used (`weatherapi` or `simulated`); a fit made before
//! sources were told apart has none and shows `any`: it used every row.

use chrono::{DateTime, Utc};
use entity::regression_results;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::config::Config;
use crate::db;
use crate::jobs::analytics::SCOPE_ALL;

/// The condition every reader of `regression_results` applies: the row's run succeeded.
pub const PUBLISHED: &str = "job_run_id IN (SELECT id FROM job_runs WHERE status = 'succeeded')";

/// The latest fit of every scope, `all` first, then locations by key (what `weatherflow results`
/// prints). Served by the `(scope, fitted_at DESC)` index.
pub const LATEST_PER_SCOPE_SQL: &str = "\
SELECT scope,
       fitted_at,
       coalesce(source, 'any')         AS source,
       n_samples,
       round(intercept::numeric, 4)    AS intercept,
       round(slope::numeric, 5)        AS slope,
       round(slope_stderr::numeric, 5) AS stderr,
       round(r_squared::numeric, 4)    AS r_squared,
       round(rmse::numeric, 3)         AS rmse
FROM (SELECT DISTINCT ON (scope) *
      FROM regression_results
      WHERE job_run_id IN (SELECT id FROM job_runs WHERE status = 'succeeded')
      ORDER BY scope, fitted_at DESC, id DESC) AS latest
ORDER BY scope <> 'all', scope";

/// How the slope of scope `all` moved from run to run (replace `'all'` by a location key for one
/// location).
pub const SLOPE_HISTORY_SQL: &str = "\
SELECT fitted_at,
       coalesce(source, 'any')                              AS source,
       n_samples,
       round(slope::numeric, 5)                             AS slope,
       round(slope_stderr::numeric, 5)                      AS stderr,
       round((slope - lag(slope) OVER w)::numeric, 5)       AS change,
       round(r_squared::numeric, 4)                         AS r_squared
FROM regression_results
WHERE scope = 'all'
  AND job_run_id IN (SELECT id FROM job_runs WHERE status = 'succeeded')
WINDOW w AS (ORDER BY fitted_at, id)
ORDER BY fitted_at, id";

/// The three best- and three worst-fitting locations by R², among each location's latest fit.
pub const BEST_WORST_FIT_SQL: &str = "\
WITH latest AS (
    SELECT DISTINCT ON (scope) scope, r_squared, slope, n_samples
    FROM regression_results
    WHERE scope <> 'all'
      AND job_run_id IN (SELECT id FROM job_runs WHERE status = 'succeeded')
    ORDER BY scope, fitted_at DESC, id DESC
), ranked AS (
    SELECT *,
           rank() OVER (ORDER BY r_squared DESC) AS from_top,
           rank() OVER (ORDER BY r_squared ASC)  AS from_bottom
    FROM latest
)
SELECT CASE WHEN from_top <= 3 THEN 'best' ELSE 'worst' END AS fit,
       scope,
       round(r_squared::numeric, 4) AS r_squared,
       round(slope::numeric, 5)     AS slope,
       n_samples
FROM ranked
WHERE from_top <= 3 OR from_bottom <= 3
ORDER BY r_squared DESC, scope";

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

/// The latest fit of each scope (`all` first) among succeeded runs, at most `last` scopes.
pub async fn latest_per_scope(
    db: &DatabaseConnection,
    last: u64,
) -> Result<Vec<regression_results::Model>, DbErr> {
    use regression_results::Column;
    // LATEST_PER_SCOPE_SQL, through the entity so the rows arrive typed.
    let mut rows = regression_results::Entity::find()
        .filter(Expr::cust(PUBLISHED))
        .distinct_on([Column::Scope])
        .order_by_asc(Column::Scope)
        .order_by_desc(Column::FittedAt)
        .order_by_desc(Column::Id)
        .all(db)
        .await?;
    rows.sort_by_key(|r| r.scope != SCOPE_ALL);
    rows.truncate(usize::try_from(last).unwrap_or(usize::MAX));
    Ok(rows)
}

/// The last `last` fits of `scope` among succeeded runs, newest first.
pub async fn history(
    db: &DatabaseConnection,
    scope: &str,
    last: u64,
) -> Result<Vec<regression_results::Model>, DbErr> {
    regression_results::Entity::find()
        .filter(Expr::cust(PUBLISHED))
        .filter(regression_results::Column::Scope.eq(scope))
        .order_by_desc(regression_results::Column::FittedAt)
        .order_by_desc(regression_results::Column::Id)
        .limit(last)
        .all(db)
        .await
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

/// The source a fit used, as shown: `weatherapi`, `simulated`, or `any` for a fit made before
/// sources were told apart (it used every row).
pub fn source_label(source: Option<&str>) -> &str {
    source.unwrap_or("any")
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
    fn every_user_query_shows_only_succeeded_runs() {
        for sql in [LATEST_PER_SCOPE_SQL, SLOPE_HISTORY_SQL, BEST_WORST_FIT_SQL] {
            assert!(sql.contains(PUBLISHED), "{sql}");
        }
    }

    #[test]
    fn window_shows_open_ends() {
        let s: DateTime<Utc> = "2026-11-01T00:00:00Z".parse().unwrap();
        assert_eq!(window(Some(s), None), "2026-11-01 00:00 – …");
    }
}
