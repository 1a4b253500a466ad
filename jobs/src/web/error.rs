//! The API's one error shape:
//! `{"error": {"status": 400, "code": "bad_parameter", "parameter": "last", "message": "…"}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answer of the API. Messages are written for the caller and never hold secrets or
/// internal details beyond what the caller needs (database errors are logged, not served).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code.
    pub code: &'static str,
    /// The query or path parameter at fault, if one is.
    pub parameter: Option<String>,
    /// What went wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// 400: `parameter` is invalid.
    pub fn bad_parameter(parameter: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_parameter",
            parameter: Some(parameter.to_owned()),
            message: message.into(),
        }
    }

    /// Any other status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            parameter: None,
            message: message.into(),
        }
    }

    /// 500 for a failure the caller cannot fix; the detail goes to the log only.
    pub fn internal(what: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{what}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{what} failed; the server log has the details"),
        )
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::internal("database query", e)
    }
}

/// The body of every error answer of the API, 4xx and 5xx alike: one shape, documented once (the
/// `ErrorBody` schema of the OpenAPI document, which every error response there refers to).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// The HTTP status, repeated for clients that only keep the body.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// A stable machine-readable code: `bad_parameter`, `not_found`, `unauthorized`, `disabled`,
    /// `locked`, `simulated_beside_real`, `internal`.
    pub code: String,
    /// The query or path parameter at fault; present only with `bad_parameter`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    /// What went wrong and what to do, for a person.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                status: self.status.as_u16(),
                code: self.code.to_owned(),
                parameter: self.parameter,
                message: self.message,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The JSON answer for unknown paths under `/api/v1`, in the one error shape.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see docs/web.md for the API",
    )
}
