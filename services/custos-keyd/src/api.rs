//! The admin REST API (`/api/v1/…`), JSON over HTTPS. Every handler turns
//! the request into model types and calls one store operation, which checks
//! the permissions of §5 and the field rules; nothing is decided here.

use std::sync::Arc;

use appliance::access::{Access, Actor};
use appliance::model::{
    Algorithm, CreationMethod, DomainKind, KeyType, Role, SecurityMode, Severity, UserType,
    parse_datetime,
};
use appliance::secret::{SecretBytes, SecretString};
use appliance::store::{
    AdminUpdate, AuditQuery, LicenceView, NewAdmin, NewDomain, NewKey, NewSecret, PreferencesUpdate,
};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::serve::Peer;
use crate::state::AppState;

type St = State<Arc<AppState>>;

pub use crate::json::ApiJson;

/// A query string whose rejection is an [`ApiError`].
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(rej) => Err(ApiError::BadRequest {
                field: "query",
                message: format!("query: {}", rej.body_text()),
            }),
        }
    }
}

fn source_of(parts: &Parts) -> String {
    parts
        .extensions
        .get::<Peer>()
        .map(|p| p.addr.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// The signed-in administrator of a request, loaded fresh from the store.
pub struct Authed(pub Actor);

/// The administrator a route layer already signed in for this request, so
/// the handler does not load it twice. Private: only this module inserts it.
#[derive(Clone)]
struct SignedIn(Actor);

impl FromRequestParts<Arc<AppState>> for Authed {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        if let Some(SignedIn(actor)) = parts.extensions.get::<SignedIn>() {
            return Ok(Authed(actor.clone()));
        }
        let token = bearer(parts).ok_or(ApiError::Unauthenticated(
            "sign in first: POST /api/v1/login, then send Authorization: Bearer <token>",
        ))?;
        let prefs = state.store(|s| s.preferences_unchecked()).await?;
        let login = state
            .sessions
            .touch(token, time::Duration::minutes(prefs.session_timeout))
            .ok_or(ApiError::Unauthenticated(
                "the session has expired or does not exist; sign in again",
            ))?;
        let source = source_of(parts);
        let l2 = login.clone();
        let (actor, locked) = state
            .store(move |s| {
                Ok((
                    s.actor(&l2, &source, "api")?,
                    s.admin_locked_unchecked(&l2)?,
                ))
            })
            .await
            .map_err(|e| match e {
                ApiError::Core(appliance::Error::NotFound { .. }) => {
                    ApiError::Unauthenticated("the administrator of this session no longer exists")
                }
                other => other,
            })?;
        if locked {
            // A locked account's sessions end with the lock.
            state.end_sessions_of(&login);
            return Err(ApiError::Unauthenticated(
                "the session has expired or does not exist; sign in again",
            ));
        }
        Ok(Authed(actor))
    }
}

/// The route layer of the licensed routes: sign-in and the forced password
/// change answer first, as everywhere; then, while no valid licence is
/// installed, `licence_required`.
async fn require_licence(State(st): St, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let actor = match Authed::from_request_parts(&mut parts, &st).await {
        Ok(Authed(actor)) => actor,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = actor.require_signed_in(Access::Read) {
        return ApiError::from(e).into_response();
    }
    match st.store(|s| s.licence_unchecked()).await {
        Ok(Some(_)) => {}
        Ok(None) => return crate::error::licence_required(),
        Err(e) => return e.into_response(),
    }
    parts.extensions.insert(SignedIn(actor));
    next.run(Request::from_parts(parts, body)).await
}

/// The caller's address, for login audit entries.
pub struct Source(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Source(source_of(parts)))
    }
}

fn created(v: impl serde::Serialize) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn parse_roles(roles: &[String]) -> ApiResult<Vec<Role>> {
    Ok(roles
        .iter()
        .map(|r| Role::parse(r))
        .collect::<appliance::Result<_>>()?)
}

pub fn router(state: Arc<AppState>) -> Router {
    // §2, §10: without a licence only the dashboard and System are usable,
    // so Administrators, Domains (and everything inside one) and Log are
    // behind the one licence check; sign-in, password, system, preferences
    // and the licence itself are not.
    let licensed = Router::new()
        .route(
            "/api/v1/administrators",
            get(list_admins).post(create_admin),
        )
        .route(
            "/api/v1/administrators/{login}",
            get(get_admin).patch(update_admin).delete(delete_admin),
        )
        .route("/api/v1/domains", get(list_domains).post(create_domain))
        .route(
            "/api/v1/domains/{domain}",
            get(get_domain).delete(delete_domain),
        )
        .route(
            "/api/v1/domains/{domain}/administrators",
            get(list_members).post(add_member),
        )
        .route(
            "/api/v1/domains/{domain}/administrators/{login}",
            axum::routing::patch(update_member).delete(remove_member),
        )
        .route(
            "/api/v1/domains/{domain}/keys",
            get(list_keys).post(create_key),
        )
        .route(
            "/api/v1/domains/{domain}/keys/{name}",
            get(get_key).delete(delete_key),
        )
        .route(
            "/api/v1/domains/{domain}/keys/{name}/rotate",
            post(rotate_key),
        )
        .route(
            "/api/v1/domains/{domain}/registration-secret",
            get(get_secret).put(set_secret),
        )
        .route(
            "/api/v1/domains/{domain}/registration-secret/expire",
            post(expire_secret),
        )
        .route(
            "/api/v1/domains/{domain}/hosts",
            get(list_hosts).post(add_host),
        )
        .route(
            "/api/v1/domains/{domain}/hosts/{host}",
            get(get_host).patch(update_host).delete(delete_host),
        )
        .route("/api/v1/audit", get(audit_log))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_licence,
        ));
    Router::new()
        .route("/api/openapi.json", get(crate::openapi::document))
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/password", post(change_password))
        .route("/api/v1/system", get(system_info))
        .route(
            "/api/v1/preferences",
            get(get_prefs).patch(update_prefs).put(update_prefs),
        )
        .route(
            "/api/v1/licence",
            get(get_licence)
                .put(install_licence)
                .layer(DefaultBodyLimit::max(LICENCE_BODY_MAX)),
        )
        // §14 Email Notification is a System page: usable without a licence.
        .route("/api/v1/email/smtp", get(get_smtp).put(set_smtp))
        .route("/api/v1/email/test", post(send_test_mail))
        .route(
            "/api/v1/email/groups",
            get(list_email_groups).post(create_email_group),
        )
        .route(
            "/api/v1/email/groups/{name}",
            get(get_email_group)
                .patch(update_email_group)
                .delete(delete_email_group),
        )
        .route("/api/v1/snmp", get(get_snmp).put(update_snmp))
        // §11 High Availability is a system menu: usable without a licence.
        .route("/api/v1/ha/nodes", get(list_ha_nodes).post(add_ha_node))
        .route(
            "/api/v1/ha/nodes/{name}",
            axum::routing::delete(delete_ha_node),
        )
        .route(
            "/api/v1/ha/nodes/{name}/replication",
            post(configure_ha_replication),
        )
        .route("/api/v1/ha/join", post(join_ha_group))
        .route("/api/v1/ha/promote", post(promote_ha_node))
        .route("/api/v1/ha/notify-hosts", post(notify_hosts))
        .route(
            "/api/v1/ha/replication-mode",
            get(get_ha_replication_mode).put(set_ha_replication_mode),
        )
        .route(
            "/api/v1/ha/nodes/{name}/registration",
            post(register_ha_node),
        )
        .route(
            "/api/v1/backups/automatic",
            get(get_automatic_backup)
                .put(set_automatic_backup)
                .delete(remove_automatic_backup),
        )
        .route("/api/v1/backups/ssh-public-key", get(backup_ssh_public_key))
        .route("/api/v1/backups/now", post(backup_now))
        .route("/api/v1/backups/history", get(backup_history))
        .merge(licensed)
        .merge(crate::backup_api::routes())
        .fallback(|| async { ApiError::Core(appliance::Error::not_found("resource", "this path")) })
        .with_state(state)
}

// --- sessions ---------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginReq {
    login: String,
    password: SecretString,
}

async fn login(
    State(st): St,
    Source(src): Source,
    ApiJson(req): ApiJson<LoginReq>,
) -> ApiResult<Response> {
    let login = req.login.clone();
    let out = st
        .check_password(&src.clone(), move |s| {
            s.login(&req.login, &req.password, &src, "api")
        })
        .await?;
    let token = st.sessions.create(&login);
    Ok(
        Json(json!({ "token": token, "must_change_password": out.must_change_password }))
            .into_response(),
    )
}

async fn logout(
    State(st): St,
    Authed(actor): Authed,
    parts: axum::http::HeaderMap,
) -> ApiResult<Response> {
    if let Some(t) = parts
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        st.sessions.end(t);
    }
    st.store(move |s| s.log_action(&actor, Severity::Info, "signed out"))
        .await?;
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordReq {
    old: SecretString,
    new: SecretString,
}

async fn change_password(
    State(st): St,
    Authed(actor): Authed,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<PasswordReq>,
) -> ApiResult<Response> {
    let login = actor.login.clone();
    st.check_password(&actor.source.clone(), move |s| {
        s.change_password(&actor, &req.old, &req.new)
    })
    .await?;
    // The other sessions were opened with the old password: end them (API
    // tokens and console sessions), keep the one that changed it.
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    st.sessions.end_others_of(&login, token);
    st.web_sessions.end_all_of(&login);
    Ok(Json(json!({ "must_change_password": false })).into_response())
}

async fn system_info(State(st): St, Authed(actor): Authed) -> ApiResult<Response> {
    let (protection, ha) = st
        .store(move |s| {
            s.preferences(&actor)?;
            Ok((s.master_key_protection(), s.ha_role()?))
        })
        .await?;
    let fp = |id: &appliance::pki::Identity| id.fingerprint().unwrap_or_default();
    Ok(Json(json!({
        "version": appliance::VERSION,
        "host_name": st.host_name,
        "security_mode": st.mode,
        "server_time": appliance::model::fmt_time(time::OffsetDateTime::now_utc()),
        "rsa_ca_fingerprint": fp(&st.identities.ca_rsa),
        "ec_ca_fingerprint": fp(&st.identities.ca_ec),
        "master_key": protection,
        "high_availability": ha,
        "ports": st.ports.get().map(|p| json!({
            "web": p.web, "enrol": p.enrol, "keys": p.keys, "enrol_ec": p.enrol_ec, "keys_ec": p.keys_ec,
        })),
    }))
    .into_response())
}

// --- licence ------------------------------------------------------------------------

/// `{"installed": false, "status": "License not found"}`, or the licence
/// view with `"installed": true` and a status line.
fn licence_json(view: Option<LicenceView>) -> ApiResult<Value> {
    let Some(view) = view else {
        return Ok(json!({ "installed": false, "status": appliance::licence::NOT_FOUND }));
    };
    let status = if view.key_agent_expired {
        format!(
            "Key agent licence expired on {}",
            view.terms.key_agent.expires
        )
    } else {
        "Licensed".to_owned()
    };
    let mut v = serde_json::to_value(&view).map_err(|e| ApiError::Internal(e.to_string()))?;
    v["installed"] = json!(true);
    v["status"] = json!(status);
    Ok(v)
}

async fn get_licence(State(st): St, Authed(actor): Authed) -> ApiResult<Response> {
    let view = st.store(move |s| s.licence(&actor)).await?;
    Ok(Json(licence_json(view)?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LicenceInstall {
    /// The licence file's text.
    licence: String,
}

/// Largest body of `PUT /api/v1/licence` (and of the console's licence
/// form): a licence file is a few KB of terms and a signature, so 64 KiB
/// leaves room for long names and later terms, while anything larger is
/// refused before it is buffered.
pub const LICENCE_BODY_MAX: usize = 64 * 1024;

/// Only a System Administrator with write access installs a licence (§10);
/// that is checked from the headers before the body is read, and the body
/// is read up to [`LICENCE_BODY_MAX`] (issue 12, item 9).
async fn install_licence(
    State(st): St,
    Authed(actor): Authed,
    body: Request,
) -> ApiResult<Response> {
    actor.require_system(Access::Write)?;
    let req: LicenceInstall =
        crate::json::limited(body, LICENCE_BODY_MAX, "a licence upload").await?;
    let view = st
        .store(move |s| s.install_licence(&actor, &req.licence))
        .await?;
    Ok(Json(licence_json(Some(view))?).into_response())
}

// --- administrators -----------------------------------------------------------

async fn list_admins(State(st): St, Authed(actor): Authed) -> ApiResult<Response> {
    Ok(Json(st.store(move |s| s.list_admins(&actor)).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminCreate {
    login: String,
    #[serde(default)]
    description: String,
    rsa_user_id: Option<String>,
    password: SecretString,
    confirm_password: Option<SecretString>,
    user_type: Option<String>,
    restrict_to_domain: Option<String>,
    #[serde(default)]
    read_only: bool,
}

async fn create_admin(
    State(st): St,
    Authed(actor): Authed,
    ApiJson(req): ApiJson<AdminCreate>,
) -> ApiResult<Response> {
    let user_type = match req.user_type.as_deref() {
        None => UserType::System,
        Some(t) => UserType::parse(t)?,
    };
    let new = NewAdmin {
        login: req.login,
        description: req.description,
        rsa_user_id: req.rsa_user_id.filter(|s| !s.is_empty()),
        password: req.password,
        confirm_password: req.confirm_password,
        user_type,
        restrict_to_domain: req.restrict_to_domain.filter(|s| !s.is_empty()),
        read_only: req.read_only,
    };
    Ok(created(
        st.store(move |s| s.create_admin(&actor, new)).await?,
    ))
}

async fn get_admin(
    State(st): St,
    Authed(actor): Authed,
    Path(login): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(st.store(move |s| s.get_admin(&actor, &login)).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminPatch {
    description: Option<String>,
    rsa_user_id: Option<String>,
    read_only: Option<bool>,
    password: Option<SecretString>,
    #[serde(default)]
    unlock: bool,
}

async fn update_admin(
    State(st): St,
    Authed(actor): Authed,
    Path(login): Path<String>,
    ApiJson(req): ApiJson<AdminPatch>,
) -> ApiResult<Response> {
    let reset = req.password.is_some();
    let up = AdminUpdate {
        description: req.description,
        rsa_user_id: req.rsa_user_id.map(|s| Some(s).filter(|s| !s.is_empty())),
        read_only: req.read_only,
        password: req.password,
        unlock: req.unlock,
    };
    let target = login.clone();
    let view = st
        .store(move |s| s.update_admin(&actor, &target, up))
        .await?;
    if reset {
        st.end_sessions_of(&login);
    }
    Ok(Json(view).into_response())
}

async fn delete_admin(
    State(st): St,
    Authed(actor): Authed,
    Path(login): Path<String>,
) -> ApiResult<Response> {
    let target = login.clone();
    st.store(move |s| s.delete_admin(&actor, &target)).await?;
    st.end_sessions_of(&login);
    Ok(no_content())
}

// --- domains --------------------------------------------------------------------

async fn list_domains(State(st): St, Authed(actor): Authed) -> ApiResult<Response> {
    Ok(Json(st.store(move |s| s.list_domains(&actor)).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainCreate {
    name: String,
    kind: Option<String>,
    #[serde(default)]
    organization: String,
    #[serde(default)]
    description: String,
    help_desk_information: Option<String>,
    domain_administrator: Option<String>,
}

async fn create_domain(
    State(st): St,
    Authed(actor): Authed,
    ApiJson(req): ApiJson<DomainCreate>,
) -> ApiResult<Response> {
    let kind = match req.kind.as_deref() {
        None => DomainKind::Global,
        Some(k) => DomainKind::parse(k)?,
    };
    let new = NewDomain {
        name: req.name,
        kind,
        organization: req.organization,
        description: req.description,
        help_desk_information: req.help_desk_information,
        domain_administrator: req.domain_administrator.filter(|s| !s.is_empty()),
    };
    Ok(created(
        st.store(move |s| s.create_domain(&actor, new)).await?,
    ))
}

async fn get_domain(
    State(st): St,
    Authed(actor): Authed,
    Path(domain): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(st.store(move |s| s.get_domain(&actor, &domain)).await?).into_response())
}

async fn delete_domain(
    State(st): St,
    Authed(actor): Authed,
    Path(domain): Path<String>,
) -> ApiResult<Response> {
    st.store(move |s| s.delete_domain(&actor, &domain)).await?;
    Ok(no_content())
}

async fn list_members(
    State(st): St,
    Authed(actor): Authed,
    Path(domain): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(st.store(move |s| s.list_members(&actor, &domain)).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberAdd {
    login: String,
    #[serde(default)]
    roles: Vec<String>,
}

async fn add_member(
    State(st): St,
    Authed(actor): Authed,
    Path(domain): Path<String>,
    ApiJson(req): ApiJson<MemberAdd>,
) -> ApiResult<Response> {
    let roles = parse_roles(&req.roles)?;
    Ok(created(
        st.store(move |s| s.add_member(&actor, &domain, &req.login, &roles))
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberPatch {
    roles: Option<Vec<String>>,
    enabled: Option<bool>,
}

async fn update_member(
    State(st): St,
    Authed(actor): Authed,
    Path((domain, login)): Path<(String, String)>,
    ApiJson(req): ApiJson<MemberPatch>,
) -> ApiResult<Response> {
    let roles = req.roles.as_deref().map(parse_roles).transpose()?;
    Ok(Json(
        st.store(move |s| s.update_member(&actor, &domain, &login, roles.as_deref(), req.enabled))
            .await?,
    )
    .into_response())
}

async fn remove_member(
    State(st): St,
    Authed(actor): Authed,
    Path((domain, login)): Path<(String, String)>,
) -> ApiResult<Response> {
    st.store(move |s| s.remove_member(&actor, &domain, &login))
        .await?;
    Ok(no_content())
}

// --- keys -----------------------------------------------------------------------

async fn list_keys(
    State(st): St,
    Authed(actor): Authed,
    Path(domain): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(st.store(move |s| s.list_keys(&actor, &domain)).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyCreate {
    name: String,
    #[serde(default)]
    description: String,
    template: Option<String>,
    expiration_date: Option<String>,
    algorithm: Option<String>,
    key_type: Option<String>,
    #[serde(default)]
    unique_to_host: bool,
    key_creation_method: Option<String>,
    /// Base64 of the key bytes, for manual input.
    key_material: Option<SecretString>,
    key_refresh_period: Option<i64>,
    #[serde(default)]
    automatic_key_rotation: bool,
    key_version_life_span: Option<i64>,
}

async fn create_key(
    State(st): St,
    Authed(actor): Authed,
    Path(domain): Path<String>,
    ApiJson(req): ApiJson<KeyCreate>,
) -> ApiResult<Response> {
    let key_material = req
        .key_material
        .as_ref()
        .map(|m| {
            base64::engine::general_purpose::STANDARD
                .decode(m.expose().trim())
                .map(SecretBytes::new)
                .map_err(|_| appliance::Error::invalid("key_material", "must be base64"))
        })
        .transpose()?;
    let new = NewKey {
        name: req.name,
        description: req.description,
        template: req.template,
        expiration_date: req
            .expiration_date
            .as_deref()
            .map(|d| parse_datetime("expiration_date", d))
            .transpose()?,
        algorithm: req
            .algorithm
            .as_deref()
            .map(Algorithm::parse)
            .transpose()?
            .unwrap_or(Algorithm::Aes256),
        key_type: req
            .key_type
            .as_deref()
            .map(KeyType::parse)
            .transpose()?
            .unwrap_or(KeyType::StoredOnServer),
        unique_to_host: req.unique_to_host,
        key_creation_method: req
            .key_creation_method
            .as_deref()
            .map(|m| CreationMethod::parse("key_creation_method", m))
            .transpose()?
            .unwrap_or(CreationMethod::Generate),
        key_material,
        key_refresh_period: req.key_refresh_period,
        automatic_key_rotation: req.automatic_key_rotation,
        key_version_life_span: req.key_version_life_span,
    };
    Ok(created(
        st.store(move |s| s.create_key(&actor, &domain, new))
            .await?,
    ))
}

async fn get_key(
    State(st): St,
    Authed(actor): Authed,
    Path((domain, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    Ok(Json(st.store(move |s| s.get_key(&actor, &domain, &name)).await?).into_response())
}

async fn delete_key(
    State(st): St,
    Authed(actor): Authed,
    Path((domain, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    st.store(move |s| s.delete_key(&actor, &domain, &name))
        .await?;
    Ok(no_content())
}

async fn rotate_key(
    State(st): St,
    Authed(actor): Authed,
    Path((domain, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    Ok(Json(
        st.store(move |s| s.rotate_key(&actor, &domain, &name))
            .await?,
    )
    .into_response())
}

// --- registration secret and hosts ---------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShowQuery {
    show: Option<String>,
}

async fn get_secret(
    State(st): St,
    Authed(actor): Authed,
    Path(domain): Path<String>,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> ApiResult<Response> {
    let show = match q.show.as_deref() {
        None | Some("no") | Some("false") => false,
        Some("yes") | Some("true") => true,
        Some(_) => {
            return Err(ApiError::BadRequest {
                field: "show",
                message: "show: must be yes or no".into(),
            });
        }
    };
    Ok(Json(
        st.store(move |s| s.get_secret(&actor, &domain, show))
            .await?,
    )
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretSet {
    creation_method: Option<String>,
    shared_secret: Option<SecretString>,
    valid_until: Option<String>,
    /// Omitted: on (issue 12: a leaked secret alone must not enrol a host).
    #[serde(default = "yes")]
    require_hosts_first_added: bool,
}

fn yes() -> bool {
    true
}

async fn set_secret(
    State(st): St,
    Authed(actor): Authed,
    Path(domain): Path<String>,
    ApiJson(req): ApiJson<SecretSet>,
) -> ApiResult<Response> {
    let creation_method = match req.creation_method.as_deref() {
        Some(m) => CreationMethod::parse("creation_method", m)?,
        None if req.shared_secret.is_some() => CreationMethod::Manual,
        None => CreationMethod::Generate,
    };
    let new = NewSecret {
        creation_method,
        shared_secret: req.shared_secret,
        valid_until: req
            .valid_until
            .as_deref()
            .map(|d| parse_datetime("valid_until", d))
            .transpose()?,
        require_hosts_first_added: req.require_hosts_first_added,
    };
    Ok(Json(
        st.store(move |s| s.set_secret(&actor, &domain, new))
            .await?,
    )
    .into_response())
}

async fn expire_secret(
    State(st): St,
    Authed(actor): Authed,
    Path(domain): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(st.store(move |s| s.expire_secret(&actor, &domain)).await?).into_response())
}

async fn list_hosts(
    State(st): St,
    Authed(actor): Authed,
    Path(domain): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(st.store(move |s| s.list_hosts(&actor, &domain)).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostAdd {
    host_name: String,
    registration_allowed: Option<bool>,
}

async fn add_host(
    State(st): St,
    Authed(actor): Authed,
    Path(domain): Path<String>,
    ApiJson(req): ApiJson<HostAdd>,
) -> ApiResult<Response> {
    let allowed = req.registration_allowed.unwrap_or(true);
    Ok(created(
        st.store(move |s| s.add_host(&actor, &domain, &req.host_name, allowed))
            .await?,
    ))
}

async fn get_host(
    State(st): St,
    Authed(actor): Authed,
    Path((domain, host)): Path<(String, String)>,
) -> ApiResult<Response> {
    Ok(Json(
        st.store(move |s| s.get_host(&actor, &domain, &host))
            .await?,
    )
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostPatch {
    registration_allowed: bool,
}

async fn update_host(
    State(st): St,
    Authed(actor): Authed,
    Path((domain, host)): Path<(String, String)>,
    ApiJson(req): ApiJson<HostPatch>,
) -> ApiResult<Response> {
    Ok(Json(
        st.store(move |s| {
            s.set_host_registration(&actor, &domain, &host, req.registration_allowed)
        })
        .await?,
    )
    .into_response())
}

async fn delete_host(
    State(st): St,
    Authed(actor): Authed,
    Path((domain, host)): Path<(String, String)>,
) -> ApiResult<Response> {
    st.store(move |s| s.delete_host(&actor, &domain, &host))
        .await?;
    Ok(no_content())
}

// --- preferences and audit -------------------------------------------------------

async fn get_prefs(State(st): St, Authed(actor): Authed) -> ApiResult<Response> {
    Ok(Json(st.store(move |s| s.preferences(&actor)).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrefsPatch {
    key_refresh_period: Option<i64>,
    session_timeout: Option<i64>,
    max_failed_logins: Option<i64>,
    lockout_minutes: Option<i64>,
    security_mode: Option<String>,
}

async fn update_prefs(
    State(st): St,
    Authed(actor): Authed,
    ApiJson(req): ApiJson<PrefsPatch>,
) -> ApiResult<Response> {
    let up = PreferencesUpdate {
        key_refresh_period: req.key_refresh_period,
        session_timeout: req.session_timeout,
        max_failed_logins: req.max_failed_logins,
        lockout_minutes: req.lockout_minutes,
        security_mode: req
            .security_mode
            .as_deref()
            .map(SecurityMode::parse)
            .transpose()?,
    };
    let prefs = st.store(move |s| s.update_preferences(&actor, up)).await?;
    let mut v: Value =
        serde_json::to_value(&prefs).map_err(|e| ApiError::Internal(e.to_string()))?;
    v["restart_required"] = json!(prefs.security_mode != st.mode);
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    severity: Option<String>,
    source: Option<String>,
    text: Option<String>,
    domain: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn audit_log(
    State(st): St,
    Authed(actor): Authed,
    ApiQuery(q): ApiQuery<AuditParams>,
) -> ApiResult<Response> {
    let query = AuditQuery {
        severity: q.severity.as_deref().map(Severity::parse).transpose()?,
        source: q.source.filter(|s| !s.is_empty()),
        text: q.text.filter(|s| !s.is_empty()),
        domain: q.domain.filter(|s| !s.is_empty()),
        limit: q.limit,
        offset: q.offset,
    };
    Ok(Json(st.store(move |s| s.audit_log(&actor, &query)).await?).into_response())
}

// --- automatic backup (§12) -------------------------------------------------------

use appliance::store::{
    AutomaticBackup, AutomaticBackupUpdate, BackupHistoryEntry, Frequency, Schedule, ScpTarget,
    TimeOfDay, parse_weekday, weekday_name,
};

/// The settings as JSON: the time is 24-hour `HH:MM` in UTC (with its
/// 12-hour form for display), the weekday an English name.
fn automatic_backup_json(v: &AutomaticBackup) -> Value {
    let now = time::OffsetDateTime::now_utc();
    json!({
        "schedule": v.schedule.map(|s| json!({
            "frequency": s.frequency.as_str(),
            "time": s.time.as_24h(),
            "time_12h": s.time.as_12h(),
            "time_zone": "UTC",
            "weekday": s.weekday.map(weekday_name),
        })),
        "target": v.target.as_ref().map(|t| json!({
            "host": t.host.as_str(),
            "port": t.port,
            "directory": t.directory,
            "user": t.user,
        })),
        "host_key_fingerprint": v.host_key_fingerprint,
        "host_key_pinned_at": v.host_key_pinned_at,
        "backup_now_pending": v.now_requested_at.is_some(),
        "next_run": v.next_run(now).map(appliance::model::fmt_time),
    })
}

async fn get_automatic_backup(State(st): St, Authed(actor): Authed) -> ApiResult<Response> {
    let v = st.store(move |s| s.automatic_backup(&actor)).await?;
    Ok(Json(automatic_backup_json(&v)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleReq {
    frequency: String,
    /// 24-hour `HH:MM`, UTC.
    time: String,
    weekday: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetReq {
    host: String,
    port: Option<i64>,
    directory: String,
    user: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AutomaticBackupReq {
    #[serde(default, deserialize_with = "crate::json::object")]
    schedule: Option<ScheduleReq>,
    #[serde(default, deserialize_with = "crate::json::object")]
    target: Option<TargetReq>,
    #[serde(default)]
    forget_host_key: bool,
}

async fn set_automatic_backup(
    State(st): St,
    Authed(actor): Authed,
    ApiJson(req): ApiJson<AutomaticBackupReq>,
) -> ApiResult<Response> {
    let schedule = req
        .schedule
        .map(|s| {
            Schedule::new(
                Frequency::parse("frequency", &s.frequency)?,
                TimeOfDay::parse("time", &s.time)?,
                s.weekday
                    .as_deref()
                    .map(|w| parse_weekday("weekday", w))
                    .transpose()?,
            )
        })
        .transpose()?;
    let target = req
        .target
        .map(|t| ScpTarget::new(&t.host, t.port, &t.directory, &t.user))
        .transpose()?;
    let up = AutomaticBackupUpdate {
        schedule,
        target,
        forget_host_key: req.forget_host_key,
    };
    let v = st
        .store(move |s| s.set_automatic_backup(&actor, up))
        .await?;
    Ok(Json(automatic_backup_json(&v)).into_response())
}

async fn remove_automatic_backup(State(st): St, Authed(actor): Authed) -> ApiResult<Response> {
    st.store(move |s| s.remove_automatic_backup(&actor)).await?;
    Ok(no_content())
}

/// The appliance's SSH public key, one `authorized_keys` line (text/plain).
async fn backup_ssh_public_key(State(st): St, Authed(actor): Authed) -> ApiResult<Response> {
    let host = st.host_name.clone();
    let key = st
        .store(move |s| s.backup_ssh_public_key(&actor, &host))
        .await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        format!("{key}\n"),
    )
        .into_response())
}

/// Backup Now: custos-backupd takes the request within two seconds.
async fn backup_now(State(st): St, Authed(actor): Authed) -> ApiResult<Response> {
    let v = st.store(move |s| s.request_backup_now(&actor)).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "requested": true,
            "target": v.target.as_ref().map(|t| t.to_string()),
            "message": "custos-backupd pushes the backup within a few seconds; GET /api/v1/backups/history shows the result",
        })),
    )
        .into_response())
}

fn history_json(h: &BackupHistoryEntry) -> Value {
    json!({
        "at": h.at,
        "kind": h.kind.as_str(),
        "attempt": h.attempt,
        "target": h.target,
        "file_name": h.file_name,
        "bytes": h.bytes,
        "result": if h.success { "success" } else { "failed" },
        "error": h.error,
        "retry_in_secs": h.retry_in_secs,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    limit: Option<i64>,
}

async fn backup_history(
    State(st): St,
    Authed(actor): Authed,
    ApiQuery(q): ApiQuery<HistoryParams>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(50);
    let h = st.store(move |s| s.backup_history(&actor, limit)).await?;
    Ok(Json(h.iter().map(history_json).collect::<Vec<_>>()).into_response())
}

// --- High Availability (§11) ---------------------------------------------------------

/// `GET /api/v1/ha/nodes`: the failovers of the group.
async fn list_ha_nodes(State(st): St, Authed(actor): Authed) -> ApiResult<Response> {
    Ok(Json(st.store(move |s| s.ha_nodes(&actor)).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HaNodeAdd {
    name: String,
}

/// `POST /api/v1/ha/nodes`: *High Availability → Add* a failover by the
/// host name its `setinfo show` prints (case-sensitive).
async fn add_ha_node(
    State(st): St,
    Authed(actor): Authed,
    ApiJson(req): ApiJson<HaNodeAdd>,
) -> ApiResult<Response> {
    let fallback = st.host_name.clone();
    let node = st
        .store(move |s| {
            let own = s
                .os_settings()?
                .host_name
                .map_or(fallback, |h| h.as_str().to_owned());
            let node = s.add_ha_node(&actor, &req.name, &own)?;
            // The primary's own node certificate, recorded in the group.
            let kind = appliance::pki::CaKind::for_mode(s.preferences_unchecked()?.security_mode);
            s.ensure_own_node_identity(&own, kind)?;
            Ok(node)
        })
        .await?;
    crate::ha::refresh_once(&st).await;
    Ok(created(node))
}

/// `DELETE /api/v1/ha/nodes/{name}`: the node leaves the group.
async fn delete_ha_node(
    State(st): St,
    Authed(actor): Authed,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    st.store(move |s| s.delete_ha_node(&actor, &name)).await?;
    crate::ha::refresh_once(&st).await;
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HaRegistration {
    csr: String,
    /// The failover's HA control port (default 8080): the primary reaches
    /// it there, at the address it registered from, to configure the
    /// replication.
    ha_port: Option<u16>,
    /// The failover's key ports (compatible, Suite B; default 8444, 8447),
    /// which Notify All Hosts tells the hosts.
    keys_port: Option<u16>,
    keys_ec_port: Option<u16>,
}

/// `POST /api/v1/ha/nodes/{name}/registration`: a failover's
/// `convert2failover` registers with the primary: its node certificate,
/// signed by the CA of the security mode in force, and that CA.
async fn register_ha_node(
    State(st): St,
    Authed(actor): Authed,
    Source(source): Source,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<HaRegistration>,
) -> ApiResult<Response> {
    let port = req.ha_port.unwrap_or(8080);
    for (field, p) in [
        ("ha_port", Some(port)),
        ("keys_port", req.keys_port),
        ("keys_ec_port", req.keys_ec_port),
    ] {
        if p == Some(0) {
            return Err(appliance::Error::invalid(field, "must be 1 to 65535").into());
        }
    }
    let key_ports = (
        req.keys_port.unwrap_or(8444),
        req.keys_ec_port.unwrap_or(8447),
    );
    let control = std::net::SocketAddr::new(
        source
            .parse()
            .map_err(|_| appliance::Error::invalid("ha_port", "the caller's address is unknown"))?,
        port,
    )
    .to_string();
    let (cert, kind) = st
        .store(move |s| {
            let kind = appliance::pki::CaKind::for_mode(s.preferences_unchecked()?.security_mode);
            Ok((
                s.register_ha_node(&actor, &name, &req.csr, kind, Some(&control), key_ports)?,
                kind,
            ))
        })
        .await?;
    crate::ha::refresh_once(&st).await;
    Ok(Json(json!({
        "certificate": cert.certificate_pem,
        "ca_certificate": cert.ca_pem,
        "ca_fingerprint": cert.ca_fingerprint,
        "kind": kind.as_str(),
        "primary": {
            "name": cert.primary_name,
            "certificate_fingerprint": cert.primary_fingerprint,
        },
    }))
    .into_response())
}

/// `POST /api/v1/ha/join` on a failover-to-be (§11 `convert2failover`):
/// registers with the primary whose CA the operator pinned, receives the
/// group's key, keeps both beside the store, and restarts the service.
async fn join_ha_group(
    State(st): St,
    Authed(actor): Authed,
    ApiJson(req): ApiJson<crate::ha_setup::JoinRequest>,
) -> ApiResult<Response> {
    actor.require_system(Access::Write)?;
    req.check()?;
    let fallback = st.host_name.clone();
    let (own_name, role) = st
        .store(move |s| {
            let own = s
                .os_settings()?
                .host_name
                .map_or(fallback, |h| h.as_str().to_owned());
            Ok((own, s.ha_role()?))
        })
        .await?;
    if role != appliance::store::HaRole::Standalone {
        return Err(appliance::Error::conflict(
            "high_availability",
            format!(
                "this appliance is in a group already ({}); only a standalone appliance becomes a failover",
                role.summary()
            ),
        )
        .into());
    }
    let ports = st.ports.get().cloned();
    let me = crate::ha_setup::Joiner {
        own_name,
        own_ha_port: st.ha_port.load(std::sync::atomic::Ordering::Relaxed),
        own_keys_port: ports.as_ref().and_then(|p| p.keys).unwrap_or(8444),
        own_keys_ec_port: ports.as_ref().map_or(8447, |p| p.keys_ec),
        suites: crate::tls::Suites::for_mode(st.mode),
        kind: appliance::pki::CaKind::for_mode(st.mode),
    };
    let (node, key, primary, joined) = crate::ha_setup::join(&req, &me).await?;
    let kind = me.kind;
    st.store(move |s| s.join_group(&actor, kind, &node, &key, &primary))
        .await?;
    tracing::warn!(primary = %joined.primary, "joined the HA group as a failover; restarting");
    let restart = st.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        restart.restart.notify_one();
    });
    Ok(Json(json!({
        "primary": joined.primary,
        "ca_fingerprint": joined.ca_fingerprint,
        "restarting": true,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HaReplicationMode {
    mode: String,
}

fn mode_json(synchronous: bool) -> Value {
    json!({ "mode": if synchronous { "synchronous" } else { "asynchronous" } })
}

/// `GET /api/v1/ha/replication-mode`.
async fn get_ha_replication_mode(State(st): St, Authed(actor): Authed) -> ApiResult<Response> {
    let sync = st
        .store(move |s| {
            actor.require_system(Access::Read)?;
            s.ha_synchronous()
        })
        .await?;
    Ok(Json(mode_json(sync)).into_response())
}

/// `PUT /api/v1/ha/replication-mode`: asynchronous (the default) or
/// synchronous, applied at once to this primary's PostgreSQL when it runs.
async fn set_ha_replication_mode(
    State(st): St,
    Authed(actor): Authed,
    ApiJson(req): ApiJson<HaReplicationMode>,
) -> ApiResult<Response> {
    let pg = st.pg.clone();
    let sync = st
        .store(move |s| {
            let sync = s.set_ha_replication_mode(&actor, &req.mode)?;
            if pg.exists() && !s.is_failover()? {
                pg.set_synchronous(sync)?;
            }
            Ok(sync)
        })
        .await?;
    Ok(Json(mode_json(sync)).into_response())
}

/// `POST /api/v1/ha/notify-hosts` (§11 Notify All Hosts): every key
/// answer from now on names the configured failovers; the agent keeps them.
async fn notify_hosts(State(st): St, Authed(actor): Authed) -> ApiResult<Response> {
    let list = st.store(move |s| s.notify_hosts(&actor)).await?;
    crate::ha::refresh_once(&st).await;
    Ok(Json(json!({ "failovers": list })).into_response())
}

/// `POST /api/v1/ha/promote` on a failover (§11 `convert2primary`): it
/// becomes the primary with the data of its last synchronisation.
async fn promote_ha_node(State(st): St, Authed(actor): Authed) -> ApiResult<Response> {
    let (fallback, pg) = (st.host_name.clone(), st.pg.clone());
    let former = st
        .store(move |s| {
            let own = s
                .os_settings()?
                .host_name
                .map_or(fallback, |h| h.as_str().to_owned());
            crate::ha_setup::promote(s, &pg, &actor, &own)
        })
        .await?;
    crate::ha::refresh_once(&st).await;
    let role = st.store(|s| s.ha_role()).await?;
    Ok(Json(json!({ "former_primary": former, "high_availability": role })).into_response())
}

/// `POST /api/v1/ha/nodes/{name}/replication` on the primary (§11 Config
/// Replication): this node's PostgreSQL made and the store moved there
/// when needed, then the failover told to replicate from it (a base
/// backup, then streaming).
async fn configure_ha_replication(
    State(st): St,
    Authed(actor): Authed,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let view = crate::ha_setup::configure_replication(&st, actor, name).await?;
    Ok(Json(view).into_response())
}

// --- SNMP (§13) --------------------------------------------------------------------

use appliance::store::SnmpUpdate;

/// `GET /api/v1/snmp`: the settings; the community string itself is never
/// returned, only `community_is_default` (still `public`).
async fn get_snmp(State(st): St, Authed(actor): Authed) -> ApiResult<Response> {
    Ok(Json(st.store(move |s| s.snmp_settings(&actor)).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnmpPut {
    enabled: Option<bool>,
    /// Sent only to change it (GET never returns it).
    community: Option<SecretString>,
    acl: Option<Vec<String>>,
    sys_contact: Option<String>,
    sys_location: Option<String>,
}

/// `PUT /api/v1/snmp`: every field given replaces the stored one; the
/// agent picks the change up within seconds.
async fn update_snmp(
    State(st): St,
    Authed(actor): Authed,
    ApiJson(req): ApiJson<SnmpPut>,
) -> ApiResult<Response> {
    let up = SnmpUpdate {
        enabled: req.enabled,
        community: req.community,
        acl: req.acl,
        sys_contact: req.sys_contact,
        sys_location: req.sys_location,
    };
    Ok(Json(
        st.store(move |s| s.update_snmp_settings(&actor, up))
            .await?,
    )
    .into_response())
}

// --- email notifications (§14) ----------------------------------------------------

use appliance::store::{
    EmailGroupUpdate, NewEmailGroup, NoticeType, SMTP_NOT_SET, SecretUpdate, SmtpSecurity,
    SmtpUpdate, SmtpView, parse_threshold,
};

/// The SMTP server without its password, or `{"configured": false,
/// "status": "SMTP server not set"}`.
fn smtp_json(v: Option<SmtpView>) -> ApiResult<Value> {
    let Some(v) = v else {
        return Ok(json!({ "configured": false, "status": SMTP_NOT_SET }));
    };
    let status = format!("SMTP server {}:{} ({})", v.host, v.port, v.security.title());
    let mut j = serde_json::to_value(&v).map_err(|e| ApiError::Internal(e.to_string()))?;
    j["configured"] = json!(true);
    j["status"] = json!(status);
    Ok(j)
}

async fn get_smtp(State(st): St, Authed(actor): Authed) -> ApiResult<Response> {
    let v = st.store(move |s| s.smtp_settings(&actor)).await?;
    Ok(Json(smtp_json(v)?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SmtpPut {
    host: String,
    /// Default: the usual port of `security` (25, 587, 465).
    port: Option<i64>,
    /// none, starttls (default) or tls.
    security: Option<String>,
    username: Option<String>,
    /// Absent: the stored password is kept (a user name is needed for one).
    password: Option<SecretString>,
    sender: String,
    ca_certificate: Option<String>,
}

async fn set_smtp(
    State(st): St,
    Authed(actor): Authed,
    ApiJson(req): ApiJson<SmtpPut>,
) -> ApiResult<Response> {
    let up = SmtpUpdate {
        host: req.host,
        port: req.port,
        security: req
            .security
            .as_deref()
            .map(SmtpSecurity::parse)
            .transpose()?
            .unwrap_or(SmtpSecurity::Starttls),
        username: req.username,
        password: req.password.map_or(SecretUpdate::Keep, SecretUpdate::Set),
        sender: req.sender,
        ca_certificate: req.ca_certificate,
    };
    let v = st.store(move |s| s.set_smtp_settings(&actor, up)).await?;
    Ok(Json(smtp_json(Some(v))?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestMailReq {
    to: String,
}

/// Send test mail: sent at once through the stored settings; the SMTP
/// server's refusal (or the connection error) is the answer, as 502.
async fn send_test_mail(
    State(st): St,
    Authed(actor): Authed,
    ApiJson(req): ApiJson<TestMailReq>,
) -> ApiResult<Response> {
    let to = req.to.trim().to_owned();
    let (a, t) = (actor.clone(), to.clone());
    let cfg = st.store(move |s| s.test_mail_config(&a, &t)).await?;
    let server = cfg.describe();
    let outcome = custos_notifyd::send_test(&cfg, &to, &st.host_name, &actor.login).await;
    let failure = outcome.as_ref().err().map(|e| e.to_string());
    let (t, srv) = (to.clone(), server.clone());
    st.store(move |s| s.log_test_mail(&actor, &t, &srv, failure.as_deref()))
        .await?;
    Ok(match outcome {
        Ok(()) => Json(json!({ "sent": true, "to": to, "server": server })).into_response(),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({
                "error": "smtp",
                "message": format!("the test mail to {to} was not sent through {server}: {e}"),
                "server": server,
            })),
        )
            .into_response(),
    })
}

async fn list_email_groups(State(st): St, Authed(actor): Authed) -> ApiResult<Response> {
    Ok(Json(st.store(move |s| s.list_email_groups(&actor)).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailGroupCreate {
    name: String,
    /// Comma separated addresses.
    recipients: String,
    #[serde(default)]
    subject: String,
    /// generic (default), key_expiration, certificate_expiration.
    #[serde(rename = "type")]
    notice_type: Option<String>,
    /// ERROR (default) or FATAL.
    threshold: Option<String>,
    #[serde(default)]
    message_contains: String,
    enabled: Option<bool>,
    /// Absent or empty: system-wide.
    domain: Option<String>,
}

async fn create_email_group(
    State(st): St,
    Authed(actor): Authed,
    ApiJson(req): ApiJson<EmailGroupCreate>,
) -> ApiResult<Response> {
    let new = NewEmailGroup {
        name: req.name,
        recipients: req.recipients,
        subject: req.subject,
        notice_type: req
            .notice_type
            .as_deref()
            .map(NoticeType::parse)
            .transpose()?
            .unwrap_or(NoticeType::Generic),
        threshold: req
            .threshold
            .as_deref()
            .map(parse_threshold)
            .transpose()?
            .unwrap_or(Severity::Error),
        message_contains: req.message_contains,
        enabled: req.enabled.unwrap_or(true),
        domain: req.domain.filter(|d| !d.is_empty()),
    };
    Ok(created(
        st.store(move |s| s.create_email_group(&actor, new)).await?,
    ))
}

async fn get_email_group(
    State(st): St,
    Authed(actor): Authed,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(st.store(move |s| s.get_email_group(&actor, &name)).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailGroupPatch {
    recipients: Option<String>,
    subject: Option<String>,
    #[serde(rename = "type")]
    notice_type: Option<String>,
    threshold: Option<String>,
    message_contains: Option<String>,
    enabled: Option<bool>,
    /// Empty: system-wide.
    domain: Option<String>,
}

async fn update_email_group(
    State(st): St,
    Authed(actor): Authed,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<EmailGroupPatch>,
) -> ApiResult<Response> {
    let up = EmailGroupUpdate {
        recipients: req.recipients,
        subject: req.subject,
        notice_type: req
            .notice_type
            .as_deref()
            .map(NoticeType::parse)
            .transpose()?,
        threshold: req.threshold.as_deref().map(parse_threshold).transpose()?,
        message_contains: req.message_contains,
        enabled: req.enabled,
        domain: req.domain.map(|d| Some(d).filter(|d| !d.is_empty())),
    };
    Ok(Json(
        st.store(move |s| s.update_email_group(&actor, &name, up))
            .await?,
    )
    .into_response())
}

async fn delete_email_group(
    State(st): St,
    Authed(actor): Authed,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    st.store(move |s| s.delete_email_group(&actor, &name))
        .await?;
    Ok(no_content())
}
