//! Web console sessions (§6): an opaque token in a `__Host-` cookie
//! (`Secure; HttpOnly; SameSite=Strict; Path=/`), a CSRF token per session, the domain the
//! administrator works in, and an inactivity timeout from the preferences.

use std::collections::HashMap;
use std::sync::Mutex;

use time::OffsetDateTime;

/// Name of the session cookie. The `__Host-` prefix makes browsers accept
/// it only `Secure`, with `Path=/` and no `Domain`: a sibling host cannot
/// plant or overwrite it.
pub const COOKIE: &str = "__Host-custos_session";
/// Name of the cookie that carries the login form's CSRF token before a
/// session exists.
pub const LOGIN_COOKIE: &str = "__Host-custos_login";

#[derive(Debug, Clone)]
pub struct WebSession {
    pub login: String,
    pub csrf: String,
    /// The domain entered with Switch Domains, if any.
    pub domain: Option<String>,
    pub last_seen: OffsetDateTime,
    /// When it began (the absolute lifetime counts from here).
    pub created: OffsetDateTime,
    /// A message for the next page shown: (is an error, text).
    pub flash: Option<(bool, String)>,
    /// When this administrator signed in before this session (dashboard).
    pub previous_login: Option<String>,
}

/// Sessions are keyed by the SHA-256 of their token, so a memory dump does
/// not hand out usable cookies.
#[derive(Debug)]
pub struct WebSessions {
    by_hash: Mutex<HashMap<[u8; 32], WebSession>>,
    lifetime: time::Duration,
}

impl Default for WebSessions {
    fn default() -> Self {
        WebSessions::with_lifetime(crate::state::SESSION_LIFETIME)
    }
}

fn key(token: &str) -> [u8; 32] {
    appliance::crypto::sha256(token.as_bytes())
}

impl WebSessions {
    pub fn with_lifetime(lifetime: time::Duration) -> Self {
        WebSessions {
            by_hash: Mutex::default(),
            lifetime,
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], WebSession>> {
        self.by_hash.lock().expect("web sessions mutex poisoned")
    }

    /// A new session; returns its cookie token.
    pub fn create(&self, login: &str, previous_login: Option<String>) -> String {
        let token = appliance::crypto::random_token();
        self.map().insert(
            key(&token),
            WebSession {
                login: login.to_owned(),
                csrf: appliance::crypto::random_token(),
                domain: None,
                flash: None,
                previous_login,
                last_seen: OffsetDateTime::now_utc(),
                created: OffsetDateTime::now_utc(),
            },
        );
        token
    }

    /// The session behind `token`, its inactivity timer refreshed; None when
    /// unknown, idle for longer than `timeout` or older than the lifetime
    /// (then it is removed).
    pub fn touch(&self, token: &str, timeout: time::Duration) -> Option<WebSession> {
        let now = OffsetDateTime::now_utc();
        let lifetime = self.lifetime;
        let mut map = self.map();
        map.retain(|_, s| now - s.last_seen < timeout && now - s.created < lifetime);
        let s = map.get_mut(&key(token))?;
        s.last_seen = now;
        Some(s.clone())
    }

    pub fn set_domain(&self, token: &str, domain: Option<String>) {
        if let Some(s) = self.map().get_mut(&key(token)) {
            s.domain = domain;
        }
    }

    pub fn set_flash(&self, token: &str, error: bool, message: &str) {
        if let Some(s) = self.map().get_mut(&key(token)) {
            s.flash = Some((error, message.to_owned()));
        }
    }

    pub fn take_flash(&self, token: &str) -> Option<(bool, String)> {
        self.map().get_mut(&key(token))?.flash.take()
    }

    pub fn end(&self, token: &str) {
        self.map().remove(&key(token));
    }

    /// Ends the other sessions of `login` (after a password change).
    pub fn end_others_of(&self, login: &str, keep: &str) {
        let keep = key(keep);
        self.map().retain(|k, s| s.login != login || *k == keep);
    }

    pub fn end_all(&self) {
        self.map().clear();
    }

    pub fn end_all_of(&self, login: &str) {
        self.map().retain(|_, s| s.login != login);
    }

    /// Logins with a live session, one entry per session.
    pub fn signed_in(&self, timeout: time::Duration) -> Vec<String> {
        let now = OffsetDateTime::now_utc();
        self.map()
            .values()
            .filter(|s| now - s.last_seen < timeout && now - s.created < self.lifetime)
            .map(|s| s.login.clone())
            .collect()
    }
}

/// The value of cookie `name` in a request's headers.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for a cookie only this console's pages may send.
pub fn set_cookie(name: &str, value: &str) -> String {
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

/// A `Set-Cookie` value that deletes the cookie.
pub fn clear_cookie(name: &str) -> String {
    format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Constant-time comparison of a submitted CSRF token with the expected one.
pub fn csrf_matches(expected: &str, submitted: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    match submitted {
        Some(s) if s.len() == expected.len() => s.as_bytes().ct_eq(expected.as_bytes()).into(),
        _ => false,
    }
}
