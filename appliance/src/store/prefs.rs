//! General Preferences (§4 System → General Preferences) and appliance
//! settings kept with them (security mode, lock-out).

use crate::store::db::{Tx, params};
use serde::Serialize;

use super::{Store, audit_actor};
use crate::access::{Access, Actor};
use crate::model::{REFRESH_DEFAULT, SecurityMode, Severity, check_refresh_period};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Preferences {
    /// Global Key Refresh Period (minutes), for keys without their own.
    pub key_refresh_period: i64,
    /// Web and API session inactivity timeout (minutes).
    pub session_timeout: i64,
    /// Failed logins in a row that lock an account.
    pub max_failed_logins: i64,
    /// How long a locked account stays locked (minutes).
    pub lockout_minutes: i64,
    /// §9; applied when the key service starts.
    pub security_mode: SecurityMode,
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences {
            key_refresh_period: REFRESH_DEFAULT,
            session_timeout: 15,
            max_failed_logins: 5,
            lockout_minutes: 15,
            security_mode: SecurityMode::Compatible,
        }
    }
}

#[derive(Debug, Default)]
pub struct PreferencesUpdate {
    pub key_refresh_period: Option<i64>,
    pub session_timeout: Option<i64>,
    pub max_failed_logins: Option<i64>,
    pub lockout_minutes: Option<i64>,
    pub security_mode: Option<SecurityMode>,
}

/// The ranges of the preferences (§7) besides the key refresh period.
pub const SESSION_TIMEOUT_MAX: i64 = 1440;
pub const MAX_FAILED_LOGINS_MAX: i64 = 100;
pub const LOCKOUT_MINUTES_MAX: i64 = 1440;

fn range(field: &'static str, v: i64, lo: i64, hi: i64, unit: &str) -> Result<()> {
    if !(lo..=hi).contains(&v) {
        return Err(Error::invalid(
            field,
            format!("must be between {lo} and {hi}{unit}"),
        ));
    }
    Ok(())
}

fn load(tx: &Tx<'_>) -> Result<Preferences> {
    let mut p = Preferences::default();
    let mut stmt = tx.prepare_cached("SELECT name, value FROM preferences")?;
    let rows = stmt.query_map(crate::store::db::params![], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (name, value) = row?;
        let int = || {
            value
                .parse::<i64>()
                .map_err(|_| Error::Crypto("stored preference is malformed"))
        };
        match name.as_str() {
            "key_refresh_period" => p.key_refresh_period = int()?,
            "session_timeout" => p.session_timeout = int()?,
            "max_failed_logins" => p.max_failed_logins = int()?,
            "lockout_minutes" => p.lockout_minutes = int()?,
            "security_mode" => p.security_mode = SecurityMode::parse(&value)?,
            _ => {}
        }
    }
    Ok(p)
}

impl Store {
    /// Preferences for internal use (no actor: the services need them).
    pub fn preferences_unchecked(&self) -> Result<Preferences> {
        self.read(load)
    }

    pub fn preferences(&self, actor: &Actor) -> Result<Preferences> {
        actor.require_signed_in(Access::Read)?;
        self.preferences_unchecked()
    }

    pub fn update_preferences(&self, actor: &Actor, up: PreferencesUpdate) -> Result<Preferences> {
        actor.require_system(Access::Write)?;
        if let Some(v) = up.key_refresh_period {
            check_refresh_period("key_refresh_period", v)?;
        }
        if let Some(v) = up.session_timeout {
            range("session_timeout", v, 1, SESSION_TIMEOUT_MAX, " minutes")?;
        }
        if let Some(v) = up.max_failed_logins {
            range("max_failed_logins", v, 1, MAX_FAILED_LOGINS_MAX, "")?;
        }
        if let Some(v) = up.lockout_minutes {
            range("lockout_minutes", v, 1, LOCKOUT_MINUTES_MAX, " minutes")?;
        }
        self.write(|tx| {
            let before = load(tx)?;
            let set = |name: &str, value: String| -> Result<()> {
                tx.execute(
                    "INSERT INTO preferences(name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    params![name, value],
                )?;
                Ok(())
            };
            let mut changed = vec![];
            if let Some(v) = up.key_refresh_period { set("key_refresh_period", v.to_string())?; changed.push(format!("key refresh period {v} minutes")); }
            if let Some(v) = up.session_timeout { set("session_timeout", v.to_string())?; changed.push(format!("session timeout {v} minutes")); }
            if let Some(v) = up.max_failed_logins { set("max_failed_logins", v.to_string())?; changed.push(format!("lock after {v} failed logins")); }
            if let Some(v) = up.lockout_minutes { set("lockout_minutes", v.to_string())?; changed.push(format!("lock-out {v} minutes")); }
            if let Some(v) = up.security_mode {
                set("security_mode", v.as_str().to_owned())?;
                if v != before.security_mode {
                    changed.push(format!("security mode {} (applies when the key service restarts)", v.as_str()));
                }
            }
            if !changed.is_empty() {
                audit_actor(tx, actor, Severity::Info, None, &format!("changed preferences: {}", changed.join(", ")))?;
            }
            load(tx)
        })
    }
}
