//! The analytics job's read: the window's observations, streamed from PostgreSQL one location at
//! a time into one design matrix, each location handed to the fitter thread as it arrives.

use std::ops::Range;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use super::AnalyticsError;
use super::fit::DesignMatrix;
use super::pg_array::append_float8_array;

/// The rows of one location inside the design matrix.
#[derive(Debug, Clone)]
pub(crate) struct LocationRows {
    /// `observations.location_key`.
    pub(crate) key: String,
    /// Its rows in the design matrix.
    pub(crate) rows: Range<usize>,
}

/// Everything a run reads: the design matrix, rows grouped by location.
#[derive(Debug)]
pub(crate) struct Samples {
    /// Wind and temperature of every observation in the window, each once.
    pub(crate) matrix: DesignMatrix,
    /// Location groups in key order, covering the matrix without gaps.
    pub(crate) locations: Vec<LocationRows>,
    /// Rows left out for a NaN or infinite value.
    pub(crate) non_finite: u64,
}

/// One location's columns on their way to the fitter thread: a copy of its rows of the design
/// matrix, which the fitter centres in place and hands to smartcore (so a location costs one
/// transient copy, whichever thread fits it).
pub(crate) struct LocationColumns {
    /// Index into [`Samples::locations`].
    pub(crate) index: usize,
    /// km/h.
    pub(crate) wind: Vec<f64>,
    /// °C.
    pub(crate) temp: Vec<f64>,
}

/// One row per location, in key order, each carrying that location's two columns as arrays, and
/// the window's total row count on every row (so the client sizes its buffers once). [`read_sql`]
/// adds the window's bounds, only those that are set, then [`READ_GROUP`].
///
/// Why arrays rather than one row per observation: on 10⁶ observations interleaved in time (as the
/// persist job writes them), `ORDER BY location_key` takes PostgreSQL 2.1 s alone (an index scan
/// hopping over the whole table) or 0.7 s as an in-memory sort, against 0.19 s for this hash
/// aggregate; and the stream carries one message per location instead of one per row. End to end:
/// 2.5 s for the ordered row stream against 0.34 s for this read (`weatherflow bench analytics`
/// prints both). `array_agg` feeds every aggregate of a group the same rows in the same order, so
/// the two arrays stay aligned.
///
/// Why no filter for NaN and ±Infinity (which float8 admits) here: four float comparisons per row
/// cost the server 55 ms per 10⁶ rows, a quarter of the query; the client drops such rows in one
/// pass over the values it has just decoded. Unset bounds are left out rather than `COALESCE`d to
/// ±infinity for the same reason.
pub(crate) const READ_SELECT: &str = "\
SELECT location_key,
       (sum(count(*)) OVER ())::int8 AS total_rows,
       array_agg(wind_kph)           AS wind_kph,
       array_agg(temp_c)             AS temp_c
FROM observations";

/// The end of the read query.
pub(crate) const READ_GROUP: &str = "
GROUP BY location_key
ORDER BY location_key";

/// The read query for a window with these bounds set; parameters are numbered in order (`since`
/// first).
pub(crate) fn read_sql(since: bool, until: bool) -> String {
    let mut sql = READ_SELECT.to_owned();
    let mut param = 0;
    for (set, cond) in [(since, "observed_at >="), (until, "observed_at <")] {
        if set {
            param += 1;
            let joiner = if param == 1 { "\nWHERE" } else { "\n  AND" };
            sql.push_str(&format!("{joiner} {cond} ${param}"));
        }
    }
    sql.push_str(READ_GROUP);
    sql
}

/// Streams the window's observations into a design matrix, one location at a time, and hands every
/// location with at least `min_samples` rows to the fitter as it arrives.
pub(crate) async fn read(
    pool: &sqlx::PgPool,
    (since, until): (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    min_samples: u64,
    fitter: tokio::sync::mpsc::Sender<LocationColumns>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Samples> {
    // Built from constant fragments only: no value is spliced into the text.
    let sql = read_sql(since.is_some(), until.is_some());
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for bound in [since, until].into_iter().flatten() {
        query = query.bind(bound);
    }
    let mut stream = query.fetch(pool);
    let (mut wind, mut temp) = (Vec::<f64>::new(), Vec::<f64>::new());
    let mut locations = Vec::new();
    let mut non_finite = 0u64;
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
        let start = wind.len();
        let nw = append_float8_array(array_bytes(&row, "wind_kph")?, &mut wind)
            .with_context(|| format!("location {key}: wind_kph"))?;
        let nt = append_float8_array(array_bytes(&row, "temp_c")?, &mut temp)
            .with_context(|| format!("location {key}: temp_c"))?;
        anyhow::ensure!(nw == nt, "location {key}: {nw} wind values but {nt} temperatures");
        non_finite += drop_non_finite(&mut wind, &mut temp, start);
        let index = locations.len();
        let rows = start..wind.len();
        locations.push(LocationRows {
            key,
            rows: rows.clone(),
        });
        if (rows.len() as u64) < min_samples {
            continue;
        }
        // The fitter's own copy of this location, which becomes its smartcore input.
        let columns = LocationColumns {
            index,
            wind: wind[rows.clone()].to_vec(),
            temp: temp[rows].to_vec(),
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Err(AnalyticsError::Interrupted.into()),
            sent = fitter.send(columns) => sent.map_err(|_| anyhow::anyhow!("the location fitter stopped"))?,
        }
    }
    let matrix = DesignMatrix::new(wind, temp)?;
    Ok(Samples {
        matrix,
        locations,
        non_finite,
    })
}

/// The raw bytes of an array column, which sqlx receives in PostgreSQL's binary format.
fn array_bytes<'r>(row: &'r sqlx::postgres::PgRow, column: &str) -> anyhow::Result<&'r [u8]> {
    let value = row.try_get_raw(column)?;
    anyhow::ensure!(
        value.format() == sqlx::postgres::PgValueFormat::Binary,
        "{column}: expected the binary wire format"
    );
    value.as_bytes().map_err(|e| anyhow::anyhow!("{column}: {e}"))
}

/// Removes, from row `from` on, the rows where either value is NaN or infinite (compacting in
/// place); returns how many. A least-squares fit has no use for them, and one would turn every
/// figure of its scope into NaN.
fn drop_non_finite(wind: &mut Vec<f64>, temp: &mut Vec<f64>, from: usize) -> u64 {
    let mut kept = from;
    for i in from..wind.len() {
        let (w, t) = (wind[i], temp[i]);
        if w.is_finite() && t.is_finite() {
            wind[kept] = w;
            temp[kept] = t;
            kept += 1;
        }
    }
    let dropped = wind.len() - kept;
    wind.truncate(kept);
    temp.truncate(kept);
    dropped as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_sql_numbers_only_the_bounds_that_are_set() {
        assert!(!read_sql(false, false).contains("WHERE"));
        assert!(read_sql(true, false).contains("WHERE observed_at >= $1\nGROUP BY"));
        assert!(read_sql(false, true).contains("WHERE observed_at < $1\nGROUP BY"));
        assert!(read_sql(true, true).contains("WHERE observed_at >= $1\n  AND observed_at < $2\nGROUP BY"));
    }

    #[test]
    fn non_finite_pairs_are_dropped_together_after_the_given_row() {
        let mut w = vec![f64::NAN, 1.0, f64::NAN, 3.0, 4.0, 5.0];
        let mut t = vec![0.0, 10.0, 20.0, f64::NEG_INFINITY, 40.0, 50.0];
        assert_eq!(drop_non_finite(&mut w, &mut t, 1), 2);
        assert_eq!(&w[1..], [1.0, 4.0, 5.0]);
        assert_eq!(&t[1..], [10.0, 40.0, 50.0]);
        let (mut w, mut t) = (vec![1.0], vec![2.0]);
        assert_eq!(drop_non_finite(&mut w, &mut t, 0), 0);
    }
}
