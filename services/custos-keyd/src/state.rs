//! Shared state of the key service: the store, sessions, identities.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use appliance::Store;
use appliance::model::SecurityMode;
use appliance::store::Identities;
use time::OffsetDateTime;

use crate::error::{ApiError, ApiResult};

/// An API session: the administrator and when it was last used.
#[derive(Debug, Clone)]
struct Session {
    login: String,
    last_seen: OffsetDateTime,
}

#[derive(Debug, Default)]
pub struct Sessions {
    /// Keyed by the SHA-256 of the token, so a memory dump does not hand out
    /// usable tokens.
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    pub fn create(&self, login: &str) -> String {
        let token = appliance::crypto::random_token();
        let mut map = self.by_hash.lock().expect("sessions mutex poisoned");
        map.insert(
            appliance::crypto::sha256(token.as_bytes()),
            Session {
                login: login.to_owned(),
                last_seen: OffsetDateTime::now_utc(),
            },
        );
        token
    }

    /// The login behind `token`, refreshing its inactivity timer, or None
    /// when unknown or idle longer than `timeout`.
    pub fn touch(&self, token: &str, timeout: time::Duration) -> Option<String> {
        let key = appliance::crypto::sha256(token.as_bytes());
        let now = OffsetDateTime::now_utc();
        let mut map = self.by_hash.lock().expect("sessions mutex poisoned");
        map.retain(|_, s| now - s.last_seen < timeout);
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
