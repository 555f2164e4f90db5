//! The agent protocol (§8): enrolment on 8443/8446 and key retrieval over
//! mutual TLS on 8444/8447. JSON over HTTPS, errors in the API's shape.

use std::sync::Arc;

use appliance::pki::CaKind;
use appliance::store::{Registration, SECRET_REFUSAL};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use crate::api::{ApiJson, ApiQuery};
use crate::enrol_guard::EnrolGuard;
use crate::error::{ApiError, ApiResult};
use crate::serve::Peer;
use crate::state::AppState;

#[derive(Clone)]
struct Enrol {
    state: Arc<AppState>,
    guard: Arc<EnrolGuard>,
    kind: CaKind,
    key_port: u16,
}

/// The enrolment service of one authority (RSA on 8443, P-384 on 8446).
/// `guard` is the back-off after failed secrets, shared by both.
pub fn enrol_router(
    state: Arc<AppState>,
    guard: Arc<EnrolGuard>,
    kind: CaKind,
    key_port: u16,
) -> Router {
    Router::new()
        .route("/agent/v1/ca", get(ca))
        .route("/agent/v1/register", post(register))
        .fallback(|| async { ApiError::Core(appliance::Error::not_found("resource", "this path")) })
        .with_state(Enrol {
            state,
            guard,
            kind,
            key_port,
        })
}

async fn ca(State(e): State<Enrol>) -> ApiResult<Response> {
    let ca = e.state.identities.ca(e.kind);
    let fp = ca.fingerprint()?;
    Ok(Json(json!({ "ca_certificate": ca.cert_pem, "fingerprint": fp })).into_response())
}

/// The body is an `appliance::store::Registration` (its JSON shape is
/// defined there, next to its rules, and fuzzed as `agent_json`).
async fn register(
    State(e): State<Enrol>,
    Extension(peer): Extension<Peer>,
    ApiJson(reg): ApiJson<Registration>,
) -> ApiResult<Response> {
    let (host_name, domain) = (reg.host_name.clone(), reg.domain.clone());
    let kind = e.kind;
    let source = peer.addr.ip().to_string();
    // Refused before the store is asked, whatever the secret: no oracle.
    let attempt = match e.guard.admit(peer.addr.ip(), &domain) {
        Ok(attempt) => attempt,
        Err(wait) => return Ok(too_many(wait)),
    };
    let outcome = e
        .state
        .store(move |s| s.register_host(&reg, kind, &source))
        .await;
    attempt.finish(matches!(
        &outcome,
        Err(ApiError::Core(appliance::Error::Forbidden(m))) if m == SECRET_REFUSAL
    ));
    let (certificate, ca_certificate) = outcome?;
    Ok(Json(json!({
        "certificate": certificate,
        "ca_certificate": ca_certificate,
        "key_port": e.key_port,
        "host_name": host_name,
        "domain": domain,
    }))
    .into_response())
}

/// 429 with `Retry-After` (whole seconds, rounded up) during a back-off.
fn too_many(wait: std::time::Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({
            "error": "too_many_requests",
            "message": format!(
                "registration refused: too many failed registrations from this address or for this domain; try again in {secs} seconds"
            ),
        })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// The key service of one authority; the TLS layer has already verified
/// the client certificate against that authority.
pub fn keys_router(state: Arc<AppState>, kind: CaKind) -> Router {
    Router::new()
        .route("/agent/v1/keys/{name}", get(get_key))
        .route("/agent/v1/status", get(status))
        .fallback(|| async { ApiError::Core(appliance::Error::not_found("resource", "this path")) })
        .layer(Extension(kind))
        .with_state(state)
}

fn host_fingerprint(peer: &Peer) -> ApiResult<String> {
    peer.cert_fingerprint.clone().ok_or_else(|| {
        appliance::Error::Forbidden("a client certificate is required".into()).into()
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionQuery {
    version: Option<i64>,
}

async fn get_key(
    State(st): State<Arc<AppState>>,
    Extension(kind): Extension<CaKind>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
) -> ApiResult<Response> {
    let fp = host_fingerprint(&peer)?;
    if q.version.is_some_and(|v| v < 1) {
        return Err(ApiError::BadRequest {
            field: "version",
            message: "version: must be 1 or more".into(),
        });
    }
    let source = peer.addr.ip().to_string();
    let r = st
        .store(move |s| s.release_key(&fp, &name, q.version, &source))
        .await?;
    let key = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD.encode(r.material.expose()),
    );
    Ok(Json(json!({
        "name": r.name,
        "domain": r.domain,
        "version": r.version,
        "current_version": r.current_version,
        "algorithm": r.algorithm,
        "key_type": r.key_type,
        "refresh_period_minutes": r.refresh_period_minutes,
        "created_at": r.created_at,
        "expires_at": r.expires_at,
        "key": key.as_str(),
        // §11 Notify All Hosts: where else this key service runs.
        "failovers": st
            .host_failovers
            .read()
            .expect("host failovers lock poisoned")
            .iter()
            .map(|f| json!({
                "name": f.name,
                "address": f.address,
                "port": if kind == CaKind::Ec { f.keys_ec_port } else { f.keys_port },
            }))
            .collect::<Vec<_>>(),
    }))
    .into_response())
}

async fn status(
    State(st): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
) -> ApiResult<Response> {
    let fp = host_fingerprint(&peer)?;
    let host = st.store(move |s| s.host_by_certificate(&fp)).await?;
    Ok(Json(json!({
        "host_name": host.host_name,
        "domain": host.domain,
        "registered_at": host.registered_at,
        "last_contact": host.last_contact,
        "server_time": appliance::model::fmt_time(time::OffsetDateTime::now_utc()),
        "security_mode": st.mode,
    }))
    .into_response())
}
