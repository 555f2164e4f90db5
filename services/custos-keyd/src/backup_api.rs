//! §12 over HTTPS: the wrapper key (`/api/v1/wrapper-key`), the manual
//! backup download and the restore (`/api/v1/backups`), and the pieces the
//! web console's pages share with them: backups are written to and read
//! from unlinked temporary files in the data directory (ciphertext only),
//! so neither a download nor an upload is held in memory.

use std::io::{Seek, Write};
use std::sync::Arc;
use std::time::Duration;

use appliance::access::Actor;
use appliance::secret::SecretString;
use appliance::store::{BackupInfo, RestoreReport};
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::json;

use crate::api::{ApiQuery, Authed};
use crate::error::{ApiError, ApiResult};
use crate::json::ApiJson;
use crate::state::AppState;

type St = State<Arc<AppState>>;

/// Largest backup file a restore accepts.
pub const MAX_RESTORE_BYTES: u64 = 8 * 1024 * 1024 * 1024;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/wrapper-key", get(status).post(create))
        .route("/api/v1/wrapper-key/export", post(export))
        .route("/api/v1/wrapper-key/import", post(import))
        .route("/api/v1/wrapper-key/share", get(my_share))
        .route("/api/v1/wrapper-key/share/stored", post(share_stored))
        .route("/api/v1/backups", post(backup))
        .route(
            "/api/v1/backups/restore",
            post(restore).layer(DefaultBodyLimit::disable()),
        )
}

/// A new private file in the data directory's `tmp/`, already unlinked:
/// it disappears when the last handle closes, whatever happens.
fn anonymous_file(st: &AppState) -> ApiResult<std::fs::File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = st.store.dir().join("tmp");
    let internal = |e: std::io::Error| ApiError::Internal(format!("{}: {e}", dir.display()));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(internal)?;
    let path = dir.join(format!("spool-{}", appliance::crypto::random_token()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(internal)?;
    std::fs::remove_file(&path).map_err(internal)?;
    Ok(file)
}

/// Bytes an uploaded backup may spool: what the data partition holds
/// above its reserve, at most [`MAX_RESTORE_BYTES`] (issue 12, item 9).
pub fn spool_limit(st: &AppState) -> u64 {
    st.store
        .disk_available()
        .map_or(MAX_RESTORE_BYTES, |free| {
            free.saturating_sub(st.store.disk_reserve())
        })
        .min(MAX_RESTORE_BYTES)
}

fn too_large(limit: u64) -> ApiError {
    ApiError::BodyRejected {
        status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        field: "body".to_owned(),
        message: format!(
            "the backup is larger than the {limit} bytes the data partition can take now"
        ),
    }
}

/// An unlinked spool file for an upload (the web console's restore form).
pub fn anonymous_spool(st: &AppState) -> ApiResult<std::fs::File> {
    anonymous_file(st)
}

/// The host name backups are named after: the one set with `setinfo
/// hostname`, else the service's own.
fn fqdn(st: &AppState) -> String {
    st.store
        .os_settings()
        .ok()
        .and_then(|o| o.host_name.map(|h| h.as_str().to_owned()))
        .unwrap_or_else(|| st.host_name.clone())
}

/// Writes a backup as `actor` and returns it ready to stream.
pub async fn make_backup(
    st: &Arc<AppState>,
    actor: Actor,
) -> ApiResult<(BackupInfo, std::fs::File)> {
    let st2 = st.clone();
    tokio::task::spawn_blocking(move || {
        let mut file = anonymous_file(&st2)?;
        let info = {
            let mut w = std::io::BufWriter::new(&mut file);
            let info = st2.store.write_backup(&actor, &fqdn(&st2), &mut w)?;
            w.flush()
                .map_err(|e| ApiError::Internal(format!("backup file: {e}")))?;
            info
        };
        file.rewind()
            .map_err(|e| ApiError::Internal(format!("backup file: {e}")))?;
        Ok((info, file))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("backup task: {e}")))?
}

/// The download of a backup file.
pub fn download(info: &BackupInfo, file: std::fs::File) -> Response {
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    (
        [
            (header::CONTENT_TYPE, "application/x-tar".to_owned()),
            (header::CONTENT_LENGTH, info.bytes.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", info.file_name),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Spools an uploaded backup to an unlinked file, refusing (413) one
/// larger than [`spool_limit`].
pub async fn spool(st: &Arc<AppState>, mut body: Body) -> ApiResult<std::fs::File> {
    let limit = spool_limit(st);
    let mut file = anonymous_file(st)?;
    let mut size = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BadRequest {
            field: "backup",
            message: format!("backup: the upload failed: {e}"),
        })?;
        if let Ok(data) = frame.into_data() {
            size += data.len() as u64;
            if size > limit {
                return Err(too_large(limit));
            }
            file.write_all(&data)
                .map_err(|e| ApiError::Internal(format!("spooling a backup: {e}")))?;
        }
    }
    file.rewind()
        .map_err(|e| ApiError::Internal(format!("spooling a backup: {e}")))?;
    Ok(file)
}

/// Restores from a spooled file, then ends every session and restarts the
/// service so the restored certificates and settings are served.
pub async fn restore_from(
    st: &Arc<AppState>,
    actor: Actor,
    file: std::fs::File,
    include_users: bool,
) -> ApiResult<RestoreReport> {
    let store = st.store.clone();
    let report = tokio::task::spawn_blocking(move || {
        let mut r = std::io::BufReader::new(file);
        store.restore_backup(&actor, &mut r, include_users)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("restore task: {e}")))??;
    st.end_all_sessions();
    let st2 = st.clone();
    tokio::spawn(async move {
        // Let the answer reach the administrator first.
        tokio::time::sleep(Duration::from_secs(1)).await;
        st2.restart.notify_one();
    });
    Ok(report)
}

async fn status(State(st): St, Authed(actor): Authed) -> ApiResult<Response> {
    Ok(Json(st.store(move |s| s.wrapper_key_status(&actor)).await?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateReq {
    #[serde(default)]
    replace: bool,
    /// A quorum of the current key's shares, once it was exported.
    #[serde(default)]
    shares: Vec<SecretString>,
}

/// The body is optional: no body creates a key where none exists.
async fn create(
    State(st): St,
    Authed(actor): Authed,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: CreateReq = if body.iter().all(u8::is_ascii_whitespace) {
        CreateReq::default()
    } else {
        crate::json::from_slice(&body)?
    };
    let v = st
        .store(move |s| s.create_wrapper_key(&actor, req.replace, &req.shares))
        .await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportReq {
    minimum_custodians: i64,
    total_custodians: i64,
    custodians: Vec<String>,
    /// A quorum of the current key's shares, once it was exported.
    #[serde(default)]
    shares: Vec<SecretString>,
}

async fn export(
    State(st): St,
    Authed(actor): Authed,
    ApiJson(req): ApiJson<ExportReq>,
) -> ApiResult<Response> {
    let v = st
        .store(move |s| {
            s.export_wrapper_key(
                &actor,
                req.minimum_custodians,
                req.total_custodians,
                &req.custodians,
                &req.shares,
            )
        })
        .await?;
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportReq {
    shares: Vec<SecretString>,
    /// A quorum of the replaced key's shares, when it was exported.
    #[serde(default)]
    current_shares: Vec<SecretString>,
}

async fn import(
    State(st): St,
    Authed(actor): Authed,
    ApiJson(req): ApiJson<ImportReq>,
) -> ApiResult<Response> {
    let v = st
        .store(move |s| s.import_wrapper_key(&actor, &req.shares, &req.current_shares))
        .await?;
    Ok(Json(v).into_response())
}

async fn my_share(State(st): St, Authed(actor): Authed) -> ApiResult<Response> {
    let share = st.store(move |s| s.my_wrapper_share(&actor)).await?;
    Ok(Json(json!({ "share": share.expose() })).into_response())
}

/// The custodian confirms they stored their share; the appliance deletes it.
async fn share_stored(State(st): St, Authed(actor): Authed) -> ApiResult<Response> {
    let at = st.store(move |s| s.confirm_share_stored(&actor)).await?;
    Ok(Json(json!({ "collected_at": at })).into_response())
}

async fn backup(State(st): St, Authed(actor): Authed) -> ApiResult<Response> {
    let (info, file) = make_backup(&st, actor).await?;
    Ok(download(&info, file))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreQuery {
    include_users: Option<bool>,
}

async fn restore(
    State(st): St,
    Authed(actor): Authed,
    ApiQuery(q): ApiQuery<RestoreQuery>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    // Refuse before reading a large upload when the caller may not restore,
    // or when the announced size cannot fit.
    actor.require_system(appliance::access::Access::Write)?;
    let limit = spool_limit(&st);
    let announced = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let file = spool(&st, body).await?;
    let report = restore_from(&st, actor, file, q.include_users.unwrap_or(false)).await?;
    let mut v = serde_json::to_value(&report).map_err(|e| ApiError::Internal(e.to_string()))?;
    v["restarting"] = json!(true);
    Ok(Json(v).into_response())
}
