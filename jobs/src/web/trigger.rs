//! `POST /api/v1/runs/{job}`: a manual run over HTTP, on the same path as `weatherflow run <job>`:
//! the job's advisory lock first (409 when another run holds it), then [`crate::runs::recorded`]
//! with trigger `manual`. The answer (202) carries the new run's id; the run goes on in the
//! background, and shutdown waits for it.
//!
//! Allowed only with `Authorization: Bearer <web.token>`, compared in constant time. With no token
//! configured the endpoint answers 403 and says how to enable it.
//!
//! A fetch whose source is simulated (`auto` in a `serve` without a WeatherAPI key) against a database
//! that already holds WeatherAPI observations is refused before it starts: the refusal is recorded as
//! a failed run and answered 409 `simulated_beside_real` with the reason and the opt-in, not 202
//! (see [`crate::jobs::fetch::check_source`]).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

use super::AppState;
use super::error::ApiError;
use crate::job_error::JobError;
use crate::jobs::analytics::AnalyticsRequest;
use crate::jobs::fetch::{self, SourceCheckError, SourceChoice};
use crate::runs::lock::JobLock;
use crate::runs::{JobName, StoredReport, Trigger};

/// What the 403 says when no token is configured.
pub const DISABLED: &str = "manual runs over HTTP are disabled: set WEATHERFLOW_WEB_TOKEN (or \
     web.token_file in the configuration) and send it as `Authorization: Bearer <token>`";

/// Checks the request's bearer token against `web.token`.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.token else {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "disabled", DISABLED));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(given) = given else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the token as `Authorization: Bearer <token>`",
        ));
    };
    // Constant time in the token's contents; only a length mismatch returns early.
    if bool::from(given.as_bytes().ct_eq(expected.expose_secret().as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not the configured web.token",
        ))
    }
}

/// The job named in the path; persist runs continuously as the consumer and cannot be started here.
fn parse_job(text: &str) -> Result<JobName, ApiError> {
    match text.parse::<JobName>() {
        Ok(JobName::Persist) => Err(ApiError::bad_parameter(
            "job",
            "persist runs continuously as the consumer and cannot be started here; job must be fetch or analytics",
        )),
        Ok(job) => Ok(job),
        Err(_) => Err(ApiError::bad_parameter("job", "job must be fetch or analytics")),
    }
}

/// `POST /api/v1/runs/{job}`.
pub async fn start_run(
    State(state): State<AppState>,
    Path(job): Path<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize(&state, &headers)?;
    let name = parse_job(&job)?;
    let fetch_req = match name {
        // Read before the lock, so a bad schedules file is a 500 that names it, with no run row.
        JobName::Fetch => {
            let mut req = crate::cmd::schedules::load(&state.config, None)
                .map_err(|e| {
                    ApiError::internal("reading schedules.toml for the fetch run", format!("{e:#}"))
                })?
                .fetch
                .args;
            if let Some(auto) = state.fetch_source {
                req.source = auto.apply(req.source);
            }
            Some(req)
        }
        _ => None,
    };
    let lock = JobLock::try_acquire(&state.db, name)
        .await
        .map_err(|e| ApiError::internal("taking the job lock", e))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "locked",
                format!(
                    "another {name} run (scheduled or manual) is in progress; try again when it has finished"
                ),
            )
        })?;
    let lock = match &fetch_req {
        Some(req) => refuse_simulated_beside_real(&state, req.source, lock).await?,
        None => lock,
    };
    let (id_tx, id_rx) = oneshot::channel();
    let s = state.clone();
    state.runs.spawn(async move {
        let config = s.config.clone();
        let shutdown = s.shutdown.child_token();
        let db = s.db.clone();
        let job_db = s.db.clone();
        let result = crate::runs::recorded(&db, name, Trigger::Manual, |id| {
            let _ = id_tx.send(id);
            async move {
                match fetch_req {
                    Some(req) => fetch::run_checked(&config, &job_db, req, shutdown)
                        .await
                        .map(|r| crate::runs::StoredReport::of(&r)),
                    None => crate::jobs::analytics::run(
                        &config,
                        &job_db,
                        id,
                        AnalyticsRequest::default(),
                        shutdown,
                    )
                    .await
                    .map(|r| crate::runs::StoredReport::of(&r)),
                }
            }
        })
        .await;
        release(lock, name).await;
        // The run wrote (or recorded its failure): drop answers that predate it.
        s.cache.invalidate();
        if let Err(e) = result {
            tracing::warn!(job = name.as_str(), error = %format!("{e:#}"), "manual run over HTTP failed");
        }
    });
    let run_id = id_rx
        .await
        .map_err(|_| ApiError::internal("recording the run", "the run ended before it was recorded"))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "run_id": run_id,
            "job": name.as_str(),
            "trigger": "manual",
            "status": "running",
            "history": format!("/api/v1/runs?job={name}&last=5"),
        })),
    ))
}

/// Answers a fetch that [`fetch::check_source`] refuses with 409 and the reason, after recording it
/// as a failed run (so the run history shows the refusal) and releasing the job lock; hands the lock
/// back when the fetch may go on. The fetch checks again when it starts; this answers the caller now
/// instead of after a 202.
async fn refuse_simulated_beside_real(
    state: &AppState,
    source: SourceChoice,
    lock: JobLock,
) -> Result<JobLock, ApiError> {
    let refusal = match fetch::check_source(&state.config, &state.db, source).await {
        Ok(()) => return Ok(lock),
        Err(SourceCheckError::SimulatedBesideReal(message)) => message,
        Err(e) => {
            release(lock, JobName::Fetch).await;
            return Err(ApiError::internal("checking the fetch source", e));
        }
    };
    let failure = JobError::from(SourceCheckError::SimulatedBesideReal(refusal.clone()));
    // The result is the refusal itself; failing to record it changes nothing for the caller.
    let _ = crate::runs::recorded(&state.db, JobName::Fetch, Trigger::Manual, |_| async move {
        Err::<StoredReport, _>(failure)
    })
    .await;
    release(lock, JobName::Fetch).await;
    state.cache.invalidate();
    tracing::warn!(error = %refusal, "manual fetch over HTTP refused");
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "simulated_beside_real",
        refusal,
    ))
}

/// Releases `lock`, logging a failure (its session was closed, which frees it anyway).
async fn release(lock: JobLock, name: JobName) {
    if let Err(e) = lock.release().await {
        tracing::warn!(job = name.as_str(), error = %e, "releasing the job lock failed (its session was closed)");
    }
}
