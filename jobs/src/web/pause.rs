//! `POST /api/v1/jobs/{job}/pause` (JSON body `{"reason": "..."}`, optional) and
//! `POST /api/v1/jobs/{job}/resume`: the HTTP face of `weatherflow pause` and `resume`
//! ([`crate::runs::pause`]), guarded exactly like the manual-run trigger (the bearer `web.token`,
//! 403 without one). `paused_by` is `http`, with the client's address as nginx forwards it
//! (`X-Real-IP`, else the first `X-Forwarded-For`) when there is one.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::trigger::authorize;
use crate::runs::JobName;
use crate::runs::pause::{self, PAUSABLE, Pause, Paused};

/// The optional body of a pause.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    /// Why; shown wherever the pause is (at most 500 bytes).
    reason: Option<String>,
}

/// The answer to a pause.
#[derive(Debug, Serialize, ToSchema)]
pub struct PauseAnswer {
    /// The pause in force: this one, or the one already there.
    paused: Pause,
    /// Whether this request paused the job (`false`: it was paused already, nothing changed).
    changed: bool,
}

/// The answer to a resume.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResumeAnswer {
    /// The job.
    job: String,
    /// The pause lifted; `null` when the job was not paused.
    resumed: Option<Pause>,
}

/// The longest reason kept: it is shown on the dashboard and in every skipped tick.
const MAX_REASON: usize = 500;

fn parse_job(text: &str) -> Result<JobName, ApiError> {
    match text.parse::<JobName>() {
        Ok(job) if PAUSABLE.contains(&job) => Ok(job),
        _ => Err(ApiError::bad_parameter(
            "job",
            "job must be fetch, persist, analytics or maintenance",
        )),
    }
}

/// `http`, with the forwarded client address when the proxy gave one.
fn caller(headers: &HeaderMap) -> String {
    let forwarded = headers
        .get("x-real-ip")
        .or_else(|| headers.get("x-forwarded-for"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 64);
    match forwarded {
        Some(addr) => format!("http ({addr})"),
        None => "http".to_owned(),
    }
}

/// `POST /api/v1/jobs/{job}/pause`: 200 with the pause in force (`"changed": false` when the job
/// was paused already).
#[utoipa::path(post, path = "/api/v1/jobs/{job}/pause", tag = "runs",
    summary = "Pause a job for every replica (docs/pausing.md)",
    params(("job" = String, Path, description = "fetch, persist, analytics or maintenance.")),
    request_body(content = Option<PauseBody>, description = "Optional: why.", content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The job is paused.", body = PauseAnswer),
        (status = 400, description = "Not a pausable job, or a malformed body.", body = ErrorBody),
        (status = 401, description = "No bearer token, or not web.token.", body = ErrorBody),
        (status = 403, description = "No web.token is configured: pausing over HTTP is disabled.", body = ErrorBody),
        (status = 500, description = "Recording the pause failed.", body = ErrorBody),
    ))]
pub async fn pause_job(
    State(state): State<AppState>,
    Path(job): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<PauseAnswer>, ApiError> {
    authorize(&state, &headers)?;
    let job = parse_job(&job)?;
    let body: PauseBody = if body.iter().all(u8::is_ascii_whitespace) {
        PauseBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_parameter("body", format!("expected {{\"reason\": \"...\"}}: {e}")))?
    };
    let reason = body.reason.filter(|r| !r.trim().is_empty());
    if reason.as_ref().is_some_and(|r| r.len() > MAX_REASON) {
        return Err(ApiError::bad_parameter(
            "reason",
            format!("at most {MAX_REASON} bytes"),
        ));
    }
    let done = pause::pause(&state.db, job, &caller(&headers), reason.as_deref(), false)
        .await
        .map_err(|e| ApiError::internal("pausing the job", e))?;
    state.cache.invalidate();
    let changed = matches!(done, Paused::Now(_));
    Ok(Json(PauseAnswer {
        paused: done.pause().clone(),
        changed,
    }))
}

/// `POST /api/v1/jobs/{job}/resume`: 200 with the pause lifted, `null` when there was none.
#[utoipa::path(post, path = "/api/v1/jobs/{job}/resume", tag = "runs",
    summary = "Resume a paused job",
    params(("job" = String, Path, description = "fetch, persist, analytics or maintenance.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The job is not paused (any more).", body = ResumeAnswer),
        (status = 400, description = "Not a pausable job.", body = ErrorBody),
        (status = 401, description = "No bearer token, or not web.token.", body = ErrorBody),
        (status = 403, description = "No web.token is configured: resuming over HTTP is disabled.", body = ErrorBody),
        (status = 500, description = "Recording the resume failed.", body = ErrorBody),
    ))]
pub async fn resume_job(
    State(state): State<AppState>,
    Path(job): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ResumeAnswer>, ApiError> {
    authorize(&state, &headers)?;
    let job = parse_job(&job)?;
    let lifted = pause::resume(&state.db, job, &caller(&headers))
        .await
        .map_err(|e| ApiError::internal("resuming the job", e))?;
    state.cache.invalidate();
    Ok(Json(ResumeAnswer {
        job: job.as_str().to_owned(),
        resumed: lifted,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_is_http_with_the_forwarded_address() {
        let mut h = HeaderMap::new();
        assert_eq!(caller(&h), "http");
        h.insert("x-forwarded-for", "203.0.113.5, 10.0.0.1".parse().unwrap());
        assert_eq!(caller(&h), "http (203.0.113.5)");
        h.insert("x-real-ip", "198.51.100.7".parse().unwrap());
        assert_eq!(caller(&h), "http (198.51.100.7)");
    }
}
