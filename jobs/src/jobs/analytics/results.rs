//! The published fits: every read of `regression_results`, for `weatherflow results`, the web API,
//! the dashboard and `/metrics` alike; the faces only format what these return.
//!
//! A fit is published once its run `succeeded` ([`PUBLISHED`]): a run that timed out, was cancelled
//! or failed may have committed its rows before it was stopped, and a run still going has not been
//! judged yet. The views (`latest_regression`) apply the same rule.
//!
//! The SQL a user runs on `regression_results` (docs/analytics.md) lives here as constants built
//! from the same two pieces as the typed reads (the predicate and the latest fit of each scope), so
//! the queries the manual shows are the ones the tests run, and the rule is written once.
//!
//! Every fit names the observations' source it used (`weatherapi` or `simulated`); a fit made before
//! sources were told apart has none and shows `any`: it used every row.

use entity::regression_results;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement,
};

use super::SCOPE_ALL;

/// The published-fit predicate as a literal, so the SQL constants below can splice it with
/// `concat!`.
macro_rules! published {
    () => {
        "job_run_id IN (SELECT id FROM job_runs WHERE status = 'succeeded')"
    };
}

/// The latest published fit of every scope, every column, one row per scope (in scope order).
/// Served by the `(scope, fitted_at DESC)` index. Indented to sit inside the manual's queries.
macro_rules! latest_fits {
    () => {
        concat!(
            "SELECT DISTINCT ON (scope) *
      FROM regression_results
      WHERE ",
            published!(),
            "
      ORDER BY scope, fitted_at DESC, id DESC"
        )
    };
}

/// The condition every reader of `regression_results` applies: the row's run succeeded.
pub const PUBLISHED: &str = published!();

/// The latest published fit of every scope, every column (what [`latest_per_scope`] reads).
pub const LATEST_FITS_SQL: &str = latest_fits!();

/// The latest fit of every scope, `all` first, then locations by key (what `weatherflow results`
/// prints).
pub const LATEST_PER_SCOPE_SQL: &str = concat!(
    "\
SELECT scope,
       fitted_at,
       coalesce(source, 'any')         AS source,
       n_samples,
       round(intercept::numeric, 4)    AS intercept,
       round(slope::numeric, 5)        AS slope,
       round(slope_stderr::numeric, 5) AS stderr,
       round(r_squared::numeric, 4)    AS r_squared,
       round(rmse::numeric, 3)         AS rmse
FROM (",
    latest_fits!(),
    ") AS latest
ORDER BY scope <> 'all', scope"
);

/// How the slope of scope `all` moved from run to run (replace `'all'` by a location key for one
/// location).
pub const SLOPE_HISTORY_SQL: &str = concat!(
    "\
SELECT fitted_at,
       coalesce(source, 'any')                              AS source,
       n_samples,
       round(slope::numeric, 5)                             AS slope,
       round(slope_stderr::numeric, 5)                      AS stderr,
       round((slope - lag(slope) OVER w)::numeric, 5)       AS change,
       round(r_squared::numeric, 4)                         AS r_squared
FROM regression_results
WHERE scope = 'all'
  AND ",
    published!(),
    "
WINDOW w AS (ORDER BY fitted_at, id)
ORDER BY fitted_at, id"
);

/// The three best- and three worst-fitting locations by R², among each location's latest fit.
pub const BEST_WORST_FIT_SQL: &str = concat!(
    "\
WITH latest AS (",
    latest_fits!(),
    "
), ranked AS (
    SELECT *,
           rank() OVER (ORDER BY r_squared DESC) AS from_top,
           rank() OVER (ORDER BY r_squared ASC)  AS from_bottom
    FROM latest
    WHERE scope <> 'all'
)
SELECT CASE WHEN from_top <= 3 THEN 'best' ELSE 'worst' END AS fit,
       scope,
       round(r_squared::numeric, 4) AS r_squared,
       round(slope::numeric, 5)     AS slope,
       n_samples
FROM ranked
WHERE from_top <= 3 OR from_bottom <= 3
ORDER BY r_squared DESC, scope"
);

/// The latest published fit of each scope (`all` first, then locations by key), at most `last`
/// scopes.
pub async fn latest_per_scope(
    db: &DatabaseConnection,
    last: u64,
) -> Result<Vec<regression_results::Model>, DbErr> {
    let mut rows = regression_results::Entity::find()
        .from_raw_sql(Statement::from_string(DbBackend::Postgres, LATEST_FITS_SQL))
        .all(db)
        .await?;
    // Stable: the locations keep the query's key order behind `all`.
    rows.sort_by_key(|r| r.scope != SCOPE_ALL);
    rows.truncate(usize::try_from(last).unwrap_or(usize::MAX));
    Ok(rows)
}

/// The last `last` published fits of `scope`, newest first.
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

/// The source a fit used, as shown: `weatherapi`, `simulated`, or `any` for a fit made before
/// sources were told apart (it used every row).
pub fn source_label(source: Option<&str>) -> &str {
    source.unwrap_or("any")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_user_query_shows_only_published_fits() {
        for sql in [
            LATEST_FITS_SQL,
            LATEST_PER_SCOPE_SQL,
            SLOPE_HISTORY_SQL,
            BEST_WORST_FIT_SQL,
        ] {
            assert!(sql.contains(PUBLISHED), "{sql}");
        }
    }

    /// The manual's query blocks are these constants, character for character: a query changed in
    /// one place and not the other fails here.
    #[test]
    fn the_manual_shows_these_queries() {
        let manual = include_str!("../../../../docs/analytics.md");
        for (name, sql) in [
            ("latest-per-scope", LATEST_PER_SCOPE_SQL),
            ("slope-history", SLOPE_HISTORY_SQL),
            ("best-worst-fit", BEST_WORST_FIT_SQL),
        ] {
            let marker = format!("<!-- query: {name} -->\n```sql\n");
            let (_, after) = manual
                .split_once(&marker)
                .unwrap_or_else(|| panic!("docs/analytics.md has no {marker}"));
            let (shown, _) = after.split_once("\n```").unwrap();
            assert_eq!(shown, format!("{sql};"), "docs/analytics.md, query {name}");
        }
    }

    #[test]
    fn a_fit_without_a_source_used_every_row() {
        assert_eq!(source_label(None), "any");
        assert_eq!(source_label(Some("simulated")), "simulated");
    }
}
