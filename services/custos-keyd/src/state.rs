//! Shared state of the key service: the store, sessions, identities.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use appliance::Store;
use appliance::model::SecurityMode;
use appliance::store::Identities;
use time::OffsetDateTime;

use crate::error::{ApiError, ApiResult};

/// An API session: the administrator, when it began and when it was last
/// used.
#[derive(Debug, Clone)]
struct Session {
    login: String,
    created: OffsetDateTime,
    last_seen: OffsetDateTime,
}

/// The absolute lifetime of a sign-in (API token or console session),
/// whatever its activity, unless `--session-lifetime` says otherwise.
pub const SESSION_LIFETIME: time::Duration = time::Duration::hours(12);

#[derive(Debug)]
pub struct Sessions {
    /// Keyed by the SHA-256 of the token, so a memory dump does not hand out
    /// usable tokens.
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
    lifetime: time::Duration,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::with_lifetime(SESSION_LIFETIME)
    }
}

impl Sessions {
    pub fn with_lifetime(lifetime: time::Duration) -> Self {
        Sessions {
            by_hash: Mutex::default(),
            lifetime,
        }
    }

    pub fn create(&self, login: &str) -> String {
        let token = appliance::crypto::random_token();
        let mut map = self.by_hash.lock().expect("sessions mutex poisoned");
        map.insert(
            appliance::crypto::sha256(token.as_bytes()),
            Session {
                login: login.to_owned(),
                created: OffsetDateTime::now_utc(),
                last_seen: OffsetDateTime::now_utc(),
            },
        );
        token
    }

    /// The login behind `token`, refreshing its inactivity timer, or None
    /// when unknown, idle longer than `timeout` or older than the lifetime.
    pub fn touch(&self, token: &str, timeout: time::Duration) -> Option<String> {
        let key = appliance::crypto::sha256(token.as_bytes());
        let now = OffsetDateTime::now_utc();
        let mut map = self.by_hash.lock().expect("sessions mutex poisoned");
        map.retain(|_, s| now - s.last_seen < timeout && now - s.created < self.lifetime);
        let s = map.get_mut(&key)?;
        s.last_seen = now;
        Some(s.login.clone())
    }

    pub fn end(&self, token: &str) {
        let key = appliance::crypto::sha256(token.as_bytes());
        self.by_hash
            .lock()
            .expect("sessions mutex poisoned")
            .remove(&key);
    }

    /// Ends the other API sessions of `login` (after its password change).
    pub fn end_others_of(&self, login: &str, keep: &str) {
        let keep = appliance::crypto::sha256(keep.as_bytes());
        self.by_hash
            .lock()
            .expect("sessions mutex poisoned")
            .retain(|k, s| s.login != login || *k == keep);
    }

    /// Ends every session of one administrator (deleted, password reset).
    pub fn end_all_of(&self, login: &str) {
        self.by_hash
            .lock()
            .expect("sessions mutex poisoned")
            .retain(|_, s| s.login != login);
    }
}

#[derive(Debug, Clone)]
pub struct Ports {
    pub web: u16,
    pub enrol: Option<u16>,
    pub keys: Option<u16>,
    pub enrol_ec: u16,
    pub keys_ec: u16,
}

#[derive(Debug)]
pub struct AppState {
    pub store: Arc<Store>,
    pub sessions: Sessions,
    /// Web console sessions (cookies), separate from API tokens.
    pub web_sessions: crate::web::session::WebSessions,
    /// Notified when the service must restart to apply a restored
    /// configuration (its certificates are loaded at start).
    pub restart: tokio::sync::Notify,
    pub identities: Identities,
    /// The mode this process started in (§9: applied at start).
    pub mode: SecurityMode,
    pub ports: std::sync::OnceLock<Ports>,
    pub host_name: String,
    /// Bounds on password checks and failed sign-ins per source.
    pub guard: crate::guard::Guard,
    /// The nodes whose certificates open the HA control API.
    pub nodes: Arc<crate::ha::RegisteredNodes>,
    /// This node's PostgreSQL (HA).
    pub pg: appliance::pgnode::PgNode,
    /// The HA control port this node listens on (told to the primary at
    /// registration).
    pub ha_port: std::sync::atomic::AtomicU16,
    /// The failovers the hosts are told of in every key answer (Notify All
    /// Hosts), refreshed from the store with the registered nodes.
    pub host_failovers: std::sync::RwLock<Vec<appliance::store::HostFailover>>,
}

impl AppState {
    /// Ends every API and console session of one administrator (deleted,
    /// password reset).
    /// Ends every session (after a restore, §12).
    pub fn end_all_sessions(&self) {
        self.sessions
            .by_hash
            .lock()
            .expect("sessions mutex poisoned")
            .clear();
        self.web_sessions.end_all();
    }

    pub fn end_sessions_of(&self, login: &str) {
        self.sessions.end_all_of(login);
        self.web_sessions.end_all_of(login);
    }

    /// Runs a store operation that verifies a password (sign-in, password
    /// change) within the bounds of [`crate::guard`]: refused with 429 while
    /// `source` must pause or when too many checks are running and queued.
    /// A refused password counts against the source; a sign-in clears it.
    pub async fn check_password<T: Send + 'static>(
        self: &Arc<Self>,
        source: &str,
        f: impl FnOnce(&Store) -> appliance::Result<T> + Send + 'static,
    ) -> ApiResult<T> {
        let ip = source.parse::<std::net::IpAddr>().ok();
        if let Some(ip) = ip {
            self.guard
                .throttle
                .check(ip, std::time::Instant::now())
                .map_err(|b| ApiError::Busy { retry_after: b.0 })?;
        }
        let slot = self
            .guard
            .gate
            .enter()
            .await
            .map_err(|b| ApiError::Busy { retry_after: b.0 })?;
        let result = self.store(f).await;
        drop(slot);
        if let Some(ip) = ip {
            match &result {
                Ok(_) => self.guard.throttle.succeeded(ip),
                Err(ApiError::Core(
                    appliance::Error::BadCredentials
                    | appliance::Error::Invalid { field: "old", .. },
                )) => self.guard.throttle.failed(ip, std::time::Instant::now()),
                Err(_) => {}
            }
        }
        result
    }

    /// Runs a store operation off the async threads (SQLite and argon2 block).
    pub async fn store<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> appliance::Result<T> + Send + 'static,
    ) -> ApiResult<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ApiError::Internal(format!("store task: {e}")))?
            .map_err(ApiError::from)
    }
}
