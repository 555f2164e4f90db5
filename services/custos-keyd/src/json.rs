//! The JSON request bodies of the admin API and the agent enrolment:
//! `Content-Type: application/json` is required (415 otherwise), then the
//! bytes are read by `appliance::json_body` (an object, no `null`, serde's
//! refusals naming the field by its path), whose [`BodyError`] is a 400.
//! The reader lives in the appliance library so the fuzz target
//! `agent_json` runs the very code this service runs.

use appliance::json_body::BodyError;
pub use appliance::json_body::object;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON object body; its refusal is an [`ApiError`] naming the field.
pub struct ApiJson<T>(pub T);

fn refused(status: StatusCode, field: impl Into<String>, rule: &str) -> ApiError {
    let field = field.into();
    ApiError::BodyRejected {
        status,
        message: format!("{field}: {rule}"),
        field,
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        ApiError::BodyRejected {
            status: StatusCode::BAD_REQUEST,
            field: e.field,
            message: e.message,
        }
    }
}

fn is_json(req: &Request) -> bool {
    let Some(ct) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&req) {
            return Err(refused(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "body",
                "must be sent with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rej| refused(rej.status(), "body", &rej.body_text()))?;
        from_slice(&bytes).map(ApiJson)
    }
}

/// A JSON body of at most `max` bytes, for an upload whose sender's right
/// to send it is checked before this is called (issue 12, item 9): a
/// `Content-Length` over `max` is refused with 413 before a byte of the
/// body is read, and a body that grows past `max` is refused when it does,
/// never buffered whole. `what` names the upload in the refusal.
pub async fn limited<T: DeserializeOwned>(
    req: Request,
    max: usize,
    what: &str,
) -> Result<T, ApiError> {
    if !is_json(&req) {
        return Err(refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "body",
            "must be sent with Content-Type: application/json",
        ));
    }
    let too_large = || {
        refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body",
            &format!(
                "{what} is at most {max} bytes ({} KiB); this one is larger",
                max / 1024
            ),
        )
    };
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(req.into_body(), max)
        .await
        .map_err(|e| {
            let e = e.into_inner();
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                refused(
                    StatusCode::BAD_REQUEST,
                    "body",
                    &format!("could not be read ({e})"),
                )
            }
        })?;
    from_slice(&bytes)
}

/// Reads a request body that must be a JSON object of `T`'s fields.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    Ok(appliance::json_body::from_slice(bytes)?)
}
