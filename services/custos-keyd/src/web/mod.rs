//! The web console of §4: server-rendered HTML on the same HTTPS ports as
//! the REST API. Every page turns its form into the model types and calls the
//! same store operation as the API, which checks the §5 permissions and the
//! field rules again; this module only decides which menus to show.
//!
//! No page needs JavaScript. The only style sheet is served by the appliance
//! itself (it has no internet), and the Content-Security-Policy says so.

mod admins;
mod auth;
mod backup;
mod backup_automatic;
mod dashboard;
mod domains;
mod email;
mod form;
mod ha;
mod hosts;
mod keys;
mod layout;
mod log;
pub mod session;
mod snmp;
mod sysinfo;
mod system;
mod wrapper;

use std::sync::Arc;

use appliance::access::{Actor, Membership};
use appliance::model::{Role, UserType};
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::state::AppState;

use session::WebSession;

/// The console's pages, for menus and access checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Dashboard,
    ManageDomains,
    SwitchDomains,
    Administrators,
    DomainAdministrators,
    Keys,
    Hosts,
    Reports,
    Log,
    System,
}

/// Why a page was not shown.
#[derive(Debug)]
pub enum WebError {
    /// Sign in (again), or finish the forced password change.
    Redirect(String),
    /// The store refused or failed.
    Core(appliance::Error),
    /// The signed-in administrator may not open this page.
    Forbidden(String),
    /// §2: without a licence only Dashboard and System are usable.
    LicenceRequired,
    /// A POST without this session's CSRF token.
    Csrf,
    /// A request the console cannot read (not a form).
    BadRequest(String),
    /// A body over the limit of its page: 413.
    TooLarge(String),
    Internal(String),
    /// Too many sign-in attempts: 429 with `Retry-After` (seconds).
    Busy(u64),
}

impl From<appliance::Error> for WebError {
    fn from(e: appliance::Error) -> Self {
        WebError::Core(e)
    }
}

impl From<crate::error::ApiError> for WebError {
    fn from(e: crate::error::ApiError) -> Self {
        use crate::error::ApiError as A;
        match e {
            A::Core(e) => WebError::Core(e),
            A::Unauthenticated(_) => WebError::Redirect("/login".into()),
            A::BadRequest { message, .. } | A::BodyRejected { message, .. } => {
                WebError::BadRequest(message)
            }
            A::Internal(d) => WebError::Internal(d),
            A::Busy { retry_after } => WebError::Busy(retry_after),
        }
    }
}

pub type WebResult<T = Response> = Result<T, WebError>;

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        use appliance::Error as E;
        let (status, title, message) = match self {
            WebError::Redirect(to) => return Redirect::to(&to).into_response(),
            WebError::Busy(secs) => {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(axum::http::header::RETRY_AFTER, secs.to_string())],
                    layout::bare_page(
                        "Too many attempts",
                        &format!("Too many sign-in attempts. Try again in {secs} seconds."),
                    ),
                )
                    .into_response();
            }
            WebError::Forbidden(m) => (StatusCode::FORBIDDEN, "Not permitted", m),
            WebError::LicenceRequired => (
                StatusCode::FORBIDDEN,
                "License not found",
                "No licence is installed. Only the Dashboard and System menus are usable until a System Administrator uploads a licence file under System → License.".into(),
            ),
            WebError::Csrf => (
                StatusCode::FORBIDDEN,
                "Form refused",
                "This form did not carry the security token of your session (CSRF protection). Reload the page and submit it again.".into(),
            ),
            WebError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Request refused", m),
            WebError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "Upload too large", m),
            WebError::Internal(detail) => {
                tracing::error!(error = %detail, "web request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error",
                    "The appliance could not complete the request; see its log.".into(),
                )
            }
            WebError::Core(e) => match &e {
                E::Invalid { .. } | E::Conflict { .. } => {
                    (StatusCode::BAD_REQUEST, "Request refused", e.to_string())
                }
                E::NotFound { .. } => (StatusCode::NOT_FOUND, "Not found", e.to_string()),
                E::Forbidden(_) | E::Locked | E::Licence(_) | E::Failover { .. } => {
                    (StatusCode::FORBIDDEN, "Not permitted", e.to_string())
                }
                E::BadCredentials => (StatusCode::UNAUTHORIZED, "Sign in", e.to_string()),
                E::PasswordChangeRequired => return Redirect::to("/password").into_response(),
                E::Store(_)
                | E::Crypto(_)
                | E::Certificate(_)
                | E::Io { .. }
                | E::SchemaTooNew { .. } => {
                    tracing::error!(error = %e, "web request failed");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Internal error",
                        "The appliance could not complete the request; see its log.".into(),
                    )
                }
            },
        };
        (status, layout::bare_page(title, &message)).into_response()
    }
}

/// The signed-in administrator of a console request, with their session,
/// the domain they work in and whether a licence is installed.
pub struct Ctx {
    pub st: Arc<AppState>,
    pub actor: Actor,
    pub session: WebSession,
    pub token: String,
    /// The actor's membership of `session.domain`.
    pub membership: Option<Membership>,
    pub licensed: bool,
}

impl FromRequestParts<Arc<AppState>> for Ctx {
    type Rejection = WebError;
    async fn from_request_parts(parts: &mut Parts, st: &Arc<AppState>) -> WebResult<Ctx> {
        let token = session::cookie(&parts.headers, session::COOKIE)
            .ok_or_else(|| WebError::Redirect("/login".into()))?
            .to_owned();
        let prefs = st.store(|s| s.preferences_unchecked()).await?;
        let session = st
            .web_sessions
            .touch(&token, time::Duration::minutes(prefs.session_timeout))
            .ok_or_else(|| WebError::Redirect("/login?expired=1".into()))?;
        let source = parts
            .extensions
            .get::<crate::serve::Peer>()
            .map(|p| p.addr.ip().to_string())
            .unwrap_or_else(|| "unknown".into());
        let login = session.login.clone();
        let actor = match st
            .store(move |s| {
                Ok((
                    s.actor(&login, &source, "web")?,
                    s.admin_locked_unchecked(&login)?,
                ))
            })
            .await
        {
            Ok((_, true)) => {
                // A locked account's sessions end with the lock.
                st.end_sessions_of(&session.login);
                return Err(WebError::Redirect("/login".into()));
            }
            Ok((a, false)) => a,
            Err(crate::error::ApiError::Core(appliance::Error::NotFound { .. })) => {
                st.web_sessions.end(&token);
                return Err(WebError::Redirect("/login".into()));
            }
            Err(e) => return Err(e.into()),
        };
        let path = parts.uri.path();
        if actor.must_change_password && path != "/password" && path != "/logout" {
            return Err(WebError::Redirect("/password".into()));
        }
        let mut session = session;
        let mut membership = None;
        if let Some(d) = session.domain.clone() {
            let a = actor.clone();
            match st.store(move |s| s.my_membership(&a, &d)).await {
                Ok(m @ Some(_)) => membership = m,
                // Removed from the domain, or the domain is gone.
                Ok(None) | Err(_) => {
                    st.web_sessions.set_domain(&token, None);
                    session.domain = None;
                }
            }
        }
        let licensed = st.store(|s| s.licence_unchecked()).await?.is_some();
        Ok(Ctx {
            st: st.clone(),
            actor,
            session,
            token,
            membership,
            licensed,
        })
    }
}

impl Ctx {
    pub fn domain(&self) -> Option<&str> {
        self.session.domain.as_deref()
    }

    fn member_enabled(&self) -> bool {
        self.membership.as_ref().is_some_and(|m| m.enabled)
    }

    fn has_role(&self, role: Role) -> bool {
        self.actor.user_type == UserType::Security
            && self
                .membership
                .as_ref()
                .is_some_and(|m| m.enabled && m.roles.contains(&role))
    }

    /// Whether this administrator may change things at all (§5 read-only).
    pub fn can_write(&self) -> bool {
        !self.actor.read_only
    }

    /// Whether `page` is for this administrator, here and now (§4, §5). The
    /// store checks every operation again.
    pub fn may_open(&self, page: Page) -> bool {
        let t = self.actor.user_type;
        let in_domain = self.domain().is_some();
        match page {
            Page::Dashboard => true,
            Page::ManageDomains => t == UserType::System,
            Page::SwitchDomains => t != UserType::System,
            Page::Administrators => t == UserType::System,
            Page::DomainAdministrators => t == UserType::Domain && self.member_enabled(),
            Page::Keys => self.has_role(Role::Key),
            Page::Hosts => self.has_role(Role::Host),
            Page::Reports => t == UserType::System,
            Page::Log => {
                (t == UserType::System && !in_domain)
                    || (t == UserType::Domain && self.member_enabled())
                    || self.has_role(Role::Audit)
            }
            Page::System => t == UserType::System,
        }
    }

    /// Refuses a page this administrator may not open, or one that needs a
    /// licence while none is installed.
    pub fn require(&self, page: Page) -> WebResult<()> {
        if !self.may_open(page) {
            return Err(WebError::Forbidden(format!(
                "the {} page is not available to {} {}",
                layout::page_title(page),
                self.actor.user_type.title(),
                self.actor.login
            )));
        }
        if !self.licensed && !matches!(page, Page::Dashboard | Page::System) {
            return Err(WebError::LicenceRequired);
        }
        Ok(())
    }

    /// The current domain, for pages that work inside one.
    pub fn require_domain(&self, page: Page) -> WebResult<String> {
        self.require(page)?;
        self.session.domain.clone().ok_or_else(|| {
            WebError::Forbidden("enter a domain first with Domains → Switch Domains".into())
        })
    }

    /// Runs a store operation as this administrator.
    pub async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&appliance::Store, &Actor) -> appliance::Result<T> + Send + 'static,
    ) -> WebResult<T> {
        let actor = self.actor.clone();
        Ok(self.st.store(move |s| f(s, &actor)).await?)
    }
}

/// Security headers on every console response: no framing, no inline
/// script, nothing loaded from anywhere but the appliance, no caching of
/// pages that show keys' metadata or secrets.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    resp
}

/// `/`: the dashboard for a session (which sends an expired one to the
/// sign-in page), the sign-in page otherwise.
async fn root(headers: axum::http::HeaderMap) -> Response {
    let has_session = session::cookie(&headers, session::COOKIE).is_some();
    Redirect::to(if has_session { "/dashboard" } else { "/login" }).into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("custos.js"),
    )
        .into_response()
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("custos.css"),
    )
        .into_response()
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/static/custos.css", get(stylesheet))
        .route("/static/custos.js", get(script))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route(
            "/password",
            get(auth::password_page).post(auth::change_password),
        )
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/share/stored", post(dashboard::share_stored))
        .route("/administrators", get(admins::list))
        .route(
            "/administrators/add",
            get(admins::add_page).post(admins::add),
        )
        .route("/administrators/delete", post(admins::delete))
        .route("/domains", get(domains::list))
        .route("/domains/add", get(domains::add_page).post(domains::add))
        .route("/domains/delete", post(domains::delete))
        .route("/domains/assign", post(domains::assign))
        .route(
            "/domains/switch",
            get(domains::switch_page).post(domains::switch),
        )
        .route("/domain/administrators", get(domains::members))
        .route("/domain/administrators/add", post(domains::add_member))
        .route(
            "/domain/administrators/change",
            post(domains::change_members),
        )
        .route("/keys", get(keys::list))
        .route("/keys/add", get(keys::add_page).post(keys::add))
        .route("/keys/delete", post(keys::delete))
        .route("/keys/view/{name}", get(keys::detail))
        .route("/keys/view/{name}/rotate", post(keys::rotate))
        .route("/hosts", get(hosts::list))
        .route("/hosts/add", post(hosts::add))
        .route("/hosts/change", post(hosts::change))
        .route(
            "/hosts/secret",
            get(hosts::secret_page).post(hosts::set_secret),
        )
        .route("/hosts/secret/expire", post(hosts::expire_secret))
        .route("/system/wrapper-keys", get(wrapper::show))
        .route("/system/wrapper-keys/create", post(wrapper::create))
        .route("/system/wrapper-keys/export", post(wrapper::export))
        .route("/system/wrapper-keys/import", post(wrapper::import))
        .route("/system/backup", get(backup::show))
        .route("/system/backup/download", post(backup::download_backup))
        .route(
            "/system/backup/automatic",
            get(backup_automatic::show).post(backup_automatic::apply),
        )
        .route(
            "/system/backup/automatic/now",
            post(backup_automatic::backup_now),
        )
        .route(
            "/system/backup/automatic/remove",
            post(backup_automatic::remove),
        )
        .route(
            "/system/backup/restore",
            post(backup::restore).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/log", get(log::log_page))
        .route("/log/export.csv", get(log::export_csv))
        .route("/reports", get(log::reports_page))
        .route(
            "/system/preferences",
            get(system::preferences_page).post(system::update_preferences),
        )
        .route("/system/license", get(system::licence_page))
        .route(
            "/system/license",
            post(system::upload_licence)
                .layer(axum::extract::DefaultBodyLimit::max(
                    crate::api::LICENCE_BODY_MAX,
                ))
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    system::licence_upload_first,
                )),
        )
        .route(
            "/system/snmp",
            get(snmp::config_page).post(snmp::update_config),
        )
        .route("/system/ha", get(ha::show))
        .route("/system/ha/add", post(ha::add))
        .route("/system/ha/delete", post(ha::delete))
        .route("/system/ha/replicate", post(ha::replicate))
        .route("/system/ha/mode", post(ha::mode))
        .route("/system/ha/notify", post(ha::notify))
        .route("/system/snmp/acl", get(snmp::acl_page))
        .route("/system/snmp/acl/add", post(snmp::add_acl))
        .route("/system/snmp/acl/delete", post(snmp::delete_acl))
        .route("/system/snmp/mib", get(snmp::mib_page))
        .route("/system/snmp/CUSTOS-MIB.txt", get(snmp::mib_file))
        .route("/system/email", get(email::smtp))
        .route("/system/email/smtp", post(email::set_smtp))
        .route("/system/email/test", post(email::send_test))
        .route("/system/email/groups", get(email::groups))
        .route(
            "/system/email/groups/add",
            get(email::add_page).post(email::add),
        )
        .route(
            "/system/email/groups/edit/{name}",
            get(email::edit_page).post(email::edit),
        )
        .route("/system/email/groups/change", post(email::change_groups))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}
