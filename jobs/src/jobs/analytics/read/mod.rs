//! The analytics job's read: the window's observations, streamed from PostgreSQL one location at
//! a time into one design matrix, each location handed to the fitter thread as it arrives.

use std::ops::Range;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::Row;
use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use tokio_util::sync::CancellationToken;

use super::fit::DesignMatrix;
use super::pg_array::append_float8_array;
use crate::envelope::Source;

mod error;

pub(crate) use self::error::ReadError;

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
/// the part's total row count on every row (so the client sizes its buffers once). [`read_sql`]
/// adds the part's bounds, only those that are set, then [`READ_GROUP`].
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

/// The end of the read query. Byte order (`COLLATE "C"`) whatever the database's collation: the
/// parts are merged on the client by comparing keys as Rust compares strings.
pub(crate) const READ_GROUP: &str = "
GROUP BY location_key
ORDER BY location_key COLLATE \"C\"";

/// `work_mem` of a part's query: its final `ORDER BY` sorts the finished arrays (8 MB per 10⁶
/// values), which at the default 4 MB went to disk, 5–15 % of the query's time.
const READ_WORK_MEM: &str = "SET LOCAL work_mem = '64MB'";

/// The window's first and last observation times of one source, from the `(source, observed_at)`
/// index of each partition.
const SPAN_SELECT: &str = "SELECT min(observed_at), max(observed_at) FROM observations";

/// A window's bounds: since (inclusive), until (exclusive); unset is unbounded.
pub(crate) type Window = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// `base` followed by a `WHERE` on the bounds that are set and on the source, if any; parameters
/// are numbered in order (`since` first). The source is a literal from [`Source::as_str`], a
/// constant, never input: the planner then knows which source it filters on (the statistics of
/// `source` decide between the `(source, observed_at)` index and a scan of the window's partitions).
pub(crate) fn filtered(base: &str, (since, until): Window, source: Option<Source>) -> String {
    let mut sql = base.to_owned();
    let mut param = 0;
    for (set, cond) in [
        (since.is_some(), "observed_at >="),
        (until.is_some(), "observed_at <"),
    ] {
        if set {
            param += 1;
            let joiner = if param == 1 { "\nWHERE" } else { "\n  AND" };
            sql.push_str(&format!("{joiner} {cond} ${param}"));
        }
    }
    if let Some(source) = source {
        let joiner = if param == 0 { "\nWHERE" } else { "\n  AND" };
        sql.push_str(&format!("{joiner} source = '{}'", source.as_str()));
    }
    sql
}

/// The read query for a window with these bounds set, on one source's rows, or on every row when
/// `source` is `None`.
pub(crate) fn read_sql(window: Window, source: Option<Source>) -> String {
    filtered(READ_SELECT, window, source) + READ_GROUP
}

/// Whether a window holds a row of `source`: one probe of the `(source, observed_at)` index per
/// partition of the window.
pub(crate) fn any_of_sql(window: Window, source: Source) -> String {
    format!(
        "SELECT EXISTS ({})",
        filtered("SELECT 1 FROM observations", window, Some(source))
    )
}

/// The source other than `source`.
fn other(source: Source) -> Source {
    match source {
        Source::Weatherapi => Source::Simulated,
        Source::Simulated => Source::Weatherapi,
    }
}

/// A query on `sql` with the window's set bounds bound in order.
fn bound(sql: String, (since, until): Window) -> Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    // Built from constant fragments only: no value is spliced into the text.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in [since, until].into_iter().flatten() {
        query = query.bind(b);
    }
    query
}

/// Splits `window` into at most `parts` consecutive windows of equal time span between the first
/// and last observation in it (`span`), covering the window exactly: each row falls into one part.
/// Equal spans, not equal row counts: observations arrive on a schedule, so rows are spread
/// evenly enough in time, and finding equal counts would cost a pass over the rows.
pub(crate) fn split_window(
    window: Window,
    span: (DateTime<Utc>, DateTime<Utc>),
    parts: usize,
) -> Vec<Window> {
    let (first, last) = span;
    let micros = (last - first).num_microseconds().unwrap_or(i64::MAX);
    let parts = parts.clamp(1, usize::try_from(micros).unwrap_or(usize::MAX).saturating_add(1));
    let mut out = Vec::with_capacity(parts);
    let (mut since, mut previous) = (window.0, 0);
    for i in 1..parts {
        let offset = (micros as i128 * i as i128 / parts as i128) as i64;
        // Strictly increasing and after `first`, so no part is empty by construction.
        if offset <= previous {
            continue;
        }
        previous = offset;
        let cut = first + chrono::Duration::microseconds(offset);
        out.push((since, Some(cut)));
        since = Some(cut);
    }
    out.push((since, window.1));
    out
}

/// One location's rows from one part of the window.
struct PartRows {
    key: String,
    /// The part's total rows (the same on each of its locations).
    total: usize,
    wind: Vec<f64>,
    temp: Vec<f64>,
    non_finite: u64,
}

/// Locations a part may have decoded ahead of the merge.
const PART_QUEUE: usize = 2;

/// Streams the window's observations into a design matrix, one location at a time, and hands every
/// location with at least `min_samples` rows to the fitter as it arrives. Only `source`'s rows are
/// read.
///
/// With `connections` > 1 the window is split in time ([`split_window`]) and the parts are read at
/// once, each on its own connection, then merged by location key (each part comes in key order), a
/// location being complete once every part has passed it.
pub(crate) async fn read(
    pool: &sqlx::PgPool,
    window: Window,
    source: Source,
    connections: usize,
    min_samples: u64,
    fitter: tokio::sync::mpsc::Sender<LocationColumns>,
    shutdown: &CancellationToken,
) -> Result<Samples, ReadError> {
    let mut conns = interruptible(shutdown, connect(pool, connections)).await??;
    let parts = if conns.len() > 1 {
        let mut span = sqlx::query_as::<_, (Option<DateTime<Utc>>, Option<DateTime<Utc>>)>(
            sqlx::AssertSqlSafe(filtered(SPAN_SELECT, window, Some(source))),
        );
        for b in [window.0, window.1].into_iter().flatten() {
            span = span.bind(b);
        }
        match interruptible(shutdown, span.fetch_one(&mut *conns[0])).await?? {
            (Some(first), Some(last)) => split_window(window, (first, last), conns.len()),
            _ => vec![window],
        }
    } else {
        vec![window]
    };
    // Aborted when dropped: an early return stops the other parts too.
    let mut tasks = tokio::task::JoinSet::new();
    let mut queues = Vec::with_capacity(parts.len());
    for (part, conn) in parts.into_iter().zip(conns) {
        let (tx, rx) = tokio::sync::mpsc::channel(PART_QUEUE);
        tasks.spawn(read_part(conn, part, source, tx));
        queues.push(rx);
    }
    let mut heads = Vec::with_capacity(queues.len());
    for queue in &mut queues {
        heads.push(next(queue, shutdown).await?);
    }
    let total: usize = heads.iter().flatten().map(|h| h.total).sum();
    let (mut wind, mut temp) = (Vec::with_capacity(total), Vec::with_capacity(total));
    let mut locations = Vec::new();
    let mut non_finite = 0u64;
    while let Some(key) = heads.iter().flatten().map(|h| &h.key).min().cloned() {
        let start = wind.len();
        for (head, queue) in heads.iter_mut().zip(&mut queues) {
            if head.as_ref().is_some_and(|h| h.key == key) {
                let rows = head.take().expect("checked above");
                wind.extend_from_slice(&rows.wind);
                temp.extend_from_slice(&rows.temp);
                non_finite += rows.non_finite;
                *head = next(queue, shutdown).await?;
            }
        }
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
        interruptible(shutdown, fitter.send(columns))
            .await?
            .map_err(|_| ReadError::FitterStopped)?;
    }
    // A part that panicked closed its queue early, which the merge took for its end: the rows it
    // did not send would be missing from the fit.
    while let Some(part) = tasks.join_next().await {
        part.map_err(ReadError::PartPanicked)?;
    }
    let matrix = DesignMatrix::new(wind, temp).map_err(ReadError::Matrix)?;
    Ok(Samples {
        matrix,
        locations,
        non_finite,
    })
}

/// `fut`, unless the shutdown token fires first.
async fn interruptible<T>(
    shutdown: &CancellationToken,
    fut: impl Future<Output = T>,
) -> Result<T, ReadError> {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Err(ReadError::Interrupted),
        out = fut => Ok(out),
    }
}

/// A part's next location; `None` once it has sent its last.
async fn next(
    queue: &mut tokio::sync::mpsc::Receiver<Result<PartRows, ReadError>>,
    shutdown: &CancellationToken,
) -> Result<Option<PartRows>, ReadError> {
    interruptible(shutdown, queue.recv()).await?.transpose()
}

/// Reads one part of the window, decoding each location's arrays as they arrive; a failure is sent
/// as the part's last item. Stops when the merge has gone.
///
/// Only `source`'s rows are read. The filter costs the server a text comparison per row, 9 % of the
/// read query when every row matches (379 → 413 ms per 10⁶ rows, `docs/analytics.md`), so it is left
/// out when the part's window holds no row of the other source, which is the usual case. The probe
/// and the read run in one `REPEATABLE READ` snapshot: a row of the other source stored between
/// them is not seen by the read either, so no fit can mix sources.
async fn read_part(
    mut conn: PoolConnection<sqlx::Postgres>,
    window: Window,
    source: Source,
    out: tokio::sync::mpsc::Sender<Result<PartRows, ReadError>>,
) {
    let mut tx = match begin_read(&mut conn).await {
        Ok(tx) => tx,
        Err(e) => {
            let _ = out.send(Err(e.into())).await;
            return;
        }
    };
    let mixed = match bound(any_of_sql(window, other(source)), window)
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| row.try_get::<bool, _>(0))
    {
        Ok(mixed) => mixed,
        Err(e) => {
            let _ = out.send(Err(e.into())).await;
            return;
        }
    };
    let only = mixed.then_some(source);
    let mut stream = bound(read_sql(window, only), window).fetch(&mut *tx);
    loop {
        let item = match stream.try_next().await {
            Ok(None) => return,
            Ok(Some(row)) => decode(&row),
            Err(e) => Err(e.into()),
        };
        let failed = item.is_err();
        if out.send(item).await.is_err() || failed {
            return;
        }
    }
}

/// A read-only transaction on one snapshot (its source probe and its read see the same rows) whose
/// sorts may hold [`READ_WORK_MEM`]. It ends with the part (a rollback, as nothing was written).
async fn begin_read(
    conn: &mut PoolConnection<sqlx::Postgres>,
) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, sqlx::Error> {
    let mut tx =
        sqlx::Connection::begin_with(&mut **conn, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?;
    sqlx::query(READ_WORK_MEM).execute(&mut *tx).await?;
    Ok(tx)
}

/// How long the read waits for each connection after its first: a pool busy with other jobs reads
/// on fewer connections rather than wait for them.
const EXTRA_CONNECTION_WAIT: Duration = Duration::from_millis(500);

/// Up to `wanted` connections for the parts, all held before any part starts: a part that waited
/// for a connection held by another part, which waits for the merge, which waits for the first
/// part, would never finish. The first is waited for as any query waits; each further one only
/// for [`EXTRA_CONNECTION_WAIT`], and never more than the pool's size.
async fn connect(
    pool: &sqlx::PgPool,
    wanted: usize,
) -> Result<Vec<PoolConnection<sqlx::Postgres>>, sqlx::Error> {
    let wanted = wanted.clamp(1, pool.options().get_max_connections() as usize);
    let mut conns = Vec::with_capacity(wanted);
    conns.push(pool.acquire().await?);
    while conns.len() < wanted {
        match tokio::time::timeout(EXTRA_CONNECTION_WAIT, pool.acquire()).await {
            Ok(Ok(conn)) => conns.push(conn),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, parts = conns.len(), "reading on fewer connections");
                break;
            }
            Err(_) => {
                tracing::debug!(
                    parts = conns.len(),
                    "the pool is busy: reading on fewer connections"
                );
                break;
            }
        }
    }
    Ok(conns)
}

/// One result row of [`READ_SELECT`]: a location's finite rows.
fn decode(row: &sqlx::postgres::PgRow) -> Result<PartRows, ReadError> {
    let total: i64 = row.try_get("total_rows")?;
    let total =
        usize::try_from(total).map_err(|_| ReadError::Malformed(format!("negative row count {total}")))?;
    let key: String = row.try_get("location_key")?;
    let (mut wind, mut temp) = (Vec::new(), Vec::new());
    let malformed =
        |column: &str, e: anyhow::Error| ReadError::Malformed(format!("location {key}: {column}: {e:#}"));
    let nw = append_float8_array(array_bytes(row, "wind_kph")?, &mut wind)
        .map_err(|e| malformed("wind_kph", e))?;
    let nt =
        append_float8_array(array_bytes(row, "temp_c")?, &mut temp).map_err(|e| malformed("temp_c", e))?;
    if nw != nt {
        return Err(ReadError::Malformed(format!(
            "location {key}: {nw} wind values but {nt} temperatures"
        )));
    }
    let non_finite = drop_non_finite(&mut wind, &mut temp, 0);
    Ok(PartRows {
        key,
        total,
        wind,
        temp,
        non_finite,
    })
}

/// The raw bytes of an array column, which sqlx receives in PostgreSQL's binary format.
fn array_bytes<'r>(row: &'r sqlx::postgres::PgRow, column: &str) -> Result<&'r [u8], ReadError> {
    let value = row.try_get_raw(column)?;
    if value.format() != sqlx::postgres::PgValueFormat::Binary {
        return Err(ReadError::Malformed(format!(
            "{column}: expected the binary wire format"
        )));
    }
    value
        .as_bytes()
        .map_err(|e| ReadError::Malformed(format!("{column}: {e}")))
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
    fn read_sql_numbers_only_the_bounds_that_are_set_and_filters_the_source() {
        let t = Some(Utc::now());
        let (api, sim) = (Some(Source::Weatherapi), Some(Source::Simulated));
        assert!(!read_sql((t, None), None).contains("source"));
        assert!(
            read_sql((None, None), sim).contains("FROM observations\nWHERE source = 'simulated'\nGROUP BY")
        );
        assert!(
            read_sql((t, None), api)
                .contains("WHERE observed_at >= $1\n  AND source = 'weatherapi'\nGROUP BY")
        );
        assert!(read_sql((None, t), api).contains("WHERE observed_at < $1\n  AND source"));
        assert!(read_sql((t, t), sim).contains(
            "WHERE observed_at >= $1\n  AND observed_at < $2\n  AND source = 'simulated'\nGROUP BY"
        ));
    }

    #[test]
    fn a_split_window_covers_the_window_in_consecutive_parts() {
        use chrono::TimeZone;
        let first = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let last = first + chrono::Duration::hours(9);
        let since = Some(first - chrono::Duration::days(1));
        let parts = split_window((since, None), (first, last), 3);
        let cut = |h| Some(first + chrono::Duration::hours(h));
        assert_eq!(parts, [(since, cut(3)), (cut(3), cut(6)), (cut(6), None)]);
        // One part, or a window whose rows share one instant: the window itself.
        assert_eq!(split_window((since, None), (first, last), 1), [(since, None)]);
        assert_eq!(split_window((None, cut(1)), (first, first), 2), [(None, cut(1))]);
        // Two microseconds apart: no more parts than instants, each cut after the one before.
        let close = first + chrono::Duration::microseconds(2);
        let parts = split_window((None, None), (first, close), 5);
        let micro = |n| Some(first + chrono::Duration::microseconds(n));
        assert_eq!(parts, [(None, micro(1)), (micro(1), None)]);
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
