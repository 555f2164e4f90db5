//! Administrators (§4 Administrators, §6 passwords and lock-out).

use crate::store::db::{OptionalExtension, Tx, params};
use serde::Serialize;
use time::Duration;

use super::{RefusalKind, Store, audit, audit_actor, now, opt_time};
use crate::access::{Access, Actor};
use crate::model::{Severity, UserType, check_description, check_login, check_text, fmt_time};
use crate::secret::SecretString;
use crate::{Error, Result, password};

/// The built-in web administrator and its first-boot password (§2).
pub const BUILTIN_ADMIN: &str = "admin";
const BUILTIN_PASSWORD: &str = "admin123";

#[derive(Debug, Clone, Serialize)]
pub struct AdminView {
    pub login: String,
    pub description: String,
    pub rsa_user_id: Option<String>,
    pub user_type: UserType,
    pub read_only: bool,
    pub restrict_to_domain: Option<String>,
    pub must_change_password: bool,
    pub locked: bool,
    pub last_login: Option<String>,
    pub created_at: String,
    pub domains: Vec<String>,
}

#[derive(Debug)]
pub struct NewAdmin {
    pub login: String,
    pub description: String,
    pub rsa_user_id: Option<String>,
    pub password: SecretString,
    pub confirm_password: Option<SecretString>,
    pub user_type: UserType,
    pub restrict_to_domain: Option<String>,
    pub read_only: bool,
}

#[derive(Debug, Default)]
pub struct AdminUpdate {
    pub description: Option<String>,
    pub rsa_user_id: Option<Option<String>>,
    pub read_only: Option<bool>,
    /// A password reset: the administrator must change it at next login.
    pub password: Option<SecretString>,
    /// Clears a lock-out.
    pub unlock: bool,
}

#[derive(Debug, Clone)]
pub struct LoginOutcome {
    pub admin_id: i64,
    pub must_change_password: bool,
    /// When this administrator signed in before this time (dashboard).
    pub previous_login: Option<String>,
}

pub(super) fn ensure_builtin_admin(tx: &Tx<'_>) -> Result<()> {
    let exists: bool = tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM administrators WHERE login = ?1)",
        [BUILTIN_ADMIN],
        |r| r.get(0),
    )?;
    let any: bool = tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM administrators)",
        params![],
        |r| r.get(0),
    )?;
    if !exists && !any {
        tx.execute(
            "INSERT INTO administrators(login, description, user_type, password_hash, must_change_password, created_at)
             VALUES (?1, 'Built-in administrator', 'system', ?2, 1, ?3)",
            params![BUILTIN_ADMIN, password::hash(BUILTIN_PASSWORD)?, fmt_time(now())],
        )?;
        audit(
            tx,
            "system",
            "appliance",
            "system",
            Severity::Info,
            None,
            "created the built-in administrator admin",
        )?;
    }
    Ok(())
}

fn check_rsa_user_id(v: &Option<String>) -> Result<()> {
    if let Some(v) = v {
        check_text("rsa_user_id", v, crate::model::RSA_USER_ID_MAX)?;
    }
    Ok(())
}

fn admin_view(tx: &Tx<'_>, id: i64) -> Result<AdminView> {
    let mut v = tx.query_row(
        "SELECT a.login, a.description, a.rsa_user_id, a.user_type, a.read_only, d.name,
                a.must_change_password, a.locked_until, a.last_login, a.created_at
         FROM administrators a LEFT JOIN domains d ON d.id = a.restrict_to_domain WHERE a.id = ?1",
        [id],
        |r| {
            Ok((
                AdminView {
                    login: r.get(0)?,
                    description: r.get(1)?,
                    rsa_user_id: r.get(2)?,
                    user_type: UserType::System,
                    read_only: r.get(4)?,
                    restrict_to_domain: r.get(5)?,
                    must_change_password: r.get(6)?,
                    locked: false,
                    last_login: r.get(8)?,
                    created_at: r.get(9)?,
                    domains: vec![],
                },
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(7)?,
            ))
        },
    )?;
    v.0.user_type = UserType::parse(&v.1)?;
    v.0.locked = opt_time(v.2.take())?.is_some_and(|t| t > now());
    let mut stmt = tx.prepare_cached(
        "SELECT d.name FROM domain_members m JOIN domains d ON d.id = m.domain_id WHERE m.admin_id = ?1 ORDER BY d.name",
    )?;
    v.0.domains = stmt
        .query_map([id], |r| r.get(0))?
        .collect::<crate::store::db::DbResult<_>>()?;
    Ok(v.0)
}

/// The administrators (`a`) a Domain Administrator (`?1`) sees: themselves,
/// members of a domain where they hold an enabled membership, and
/// non-System administrators in no domain whose restriction, if any, is to
/// one of those domains.
const DA_SEES: &str = "a.id = ?1
    OR EXISTS (SELECT 1 FROM domain_members m WHERE m.admin_id = a.id AND m.domain_id IN
               (SELECT domain_id FROM domain_members WHERE admin_id = ?1 AND enabled = 1))
    OR (a.user_type != 'system'
        AND NOT EXISTS (SELECT 1 FROM domain_members m WHERE m.admin_id = a.id)
        AND (a.restrict_to_domain IS NULL OR a.restrict_to_domain IN
             (SELECT domain_id FROM domain_members WHERE admin_id = ?1 AND enabled = 1)))";

/// An administrator as a Domain Administrator sees them: memberships of
/// other domains left out (their own all shown).
fn domain_admins_view(tx: &Tx<'_>, actor: &Actor, id: i64) -> Result<AdminView> {
    let mut v = admin_view(tx, id)?;
    if id != actor.id {
        let mine: Vec<String> = tx
            .prepare_cached(
                "SELECT d.name FROM domain_members m JOIN domains d ON d.id = m.domain_id WHERE m.admin_id = ?1 AND m.enabled = 1",
            )?
            .query_map([actor.id], |r| r.get(0))?
            .collect::<crate::store::db::DbResult<_>>()?;
        v.domains.retain(|d| mine.contains(d));
    }
    Ok(v)
}

pub(super) fn admin_id(tx: &Tx<'_>, login: &str) -> Result<i64> {
    tx.query_row(
        "SELECT id FROM administrators WHERE login = ?1",
        [login],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| Error::not_found("administrator", login))
}

/// A fixed argon2id hash to verify against when the login is unknown, so a
/// wrong login takes as long as a wrong password.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| password::hash("Unused!dummy1").unwrap_or_default());

impl Store {
    /// Loads the administrator `login` as the actor of one request.
    pub fn actor(&self, login: &str, source: &str, via: &'static str) -> Result<Actor> {
        self.read(|tx| {
            tx.query_row(
                "SELECT id, login, user_type, read_only, must_change_password FROM administrators WHERE login = ?1",
                [login],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, bool>(3)?,
                        r.get::<_, bool>(4)?,
                    ))
                },
            )
            .optional()?
            .ok_or_else(|| Error::not_found("administrator", login))
            .and_then(|(id, login, t, ro, mc)| {
                Ok(Actor {
                    id,
                    login,
                    user_type: UserType::parse(&t)?,
                    read_only: ro,
                    must_change_password: mc,
                    source: source.to_owned(),
                    via,
                })
            })
        })
    }

    /// §6 sign-in. Every attempt is audited; repeated failures lock the
    /// account for the lock-out period of the preferences.
    ///
    /// An unknown login, a wrong password and a locked account get the same
    /// answer ([`Error::BadCredentials`]) after the same argon2 work. The
    /// lock and the failure count are read and written in one write
    /// transaction after the (slow) password check, so parallel guesses
    /// cannot pass the limit: once the count reaches it, every attempt is
    /// refused until the lock-out ends, the right password included.
    pub fn login(
        &self,
        login: &str,
        password: &SecretString,
        source: &str,
        via: &'static str,
    ) -> Result<LoginOutcome> {
        // Verify outside the write lock: argon2 is deliberately slow.
        let row = self.read(|tx| {
            Ok(tx
                .query_row(
                    "SELECT id, password_hash FROM administrators WHERE login = ?1",
                    [login],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
                )
                .optional()?)
        })?;
        let Some((id, hash)) = row else {
            password::verify(password.expose(), &DUMMY_HASH);
            self.write(|tx| {
                self.log_refusal(
                    tx,
                    RefusalKind::SignIn,
                    "(unknown)",
                    source,
                    via,
                    None,
                    &format!("failed login: unknown login '{}'", sanitize(login)),
                )
            })?;
            return Err(Error::BadCredentials);
        };
        let ok = password::verify(password.expose(), &hash);
        // A failover, or a fenced former primary: nothing can be written.
        if self.fenced_by().is_some() || self.is_failover()? {
            return self.login_on_failover(id, login, ok, source, via);
        }
        let prefs = self.preferences_unchecked()?;
        self.write(|tx| {
            // The row as it is now, under the write lock: the hash may have
            // changed and other attempts may have counted since the read.
            let Some((hash_now, locked_until, failures, must_change, previous_login)) = tx
                .query_row(
                    "SELECT password_hash, locked_until, failed_logins, must_change_password, last_login FROM administrators WHERE id = ?1",
                    [id],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, i64>(2)?, r.get::<_, bool>(3)?, r.get::<_, Option<String>>(4)?)),
                )
                .optional()?
            else {
                // Deleted meanwhile.
                return Ok(Err(Error::BadCredentials));
            };
            if opt_time(locked_until)?.is_some_and(|t| t > now()) {
                self.log_refusal(tx, RefusalKind::SignIn, login, source, via, None, "login refused: account locked")?;
                return Ok(Err(Error::BadCredentials));
            }
            if !ok || hash_now != hash {
                let failures = failures + 1;
                if failures >= prefs.max_failed_logins {
                    let until = now() + Duration::minutes(prefs.lockout_minutes);
                    tx.execute(
                        "UPDATE administrators SET locked_until = ?2, failed_logins = 0 WHERE id = ?1",
                        params![id, fmt_time(until)],
                    )?;
                    audit(tx, login, source, via, Severity::Warn, None,
                        &format!("failed login; account locked for {} minutes after {} failures", prefs.lockout_minutes, failures))?;
                } else {
                    tx.execute(
                        "UPDATE administrators SET failed_logins = ?2 WHERE id = ?1",
                        params![id, failures],
                    )?;
                    self.log_refusal(tx, RefusalKind::SignIn, login, source, via, None, &format!("failed login ({failures} in a row)"))?;
                }
                return Ok(Err(Error::BadCredentials));
            }
            tx.execute(
                "UPDATE administrators SET failed_logins = 0, locked_until = NULL, last_login = ?2 WHERE id = ?1",
                params![id, fmt_time(now())],
            )?;
            audit(tx, login, source, via, Severity::Info, None, "signed in")?;
            Ok(Ok(LoginOutcome { admin_id: id, must_change_password: must_change, previous_login }))
        })?
    }

    /// Sign-in on an HA failover, whose store is a read-only replica: the
    /// same checks against the primary's rows (a lock-out made there holds
    /// here), but nothing can be counted or audited in the store, so the
    /// outcome goes to the journal, and the per-source throttle of keyd
    /// (`guard.rs`) is what slows guessing here.
    fn login_on_failover(
        &self,
        id: i64,
        login: &str,
        ok: bool,
        source: &str,
        via: &str,
    ) -> Result<LoginOutcome> {
        let (locked_until, must_change, previous_login) = self.read(|tx| {
            Ok(tx.query_row(
                "SELECT locked_until, must_change_password, last_login FROM administrators WHERE id = ?1",
                [id],
                |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, bool>(1)?, r.get::<_, Option<String>>(2)?)),
            )?)
        })?;
        let locked = opt_time(locked_until)?.is_some_and(|t| t > now());
        let login = sanitize(login);
        if locked || !ok {
            tracing::warn!(login = %login, source, via, locked, "failed login on the failover");
            return Err(Error::BadCredentials);
        }
        tracing::info!(login = %login, source, via, "signed in on the failover");
        Ok(LoginOutcome {
            admin_id: id,
            must_change_password: must_change,
            previous_login,
        })
    }

    /// Whether the account `login` is locked out now (its sessions end).
    pub fn admin_locked_unchecked(&self, login: &str) -> Result<bool> {
        self.read(|tx| {
            let until: Option<Option<String>> = tx
                .query_row(
                    "SELECT locked_until FROM administrators WHERE login = ?1",
                    [login],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(opt_time(until.flatten())?.is_some_and(|t| t > now()))
        })
    }

    /// Ends the lock-out of the built-in web administrator `admin` from the
    /// appliance's own console (the CLI): whoever keeps guessing its
    /// password from the network cannot keep it locked against the
    /// operator. Audited; `NotFound` when `admin` was removed.
    pub fn unlock_builtin_admin(&self, session: &super::cli::CliSession) -> Result<bool> {
        self.write(|tx| {
            let id = admin_id(tx, BUILTIN_ADMIN)?;
            let was: Option<String> = tx.query_row(
                "SELECT locked_until FROM administrators WHERE id = ?1",
                [id],
                |r| r.get(0),
            )?;
            let locked = opt_time(was)?.is_some_and(|t| t > now());
            tx.execute(
                "UPDATE administrators SET locked_until = NULL, failed_logins = 0 WHERE id = ?1",
                [id],
            )?;
            let what = if locked {
                "unlocked the web administrator admin"
            } else {
                "cleared the failed sign-ins of the web administrator admin (it was not locked)"
            };
            super::cli::cli_audit(tx, session.source(), Severity::Info, what)?;
            Ok(locked)
        })
    }

    /// §6 own password change (allowed for read-only administrators too).
    pub fn change_password(
        &self,
        actor: &Actor,
        old: &SecretString,
        new: &SecretString,
    ) -> Result<()> {
        password::check_policy("new", &actor.login, new.expose())?;
        let hash: String = self.read(|tx| {
            Ok(tx.query_row(
                "SELECT password_hash FROM administrators WHERE id = ?1",
                [actor.id],
                |r| r.get(0),
            )?)
        })?;
        if !password::verify(old.expose(), &hash) {
            self.write(|tx| {
                audit_actor(
                    tx,
                    actor,
                    Severity::Warn,
                    None,
                    "password change refused: wrong current password",
                )
            })?;
            return Err(Error::invalid("old", "is not the current password"));
        }
        if password::verify(new.expose(), &hash) {
            return Err(Error::invalid(
                "new",
                "must differ from the current password",
            ));
        }
        let new_hash = password::hash(new.expose())?;
        self.write(|tx| {
            tx.execute(
                "UPDATE administrators SET password_hash = ?2, must_change_password = 0 WHERE id = ?1",
                params![actor.id, new_hash],
            )?;
            audit_actor(tx, actor, Severity::Info, None, "changed own password")
        })
    }

    /// System Administrators see every administrator. A Domain
    /// Administrator sees what they may act on (issue 12): themselves, the
    /// administrators of the domains they administer, and those in no
    /// domain yet whom they could add; of anyone's memberships only those
    /// of their own domains. Others can still be added by typed login.
    pub fn list_admins(&self, actor: &Actor) -> Result<Vec<AdminView>> {
        actor.require_system_or_domain_admin(Access::Read)?;
        self.read(|tx| {
            if actor.user_type == UserType::System {
                let ids: Vec<i64> = tx
                    .prepare("SELECT id FROM administrators ORDER BY login")?
                    .query_map(crate::store::db::params![], |r| r.get(0))?
                    .collect::<crate::store::db::DbResult<_>>()?;
                return ids.into_iter().map(|id| admin_view(tx, id)).collect();
            }
            let ids: Vec<i64> = tx
                .prepare(&format!(
                    "SELECT a.id FROM administrators a WHERE {DA_SEES} ORDER BY a.login"
                ))?
                .query_map([actor.id], |r| r.get(0))?
                .collect::<crate::store::db::DbResult<_>>()?;
            ids.into_iter()
                .map(|id| domain_admins_view(tx, actor, id))
                .collect()
        })
    }

    pub fn get_admin(&self, actor: &Actor, login: &str) -> Result<AdminView> {
        if actor.login != login {
            actor.require_system_or_domain_admin(Access::Read)?;
        } else {
            actor.require_signed_in(Access::Read)?;
        }
        self.read(|tx| {
            let id = admin_id(tx, login)?;
            if actor.user_type != UserType::Domain {
                return admin_view(tx, id);
            }
            let visible: bool = tx.query_row(
                &format!(
                    "SELECT EXISTS(SELECT 1 FROM administrators a WHERE a.id = ?2 AND ({DA_SEES}))"
                ),
                params![actor.id, id],
                |r| r.get(0),
            )?;
            if !visible {
                return Err(Error::not_found("administrator", login));
            }
            domain_admins_view(tx, actor, id)
        })
    }

    pub fn create_admin(&self, actor: &Actor, new: NewAdmin) -> Result<AdminView> {
        actor.require_system(Access::Write)?;
        check_login(&new.login)?;
        check_description(&new.description)?;
        check_rsa_user_id(&new.rsa_user_id)?;
        password::check_policy("password", &new.login, new.password.expose())?;
        if let Some(confirm) = &new.confirm_password
            && !confirm.ct_eq(new.password.expose())
        {
            return Err(Error::invalid(
                "confirm_password",
                "does not match password",
            ));
        }
        if new.restrict_to_domain.is_some() && new.user_type != UserType::Domain {
            return Err(Error::invalid(
                "restrict_to_domain",
                "applies to Domain Administrators only",
            ));
        }
        let hash = password::hash(new.password.expose())?;
        self.write(|tx| {
            if tx.query_row("SELECT EXISTS(SELECT 1 FROM administrators WHERE login = ?1)", [&new.login], |r| r.get::<_, bool>(0))? {
                return Err(Error::conflict("login", "an administrator with this login already exists"));
            }
            let restrict = match &new.restrict_to_domain {
                Some(d) => Some(super::domain_id(tx, d).map_err(|_| Error::invalid("restrict_to_domain", "names no existing domain"))?),
                None => None,
            };
            let id: i64 = tx.query_row(
                "INSERT INTO administrators(login, description, rsa_user_id, user_type, read_only, restrict_to_domain, password_hash, must_change_password, created_at)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,1,?8) RETURNING id",
                params![new.login, new.description, new.rsa_user_id, new.user_type.as_str(), new.read_only, restrict, hash, fmt_time(now())],
                |r| r.get(0),
            )?;
            audit_actor(tx, actor, Severity::Info, None, &format!(
                "added administrator {} ({}{})", new.login, new.user_type.title(), if new.read_only { ", read-only" } else { "" }))?;
            admin_view(tx, id)
        })
    }

    pub fn update_admin(&self, actor: &Actor, login: &str, up: AdminUpdate) -> Result<AdminView> {
        actor.require_system(Access::Write)?;
        if let Some(d) = &up.description {
            check_description(d)?;
        }
        if let Some(r) = &up.rsa_user_id {
            check_rsa_user_id(r)?;
        }
        if let Some(p) = &up.password {
            password::check_policy("password", login, p.expose())?;
        }
        if up.read_only == Some(true) && (login == BUILTIN_ADMIN || login == actor.login) {
            return Err(Error::invalid(
                "read_only",
                "the built-in admin and your own account cannot be made read-only",
            ));
        }
        let hash = up
            .password
            .as_ref()
            .map(|p| password::hash(p.expose()))
            .transpose()?;
        self.write(|tx| {
            let id = admin_id(tx, login)?;
            let mut changed = vec![];
            if let Some(d) = &up.description {
                tx.execute("UPDATE administrators SET description = ?2 WHERE id = ?1", params![id, d])?;
                changed.push("description");
            }
            if let Some(r) = &up.rsa_user_id {
                tx.execute("UPDATE administrators SET rsa_user_id = ?2 WHERE id = ?1", params![id, r])?;
                changed.push("RSA user id");
            }
            if let Some(ro) = up.read_only {
                tx.execute("UPDATE administrators SET read_only = ?2 WHERE id = ?1", params![id, ro])?;
                changed.push("read-only");
            }
            if let Some(h) = &hash {
                tx.execute("UPDATE administrators SET password_hash = ?2, must_change_password = 1, failed_logins = 0, locked_until = NULL WHERE id = ?1", params![id, h])?;
                changed.push("password reset");
                // Whoever reset the password could now sign in as this
                // custodian and show their share: a share still held here
                // is withdrawn (one already collected is beyond reach).
                if login != actor.login {
                    let withdrawn = tx.execute(
                        "DELETE FROM wrapper_shares WHERE login = ?1 AND share_sealed IS NOT NULL",
                        [login],
                    )?;
                    if withdrawn > 0 {
                        audit_actor(tx, actor, Severity::Warn, None, &format!(
                            "withdrew the uncollected wrapper-key share of {login} because {} reset their password; the wrapper key must be exported again",
                            actor.login
                        ))?;
                    }
                }
            }
            if up.unlock {
                tx.execute("UPDATE administrators SET failed_logins = 0, locked_until = NULL WHERE id = ?1", [id])?;
                changed.push("unlocked");
            }
            if !changed.is_empty() {
                audit_actor(tx, actor, Severity::Info, None, &format!("changed administrator {login}: {}", changed.join(", ")))?;
            }
            admin_view(tx, id)
        })
    }

    pub fn delete_admin(&self, actor: &Actor, login: &str) -> Result<()> {
        actor.require_system(Access::Write)?;
        if login == BUILTIN_ADMIN {
            return Err(Error::invalid(
                "login",
                "the built-in admin cannot be deleted",
            ));
        }
        if login == actor.login {
            return Err(Error::invalid(
                "login",
                "you cannot delete your own account",
            ));
        }
        self.write(|tx| {
            let id = admin_id(tx, login)?;
            // A domain must keep a Domain Administrator once it had one.
            let orphaned: Option<String> = tx.query_row(
                "SELECT d.name FROM domain_members m JOIN domains d ON d.id = m.domain_id
                 JOIN administrators a ON a.id = m.admin_id
                 WHERE m.admin_id = ?1 AND a.user_type = 'domain'
                   AND NOT EXISTS (SELECT 1 FROM domain_members m2 JOIN administrators a2 ON a2.id = m2.admin_id
                                   WHERE m2.domain_id = m.domain_id AND m2.admin_id != ?1 AND a2.user_type = 'domain')
                 LIMIT 1",
                [id],
                |r| r.get(0),
            ).optional()?;
            if let Some(d) = orphaned {
                return Err(Error::conflict("login", format!("is the only Domain Administrator of domain {d}; assign another first")));
            }
            tx.execute("DELETE FROM administrators WHERE id = ?1", [id])?;
            // A wrapper-key share is kept by login: it goes with its
            // custodian, so a later account of the same name never sees it.
            let share = tx.execute("DELETE FROM wrapper_shares WHERE login = ?1", [login])?;
            let note = if share > 0 { "; their wrapper-key share was withdrawn" } else { "" };
            audit_actor(tx, actor, Severity::Info, None, &format!("deleted administrator {login}{note}"))
        })
    }
}

/// Makes an untrusted string safe to put in one audit line.
pub(crate) fn sanitize(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::*;

    #[test]
    fn builtin_admin_must_change_and_lockout() {
        let (_d, s) = store();
        let out = s
            .login("admin", &"admin123".into(), "127.0.0.1", "api")
            .expect("login");
        assert!(out.must_change_password);
        let a = s.actor("admin", "127.0.0.1", "api").expect("actor");
        assert!(matches!(
            s.list_admins(&a),
            Err(Error::PasswordChangeRequired)
        ));
        s.change_password(&a, &"admin123".into(), &"N3w!password".into())
            .expect("change");
        let a = s.actor("admin", "127.0.0.1", "api").expect("actor");
        assert_eq!(s.list_admins(&a).expect("list").len(), 1);
        for _ in 0..5 {
            assert!(matches!(
                s.login("admin", &"wrong".into(), "x", "api"),
                Err(Error::BadCredentials)
            ));
        }
        // Locked: the right password gets the answer of a wrong one.
        assert!(matches!(
            s.login("admin", &"N3w!password".into(), "x", "api"),
            Err(Error::BadCredentials)
        ));
        assert!(s.admin_locked_unchecked("admin").expect("locked"));
        // The CLI's unlock ends the lock-out, audited.
        assert!(
            s.unlock_builtin_admin(&crate::store::cli::test_session())
                .expect("unlock")
        );
        s.login("admin", &"N3w!password".into(), "x", "api")
            .expect("signed in after the unlock");
    }

    #[test]
    fn parallel_guesses_cannot_pass_the_lockout_limit() {
        let (_d, s) = store();
        let s = std::sync::Arc::new(s);
        // 12 guesses at once against a limit of 5: without the recheck in
        // the write, every guess read "not locked" before any counted.
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || s.login("admin", &"Wrong!pass1".into(), "x", "api"))
            })
            .collect();
        for t in threads {
            assert!(matches!(
                t.join().expect("thread"),
                Err(Error::BadCredentials)
            ));
        }
        // Whatever the order of the writes: 4 failures counted, the 5th
        // locks (one entry, written at once), the other 7 are refused as
        // locked; none is counted past the limit. The 11 refusals from one
        // source are one entry plus one summary of the 10 others.
        s.flush_refusals(true).expect("flush");
        let texts = |what: &str| -> Vec<String> {
            s.read(|tx| {
                let mut st = tx.prepare("SELECT what FROM audit WHERE what LIKE ?1")?;
                let rows = st
                    .query_map([what], |r| r.get::<_, String>(0))?
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .expect("audit")
        };
        assert_eq!(texts("failed login; account locked%").len(), 1);
        let first = texts("failed login (%");
        let locked = texts("login refused: account locked");
        assert_eq!(first.len() + locked.len(), 1, "{first:?} {locked:?}");
        let summary = texts("% more failed sign-ins from x %");
        assert_eq!(summary.len(), 1, "{summary:?}");
        assert!(summary[0].starts_with("10 more"), "{summary:?}");
        assert!(s.admin_locked_unchecked("admin").expect("locked"));
        assert!(matches!(
            s.login("admin", &"admin123".into(), "x", "api"),
            Err(Error::BadCredentials)
        ));
        let unknown = s.login("nobody", &"Wrong!pass1".into(), "x", "api");
        assert_eq!(
            unknown.err().map(|e| e.to_string()),
            Some(Error::BadCredentials.to_string())
        );
    }

    #[test]
    fn create_admin_rules() {
        let (_d, s) = store();
        let a = system_actor(&s);
        let new = |login: &str, pw: &str| NewAdmin {
            login: login.into(),
            description: String::new(),
            rsa_user_id: None,
            password: pw.into(),
            confirm_password: None,
            user_type: UserType::Security,
            restrict_to_domain: None,
            read_only: false,
        };
        s.create_admin(&a, new("SecurityAdministrator", "S3curity!pw"))
            .expect("create");
        let e = s
            .create_admin(&a, new("SecurityAdministrator", "S3curity!pw"))
            .expect_err("must be refused");
        assert!(matches!(e, Error::Conflict { field: "login", .. }));
        let e = s
            .create_admin(&a, new("weakling", "weak"))
            .expect_err("must be refused");
        assert!(matches!(
            e,
            Error::Invalid {
                field: "password",
                ..
            }
        ));
        assert_eq!(s.list_admins(&a).expect("list").len(), 2);
    }
}
