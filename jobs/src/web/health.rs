//! `/healthz` (the process answers), `/readyz` (Kafka, PostgreSQL and the schema answered lately, and
//! no persist writer of this process is waiting out an outage) and `/metrics` (the Prometheus text
//! format).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Map, Value, json};

use super::AppState;

/// `GET /healthz`: 200 while the process serves, with the version, commit and build profile.
pub async fn healthz() -> Json<Value> {
    use crate::build_info::{COMMIT, PROFILE};
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "commit": COMMIT,
        "profile": PROFILE,
    }))
}

/// `GET /readyz`: 200 when every check passes, else 503 naming each failing check, from the state
/// [`super::readiness`] keeps: no probe reaches Kafka or PostgreSQL. `persist` fails while a writer
/// of this process retries a batch the database or the dead-letter topic will not take.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let v = state.ready.verdicts().await;
    // A database that answers SELECT 1 can still refuse every write (a read-only node, a revoked
    // grant): the writers of this process say so while they wait it out.
    let outages = crate::outages::not_ready_public();
    let persist = if outages.is_empty() {
        Ok(())
    } else {
        Err(outages.join("; "))
    };
    let mut checks = Map::new();
    let mut failing = Vec::new();
    for (name, result) in [
        ("kafka", v.kafka),
        ("postgres", v.postgres),
        ("migrations", v.migrations),
        ("persist", persist),
    ] {
        match result {
            Ok(()) => checks.insert(name.into(), json!("ok")),
            Err(e) => {
                failing.push(name);
                checks.insert(name.into(), json!(e))
            }
        };
    }
    let ready = failing.is_empty();
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "checks": checks,
        "failing": failing,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: this process's counters and histograms, with the platform's state read from
/// PostgreSQL at scrape time (runs, last successes, last fits).
pub async fn metrics(State(state): State<AppState>) -> Response {
    // A scrape answers within COLLECT_TIMEOUT whatever the database does: during an outage the
    // process's own series (the outage gauge first) are what the operator needs, and a scrape that
    // waited for the pool would time out at Prometheus and show nothing.
    match tokio::time::timeout(COLLECT_TIMEOUT, collect(&state)).await {
        Ok(Ok(())) => metrics::gauge!("weatherflow_database_up").set(1.0),
        Ok(Err(e)) => {
            // The process's own metrics are still worth serving; the gap shows as stale series.
            tracing::warn!(error = %e, "metrics: reading the database failed");
            metrics::gauge!("weatherflow_database_up").set(0.0);
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = COLLECT_TIMEOUT.as_millis() as u64,
                "metrics: the database did not answer in time"
            );
            metrics::gauge!("weatherflow_database_up").set(0.0);
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        {
            // The outages' ages move on between the writers' own updates.
            crate::outages::refresh_gauges();
            crate::metrics::render()
        },
    )
        .into_response()
}

/// How long a scrape waits for the platform's state from PostgreSQL before it answers without it.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs by job and status (every replica's, from the history), and each job's last success.
const RUNS_SQL: &str = "\
SELECT job, status, count(*)::int8 AS n,
       extract(epoch FROM max(finished_at) FILTER (WHERE status = 'succeeded'))::float8 AS last_ok
FROM job_runs GROUP BY job, status";

async fn collect(state: &AppState) -> Result<(), sea_orm::DbErr> {
    let q = |sql: &str| Statement::from_string(DbBackend::Postgres, sql);
    for row in state.db.query_all_raw(q(RUNS_SQL)).await? {
        let job: String = row.try_get("", "job")?;
        let status: String = row.try_get("", "status")?;
        let n: i64 = row.try_get("", "n")?;
        metrics::counter!("weatherflow_job_runs_total", "job" => job.clone(), "status" => status)
            .absolute(n.max(0) as u64);
        if let Some(t) = row.try_get::<Option<f64>>("", "last_ok")? {
            metrics::gauge!("weatherflow_job_last_success_timestamp_seconds", "job" => job).set(t);
        }
    }
    // The paused jobs (every replica honours them), as `weatherflow status` shows them: 1 or 0 per
    // pausable job, so a resume clears the series instead of leaving its last value.
    let pauses = crate::runs::pause::all(&state.db).await?;
    for job in crate::runs::pause::PAUSABLE {
        let p = pauses.iter().find(|p| p.job == job);
        metrics::gauge!("weatherflow_job_paused", "job" => job.as_str())
            .set(if p.is_some() { 1.0 } else { 0.0 });
        metrics::gauge!("weatherflow_job_auto_paused", "job" => job.as_str())
            .set(if p.is_some_and(|p| p.auto) { 1.0 } else { 0.0 });
    }
    // Every process's WeatherAPI calls this month, as `weatherflow status` shows them.
    let quota = crate::quota::usage(&state.db, &state.config.weatherapi).await?;
    metrics::gauge!("weatherflow_weatherapi_calls_month").set(quota.used as f64);
    if let Some(budget) = quota.budget {
        metrics::gauge!("weatherflow_weatherapi_call_budget").set(budget as f64);
    }
    // The latest published fit of each scope, as `weatherflow results` shows them.
    for fit in crate::jobs::analytics::results::latest_per_scope(&state.db, u64::MAX).await? {
        let scope = fit.scope;
        metrics::gauge!("weatherflow_analytics_fit_samples", "scope" => scope.clone())
            .set(fit.n_samples as f64);
        metrics::gauge!("weatherflow_analytics_fit_r_squared", "scope" => scope.clone()).set(fit.r_squared);
        metrics::gauge!("weatherflow_analytics_fit_slope", "scope" => scope).set(fit.slope);
    }
    // Sets weatherflow_data_staleness_seconds: two index probes. Stale data is not a database
    // failure, and a failed read leaves the last value.
    if let Err(e) = crate::jobs::analytics::freshness::freshness(&state.db, &state.config).await {
        tracing::debug!(error = %e, "metrics: the data's freshness could not be read");
    }
    Ok(())
}
