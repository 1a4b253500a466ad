//! `POST /api/v1/runs/{job}`: a manual run over HTTP, on the same path as `weatherflow run <job>`:
//! the run executor ([`crate::executor`]) claims the job (409 when another run holds its lock), then
//! runs it with trigger `manual`, its lock watched (a lost lock cancels the run, recorded failed
//! "lock lost"). The answer (202) carries the new run's id; the run goes on in the background, and
//! shutdown waits for it. fetch, analytics and maintenance can be started; persist runs continuously
//! as the consumer.
//!
//! A paused job (`weatherflow pause`) is refused with 409 `paused`, saying who paused it, when and
//! why, unless the request asks `?force=true`.
//!
//! Allowed only with `Authorization: Bearer <web.token>`, compared in constant time. With no token
//! configured the endpoint answers 403 and says how to enable it.
//!
//! A fetch whose source is simulated (`auto` in a `serve` without a WeatherAPI key) against a database
//! that already holds WeatherAPI observations is refused before it starts: the refusal is recorded as
//! a failed run and answered 409 `simulated_beside_real` with the reason and the opt-in, not 202
//! (see [`crate::jobs::fetch::check_source`]).

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use secrecy::ExposeSecret;
use serde::Serialize;
use utoipa::ToSchema;
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::params::Params;
use crate::executor::catalog::{self, JobRequest};
use crate::executor::{Claim, ExecError, Executor, Launch};
use crate::job_error::JobError;
use crate::jobs::analytics::AnalyticsRequest;
use crate::jobs::fetch::{self, SourceCheckError, SourceChoice};
use crate::report::StoredReport;
use crate::runs::JobName;
use crate::scheduler::schedules;

/// What the 403 says when no token is configured.
pub const DISABLED: &str = "manual runs over HTTP are disabled: set WEATHERFLOW_WEB_TOKEN (or \
     web.token_file in the configuration) and send it as `Authorization: Bearer <token>`";

/// Checks the request's bearer token against `web.token` (the pause and resume endpoints too).
pub(crate) fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.token else {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "disabled", DISABLED));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
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

/// The token of an `Authorization: Bearer <token>` value: the scheme is case-insensitive (RFC 9110,
/// section 11.1) and the token trimmed, as `web.token` is (`config::secret_or_file`), so a trailing
/// newline on either side is no mismatch.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The answer of a run started (202).
#[derive(Debug, Serialize, ToSchema)]
pub struct StartedRun {
    /// The new run's id in the run history.
    pub run_id: i64,
    /// The job.
    pub job: &'static str,
    /// Always `manual`.
    pub trigger: &'static str,
    /// Always `running`: the run goes on in the background.
    pub status: &'static str,
    /// Where to follow it: the job's last runs.
    pub history: String,
}

/// What `job` must be.
const STARTABLE: &str = "job must be fetch, analytics or maintenance";

/// The job named in the path; persist runs continuously as the consumer and cannot be started here,
/// and re-drives and replays are started from the command line, with their selection.
fn parse_job(text: &str) -> Result<JobName, ApiError> {
    match text.parse::<JobName>() {
        Ok(job @ (JobName::Fetch | JobName::Analytics | JobName::Maintenance)) => Ok(job),
        Ok(JobName::Persist) => Err(ApiError::bad_parameter(
            "job",
            format!("persist runs continuously as the consumer and cannot be started here; {STARTABLE}"),
        )),
        Ok(_) | Err(_) => Err(ApiError::bad_parameter("job", STARTABLE)),
    }
}

/// The request `job` runs with: a fetch takes the schedule's arguments (read before the claim, so a
/// bad schedules file is a 500 that names it, with no run row); analytics its default window.
fn request(state: &AppState, job: JobName) -> Result<JobRequest, ApiError> {
    Ok(match job {
        JobName::Fetch => {
            let mut req = schedules::load(&state.config, None)
                .map_err(|e| {
                    ApiError::internal("reading schedules.toml for the fetch run", format!("{e:#}"))
                })?
                .fetch
                .args;
            if let Some(auto) = state.fetch_source {
                req.source = auto.apply(req.source);
            }
            JobRequest::Fetch(req)
        }
        JobName::Analytics => JobRequest::Analytics(AnalyticsRequest::default()),
        _ => JobRequest::Maintenance,
    })
}

/// `POST /api/v1/runs/{job}`.
#[utoipa::path(post, path = "/api/v1/runs/{job}", tag = "runs",
    summary = "Start a manual run of fetch, analytics or maintenance",
    params(("job" = String, Path, description = "fetch, analytics or maintenance."),
        ("force" = Option<bool>, Query, description = "Run even when the job is paused (docs/pausing.md).")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The run started; it goes on in the background.", body = StartedRun),
        (status = 400, description = "The job cannot be started here.", body = ErrorBody),
        (status = 401, description = "No bearer token, or not web.token.", body = ErrorBody),
        (status = 403, description = "No web.token is configured: manual runs over HTTP are disabled.", body = ErrorBody),
        (status = 409, description = "Another run holds the job's lock (`locked`), the job is paused and `force` is not true (`paused`), or a simulated fetch beside WeatherAPI observations (`simulated_beside_real`).", body = ErrorBody),
        (status = 500, description = "Recording or claiming the run failed.", body = ErrorBody),
    ))]
pub async fn start_run(
    State(state): State<AppState>,
    Path(job): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<StartedRun>), ApiError> {
    authorize(&state, &headers)?;
    let force = Params::parse(raw.as_deref(), &["force"])?.choice("force", &["true", "false"])? == Some("true");
    let name = parse_job(&job)?;
    let req = request(&state, name)?;
    let exec = Executor::from_config(state.db.clone(), &state.config);
    let claim = exec.claim_unpaused(name, force).await.map_err(|e| match e {
        ExecError::Held(_) => ApiError::new(StatusCode::CONFLICT, "locked", e.to_string()),
        ExecError::Paused(_) => ApiError::new(StatusCode::CONFLICT, "paused", e.to_string()),
        e => ApiError::internal("claiming the job", e),
    })?;
    let claim = match &req {
        JobRequest::Fetch(f) => refuse_simulated_beside_real(&state, &exec, f.source, claim).await?,
        _ => claim,
    };
    let (id_tx, id_rx) = oneshot::channel();
    let s = state.clone();
    state.runs.spawn(async move {
        let launch = Launch {
            started: Some(id_tx),
            ..Launch::manual(&s.shutdown)
        };
        let (config, db) = (s.config.clone(), s.db.clone());
        let outcome = exec
            .run(claim, launch, |ctx| catalog::run(&config, &db, req.clone(), ctx))
            .await;
        // The run wrote (or recorded its failure): drop answers that predate it.
        s.cache.invalidate();
        let failure = match outcome {
            Ok(outcome) => outcome.into_result().err().map(|e| e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(error) = failure {
            tracing::warn!(job = name.as_str(), %error, "manual run over HTTP failed");
        }
    });
    let run_id = id_rx
        .await
        .map_err(|_| ApiError::internal("recording the run", "the run ended before it was recorded"))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(StartedRun {
            run_id,
            job: name.as_str(),
            trigger: "manual",
            status: "running",
            history: format!("/api/v1/runs?job={name}&last=5"),
        }),
    ))
}

/// Answers a fetch that [`fetch::check_source`] refuses with 409 and the reason, after recording it
/// as a failed run (so the run history shows the refusal) and releasing the claim; hands the claim
/// back when the fetch may go on. The fetch checks again when it starts; this answers the caller now
/// instead of after a 202.
async fn refuse_simulated_beside_real(
    state: &AppState,
    exec: &Executor,
    source: SourceChoice,
    claim: Claim,
) -> Result<Claim, ApiError> {
    let refusal = match fetch::check_source(&state.config, &state.db, source).await {
        Ok(()) => return Ok(claim),
        Err(SourceCheckError::SimulatedBesideReal(message)) => message,
        Err(e) => {
            claim.release().await;
            return Err(ApiError::internal("checking the fetch source", e));
        }
    };
    // The result is the refusal itself; failing to record it changes nothing for the caller.
    let _ = exec
        .run(claim, Launch::manual(&state.shutdown), |_| {
            let failure = JobError::from(SourceCheckError::SimulatedBesideReal(refusal.clone()));
            async move { Err::<StoredReport, _>(failure) }
        })
        .await;
    state.cache.invalidate();
    tracing::warn!(error = %refusal, "manual fetch over HTTP refused");
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "simulated_beside_real",
        refusal,
    ))
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_trimmed() {
        for v in ["Bearer abc", "bearer abc", "BEARER  abc \n", " Bearer abc\r\n"] {
            assert_eq!(bearer_token(v), Some("abc"), "{v:?}");
        }
        for v in ["Basic abc", "Bearer", "Bearer   ", "Bearerabc", "abc"] {
            assert_eq!(bearer_token(v), None, "{v:?}");
        }
    }
}
