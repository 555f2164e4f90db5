//! The appliance's own certificate authorities and server certificates,
//! created at first start and kept sealed in the store.

use crate::store::db::{OptionalExtension, params};

use super::cli::cli_audit;
use super::{CliSession, Store, audit, now};
use crate::model::{Severity, fmt_time};
use crate::pki::{self, CaKind, CaSubject, Identity};
use crate::secret::SecretString;
use crate::{Error, Result};

/// The four identities the key service serves with.
#[derive(Debug, Clone)]
pub struct Identities {
    pub ca_rsa: Identity,
    pub ca_ec: Identity,
    pub server_rsa: Identity,
    pub server_ec: Identity,
}

impl Identities {
    pub fn ca(&self, kind: CaKind) -> &Identity {
        match kind {
            CaKind::Rsa => &self.ca_rsa,
            CaKind::Ec => &self.ca_ec,
        }
    }
    pub fn server(&self, kind: CaKind) -> &Identity {
        match kind {
            CaKind::Rsa => &self.server_rsa,
            CaKind::Ec => &self.server_ec,
        }
    }
}

pub(crate) fn ca_name(kind: CaKind) -> &'static str {
    match kind {
        CaKind::Rsa => "ca_rsa",
        CaKind::Ec => "ca_ec",
    }
}

fn server_name(kind: CaKind) -> &'static str {
    match kind {
        CaKind::Rsa => "server_rsa",
        CaKind::Ec => "server_ec",
    }
}

pub(super) fn context(name: &str) -> String {
    format!("system_identities:{name}")
}

impl Store {
    pub(crate) fn identity(&self, name: &str) -> Result<Identity> {
        self.identity_opt(name)?
            .ok_or_else(|| Error::Certificate(format!("the appliance has no {name} yet")))
    }

    /// The SHA-256 fingerprint of a certificate authority as the dashboard,
    /// `GET /api/v1/system` and the agent show it (`AB:CD:…`), read from its
    /// certificate alone (the sealed key stays closed); `None` before the
    /// key service's first start created it.
    pub fn ca_fingerprint(&self, kind: CaKind) -> Result<Option<String>> {
        let pem: Option<String> = self.read(|tx| {
            Ok(tx
                .query_row(
                    "SELECT cert_pem FROM system_identities WHERE name = ?1",
                    [ca_name(kind)],
                    |r| r.get(0),
                )
                .optional()?)
        })?;
        pem.map(|pem| Ok(crate::crypto::fingerprint(&pki::pem_to_der(&pem)?)))
            .transpose()
    }

    fn identity_opt(&self, name: &str) -> Result<Option<Identity>> {
        let row: Option<(String, Vec<u8>)> = self.read(|tx| {
            Ok(tx
                .query_row(
                    "SELECT cert_pem, key_sealed FROM system_identities WHERE name = ?1",
                    [name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?)
        })?;
        row.map(|(cert_pem, sealed)| {
            let key = self.master.open(&context(name), &sealed)?;
            let key_pem = String::from_utf8(key.expose().to_vec())
                .map_err(|_| Error::Crypto("stored key is not PEM"))?;
            Ok(Identity {
                cert_pem,
                key_pem: SecretString::new(key_pem),
            })
        })
        .transpose()
    }

    fn put_identity(&self, name: &str, id: &Identity, what: &str) -> Result<()> {
        let sealed = self
            .master
            .seal(&context(name), id.key_pem.expose().as_bytes())?;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO system_identities(name, cert_pem, key_sealed, created_at) VALUES (?1,?2,?3,?4)
                 ON CONFLICT(name) DO UPDATE SET cert_pem = excluded.cert_pem, key_sealed = excluded.key_sealed, created_at = excluded.created_at",
                params![name, id.cert_pem, sealed, fmt_time(now())],
            )?;
            audit(tx, "system", "appliance", "system", Severity::Info, None, &format!("{what} (fingerprint {})", id.fingerprint()?))
        })
    }

    /// `security genca` (§3, §9): replaces both certificate authorities and
    /// both server certificates in one transaction, and makes every
    /// registered protected host register again: its certificate is
    /// forgotten (so it no longer opens the key port) and registration is
    /// allowed. Returns how many hosts must register again. The key service
    /// serves the new identities from its next start.
    pub fn cli_replace_identities(&self, session: &CliSession, new: &Identities) -> Result<i64> {
        let entries = [
            (ca_name(CaKind::Rsa), &new.ca_rsa),
            (ca_name(CaKind::Ec), &new.ca_ec),
            (server_name(CaKind::Rsa), &new.server_rsa),
            (server_name(CaKind::Ec), &new.server_ec),
        ];
        let mut sealed = Vec::with_capacity(entries.len());
        for (name, id) in entries {
            id.fingerprint()?;
            let key = self
                .master
                .seal(&context(name), id.key_pem.expose().as_bytes())?;
            sealed.push((name, id.cert_pem.as_str(), key));
        }
        let (rsa, ec) = (new.ca_rsa.fingerprint()?, new.ca_ec.fingerprint()?);
        self.write(|tx| {
            for (name, cert_pem, key) in &sealed {
                tx.execute(
                    "INSERT INTO system_identities(name, cert_pem, key_sealed, created_at) VALUES (?1,?2,?3,?4)
                     ON CONFLICT(name) DO UPDATE SET cert_pem = excluded.cert_pem, key_sealed = excluded.key_sealed, created_at = excluded.created_at",
                    params![name, cert_pem, key, fmt_time(now())],
                )?;
            }
            let hosts = tx.execute(
                "UPDATE hosts SET registration_allowed = 1, certificate = NULL, cert_fingerprint = NULL, registered_at = NULL
                 WHERE cert_fingerprint IS NOT NULL",
                params![],
            )? as i64;
            cli_audit(
                tx,
                session.source(),
                Severity::Warn,
                &format!(
                    "regenerated the certificate authorities (RSA fingerprint {rsa}, EC fingerprint {ec}) and the server certificates; {hosts} registered hosts must register again"
                ),
            )?;
            Ok(hosts)
        })
    }

    /// Loads the CAs and server certificates, generating whatever is missing
    /// (first start). `names` are the host names and addresses the server
    /// certificates must cover.
    pub fn ensure_identities(&self, host_name: &str, names: &[String]) -> Result<Identities> {
        if self.is_failover()? || super::joined_primary(self.dir())?.is_some() {
            // The group's CAs, replicated; this node's own server
            // certificates from them, beside the store (a failover, and a
            // former one made primary: the store's are the first
            // primary's).
            let get = |kind: CaKind| -> Result<(Identity, Identity)> {
                let ca = self.identity(ca_name(kind))?;
                let server = self.failover_server_identity(kind, &ca, names)?;
                Ok((ca, server))
            };
            let (ca_rsa, server_rsa) = get(CaKind::Rsa)?;
            let (ca_ec, server_ec) = get(CaKind::Ec)?;
            return Ok(Identities {
                ca_rsa,
                ca_ec,
                server_rsa,
                server_ec,
            });
        }
        let get = |kind: CaKind| -> Result<(Identity, Identity)> {
            let ca = match self.identity_opt(ca_name(kind))? {
                Some(ca) => ca,
                None => {
                    let ca = pki::generate_ca(kind, &CaSubject::default_for(host_name))?;
                    self.put_identity(
                        ca_name(kind),
                        &ca,
                        &format!(
                            "generated the {} certificate authority",
                            kind.as_str().to_uppercase()
                        ),
                    )?;
                    ca
                }
            };
            let server = match self.identity_opt(server_name(kind))? {
                Some(s) => s,
                None => {
                    let s = pki::issue_server(&ca, kind, names)?;
                    self.put_identity(
                        server_name(kind),
                        &s,
                        &format!(
                            "issued the {} server certificate",
                            kind.as_str().to_uppercase()
                        ),
                    )?;
                    s
                }
            };
            Ok((ca, server))
        };
        let (ca_rsa, server_rsa) = get(CaKind::Rsa)?;
        let (ca_ec, server_ec) = get(CaKind::Ec)?;
        Ok(Identities {
            ca_rsa,
            ca_ec,
            server_rsa,
            server_ec,
        })
    }
}
