//! The JSON API under `/api/v1` (docs/web.md has every endpoint with an example answer).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};

use super::AppState;
use super::cache::UNTIL_WRITE;
use super::error::ApiError;
use super::lag::LagSample;
use super::params::{DEFAULT_LAST, DEFAULT_LIMIT, MAX_LAST, MAX_LIMIT, Params};
use super::error::ErrorBody;
use super::queries::{
    self, LatestPage, ObservationsPage, QuarantineCounts, RejectionsPage, ResultRow, ResultsPage, RunsPage,
};
use crate::jobs::analytics::results;
use crate::runs::JobName;

/// The statuses a run filter accepts.
pub const STATUSES: [&str; 4] = ["running", "succeeded", "failed", "skipped"];

/// A JSON body, served from the cache when it holds one for `key`, else computed by `make` and kept
/// for `ttl`.
async fn cached<F, Fut, T>(
    state: &AppState,
    key: String,
    ttl: Duration,
    make: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
    T: Serialize,
{
    let body = state
        .cache
        .get_or_fill(&key, ttl, || async move {
            let value = make().await?;
            serde_json::to_vec(&value)
                .map(Bytes::from)
                .map_err(|e| ApiError::internal("encoding", e))
        })
        .await?;
    Ok(json_bytes(body))
}

fn json_bytes(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The cache key of a route and its parsed parameters (`Debug` quotes and escapes each value), so
/// query strings that mean the same answer (order, encoding, a default given or left out) share one
/// entry; see [`super::cache::PER_ROUTE`].
fn key(route: &str, params: &[&(dyn std::fmt::Debug + Sync)]) -> String {
    let mut k = format!("{route}?");
    for p in params {
        k.push_str(&format!("{p:?};"));
    }
    k
}

fn stream_ttl(state: &AppState) -> Duration {
    Duration::from_millis(state.config.web.cache_ttl_ms)
}

/// `GET /api/v1/results?scope=&last=`: the latest fit of each scope, or one scope's last fits.
#[utoipa::path(get, path = "/api/v1/results", tag = "analytics",
    summary = "The latest fit of each scope, or one scope's last fits",
    params(
        ("scope" = Option<String>, Query, description = "Only this scope: `all` or a location key.", min_length = 1, max_length = 200, pattern = r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"),
        ("last" = Option<u64>, Query, description = "How many fits, newest first (default 20).", minimum = 1, maximum = 500),
    ),
    responses(
        (status = 200, description = "The fits, newest first.", body = ResultsPage),
        (status = 400, description = "A parameter is invalid.", body = ErrorBody),
        (status = 500, description = "The database failed; the server log has the details.", body = ErrorBody),
    ))]
pub async fn results(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let p = Params::parse(raw.as_deref(), &["scope", "last"])?;
    let scope = p.text("scope")?;
    let last = p.count("last", DEFAULT_LAST, MAX_LAST)?;
    let db = state.db.clone();
    cached(
        &state,
        key("results", &[&scope, &last]),
        UNTIL_WRITE,
        || async move {
            let rows = match &scope {
                Some(scope) => results::history(&db, scope, last).await?,
                None => results::latest_per_scope(&db, last).await?,
            };
            let results: Vec<ResultRow> = rows.into_iter().map(ResultRow::from).collect();
            Ok(ResultsPage { scope, results })
        },
    )
    .await
}

/// `GET /api/v1/runs?job=&status=&last=`: the run history, newest first.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs",
    summary = "The run history, newest first",
    params(
        ("job" = Option<String>, Query, description = "Only this job.", pattern = "^(fetch|persist|analytics|maintenance|redrive|replay)$"),
        ("status" = Option<String>, Query, description = "Only runs in this state.", pattern = "^(running|succeeded|failed|skipped)$"),
        ("last" = Option<u64>, Query, description = "How many runs (default 20).", minimum = 1, maximum = 500),
    ),
    responses(
        (status = 200, description = "The runs, newest first.", body = RunsPage),
        (status = 400, description = "A parameter is invalid.", body = ErrorBody),
        (status = 500, description = "The database failed.", body = ErrorBody),
    ))]
pub async fn runs(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let p = Params::parse(raw.as_deref(), &["job", "status", "last"])?;
    // Every job, the on-demand ones (redrive, replay) included.
    let jobs: Vec<&'static str> = JobName::ALL.iter().map(|j| j.as_str()).collect();
    let job = p.choice("job", &jobs)?;
    let status = p.choice("status", &STATUSES)?;
    let last = p.count("last", DEFAULT_LAST, MAX_LAST)?;
    let db = state.db.clone();
    cached(
        &state,
        key("runs", &[&job, &status, &last]),
        UNTIL_WRITE,
        || async move {
            Ok(RunsPage {
                runs: queries::runs(&db, job, status, last).await?,
            })
        },
    )
    .await
}

/// `GET /api/v1/status`: the last run of each job with its next fire time, consumer lag, row counts.
#[utoipa::path(get, path = "/api/v1/status", tag = "status",
    summary = "The last run of each job, its next fire time, the consumer lag, the row counts",
    responses(
        (status = 200, description = "The platform's state.", body = super::status_schema::StatusBody),
        (status = 400, description = "A parameter was given: this endpoint takes none.", body = ErrorBody),
        (status = 500, description = "The database failed.", body = ErrorBody),
    ))]
pub async fn status(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    Params::parse(raw.as_deref(), &[])?;
    let s = state.clone();
    cached(&state, "status".into(), stream_ttl(&state), || async move {
        status_value(&s).await
    })
    .await
}

/// The body of `/api/v1/status` (the dashboard shows the same). The OpenAPI document describes it
/// with [`super::status_schema::StatusBody`]: a field added here is a field added there.
pub async fn status_value(state: &AppState) -> Result<Value, ApiError> {
    let now = Utc::now();
    let latest = crate::runs::latest_per_job(&state.db).await?;
    let pauses = crate::runs::pause::all(&state.db).await?;
    let schedules = crate::scheduler::schedules::load(&state.config, None).ok();
    let jobs: Vec<Value> = JobName::ALL
        .iter()
        .map(|&job| {
            let last = latest
                .iter()
                .find(|r| r.job == job)
                .cloned()
                .map(queries::RunRow::from);
            let timing = schedules.as_ref().and_then(|s| s.timing(job));
            let next_fire = match timing {
                Some(t) if t.enabled => crate::scheduler::next_fire(t, now).map(crate::runs::tick_text),
                _ => None,
            };
            json!({
                "job": job.as_str(),
                "last_run": last,
                "next_fire": next_fire,
                "continuous": job == JobName::Persist,
                "paused": pauses.iter().find(|p| p.job == job),
            })
        })
        .collect();
    let tables: serde_json::Map<String, Value> = crate::db::table_counts(&state.db)
        .await?
        .into_iter()
        .map(|c| {
            (
                c.table.to_owned(),
                json!({ "rows": c.rows, "estimated": c.estimated }),
            )
        })
        .collect();
    let quota = crate::quota::usage(&state.db, &state.config.weatherapi).await?;
    Ok(json!({
        "now": now,
        "jobs": jobs,
        "consumer_lag": lag_value(state),
        "freshness": freshness_value(state).await,
        "tables": tables,
        "weatherapi_calls": quota,
    }))
}

/// The newest observation the nightly fit would use, its age against `analytics.max_staleness_secs`,
/// with the latest lag sample; `{"error": ...}` when it could not be read (status still answers).
async fn freshness_value(state: &AppState) -> Value {
    match crate::jobs::analytics::freshness::freshness(&state.db, &state.config).await {
        Ok(mut f) => {
            if let (LagSample::Partitions(p), _) = state.lag.latest() {
                f.lag = Some(p.iter().map(|p| p.lag()).sum());
            }
            f.to_json()
        }
        Err(e) => {
            // The reason goes to the log, not to an anonymous client.
            tracing::warn!(error = %e, "status: the data's freshness could not be read");
            json!({ "error": "the newest observation could not be read (see the log)" })
        }
    }
}

/// The latest consumer-lag sample as JSON.
pub fn lag_value(state: &AppState) -> Value {
    let k = &state.config.kafka;
    let (sample, at) = state.lag.latest();
    let (state_text, partitions, error) = match sample {
        LagSample::Pending => ("pending", Vec::new(), None),
        LagSample::NoTopic => ("no_topic", Vec::new(), None),
        LagSample::Unreachable(e) => ("unreachable", Vec::new(), Some(e)),
        LagSample::Partitions(p) => ("ok", p, None),
    };
    let total: i64 = partitions.iter().map(|p| p.lag()).sum();
    let parts: Vec<Value> = partitions
        .iter()
        .map(|p| json!({ "partition": p.partition, "committed": p.committed, "end": p.high, "lag": p.lag() }))
        .collect();
    json!({
        "topic": k.observations_topic,
        "group": k.consumer_group,
        "state": state_text,
        "sampled_at": at,
        "total": total,
        "partitions": parts,
        "error": error,
    })
}

/// `GET /api/v1/observations/latest?after=&limit=`: the latest observation of each location, a page
/// of `limit` locations (by key) at a time; `next` is the `after` of the following page, `null` on
/// the last.
#[utoipa::path(get, path = "/api/v1/observations/latest", tag = "observations",
    summary = "The latest observation of each place, a page of places at a time",
    params(
        ("after" = Option<String>, Query, description = "The location key the page starts after (the previous page's `next`).", min_length = 1, max_length = 200, pattern = r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"),
        ("limit" = Option<u64>, Query, description = "Places per page (default 100).", minimum = 1, maximum = 1000),
    ),
    responses(
        (status = 200, description = "One page of places, by location key.", body = LatestPage),
        (status = 400, description = "A parameter is invalid.", body = ErrorBody),
        (status = 500, description = "The database failed.", body = ErrorBody),
    ))]
pub async fn latest_observations(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(raw.as_deref(), &["after", "limit"])?;
    let after = p.text("after")?;
    let limit = p.count("limit", DEFAULT_LIMIT, MAX_LIMIT)?;
    let db = state.db.clone();
    let k = key("observations/latest", &[&after, &limit]);
    cached(
        &state,
        k,
        stream_ttl(&state),
        || async move {
            // One more than the page: whether there is a next page, without a count.
            let mut rows = queries::latest_observations(&db, after.as_deref(), limit + 1).await?;
            let next = (rows.len() as u64 > limit).then(|| {
                rows.truncate(limit as usize);
                rows.last().map(|r| r.location_key.clone())
            });
            Ok(LatestPage {
                observations: rows,
                next: next.flatten(),
            })
        },
    )
    .await
}

/// `GET /api/v1/observations?location=&from=&to=&limit=`: observations newest first.
#[utoipa::path(get, path = "/api/v1/observations", tag = "observations",
    summary = "Observations, newest first",
    params(
        ("location" = Option<String>, Query, description = "Only this location key (`name||country`, lower-case).", min_length = 1, max_length = 200, pattern = r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"),
        ("from" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Observed at or after this time (RFC 3339)."),
        ("to" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Observed before this time (RFC 3339); later than `from`, else 400."),
        ("limit" = Option<u64>, Query, description = "How many observations (default 100).", minimum = 1, maximum = 1000),
    ),
    responses(
        (status = 200, description = "The observations, newest first.", body = ObservationsPage),
        (status = 400, description = "A parameter is invalid, or `to` is not later than `from`.", body = ErrorBody),
        (status = 500, description = "The database failed.", body = ErrorBody),
    ))]
pub async fn observations(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(raw.as_deref(), &["location", "from", "to", "limit"])?;
    let location = p.text("location")?;
    let from = p.time("from")?;
    let to = p.time("to")?;
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return Err(ApiError::bad_parameter("to", "to must be later than from"));
    }
    let limit = p.count("limit", DEFAULT_LIMIT, MAX_LIMIT)?;
    let db = state.db.clone();
    cached(
        &state,
        key("observations", &[&location, &from, &to, &limit]),
        stream_ttl(&state),
        || async move {
            let rows = queries::observations(&db, location.as_deref(), from, to, limit).await?;
            Ok(ObservationsPage { observations: rows })
        },
    )
    .await
}

/// `GET /api/v1/rejections?class=&last=`: the latest quarantined records.
#[utoipa::path(get, path = "/api/v1/rejections", tag = "quarantine",
    summary = "The latest quarantined records and the counts per class",
    params(
        ("class" = Option<String>, Query, description = "Only this rejection class (e.g. `invalid_json`).", min_length = 1, max_length = 200, pattern = "^[a-z_]+$"),
        ("last" = Option<u64>, Query, description = "How many records, newest first (default 20).", minimum = 1, maximum = 500),
    ),
    responses(
        (status = 200, description = "The records, newest first, and the summary per class.", body = RejectionsPage),
        (status = 400, description = "A parameter is invalid.", body = ErrorBody),
        (status = 500, description = "The database failed.", body = ErrorBody),
    ))]
pub async fn rejections(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(raw.as_deref(), &["class", "last"])?;
    let class = p.text("class")?;
    if let Some(c) = &class
        && !c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_')
    {
        return Err(ApiError::bad_parameter(
            "class",
            "class must be a rejection class such as invalid_json (lower-case letters and _)",
        ));
    }
    let last = p.count("last", DEFAULT_LAST, MAX_LAST)?;
    let db = state.db.clone();
    cached(
        &state,
        key("rejections", &[&class, &last]),
        stream_ttl(&state),
        || async move {
            let rows = queries::rejections(&db, class.as_deref(), last).await?;
            let summary = queries::rejection_summary(&db).await?;
            Ok(RejectionsPage {
                summary,
                rejections: rows,
            })
        },
    )
    .await
}

/// `GET /api/v1/rejects`: quarantined records per class, still quarantined and re-driven (the
/// counts of `weatherflow rejects counts`).
#[utoipa::path(get, path = "/api/v1/rejects", tag = "quarantine",
    summary = "Quarantined records per class, still quarantined and re-driven",
    responses(
        (status = 200, description = "The counts.", body = QuarantineCounts),
        (status = 400, description = "A parameter was given: this endpoint takes none.", body = ErrorBody),
        (status = 500, description = "The database failed.", body = ErrorBody),
    ))]
pub async fn rejects(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    Params::parse(raw.as_deref(), &[])?;
    let db = state.db.clone();
    cached(&state, "rejects".into(), stream_ttl(&state), || async move {
        let classes = crate::jobs::persist::redrive::quarantine::counts(&db).await?;
        let quarantined: i64 = classes.iter().map(|c| c.quarantined).sum();
        let redriven: i64 = classes.iter().map(|c| c.redriven).sum();
        Ok(QuarantineCounts {
            quarantined,
            redriven,
            classes,
        })
    })
    .await
}

/// `GET /api/v1/schema/envelope`: the JSON Schema of the observations topic's messages
/// (`docs/schema/envelope.v1.json`, compiled in), for consumers of the topic.
#[utoipa::path(get, path = "/api/v1/schema/envelope", tag = "contracts",
    summary = "The JSON Schema (draft 2020-12) of the observations topic's messages",
    responses(
        (status = 200, description = "docs/schema/envelope.v1.json.", body = Object, content_type = "application/schema+json"),
    ))]
pub async fn envelope_schema() -> Response {
    (
        [(header::CONTENT_TYPE, "application/schema+json")],
        crate::envelope::JSON_SCHEMA,
    )
        .into_response()
}
