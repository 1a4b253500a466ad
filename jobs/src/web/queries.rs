//! The reads the API and the dashboard share, each returning rows shaped as the API serves them.

use chrono::{DateTime, Utc};
use entity::{job_runs, regression_results};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, FromQueryResult,
    QueryFilter, QueryOrder, QuerySelect, Statement,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::jobs::persist::redrive::quarantine;

/// One regression result as served.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ResultRow {
    /// `all` or a location key.
    pub scope: String,
    /// When the fit ran.
    pub fitted_at: DateTime<Utc>,
    /// Samples used.
    pub n_samples: i64,
    /// °C at zero wind.
    pub intercept: f64,
    /// °C per km/h.
    pub slope: f64,
    /// Standard error of the slope, when defined.
    pub slope_stderr: Option<f64>,
    /// Coefficient of determination.
    pub r_squared: f64,
    /// Root mean squared error, °C.
    pub rmse: f64,
    /// The run that wrote it.
    pub run_id: i64,
    /// The observations' source the fit used: `weatherapi`, `simulated`, or `any` for a fit made
    /// before sources were told apart (it used every row).
    pub source: String,
}

impl From<regression_results::Model> for ResultRow {
    fn from(r: regression_results::Model) -> Self {
        Self {
            scope: r.scope,
            fitted_at: r.fitted_at,
            n_samples: r.n_samples,
            intercept: r.intercept,
            slope: r.slope,
            slope_stderr: r.slope_stderr,
            r_squared: r.r_squared,
            rmse: r.rmse,
            run_id: r.job_run_id,
            source: crate::jobs::analytics::results::source_label(r.source.as_deref()).to_owned(),
        }
    }
}

/// One run as served.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunRow {
    /// Run id.
    pub id: i64,
    /// Job name.
    pub job: String,
    /// `schedule` or `manual`.
    pub trigger: String,
    /// `running`, `succeeded`, `failed` or `skipped`.
    pub status: String,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// End time, when ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Records read.
    pub records_in: Option<i64>,
    /// Records written.
    pub records_out: Option<i64>,
    /// The failure, when failed.
    pub error: Option<String>,
}

impl From<job_runs::Model> for RunRow {
    fn from(r: job_runs::Model) -> Self {
        Self {
            id: r.id,
            job: r.job.to_string(),
            trigger: r.trigger.to_string(),
            status: r.status.to_string(),
            started_at: r.started_at,
            finished_at: r.finished_at,
            records_in: r.records_in,
            records_out: r.records_out,
            error: r.error,
        }
    }
}

/// The body of `GET /api/v1/results`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResultsPage {
    /// The scope asked for; `null` when the answer holds the latest fit of each scope.
    pub scope: Option<String>,
    /// Newest first.
    pub results: Vec<ResultRow>,
}

/// The body of `GET /api/v1/runs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunsPage {
    /// Newest first.
    pub runs: Vec<RunRow>,
}

/// The body of `GET /api/v1/observations`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ObservationsPage {
    /// Newest first.
    pub observations: Vec<ObservationRow>,
}

/// The body of `GET /api/v1/observations/latest`: one page of places.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatestPage {
    /// The latest observation of each place on the page, by location key.
    pub observations: Vec<ObservationRow>,
    /// The `after` of the next page; `null` on the last page.
    pub next: Option<String>,
}

/// The body of `GET /api/v1/rejections`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RejectionsPage {
    /// Quarantined records per class, most frequent first.
    pub summary: Vec<RejectionClass>,
    /// The latest quarantined records, newest first.
    pub rejections: Vec<RejectionRow>,
}

/// The body of `GET /api/v1/rejects`.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuarantineCounts {
    /// Records still quarantined, all classes.
    pub quarantined: i64,
    /// Records a re-drive stored, all classes.
    pub redriven: i64,
    /// Per class.
    pub classes: Vec<quarantine::ClassCount>,
}

/// The latest runs, newest first, optionally of one job and one status.
pub async fn runs(
    db: &DatabaseConnection,
    job: Option<&str>,
    status: Option<&str>,
    last: u64,
) -> Result<Vec<RunRow>, DbErr> {
    let mut q = job_runs::Entity::find()
        .order_by_desc(job_runs::Column::Id)
        .limit(last);
    if let Some(job) = job {
        q = q.filter(job_runs::Column::Job.eq(job));
    }
    if let Some(status) = status {
        q = q.filter(job_runs::Column::Status.eq(status));
    }
    Ok(q.all(db).await?.into_iter().map(RunRow::from).collect())
}

/// One observation as served (the measured fields; Kafka coordinates left out).
#[derive(Debug, Clone, Serialize, FromQueryResult, ToSchema)]
pub struct ObservationRow {
    /// Row id.
    pub id: i64,
    /// `name||country`, lower-case.
    pub location_key: String,
    /// Display name.
    pub location_name: String,
    /// Region.
    pub region: String,
    /// Country.
    pub country: String,
    /// When it was observed.
    pub observed_at: DateTime<Utc>,
    /// °C.
    pub temp_c: f64,
    /// km/h.
    pub wind_kph: f64,
    /// %.
    pub humidity: Option<i32>,
    /// Condition text.
    pub condition_text: Option<String>,
    /// `weatherapi` or `simulated`.
    pub source: String,
}

const OBSERVATION_COLUMNS: &str = "id, location_key, location_name, region, country, observed_at, temp_c, wind_kph, humidity, \
     condition_text, source";

/// The latest observation of each location, by location key. A skip scan over the unique
/// `(location_key, observed_at)` index: two index probes per location, whatever the table's size
/// (a plain `DISTINCT ON` reads every row).
///
/// One page: the first `limit` locations whose key sorts after `after` (all when `None`), walked one
/// index probe per location, so a page costs the same with ten places or ten thousand.
pub async fn latest_observations(
    db: &DatabaseConnection,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<ObservationRow>, DbErr> {
    let sql = format!(
        "WITH RECURSIVE keys(k, n) AS (
            (SELECT location_key, 1 FROM observations
             WHERE ($1::text IS NULL OR location_key > $1) ORDER BY location_key LIMIT 1)
            UNION ALL
            SELECT (SELECT o.location_key FROM observations o
                    WHERE o.location_key > keys.k ORDER BY o.location_key LIMIT 1), keys.n + 1
            FROM keys WHERE keys.k IS NOT NULL AND keys.n < $2
        )
        SELECT {OBSERVATION_COLUMNS} FROM keys CROSS JOIN LATERAL (
            SELECT * FROM observations o WHERE o.location_key = keys.k
            ORDER BY observed_at DESC LIMIT 1
        ) latest
        ORDER BY location_key"
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    ObservationRow::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        [after.map(str::to_owned).into(), limit.into()],
    ))
    .all(db)
    .await
}

/// Observations newest first, filtered by location key and time range, at most `limit`.
pub async fn observations(
    db: &DatabaseConnection,
    location: Option<&str>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: u64,
) -> Result<Vec<ObservationRow>, DbErr> {
    let sql = format!(
        "SELECT {OBSERVATION_COLUMNS} FROM observations
         WHERE ($1::text IS NULL OR location_key = $1)
           AND ($2::timestamptz IS NULL OR observed_at >= $2)
           AND ($3::timestamptz IS NULL OR observed_at < $3)
         ORDER BY observed_at DESC, id DESC LIMIT $4"
    );
    let values = vec![
        location.map(str::to_owned).into(),
        from.into(),
        to.into(),
        (limit as i64).into(),
    ];
    ObservationRow::find_by_statement(Statement::from_sql_and_values(DbBackend::Postgres, sql, values))
        .all(db)
        .await
}

/// One quarantined record as served (its payload's size, not the payload: it may be anything).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RejectionRow {
    /// Row id.
    pub id: i64,
    /// When it was quarantined.
    pub received_at: DateTime<Utc>,
    /// Source topic.
    pub kafka_topic: String,
    /// Source partition.
    pub kafka_partition: i32,
    /// Source offset.
    pub kafka_offset: i64,
    /// Why, as a class.
    pub error_class: String,
    /// Why, in words.
    pub reason: String,
    /// Payload size in bytes.
    pub payload_bytes: Option<i32>,
}

impl From<quarantine::Listed> for RejectionRow {
    fn from(r: quarantine::Listed) -> Self {
        Self {
            id: r.id,
            received_at: r.received_at,
            kafka_topic: r.kafka_topic,
            kafka_partition: r.kafka_partition,
            kafka_offset: r.kafka_offset,
            error_class: r.error_class,
            reason: r.reason,
            payload_bytes: r.payload_bytes,
        }
    }
}

/// The latest quarantined records (re-driven ones too), newest first, optionally of one class: the
/// listing of `weatherflow rejects list --class C`.
pub async fn rejections(
    db: &DatabaseConnection,
    class: Option<&str>,
    last: u64,
) -> Result<Vec<RejectionRow>, DbErr> {
    let sel = quarantine::Selection {
        class: class.map(str::to_owned),
        ..Default::default()
    };
    let rows = quarantine::list(db, &sel, last).await?;
    Ok(rows.into_iter().map(RejectionRow::from).collect())
}

/// The dead-letter summary: records per class, and the latest of each.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct RejectionClass {
    /// The class.
    pub error_class: String,
    /// Records quarantined as it (re-driven ones too).
    pub count: i64,
    /// The latest one's time.
    pub latest: DateTime<Utc>,
}

/// Quarantined records per class, most frequent first: the counts of `weatherflow rejects counts`,
/// still quarantined and re-driven together.
pub async fn rejection_summary(db: &DatabaseConnection) -> Result<Vec<RejectionClass>, DbErr> {
    let mut summary: Vec<RejectionClass> = quarantine::counts(db)
        .await?
        .into_iter()
        .map(|c| RejectionClass {
            error_class: c.error_class,
            count: c.quarantined + c.redriven,
            latest: c.latest,
        })
        .collect();
    summary.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.error_class.cmp(&b.error_class))
    });
    Ok(summary)
}

/// Up to `max` (wind, temperature) samples spread over the whole table, for the dashboard's plot:
/// a block sample when the table is large, so the plot costs a few pages read, not a full scan.
/// With `source`, only that source's rows (the fit's), so the points are the data the line was
/// fitted to; `None` (a fit from before sources were told apart) samples every row.
///
/// The sample's share comes from the planner's estimate ([`crate::db::row_estimate`], which knows
/// partitions never analysed), and the rows are shuffled before the cut: a scan returns partitions
/// oldest first, so cutting the sample in scan order (or sampling everything because the parent's
/// `reltuples` is stale) would draw only the oldest months.
pub async fn plot_samples(
    db: &DatabaseConnection,
    max: usize,
    source: Option<crate::envelope::Source>,
) -> Result<(Vec<f64>, Vec<f64>), DbErr> {
    let estimate = crate::db::row_estimate(db, "observations").await?;
    // Four times `max`, so a filter on the source still leaves enough; a table that small is read whole.
    let percent = (100.0 * (max as f64) * 4.0 / (estimate.max(1) as f64)).clamp(0.0001, 100.0);
    // A constant from Source::as_str, never input.
    let only = source.map_or_else(String::new, |s| format!("WHERE source = '{}'", s.as_str()));
    let sql = format!(
        "SELECT wind_kph, temp_c FROM observations TABLESAMPLE SYSTEM ({percent:.6}) {only}
         ORDER BY random() LIMIT {max}"
    );
    let rows = db
        .query_all_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await?;
    let mut wind = Vec::with_capacity(rows.len());
    let mut temp = Vec::with_capacity(rows.len());
    for r in rows {
        wind.push(r.try_get_by_index::<f64>(0)?);
        temp.push(r.try_get_by_index::<f64>(1)?);
    }
    Ok((wind, temp))
}
