//! The one error type of every HTTP edge of the key service. Its
//! `IntoResponse` matches every variant of the core error, with no catch-all:
//! a new kind of error cannot slip through as the wrong status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub enum ApiError {
    Core(appliance::Error),
    /// No valid session token.
    Unauthenticated(&'static str),
    /// The request body or query could not be read.
    BadRequest {
        field: &'static str,
        message: String,
    },
    /// The body could not be read as the request's JSON (its status: 400,
    /// 413, 415); `field` is the path of the offending field, or `body`.
    BodyRejected {
        status: StatusCode,
        field: String,
        message: String,
    },
    /// A blocking task died; the detail is logged.
    Internal(String),
    /// Too many password checks at once, or this source must pause after
    /// failed sign-ins: 429 with `Retry-After` (seconds).
    Busy {
        retry_after: u64,
    },
}

impl From<appliance::Error> for ApiError {
    fn from(e: appliance::Error) -> Self {
        ApiError::Core(e)
    }
}

fn body(status: StatusCode, code: &str, message: String, field: Option<&str>) -> Response {
    let mut v = json!({ "error": code, "message": message });
    if let Some(f) = field {
        v["field"] = json!(f);
    }
    (status, axum::Json(v)).into_response()
}

fn internal(detail: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %detail, "request failed");
    body(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the appliance could not complete the request; see its log".into(),
        None,
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        use appliance::Error as E;
        match self {
            ApiError::Core(e) => match &e {
                E::Invalid { field, rule } => body(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("{field}: {rule}"),
                    Some(field),
                ),
                E::NotFound { .. } => body(StatusCode::NOT_FOUND, "not_found", e.to_string(), None),
                E::Conflict { field, rule } => body(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!("{field}: {rule}"),
                    Some(field),
                ),
                E::Forbidden(_) => body(StatusCode::FORBIDDEN, "forbidden", e.to_string(), None),
                E::BadCredentials => body(
                    StatusCode::UNAUTHORIZED,
                    "bad_credentials",
                    e.to_string(),
                    None,
                ),
                E::Locked => body(StatusCode::FORBIDDEN, "locked", e.to_string(), None),
                E::Licence(_) => body(StatusCode::FORBIDDEN, "licence", e.to_string(), None),
                E::Failover { .. } => body(StatusCode::CONFLICT, "failover", e.to_string(), None),
                E::PasswordChangeRequired => body(
                    StatusCode::FORBIDDEN,
                    "password_change_required",
                    "the password must be changed first: POST /api/v1/password".into(),
                    None,
                ),
                E::Store(_)
                | E::Crypto(_)
                | E::Certificate(_)
                | E::Io { .. }
                | E::SchemaTooNew { .. } => internal(&e),
            },
            ApiError::Unauthenticated(why) => body(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                why.into(),
                None,
            ),
            ApiError::BadRequest { field, message } => {
                body(StatusCode::BAD_REQUEST, "invalid", message, Some(field))
            }
            ApiError::BodyRejected {
                status,
                field,
                message,
            } => body(status, "invalid", message, Some(&field)),
            ApiError::Internal(detail) => internal(&detail),
            ApiError::Busy { retry_after } => {
                let mut r = body(
                    StatusCode::TOO_MANY_REQUESTS,
                    "busy",
                    format!("too many sign-in attempts; try again in {retry_after} s"),
                    None,
                );
                r.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from(retry_after),
                );
                r
            }
        }
    }
}

/// §2, §10: the answer of the routes that need a licence while none is
/// installed (a response, not an [`ApiError`]: it comes from the one route
/// layer in `api.rs`, never from a store operation).
pub fn licence_required() -> Response {
    body(
        StatusCode::FORBIDDEN,
        "licence_required",
        "License not found: install a licence first (System → License, PUT /api/v1/licence)".into(),
        None,
    )
}

pub type ApiResult<T> = Result<T, ApiError>;
