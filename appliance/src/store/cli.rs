//! The admin CLI's own account `cliadmin` (§2, §3, §6) and the changes the
//! CLI makes: the operating-system settings it manages, the security mode,
//! and its audit entries (author `cliadmin`, edge `cli`).
//!
//! `cliadmin` is not one of the web administrators: it has its own row, its
//! own first-login state (licence agreement, forced password change) and the
//! same lock-out rule as every account (the preferences' `max_failed_logins`
//! and `lockout_minutes`). A [`CliSession`] exists only for an account that
//! is not locked, has accepted the agreement and has changed its first
//! password; every CLI change takes one.

use crate::store::db::{Tx, params};
use time::{Duration, OffsetDateTime};

use super::{Preferences, PreferencesUpdate, Store, audit, now, opt_time};
use crate::access::Actor;
use crate::model::{SecurityMode, Severity, UserType, fmt_time};
use crate::os::{Dns, Eth0, HostName, Ntp, OsSettings};
use crate::secret::SecretString;
use crate::{Error, Result, password};

/// The CLI's account name (§2).
pub const CLI_LOGIN: &str = "cliadmin";
const CLI_DEFAULT_PASSWORD: &str = "cliadmin123";
/// The edge recorded in the audit log for everything the CLI does.
const VIA: &str = "cli";

/// The first-login and lock-out state of `cliadmin`.
#[derive(Debug, Clone)]
pub struct CliAccount {
    pub agreement_accepted: bool,
    pub must_change_password: bool,
    /// Set while the account is locked after repeated failed passwords.
    pub locked_until: Option<OffsetDateTime>,
    pub last_login: Option<String>,
}

/// Returned by [`Store::cli_verify_password`]: the current password was
/// given, so the password may be changed.
#[derive(Debug)]
pub struct PasswordProof {
    _private: (),
}

/// A usable CLI session (not locked, agreement accepted, first password
/// changed). `source` is where the session comes from: the SSH client's
/// address, or `console`.
#[derive(Debug, Clone)]
pub struct CliSession {
    source: String,
}

impl CliSession {
    pub fn source(&self) -> &str {
        &self.source
    }

    /// `cliadmin` as the actor of a store operation shared with the other
    /// edges (the preferences). It administers the appliance, not a domain:
    /// its id matches no administrator row, so it is a member of no domain.
    pub(super) fn actor(&self) -> Actor {
        Actor {
            id: 0,
            login: CLI_LOGIN.to_owned(),
            user_type: UserType::System,
            read_only: false,
            must_change_password: false,
            source: self.source.clone(),
            via: VIA,
        }
    }
}

pub(super) fn ensure_cli_account(tx: &Tx<'_>) -> Result<()> {
    let exists: bool = tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM cli_account WHERE login = ?1)",
        [CLI_LOGIN],
        |r| r.get(0),
    )?;
    if !exists {
        tx.execute(
            "INSERT INTO cli_account(login, password_hash, must_change_password, created_at) VALUES (?1, ?2, 1, ?3)",
            params![CLI_LOGIN, password::hash(CLI_DEFAULT_PASSWORD)?, fmt_time(now())],
        )?;
    }
    Ok(())
}

struct Row {
    account: CliAccount,
    hash: String,
}

fn load(tx: &Tx<'_>) -> Result<Row> {
    let (hash, accepted, must_change, locked_until, last_login) = tx.query_row(
        "SELECT password_hash, agreement_accepted_at, must_change_password, locked_until, last_login
         FROM cli_account WHERE login = ?1",
        [CLI_LOGIN],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        },
    )?;
    let locked_until = opt_time(locked_until)?.filter(|t| *t > now());
    Ok(Row {
        account: CliAccount {
            agreement_accepted: accepted.is_some(),
            must_change_password: must_change,
            locked_until,
            last_login,
        },
        hash,
    })
}

pub(super) fn cli_audit(tx: &Tx<'_>, source: &str, severity: Severity, what: &str) -> Result<()> {
    audit(tx, CLI_LOGIN, source, VIA, severity, None, what)
}

const SECTIONS: [&str; 4] = ["host_name", "eth0", "dns", "ntp"];

fn load_os(tx: &Tx<'_>) -> Result<OsSettings> {
    let mut s = OsSettings::default();
    let mut stmt = tx.prepare_cached("SELECT name, value FROM os_settings")?;
    let rows = stmt.query_map(crate::store::db::params![], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let malformed = |_| Error::Crypto("a stored operating-system setting is malformed");
    for row in rows {
        let (name, value) = row?;
        match name.as_str() {
            "host_name" => {
                s.host_name = serde_json::from_str::<Option<HostName>>(&value).map_err(malformed)?
            }
            "eth0" => s.eth0 = serde_json::from_str::<Eth0>(&value).map_err(malformed)?,
            "dns" => s.dns = serde_json::from_str::<Dns>(&value).map_err(malformed)?,
            "ntp" => s.ntp = serde_json::from_str::<Ntp>(&value).map_err(malformed)?,
            _ => {}
        }
    }
    Ok(s)
}

fn save_os(tx: &Tx<'_>, before: &OsSettings, after: &OsSettings) -> Result<()> {
    let json = |r: serde_json::Result<String>| {
        r.map_err(|_| Error::Crypto("an operating-system setting cannot be stored"))
    };
    for name in SECTIONS {
        let value = match name {
            "host_name" if before.host_name != after.host_name => {
                json(serde_json::to_string(&after.host_name))?
            }
            "eth0" if before.eth0 != after.eth0 => json(serde_json::to_string(&after.eth0))?,
            "dns" if before.dns != after.dns => json(serde_json::to_string(&after.dns))?,
            "ntp" if before.ntp != after.ntp => json(serde_json::to_string(&after.ntp))?,
            _ => continue,
        };
        tx.execute(
            "INSERT INTO os_settings(name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            params![name, value],
        )?;
    }
    Ok(())
}

impl Store {
    /// The state of `cliadmin` (agreement, forced change, lock-out).
    pub fn cli_account(&self) -> Result<CliAccount> {
        self.read(|tx| Ok(load(tx)?.account))
    }

    /// Records that the licence agreement was accepted (§2).
    pub fn cli_accept_agreement(&self, source: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE cli_account SET agreement_accepted_at = ?2 WHERE login = ?1 AND agreement_accepted_at IS NULL",
                params![CLI_LOGIN, fmt_time(now())],
            )?;
            cli_audit(tx, source, Severity::Info, "accepted the licence agreement")
        })
    }

    /// Checks `cliadmin`'s current password (§6). Every attempt is audited;
    /// `max_failed_logins` failures in a row lock the account for
    /// `lockout_minutes`, and a locked account refuses even the right one.
    pub fn cli_verify_password(
        &self,
        password: &SecretString,
        source: &str,
    ) -> Result<PasswordProof> {
        let row = self.read(load)?;
        // Verify outside the write lock: argon2 is deliberately slow.
        let ok = password::verify(password.expose(), &row.hash);
        let prefs = self.preferences_unchecked()?;
        self.write(|tx| {
            if load(tx)?.account.locked_until.is_some() {
                cli_audit(tx, source, Severity::Warn, "password refused: account locked")?;
                return Ok(Err(Error::Locked));
            }
            if !ok {
                let failures: i64 = tx.query_row(
                    "UPDATE cli_account SET failed_logins = failed_logins + 1 WHERE login = ?1 RETURNING failed_logins",
                    [CLI_LOGIN],
                    |r| r.get(0),
                )?;
                if failures >= prefs.max_failed_logins {
                    let until = now() + Duration::minutes(prefs.lockout_minutes);
                    tx.execute(
                        "UPDATE cli_account SET locked_until = ?2, failed_logins = 0 WHERE login = ?1",
                        params![CLI_LOGIN, fmt_time(until)],
                    )?;
                    cli_audit(
                        tx,
                        source,
                        Severity::Warn,
                        &format!(
                            "wrong password; account locked for {} minutes after {failures} failures",
                            prefs.lockout_minutes
                        ),
                    )?;
                    return Ok(Err(Error::Locked));
                }
                cli_audit(
                    tx,
                    source,
                    Severity::Warn,
                    &format!("wrong password ({failures} in a row)"),
                )?;
                return Ok(Err(Error::BadCredentials));
            }
            tx.execute(
                "UPDATE cli_account SET failed_logins = 0, locked_until = NULL WHERE login = ?1",
                [CLI_LOGIN],
            )?;
            Ok(Ok(PasswordProof { _private: () }))
        })?
    }

    /// Checks a new password before anything is changed: §6 policy, and
    /// different from the current one.
    pub fn cli_check_new_password(&self, new: &SecretString) -> Result<()> {
        password::check_policy("new password", CLI_LOGIN, new.expose())?;
        let hash = self.read(|tx| Ok(load(tx)?.hash))?;
        if password::verify(new.expose(), &hash) {
            return Err(Error::invalid(
                "new password",
                "must differ from the current password",
            ));
        }
        Ok(())
    }

    /// Stores `cliadmin`'s new password (argon2id) and clears the forced
    /// change. The caller has set the operating system's password first.
    pub fn cli_set_password(
        &self,
        _proof: PasswordProof,
        new: &SecretString,
        source: &str,
    ) -> Result<()> {
        self.cli_check_new_password(new)?;
        let hash = password::hash(new.expose())?;
        self.write(|tx| {
            tx.execute(
                "UPDATE cli_account SET password_hash = ?2, must_change_password = 0, password_changed_at = ?3 WHERE login = ?1",
                params![CLI_LOGIN, hash, fmt_time(now())],
            )?;
            cli_audit(tx, source, Severity::Info, "changed the cliadmin password")
        })
    }

    /// Opens a CLI session, refusing a locked account and one whose
    /// first-login steps are not done. The sign-in is audited.
    pub fn cli_session(&self, source: &str) -> Result<CliSession> {
        self.write(|tx| {
            let account = load(tx)?.account;
            if account.locked_until.is_some() {
                cli_audit(
                    tx,
                    source,
                    Severity::Warn,
                    "sign-in refused: account locked",
                )?;
                return Ok(Err(Error::Locked));
            }
            if !account.agreement_accepted {
                return Ok(Err(Error::Forbidden(
                    "the licence agreement has not been accepted".into(),
                )));
            }
            if account.must_change_password {
                return Ok(Err(Error::PasswordChangeRequired));
            }
            tx.execute(
                "UPDATE cli_account SET last_login = ?2 WHERE login = ?1",
                params![CLI_LOGIN, fmt_time(now())],
            )?;
            cli_audit(tx, source, Severity::Info, "signed in to the admin CLI")?;
            Ok(Ok(CliSession {
                source: source.to_owned(),
            }))
        })?
    }

    /// Records something the CLI did outside the store (a time zone, the
    /// clock, a restart) or a failure to apply a setting.
    pub fn cli_log(&self, session: &CliSession, severity: Severity, what: &str) -> Result<()> {
        self.write(|tx| cli_audit(tx, &session.source, severity, what))
    }

    /// The operating-system settings (defaults until the CLI changes them).
    pub fn os_settings(&self) -> Result<OsSettings> {
        self.read(load_os)
    }

    /// Changes the operating-system settings in one transaction: `change`
    /// edits them and returns what it did (for the audit log), or refuses.
    /// Nothing is stored or audited when the settings come out unchanged.
    pub fn cli_update_os_settings(
        &self,
        session: &CliSession,
        change: impl FnOnce(&mut OsSettings) -> Result<String>,
    ) -> Result<OsSettings> {
        self.write(|tx| {
            let before = load_os(tx)?;
            let mut after = before.clone();
            let what = change(&mut after)?;
            if after != before {
                save_os(tx, &before, &after)?;
                cli_audit(tx, &session.source, Severity::Info, &what)?;
            }
            Ok(after)
        })
    }

    /// `security suiteb set` (§9): the same preference the REST API sets,
    /// audited as `cliadmin`. Applied when the key service restarts.
    pub fn cli_set_security_mode(
        &self,
        session: &CliSession,
        mode: SecurityMode,
    ) -> Result<Preferences> {
        self.update_preferences(
            &session.actor(),
            PreferencesUpdate {
                security_mode: Some(mode),
                ..Default::default()
            },
        )
    }
}

/// Only for the store's own tests: a session without the first-login steps.
#[cfg(test)]
pub(crate) fn test_session() -> CliSession {
    CliSession {
        source: "test".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::{DnsServer, Ipv4Interface};
    use crate::store::test_support::{store, system_actor};
    use crate::store::{AuditQuery, Identities};

    fn pw(s: &str) -> SecretString {
        SecretString::new(s.to_owned())
    }

    #[test]
    fn first_login_then_session() {
        let (_d, s) = store();
        let a = s.cli_account().expect("account");
        assert!(!a.agreement_accepted && a.must_change_password && a.locked_until.is_none());
        assert!(matches!(s.cli_session("console"), Err(Error::Forbidden(_))));
        s.cli_accept_agreement("console").expect("accept");
        assert!(matches!(
            s.cli_session("console"),
            Err(Error::PasswordChangeRequired)
        ));
        assert!(matches!(
            s.cli_verify_password(&pw("wrong"), "console"),
            Err(Error::BadCredentials)
        ));
        let proof = s
            .cli_verify_password(&pw(CLI_DEFAULT_PASSWORD), "console")
            .expect("default password");
        assert!(s.cli_check_new_password(&pw("weak")).is_err());
        assert!(s.cli_check_new_password(&pw("Cliadmin123!")).is_ok());
        s.cli_set_password(proof, &pw("Cliadmin123!"), "console")
            .expect("set");
        let session = s.cli_session("console").expect("session");
        assert_eq!(session.source(), "console");
        let proof = s
            .cli_verify_password(&pw("Cliadmin123!"), "console")
            .expect("new password");
        let e = s
            .cli_set_password(proof, &pw("Cliadmin123!"), "console")
            .expect_err("same password");
        assert!(e.to_string().contains("differ"), "{e}");
        let log = s
            .audit_log(
                &system_actor(&s),
                &AuditQuery {
                    source: Some("cli".into()),
                    ..Default::default()
                },
            )
            .expect("log");
        assert!(
            log.entries
                .iter()
                .all(|e| e.who == CLI_LOGIN && e.via == "cli")
        );
        assert!(
            log.entries
                .iter()
                .any(|e| e.what == "changed the cliadmin password")
        );
    }

    #[test]
    fn repeated_failures_lock_the_account() {
        let (_d, s) = store();
        for _ in 0..4 {
            assert!(matches!(
                s.cli_verify_password(&pw("nope"), "console"),
                Err(Error::BadCredentials)
            ));
        }
        assert!(matches!(
            s.cli_verify_password(&pw("nope"), "console"),
            Err(Error::Locked)
        ));
        assert!(matches!(
            s.cli_verify_password(&pw(CLI_DEFAULT_PASSWORD), "console"),
            Err(Error::Locked)
        ));
        assert!(s.cli_account().expect("account").locked_until.is_some());
        assert!(matches!(s.cli_session("console"), Err(Error::Locked)));
    }

    #[test]
    fn replacing_the_identities_makes_hosts_register_again() {
        use crate::pki::{CaKind, CaSubject};
        let (_d, s) = store();
        let names = vec!["custos.example.com".to_string()];
        let old = s
            .ensure_identities("custos.example.com", &names)
            .expect("first start");
        s.write(|tx| {
            tx.execute_batch(
                "INSERT INTO domains(id, name, kind, help_desk_information, created_at) VALUES (1, 'D', 'global', '', 'now');
                 INSERT INTO hosts(domain_id, host_name, registration_allowed, certificate, cert_fingerprint, registered_at, created_at)
                   VALUES (1, 'rec1', 0, 'pem', 'fp1', 'now', 'now');
                 INSERT INTO hosts(domain_id, host_name, registration_allowed, created_at) VALUES (1, 'rec2', 0, 'now');",
            )?;
            Ok(())
        })
        .expect("hosts");
        let subject = CaSubject::default_for("custos.example.com");
        let new = |kind| crate::pki::generate_ca(kind, &subject).expect("ca");
        let (ca_rsa, ca_ec) = (new(CaKind::Rsa), new(CaKind::Ec));
        let ids = Identities {
            server_rsa: crate::pki::issue_server(&ca_rsa, CaKind::Rsa, &names).expect("rsa"),
            server_ec: crate::pki::issue_server(&ca_ec, CaKind::Ec, &names).expect("ec"),
            ca_rsa,
            ca_ec,
        };
        let hosts = s
            .cli_replace_identities(&test_session(), &ids)
            .expect("replace");
        assert_eq!(hosts, 1);
        let loaded = s
            .ensure_identities("custos.example.com", &names)
            .expect("load");
        assert_eq!(loaded.ca_rsa.cert_pem, ids.ca_rsa.cert_pem);
        assert_ne!(loaded.ca_ec.cert_pem, old.ca_ec.cert_pem);
        assert_eq!(
            loaded.server_ec.key_pem.expose(),
            ids.server_ec.key_pem.expose()
        );
        let rows: Vec<(String, bool, Option<String>)> = s
            .read(|tx| {
                let mut stmt = tx.prepare(
                    "SELECT host_name, registration_allowed, cert_fingerprint FROM hosts ORDER BY host_name",
                )?;
                let rows = stmt
                    .query_map(crate::store::db::params![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<crate::store::db::DbResult<Vec<_>>>()?;
                Ok(rows)
            })
            .expect("hosts");
        assert_eq!(
            rows,
            vec![("rec1".into(), true, None), ("rec2".into(), false, None)]
        );
    }

    #[test]
    fn os_settings_round_trip_and_audit() {
        let (_d, s) = store();
        let session = test_session();
        assert_eq!(s.os_settings().expect("defaults"), OsSettings::default());
        let after = s
            .cli_update_os_settings(&session, |os| {
                os.eth0.dhcp = false;
                os.eth0.address = Some(Ipv4Interface::parse("192.0.2.10/24")?);
                os.dns.dns1 = Some(DnsServer::parse("dns1", "192.0.2.53")?);
                os.host_name = Some(HostName::parse("host_name", "Custos.example.com")?);
                Ok("set eth0".into())
            })
            .expect("update");
        assert_eq!(s.os_settings().expect("read"), after);
        let refused = s.cli_update_os_settings(&session, |os| {
            os.eth0.gateway = Some("192.0.2.1".parse().expect("ip"));
            Err(Error::invalid("gateway", "refused"))
        });
        assert!(refused.is_err());
        assert_eq!(s.os_settings().expect("read"), after);
        let prefs = s
            .cli_set_security_mode(&session, SecurityMode::SuiteB)
            .expect("mode");
        assert_eq!(prefs.security_mode, SecurityMode::SuiteB);
        let log = s
            .audit_log(&system_actor(&s), &AuditQuery::default())
            .expect("log");
        assert!(
            log.entries
                .iter()
                .any(|e| e.who == CLI_LOGIN && e.what.contains("security mode suite_b"))
        );
    }
}
