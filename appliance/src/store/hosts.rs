//! Registration shared secrets, protected hosts, host registration and key
//! release (§8, and the key path of §7).

use crate::store::db::{OptionalExtension, Tx, params};
use serde::Serialize;
use time::{Duration, OffsetDateTime};

use super::admins::sanitize;
use super::keys::{current_version, key_id};
use super::{
    RefusalKind, Store, audit, audit_actor, domain_for, domain_id, licence, now, opt_time,
};
use crate::access::{Access, Actor};
use crate::crypto::{fill_random, fingerprint, hkdf_sha256};
use crate::model::{
    Algorithm, CreationMethod, KeyType, Role, Severity, check_host_name, check_shared_secret,
    fmt_time,
};
use crate::pki::{self, CaKind};
use crate::secret::{SecretBytes, SecretString};
use crate::{Error, Result};

#[derive(Debug)]
pub struct NewSecret {
    pub creation_method: CreationMethod,
    pub shared_secret: Option<SecretString>,
    pub valid_until: Option<OffsetDateTime>,
    pub require_hosts_first_added: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SecretView {
    pub domain: String,
    pub creation_method: CreationMethod,
    pub valid_until: String,
    pub require_hosts_first_added: bool,
    pub expired: bool,
    pub created_at: String,
    /// Only when asked for with Show = Yes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_secret: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostView {
    pub domain: String,
    pub host_name: String,
    pub registration_allowed: bool,
    pub registered: bool,
    pub registered_at: Option<String>,
    pub last_contact: Option<String>,
    pub certificate_fingerprint: Option<String>,
    pub created_at: String,
}

/// A protected host's enrolment request, as its JSON body reads
/// (`POST /agent/v1/register`, §8: `host_name`, `domain`, `shared_secret`,
/// `csr`), decoded by [`crate::json_body::from_slice`].
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub host_name: String,
    pub domain: String,
    pub shared_secret: SecretString,
    #[serde(rename = "csr")]
    pub csr_pem: String,
}

impl Registration {
    /// The field rules a request must pass before the store is asked; the
    /// secret, the domain and the CSR are judged by [`Store::register_host`].
    pub fn check(&self) -> Result<()> {
        check_host_name("host_name", &self.host_name)
    }
}

/// What a registered host receives for one key version.
#[derive(Debug)]
pub struct KeyRelease {
    pub domain: String,
    pub name: String,
    pub version: i64,
    pub current_version: i64,
    pub algorithm: Algorithm,
    pub key_type: KeyType,
    pub refresh_period_minutes: i64,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub material: SecretBytes,
}

const SECRET_VALIDITY_DEFAULT_DAYS: i64 = 3650;
const GENERATED_SECRET_LEN: usize = 24;
const SECRET_ALPHABET: &[u8] =
    b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789!#%+-=?@^_~";
/// The one answer (`Error::Forbidden`) to an unknown domain, a domain
/// without a secret and a wrong secret: the key service counts these for
/// its enrolment back-off.
pub const SECRET_REFUSAL: &str = "registration refused: the domain or the shared secret is wrong";
/// Host contact times and key-release audit entries are written at most this often.
const CONTACT_RESOLUTION: Duration = Duration::seconds(60);

pub(super) fn secret_context(did: i64) -> String {
    format!("registration_secrets:{did}")
}

/// A random secret that satisfies the manual rules too.
fn generate_secret() -> SecretString {
    loop {
        let mut raw = [0u8; GENERATED_SECRET_LEN];
        fill_random(&mut raw);
        let s: String = raw
            .iter()
            .map(|b| SECRET_ALPHABET[*b as usize % SECRET_ALPHABET.len()] as char)
            .collect();
        if check_shared_secret(&s).is_ok() {
            return SecretString::new(s);
        }
    }
}

fn host_view(tx: &Tx<'_>, hid: i64) -> Result<HostView> {
    Ok(tx.query_row(
        "SELECT d.name, h.host_name, h.registration_allowed, h.cert_fingerprint, h.registered_at, h.last_contact, h.created_at
         FROM hosts h JOIN domains d ON d.id = h.domain_id WHERE h.id = ?1",
        [hid],
        |r| {
            let fp: Option<String> = r.get(3)?;
            Ok(HostView {
                domain: r.get(0)?,
                host_name: r.get(1)?,
                registration_allowed: r.get(2)?,
                registered: fp.is_some(),
                certificate_fingerprint: fp,
                registered_at: r.get(4)?,
                last_contact: r.get(5)?,
                created_at: r.get(6)?,
            })
        },
    )?)
}

/// Whether the host holds a certificate, i.e. already uses a Key agent licence.
fn is_registered(tx: &Tx<'_>, did: i64, host_name: &str) -> Result<bool> {
    Ok(tx
        .query_row(
            "SELECT cert_fingerprint IS NOT NULL FROM hosts WHERE domain_id = ?1 AND host_name = ?2",
            params![did, host_name],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(false))
}

fn host_id(tx: &Tx<'_>, did: i64, host_name: &str) -> Result<i64> {
    tx.query_row(
        "SELECT id FROM hosts WHERE domain_id = ?1 AND host_name = ?2",
        params![did, host_name],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| Error::not_found("host", host_name))
}

impl Store {
    fn secret_view(&self, tx: &Tx<'_>, did: i64, domain: &str, show: bool) -> Result<SecretView> {
        let row: Option<(Vec<u8>, String, String, bool, bool, String)> = tx
            .query_row(
                "SELECT secret_sealed, creation_method, valid_until, require_hosts_first_added, expired, created_at
                 FROM registration_secrets WHERE domain_id = ?1",
                [did],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .optional()?;
        let (sealed, cm, valid_until, first_added, expired, created_at) =
            row.ok_or_else(|| Error::not_found("registration shared secret of domain", domain))?;
        let past = crate::model::parse_stored_time(&valid_until)? <= now();
        let shared_secret = if show {
            let plain = self.master.open(&secret_context(did), &sealed)?;
            Some(
                String::from_utf8(plain.expose().to_vec())
                    .map_err(|_| Error::Crypto("stored secret is not text"))?,
            )
        } else {
            None
        };
        Ok(SecretView {
            domain: domain.to_owned(),
            creation_method: CreationMethod::parse("creation_method", &cm)?,
            valid_until,
            require_hosts_first_added: first_added,
            expired: expired || past,
            created_at,
            shared_secret,
        })
    }

    pub fn get_secret(&self, actor: &Actor, domain: &str, show: bool) -> Result<SecretView> {
        if show {
            // Showing a secret is audited, so it is a write.
            // The secret registers hosts that fetch every key of the
            // domain: revealing it needs write access (issue 12).
            return self.write(|tx| {
                let (did, m) = domain_for(tx, actor, domain)?;
                actor.require_role(m.as_ref(), Role::Host, Access::Read)?;
                if actor.read_only {
                    return Err(Error::Forbidden(
                        "read-only administrators may not reveal the registration shared secret: it lets a host fetch every key of the domain".into(),
                    ));
                }
                actor.require_role(m.as_ref(), Role::Host, Access::Write)?;
                let v = self.secret_view(tx, did, domain, true)?;
                audit_actor(
                    tx,
                    actor,
                    Severity::Info,
                    Some(did),
                    &format!("displayed the registration shared secret of domain {domain}"),
                )?;
                Ok(v)
            });
        }
        self.read(|tx| {
            let (did, m) = domain_for(tx, actor, domain)?;
            actor.require_role(m.as_ref(), Role::Host, Access::Read)?;
            self.secret_view(tx, did, domain, false)
        })
    }

    pub fn set_secret(&self, actor: &Actor, domain: &str, new: NewSecret) -> Result<SecretView> {
        let secret = match (new.creation_method, new.shared_secret) {
            (CreationMethod::Manual, Some(s)) => {
                check_shared_secret(s.expose())?;
                s
            }
            (CreationMethod::Manual, None) => {
                return Err(Error::invalid(
                    "shared_secret",
                    "is required for a manual secret",
                ));
            }
            (CreationMethod::Generate, Some(_)) => {
                return Err(Error::invalid(
                    "shared_secret",
                    "is only given for a manual secret",
                ));
            }
            (CreationMethod::Generate, None) => generate_secret(),
        };
        let t = now();
        let valid_until = new
            .valid_until
            .unwrap_or(t + Duration::days(SECRET_VALIDITY_DEFAULT_DAYS));
        if valid_until <= t {
            return Err(Error::invalid("valid_until", "must be in the future"));
        }
        self.write(|tx| {
            let (did, m) = domain_for(tx, actor, domain)?;
            actor.require_role(m.as_ref(), Role::Host, Access::Write)?;
            let sealed = self.master.seal(&secret_context(did), secret.expose().as_bytes())?;
            tx.execute(
                "INSERT INTO registration_secrets(domain_id, secret_sealed, creation_method, valid_until, require_hosts_first_added, expired, created_at)
                 VALUES (?1,?2,?3,?4,?5,0,?6)
                 ON CONFLICT(domain_id) DO UPDATE SET secret_sealed = excluded.secret_sealed, creation_method = excluded.creation_method,
                   valid_until = excluded.valid_until, require_hosts_first_added = excluded.require_hosts_first_added, expired = 0,
                   created_at = excluded.created_at",
                params![did, sealed, new.creation_method.as_str(), fmt_time(valid_until), new.require_hosts_first_added, fmt_time(t)],
            )?;
            audit_actor(tx, actor, Severity::Info, Some(did), &format!(
                "set the registration shared secret of domain {domain} ({}, valid until {}, hosts must be added first: {})",
                new.creation_method.as_str(), fmt_time(valid_until), if new.require_hosts_first_added { "yes" } else { "no" }))?;
            self.secret_view(tx, did, domain, false)
        })
    }

    pub fn expire_secret(&self, actor: &Actor, domain: &str) -> Result<SecretView> {
        self.write(|tx| {
            let (did, m) = domain_for(tx, actor, domain)?;
            actor.require_role(m.as_ref(), Role::Host, Access::Write)?;
            if tx.execute(
                "UPDATE registration_secrets SET expired = 1 WHERE domain_id = ?1",
                [did],
            )? == 0
            {
                return Err(Error::not_found(
                    "registration shared secret of domain",
                    domain,
                ));
            }
            audit_actor(
                tx,
                actor,
                Severity::Info,
                Some(did),
                &format!("expired the registration shared secret of domain {domain}"),
            )?;
            self.secret_view(tx, did, domain, false)
        })
    }

    pub fn list_hosts(&self, actor: &Actor, domain: &str) -> Result<Vec<HostView>> {
        self.read(|tx| {
            let (did, m) = domain_for(tx, actor, domain)?;
            actor.require_role(m.as_ref(), Role::Host, Access::Read)?;
            let ids: Vec<i64> = tx
                .prepare("SELECT id FROM hosts WHERE domain_id = ?1 ORDER BY host_name")?
                .query_map([did], |r| r.get(0))?
                .collect::<crate::store::db::DbResult<_>>()?;
            ids.into_iter().map(|id| host_view(tx, id)).collect()
        })
    }

    pub fn get_host(&self, actor: &Actor, domain: &str, host_name: &str) -> Result<HostView> {
        self.read(|tx| {
            let (did, m) = domain_for(tx, actor, domain)?;
            actor.require_role(m.as_ref(), Role::Host, Access::Read)?;
            host_view(tx, host_id(tx, did, host_name)?)
        })
    }

    /// Adds a host before it registers (needed when the domain's secret says
    /// hosts must be added first).
    pub fn add_host(
        &self,
        actor: &Actor,
        domain: &str,
        host_name: &str,
        registration_allowed: bool,
    ) -> Result<HostView> {
        check_host_name("host_name", host_name)?;
        self.write(|tx| {
            let (did, m) = domain_for(tx, actor, domain)?;
            actor.require_role(m.as_ref(), Role::Host, Access::Write)?;
            if tx.query_row("SELECT EXISTS(SELECT 1 FROM hosts WHERE domain_id = ?1 AND host_name = ?2)", params![did, host_name], |r| r.get::<_, bool>(0))? {
                return Err(Error::conflict("host_name", "a host with this name already exists in the domain"));
            }
            let hid: i64 = tx.query_row(
                "INSERT INTO hosts(domain_id, host_name, registration_allowed, created_at) VALUES (?1,?2,?3,?4) RETURNING id",
                params![did, host_name, registration_allowed, fmt_time(now())],
                |r| r.get(0),
            )?;
            audit_actor(tx, actor, Severity::Info, Some(did), &format!("added host {host_name} to domain {domain}"))?;
            host_view(tx, hid)
        })
    }

    /// Allows (or stops) a host's next registration; allowing it again is how
    /// a host re-registers after a new CA or a lost key.
    pub fn set_host_registration(
        &self,
        actor: &Actor,
        domain: &str,
        host_name: &str,
        allowed: bool,
    ) -> Result<HostView> {
        self.write(|tx| {
            let (did, m) = domain_for(tx, actor, domain)?;
            actor.require_role(m.as_ref(), Role::Host, Access::Write)?;
            let hid = host_id(tx, did, host_name)?;
            tx.execute(
                "UPDATE hosts SET registration_allowed = ?2 WHERE id = ?1",
                params![hid, allowed],
            )?;
            audit_actor(
                tx,
                actor,
                Severity::Info,
                Some(did),
                &format!(
                    "{} registration of host {host_name} in domain {domain}",
                    if allowed { "allowed" } else { "disallowed" }
                ),
            )?;
            host_view(tx, hid)
        })
    }

    pub fn delete_host(&self, actor: &Actor, domain: &str, host_name: &str) -> Result<()> {
        self.write(|tx| {
            let (did, m) = domain_for(tx, actor, domain)?;
            actor.require_role(m.as_ref(), Role::Host, Access::Write)?;
            let hid = host_id(tx, did, host_name)?;
            tx.execute("DELETE FROM hosts WHERE id = ?1", [hid])?;
            audit_actor(
                tx,
                actor,
                Severity::Info,
                Some(did),
                &format!("deleted host {host_name} from domain {domain}"),
            )
        })
    }

    /// §8 enrolment: checks the shared secret, the host's standing and the
    /// licence (§10: the Key agent licensed, not expired, and a new host
    /// within the agent limit; a registered host re-registering takes no
    /// second licence), signs its CSR with the authority of `kind`, and
    /// records the certificate.
    /// Returns the host certificate and the CA certificate (PEM).
    pub fn register_host(
        &self,
        req: &Registration,
        kind: CaKind,
        source: &str,
    ) -> Result<(String, String)> {
        req.check()?;
        let ca = self.identity(crate::store::system::ca_name(kind))?;
        let who = format!("host:{}", sanitize(&req.host_name));
        let refusal_entry = |tx: &Tx<'_>, why: &str| {
            let did = domain_id(tx, &req.domain).ok();
            self.log_refusal(
                tx,
                RefusalKind::Registration,
                &who,
                source,
                "agent",
                did,
                &format!("registration refused: {why}"),
            )
        };
        // Refused with an audit entry, as Error::Forbidden or Error::Licence.
        let refuse_as = |why: String, error: fn(String) -> Error| -> Result<(String, String)> {
            self.write(|tx| refusal_entry(tx, &why))?;
            Err(error(format!("registration refused: {why}")))
        };
        let refuse = |why: String| refuse_as(why, Error::Forbidden);
        // An unknown domain, a domain without a secret and a wrong secret get
        // the same answer after the same work (the secret query runs, one
        // AES-GCM operation, one audit write), so a guess learns nothing
        // about which domains exist.
        let did = match self.read(|tx| domain_id(tx, &req.domain)) {
            Ok(did) => Some(did),
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let secret = self.read(|tx| {
            Ok(tx
                .query_row(
                    "SELECT secret_sealed, valid_until, expired, require_hosts_first_added FROM registration_secrets WHERE domain_id = ?1",
                    [did.unwrap_or(-1)],
                    |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?, r.get::<_, bool>(2)?, r.get::<_, bool>(3)?)),
                )
                .optional()?)
        })?;
        let refuse_secret = |why: &str| -> Result<(String, String)> {
            self.write(|tx| refusal_entry(tx, why))?;
            Err(Error::Forbidden(SECRET_REFUSAL.to_owned()))
        };
        let (did, (sealed, valid_until, expired, first_added)) = match (did, secret) {
            (Some(did), Some(secret)) => (did, secret),
            (did, _) => {
                // The same work as a real comparison (one AES-GCM operation
                // and a constant-time compare against a decoy), so an
                // unknown domain cannot be told from a wrong secret by time.
                let decoy = self
                    .master
                    .seal(&secret_context(-1), &[0; GENERATED_SECRET_LEN])?;
                let _ = crate::secret::ct_eq(&decoy, req.shared_secret.expose().as_bytes());
                return refuse_secret(match did {
                    None => "unknown domain",
                    Some(_) => "the domain has no registration shared secret",
                });
            }
        };
        let stored = self.master.open(&secret_context(did), &sealed)?;
        if !crate::secret::ct_eq(stored.expose(), req.shared_secret.expose().as_bytes()) {
            return refuse_secret("wrong shared secret");
        }
        if expired || crate::model::parse_stored_time(&valid_until)? <= now() {
            return refuse("the shared secret has expired".into());
        }
        let existing: Option<(i64, bool)> = self.read(|tx| {
            Ok(tx
                .query_row(
                    "SELECT id, registration_allowed FROM hosts WHERE domain_id = ?1 AND host_name = ?2",
                    params![did, req.host_name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?)
        })?;
        match existing {
            None if first_added => return refuse("hosts must be added by an administrator before they register".into()),
            Some((_, false)) => return refuse("the host is already registered or not allowed to register; an administrator must allow registration".into()),
            _ => {}
        }
        // §10, before any work: the licence allows this agent.
        if let Some(why) = self.read(|tx| {
            licence::registration_refusal(tx, !is_registered(tx, did, &req.host_name)?)
        })? {
            return refuse_as(why, Error::Licence);
        }
        let cert_pem = pki::sign_host_csr(&ca, kind, &req.csr_pem, &req.host_name)?;
        let fp = fingerprint(&pki::pem_to_der(&cert_pem)?);
        let licence_refusal = self.write(|tx| {
            // And again in the transaction that adds the agent, so concurrent
            // registrations cannot pass the limit together.
            let new_agent = !is_registered(tx, did, &req.host_name)?;
            if let Some(why) = licence::registration_refusal(tx, new_agent)? {
                refusal_entry(tx, &why)?;
                return Ok(Some(why));
            }
            let t = fmt_time(now());
            match existing {
                Some((hid, _)) => {
                    tx.execute(
                        "UPDATE hosts SET certificate = ?2, cert_fingerprint = ?3, registered_at = ?4, registration_allowed = 0 WHERE id = ?1",
                        params![hid, cert_pem, fp, t],
                    )?;
                }
                None => {
                    tx.execute(
                        "INSERT INTO hosts(domain_id, host_name, registration_allowed, certificate, cert_fingerprint, registered_at, created_at)
                         VALUES (?1,?2,0,?3,?4,?5,?5)",
                        params![did, req.host_name, cert_pem, fp, t],
                    )?;
                }
            }
            audit(tx, &who, source, "agent", Severity::Info, Some(did), &format!(
                "registered host {} in domain {} (certificate {fp}, {} CA)", req.host_name, req.domain, kind.as_str()))?;
            Ok(None)
        })?;
        if let Some(why) = licence_refusal {
            return Err(Error::Licence(format!("registration refused: {why}")));
        }
        Ok((cert_pem, ca.cert_pem))
    }

    /// The registered host presenting the certificate with this fingerprint.
    pub fn host_by_certificate(&self, cert_fingerprint: &str) -> Result<HostView> {
        self.read(|tx| {
            let hid: i64 = tx
                .query_row(
                    "SELECT id FROM hosts WHERE cert_fingerprint = ?1",
                    [cert_fingerprint],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| {
                    Error::Forbidden("the client certificate belongs to no registered host".into())
                })?;
            host_view(tx, hid)
        })
    }

    /// §7 key release to a registered host of the key's domain, identified by
    /// the fingerprint of the client certificate it authenticated with.
    pub fn release_key(
        &self,
        cert_fingerprint: &str,
        name: &str,
        version: Option<i64>,
        source: &str,
    ) -> Result<KeyRelease> {
        let global = self.preferences_unchecked()?.key_refresh_period;
        let t = now();
        let (release, hid, did, kid, host_name, touch) = self.read(|tx| {
            let (hid, did, host_name, domain, last_contact): (i64, i64, String, String, Option<String>) = tx
                .query_row(
                    "SELECT h.id, h.domain_id, h.host_name, d.name, h.last_contact FROM hosts h JOIN domains d ON d.id = h.domain_id
                     WHERE h.cert_fingerprint = ?1",
                    [cert_fingerprint],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?
                .ok_or_else(|| Error::Forbidden("the client certificate belongs to no registered host".into()))?;
            let kid = key_id(tx, did, name)?;
            let (alg, kt, uth, rp): (String, String, bool, Option<i64>) = tx.query_row(
                "SELECT algorithm, key_type, unique_to_host, refresh_period FROM agent_keys WHERE id = ?1", [kid],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            let current = current_version(tx, kid)?;
            let v = version.unwrap_or(current);
            let (material, created_at, expires_at) = self
                .open_version(tx, kid, v)?
                .ok_or_else(|| Error::not_found("key version", format!("{name} version {v}")))?;
            let material = if uth {
                hkdf_sha256(material.expose(), b"custos unique-to-host", format!("{hid}:{host_name}").as_bytes(), material.len())?
            } else {
                material
            };
            let touch = opt_time(last_contact)?.is_none_or(|lc| t - lc >= CONTACT_RESOLUTION);
            Ok((
                KeyRelease {
                    domain,
                    name: name.to_owned(),
                    version: v,
                    current_version: current,
                    algorithm: Algorithm::parse(&alg)?,
                    key_type: KeyType::parse(&kt)?,
                    refresh_period_minutes: rp.unwrap_or(global),
                    created_at,
                    expires_at,
                    material,
                },
                hid,
                did,
                kid,
                host_name,
                touch,
            ))
        })?;
        // Contact time and an audit line per host, key and version, at most once a minute,
        // so a busy host does not turn every fetch into a disk sync.
        let audit_due = {
            let mut seen = self
                .release_audit
                .lock()
                .expect("release audit mutex poisoned");
            let key = (hid, kid, release.version);
            let due = seen
                .get(&key)
                .is_none_or(|last| t - *last >= CONTACT_RESOLUTION);
            if due {
                seen.insert(key, t);
            }
            due
        };
        if touch || audit_due {
            // Bookkeeping only: a failed write (a full disk) is logged and
            // the key is still released; the next fetch tries again.
            let written = self.write(|tx| {
                if touch {
                    tx.execute(
                        "UPDATE hosts SET last_contact = ?2 WHERE id = ?1",
                        params![hid, fmt_time(t)],
                    )?;
                }
                if audit_due {
                    audit(
                        tx,
                        &format!("host:{host_name}"),
                        source,
                        "agent",
                        Severity::Info,
                        Some(did),
                        &format!(
                            "released key {name} version {} to host {host_name}",
                            release.version
                        ),
                    )?;
                }
                Ok(())
            });
            if let Err(Error::Failover { .. }) = written {
                // A failover serves keys but records nothing: its store is
                // the primary's replica. Not an error, and not retried.
            } else if let Err(e) = written {
                tracing::error!(
                    error = %e,
                    host = %host_name,
                    key = %name,
                    "recording a key release failed; the key was released"
                );
                if audit_due {
                    self.release_audit
                        .lock()
                        .expect("release audit mutex poisoned")
                        .remove(&(hid, kid, release.version));
                }
            }
        }
        Ok(release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_follow_the_manual_rules() {
        for _ in 0..50 {
            let s = generate_secret();
            assert!(check_shared_secret(s.expose()).is_ok());
        }
    }
}
