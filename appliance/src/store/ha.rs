//! The HA group (§11): the failovers the primary knows, by host name, and
//! their registration (the node certificate the primary signs for each).
//! What a node may do over the node-to-node channels follows from here:
//! only a registered node's certificate opens the control API and the
//! replication port (`pgnode.rs` maps the registered names).

use serde::Serialize;

use super::db::{OptionalExtension, params};
use super::system::ca_name;
use super::{Store, audit_actor, now};
use crate::access::{Access, Actor};
use crate::crypto::fingerprint;
use crate::model::{Severity, fmt_time};
use crate::pki::{self, CaKind};
use crate::{Error, Result};

/// One node of the group as the HA page and `GET /api/v1/ha/nodes` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HaNodeView {
    pub name: String,
    pub role: String,
    pub registered: bool,
    pub registered_at: Option<String>,
    pub configured: bool,
    pub configured_at: Option<String>,
    /// SHA-256 of the node certificate the primary signed (`AB:CD:…`).
    pub certificate_fingerprint: Option<String>,
    pub added_at: String,
    pub added_by: String,
    /// Where the primary reaches a failover's HA control API
    /// (`address:port`, learned at its registration).
    pub control_address: Option<String>,
}

/// What this appliance is in its HA group (§11), from the real state: the
/// store's engine tells a failover (a standby takes no writes), the group's
/// table a primary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum HaRole {
    /// No failover in the group.
    #[default]
    Standalone,
    /// The group's primary, with its failovers' names.
    Primary { failovers: Vec<String> },
    /// A failover, read-only, of this primary (empty when not known).
    Failover { primary: String },
    /// A former primary that another node replaced (`convert2primary`
    /// there): read-only until it rejoins as a failover.
    Fenced { primary: String },
}

impl HaRole {
    /// The dashboard's row.
    pub fn summary(&self) -> String {
        match self {
            HaRole::Standalone => "Standalone: no failover configured".into(),
            HaRole::Primary { failovers } => {
                format!("Primary; failovers: {}", failovers.join(", "))
            }
            HaRole::Failover { primary } if primary.is_empty() => {
                "Failover (read-only); its primary takes the changes".into()
            }
            HaRole::Failover { primary } => format!("Failover of {primary} (read-only)"),
            HaRole::Fenced { primary } => format!(
                "Fenced: {primary} was made primary in this appliance's place; it takes no changes (read-only) \
                 until it rejoins as a failover (Config Replication on {primary})"
            ),
        }
    }

    /// SNMP `1.3.6.1.4.1.21513.6.0`: `Failover: <name>; Primary: <name>; `
    /// (a standalone appliance is its own primary).
    pub fn snmp_text(&self, own_name: &str) -> String {
        match self {
            HaRole::Standalone => format!("Primary: {own_name}; "),
            HaRole::Primary { failovers } => {
                let mut s: String = failovers
                    .iter()
                    .map(|f| format!("Failover: {f}; "))
                    .collect();
                s.push_str(&format!("Primary: {own_name}; "));
                s
            }
            HaRole::Failover { primary } | HaRole::Fenced { primary } => {
                format!("Failover: {own_name}; Primary: {primary}; ")
            }
        }
    }
}

/// The certificate a registered node receives.
#[derive(Debug, Clone)]
pub struct NodeCertificate {
    pub certificate_pem: String,
    /// The CA that signed it, which the node trusts for its peers.
    pub ca_pem: String,
    pub ca_fingerprint: String,
    /// The primary's host name, and its node certificate's fingerprint
    /// (what the failover accepts on its control API until the group's
    /// table reaches it).
    pub primary_name: String,
    pub primary_fingerprint: Option<String>,
}

impl Store {
    /// The failovers of the group, by name.
    pub fn ha_nodes(&self, actor: &Actor) -> Result<Vec<HaNodeView>> {
        actor.require_system(Access::Read)?;
        self.ha_nodes_unchecked()
    }

    /// What this appliance is in its group now.
    pub fn ha_role(&self) -> Result<HaRole> {
        if let Some(primary) = self.fenced_by() {
            return Ok(HaRole::Fenced { primary });
        }
        let nodes = self.ha_nodes_unchecked()?;
        if self.is_failover()? {
            let primary = nodes
                .iter()
                .find(|n| n.role == "primary")
                .map(|n| n.name.clone())
                .unwrap_or_default();
            return Ok(HaRole::Failover { primary });
        }
        let failovers: Vec<String> = nodes
            .into_iter()
            .filter(|n| n.role == "failover")
            .map(|n| n.name)
            .collect();
        Ok(if failovers.is_empty() {
            HaRole::Standalone
        } else {
            HaRole::Primary { failovers }
        })
    }

    /// The group without a permission check, for keyd's node-to-node
    /// channels (which nodes may connect).
    pub fn ha_nodes_unchecked(&self) -> Result<Vec<HaNodeView>> {
        self.read(|tx| {
            Ok(tx
                .prepare(
                    "SELECT name, role, registered_at, configured_at, cert_fingerprint, added_at, added_by,
                            control_address
                     FROM ha_nodes ORDER BY name",
                )?
                .query_map(params![], |r| {
                    let registered_at: Option<String> = r.get(2)?;
                    let configured_at: Option<String> = r.get(3)?;
                    Ok(HaNodeView {
                        name: r.get(0)?,
                        role: r.get(1)?,
                        registered: registered_at.is_some(),
                        registered_at,
                        configured: configured_at.is_some(),
                        configured_at,
                        certificate_fingerprint: r.get(4)?,
                        added_at: r.get(5)?,
                        added_by: r.get(6)?,
                        control_address: r.get(7)?,
                    })
                })?
                .collect::<super::db::DbResult<Vec<_>>>()?)
        })
    }

    /// *High Availability → Add*: a failover by the host name its
    /// `setinfo show` prints (case-sensitive). `own_name` is this
    /// appliance's host name, which cannot be its own failover.
    pub fn add_ha_node(&self, actor: &Actor, name: &str, own_name: &str) -> Result<HaNodeView> {
        actor.require_system(Access::Write)?;
        crate::os::HostName::parse("name", name)?;
        if name == own_name {
            return Err(Error::conflict(
                "name",
                "is this appliance's own host name; add the failover's, as its `setinfo show` prints it",
            ));
        }
        self.write(|tx| {
            let exists: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM ha_nodes WHERE name = ?1)",
                [name],
                |r| r.get(0),
            )?;
            if exists {
                return Err(Error::conflict("name", "is in the group already"));
            }
            // The primary's own row comes with its first failover, so the
            // group's table (replicated to every node) names it.
            tx.execute(
                "INSERT INTO ha_nodes(name, role, added_at, added_by) VALUES (?1, 'primary', ?2, ?3)
                 ON CONFLICT DO NOTHING",
                params![own_name, fmt_time(now()), actor.login],
            )?;
            tx.execute(
                "INSERT INTO ha_nodes(name, role, added_at, added_by) VALUES (?1, 'failover', ?2, ?3)",
                params![name, fmt_time(now()), actor.login],
            )?;
            audit_actor(tx, actor, Severity::Info, None, &format!("added HA failover {name}"))
        })?;
        self.ha_node(name)
    }

    fn ha_node(&self, name: &str) -> Result<HaNodeView> {
        self.ha_nodes_unchecked()?
            .into_iter()
            .find(|n| n.name == name)
            .ok_or_else(|| Error::not_found("failover", name))
    }

    /// *High Availability → Delete*: the node leaves the group; its
    /// certificate no longer opens the node-to-node channels.
    pub fn delete_ha_node(&self, actor: &Actor, name: &str) -> Result<()> {
        actor.require_system(Access::Write)?;
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM ha_nodes WHERE name = ?1 AND role = 'failover'",
                [name],
            )?;
            if n == 0 {
                return Err(Error::not_found("failover", name));
            }
            // The last failover gone, the appliance is standalone again.
            tx.execute(
                "DELETE FROM ha_nodes WHERE role = 'primary'
                 AND NOT EXISTS(SELECT 1 FROM ha_nodes WHERE role = 'failover')",
                params![],
            )?;
            audit_actor(
                tx,
                actor,
                Severity::Warn,
                None,
                &format!("deleted HA failover {name}"),
            )
        })
    }

    /// A failover registers (its `ha convert2failover`, with a System
    /// Administrator's credentials on the primary): the primary signs its
    /// node certificate from its CSR with the CA of the security mode in
    /// force. Only a node added first may register; registering again
    /// replaces the certificate (the old one no longer opens anything).
    pub fn register_ha_node(
        &self,
        actor: &Actor,
        name: &str,
        csr_pem: &str,
        kind: CaKind,
        control_address: Option<&str>,
        key_ports: (u16, u16),
    ) -> Result<NodeCertificate> {
        actor.require_system(Access::Write)?;
        let known: Option<String> = self.read(|tx| {
            Ok(tx
                .query_row("SELECT role FROM ha_nodes WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?)
        })?;
        if known.as_deref() != Some("failover") {
            return Err(Error::conflict(
                "name",
                "is not a failover of this group: add it under High Availability on the primary first",
            ));
        }
        let ca = self.identity(ca_name(kind))?;
        let certificate_pem = pki::sign_node_csr(&ca, kind, csr_pem, name)?;
        let fp = fingerprint(&pki::pem_to_der(&certificate_pem)?);
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE ha_nodes SET cert_fingerprint = ?2, registered_at = ?3, control_address = ?4,
                        keys_port = ?5, keys_ec_port = ?6
                 WHERE name = ?1",
                params![
                    name,
                    fp,
                    fmt_time(now()),
                    control_address,
                    i64::from(key_ports.0),
                    i64::from(key_ports.1)
                ],
            )?;
            if n == 0 {
                return Err(Error::not_found("failover", name));
            }
            audit_actor(
                tx,
                actor,
                Severity::Info,
                None,
                &format!("registered HA failover {name} (certificate {fp})"),
            )
        })?;
        let primary = self
            .ha_nodes_unchecked()?
            .into_iter()
            .find(|n| n.role == "primary");
        Ok(NodeCertificate {
            certificate_pem,
            ca_fingerprint: fingerprint(&pki::pem_to_der(&ca.cert_pem)?),
            ca_pem: ca.cert_pem,
            primary_name: primary.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
            primary_fingerprint: primary.and_then(|p| p.certificate_fingerprint),
        })
    }

    /// Whether `fingerprint` is a registered node's certificate (the
    /// node-to-node channels' check of a peer).
    pub fn is_registered_node(&self, fingerprint: &str) -> Result<Option<String>> {
        self.read(|tx| {
            Ok(tx
                .query_row(
                    "SELECT name FROM ha_nodes WHERE cert_fingerprint = ?1",
                    [fingerprint],
                    |r| r.get(0),
                )
                .optional()?)
        })
    }
}

/// The folder of this node's own HA identity, beside the store (never in
/// it: the store replicates, and each node's identity is its own).
pub const NODE_DIR: &str = "ha";

fn node_files(dir: &std::path::Path, kind: CaKind) -> (std::path::PathBuf, std::path::PathBuf) {
    let base = dir.join(NODE_DIR);
    (
        base.join(format!("node-{}.crt", kind.as_str())),
        base.join(format!("node-{}.key.sealed", kind.as_str())),
    )
}

fn node_context(kind: CaKind) -> String {
    format!("ha-node:{}", kind.as_str())
}

impl Store {
    /// This node's HA identity for `kind` (its certificate and key, the key
    /// kept sealed under the master key), if it has one.
    pub fn node_identity(&self, kind: CaKind) -> Result<Option<pki::Identity>> {
        let (crt, key) = node_files(self.dir(), kind);
        read_sealed_identity(&crt, &key, &self.machine, &node_context(kind))
    }

    /// Keeps `id` as this node's HA identity for `kind` (a failover's, from
    /// its registration with the primary).
    pub fn save_node_identity(&self, kind: CaKind, id: &pki::Identity) -> Result<()> {
        let (crt, key) = node_files(self.dir(), kind);
        let base = self.dir().join(NODE_DIR);
        std::fs::create_dir_all(&base).map_err(|source| Error::Io { path: base, source })?;
        let sealed = self
            .machine
            .seal(&node_context(kind), id.key_pem.expose().as_bytes())?;
        super::write_atomic(&key, &sealed)?;
        super::write_atomic(&crt, id.cert_pem.as_bytes())
    }

    /// A primary's (or standalone appliance's) own HA identity for `kind`:
    /// the one it has for `own_name`, else a new one from its own CA. On a
    /// primary its fingerprint is recorded in the group's row of the
    /// primary, so failovers accept it on the control channel.
    pub fn ensure_own_node_identity(&self, own_name: &str, kind: CaKind) -> Result<pki::Identity> {
        let current = self.node_identity(kind)?.filter(|id| {
            id.cert_der().is_ok_and(|der| {
                x509_parser::parse_x509_certificate(&der).is_ok_and(|(_, c)| {
                    c.subject()
                        .iter_common_name()
                        .next()
                        .and_then(|cn| cn.as_str().ok())
                        == Some(pki::node_common_name(own_name).as_str())
                })
            })
        });
        let id = match current {
            Some(id) => id,
            None => {
                let ca = self.identity(ca_name(kind))?;
                let id = pki::issue_node(&ca, kind, own_name)?;
                self.save_node_identity(kind, &id)?;
                id
            }
        };
        let fp = id.fingerprint()?;
        if !self.is_failover()? {
            self.write(|tx| {
                tx.execute(
                    "UPDATE ha_nodes SET cert_fingerprint = ?2, registered_at = COALESCE(registered_at, ?3)
                     WHERE name = ?1 AND role = 'primary' AND cert_fingerprint IS DISTINCT FROM ?2",
                    params![own_name, fp, fmt_time(now())],
                )?;
                Ok(())
            })?;
        }
        Ok(id)
    }

    /// The fingerprints of every registered node's certificate: who may
    /// open the node-to-node channels.
    pub fn registered_node_fingerprints(&self) -> Result<Vec<String>> {
        Ok(self
            .ha_nodes_unchecked()?
            .into_iter()
            .filter_map(|n| n.certificate_fingerprint)
            .collect())
    }

    /// The group's master key, for a registered failover only (keyd's
    /// control API checked the peer's certificate against the group).
    /// Audited, without the key.
    pub fn master_key_for_failover(
        &self,
        peer_fingerprint: &str,
        source: &str,
    ) -> Result<crate::secret::SecretBytes> {
        let name = self
            .is_registered_node(peer_fingerprint)?
            .ok_or_else(|| Error::Forbidden("the certificate is not a registered node's".into()))?;
        self.write(|tx| {
            super::audit(
                tx,
                &format!("node:{name}"),
                source,
                "ha",
                Severity::Warn,
                None,
                &format!("sent the group's master key to HA failover {name}"),
            )
        })?;
        Ok(crate::secret::SecretBytes::new(
            self.master.expose_for_failover().expose().to_vec(),
        ))
    }
}

/// A failover as the hosts are told of it (Notify All Hosts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HostFailover {
    pub name: String,
    /// The address the hosts reach it at (the one it registered from).
    pub address: String,
    /// Its key service, compatible mode (8444) and Suite B (8447).
    pub keys_port: u16,
    pub keys_ec_port: u16,
}

/// The group's key on a failover, sealed under the node's own key.
const GROUP_KEY_FILE: &str = "group.key.sealed";
const GROUP_KEY_CONTEXT: &str = "ha-group-master-key";
/// What a failover learned of its primary when it joined.
const PRIMARY_FILE: &str = "primary.json";

/// The group's key, when this node joined a group (`ha/group.key.sealed`).
pub(super) fn group_key(
    dir: &std::path::Path,
    machine: &crate::crypto::MasterKey,
) -> Result<Option<crate::crypto::MasterKey>> {
    let path = dir.join(NODE_DIR).join(GROUP_KEY_FILE);
    match std::fs::read(&path) {
        Ok(sealed) => {
            let bytes = machine.open(GROUP_KEY_CONTEXT, &sealed)?;
            Ok(Some(machine.adopt(bytes.expose())?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io { path, source }),
    }
}

/// The primary a failover joined: where it is, and the certificate its
/// control API presents (pinned until the group's table arrives with the
/// replica).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct JoinedPrimary {
    /// The primary's host name (its node certificate's name).
    pub name: String,
    /// The address this failover reaches it at.
    pub address: String,
    /// Its HA control port (8080).
    pub ha_port: u16,
    /// SHA-256 of its node certificate.
    pub node_fingerprint: String,
    /// The group's CA (PEM) of the security mode the group runs in.
    pub ca_pem: String,
    /// This node's own host name in the group.
    pub own_name: String,
}

/// What this node learned when it joined a group (none: it never joined).
pub fn joined_primary(dir: &std::path::Path) -> Result<Option<JoinedPrimary>> {
    let path = dir.join(NODE_DIR).join(PRIMARY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io { path, source }),
    }
}

/// This node's HA identity of `kind`, read before the store is open (the
/// node's PostgreSQL needs it to start, and the store may live there).
pub fn node_identity_in(dir: &std::path::Path, kind: CaKind) -> Result<Option<pki::Identity>> {
    let machine = crate::crypto::MasterKey::load_or_create(dir)?;
    let (crt, key) = node_files(dir, kind);
    read_sealed_identity(&crt, &key, &machine, &node_context(kind))
}

/// A certificate beside the store with its key sealed under `key_of`
/// (`None` when the certificate is not there).
fn read_sealed_identity(
    crt: &std::path::Path,
    key: &std::path::Path,
    key_of: &crate::crypto::MasterKey,
    context: &str,
) -> Result<Option<pki::Identity>> {
    let cert_pem = match std::fs::read_to_string(crt) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                path: crt.to_path_buf(),
                source,
            });
        }
    };
    let sealed = std::fs::read(key).map_err(|source| Error::Io {
        path: key.to_path_buf(),
        source,
    })?;
    let plain = key_of.open(context, &sealed)?;
    let key_pem = String::from_utf8(plain.expose().to_vec())
        .map_err(|_| Error::Crypto("a sealed key is not PEM"))?;
    Ok(Some(pki::Identity {
        cert_pem,
        key_pem: crate::secret::SecretString::new(key_pem),
    }))
}

fn server_files(dir: &std::path::Path, kind: CaKind) -> (std::path::PathBuf, std::path::PathBuf) {
    let base = dir.join(NODE_DIR);
    (
        base.join(format!("server-{}.crt", kind.as_str())),
        base.join(format!("server-{}.key.sealed", kind.as_str())),
    )
}

fn server_context(kind: CaKind) -> String {
    format!("ha-server:{}", kind.as_str())
}

impl Store {
    /// A failover joins: keeps the group's key (sealed under this node's
    /// own), its node certificate and what it knows of the primary. The
    /// store itself stays as it is until the primary configures the
    /// replication (which replaces it with the group's).
    pub fn join_group(
        &self,
        actor: &Actor,
        kind: CaKind,
        node: &pki::Identity,
        group_key: &crate::secret::SecretBytes,
        primary: &JoinedPrimary,
    ) -> Result<()> {
        actor.require_system(Access::Write)?;
        // The key must be one: a wrong length is refused before anything
        // is kept.
        crate::crypto::MasterKey::from_bytes(group_key.expose())?;
        self.write(|tx| {
            audit_actor(
                tx,
                actor,
                Severity::Warn,
                None,
                &format!(
                    "joined the HA group of {} as failover {}; its replica will replace this store",
                    primary.name, primary.own_name
                ),
            )
        })?;
        self.save_node_identity(kind, node)?;
        let base = self.dir().join(NODE_DIR);
        let sealed = self.machine.seal(GROUP_KEY_CONTEXT, group_key.expose())?;
        super::write_atomic(&base.join(GROUP_KEY_FILE), &sealed)?;
        let json = serde_json::to_vec_pretty(primary)
            .map_err(|_| Error::Crypto("the primary's details cannot be stored"))?;
        super::write_atomic(&base.join(PRIMARY_FILE), &json)
    }

    /// On a failover: its own server certificate of `kind` for `names`
    /// from the group's CA, kept beside the store (the store's are the
    /// primary's, for the primary's host name), so a host's pinned CA
    /// works on both. Made again when the CA changed or a name is missing.
    pub(super) fn failover_server_identity(
        &self,
        kind: CaKind,
        ca: &pki::Identity,
        names: &[String],
    ) -> Result<pki::Identity> {
        let (crt, key) = server_files(self.dir(), kind);
        let ca_der = pki::pem_to_der(&ca.cert_pem)?;
        let current = read_sealed_identity(&crt, &key, &self.machine, &server_context(kind))?;
        let fits = |id: &pki::Identity| -> bool {
            let (Ok(der), Ok((_, ca_cert))) =
                (id.cert_der(), x509_parser::parse_x509_certificate(&ca_der))
            else {
                return false;
            };
            x509_parser::parse_x509_certificate(&der).is_ok_and(|(_, c)| {
                c.issuer() == ca_cert.subject()
                    && c.verify_signature(Some(ca_cert.public_key())).is_ok()
                    && names.iter().all(|n| {
                        c.subject_alternative_name()
                            .ok()
                            .flatten()
                            .is_some_and(|san| {
                                san.value.general_names.iter().any(|g| match g {
                                    x509_parser::extensions::GeneralName::DNSName(d) => d == n,
                                    x509_parser::extensions::GeneralName::IPAddress(ip) => {
                                        n.parse::<std::net::IpAddr>().is_ok_and(|a| match a {
                                            std::net::IpAddr::V4(v4) => ip == &v4.octets(),
                                            std::net::IpAddr::V6(v6) => ip == &v6.octets(),
                                        })
                                    }
                                    _ => false,
                                })
                            })
                    })
            })
        };
        if let Some(id) = current.filter(fits) {
            return Ok(id);
        }
        let id = pki::issue_server(ca, kind, names)?;
        let base = self.dir().join(NODE_DIR);
        std::fs::create_dir_all(&base).map_err(|source| Error::Io { path: base, source })?;
        let sealed = self
            .machine
            .seal(&server_context(kind), id.key_pem.expose().as_bytes())?;
        super::write_atomic(&key, &sealed)?;
        super::write_atomic(&crt, id.cert_pem.as_bytes())?;
        tracing::info!(
            kind = kind.as_str(),
            "issued this failover's own server certificate from the group's CA"
        );
        Ok(id)
    }

    /// Disaster recovery (§11 `convert2primary`): this failover becomes the
    /// group's primary with the data of its last synchronisation.
    /// `promote` makes the engine take writes (`pg_promote`); then the
    /// group's table says so: this node primary, the old primary a
    /// failover to configure again (reached where this node joined it), so
    /// it fences itself when it comes back. Refused on anything but a
    /// failover.
    pub fn promote_to_primary(
        &self,
        actor: &Actor,
        own_name: &str,
        promote: impl FnOnce() -> Result<()>,
    ) -> Result<String> {
        actor.require_system(Access::Write)?;
        let old = match self.ha_role()? {
            HaRole::Failover { primary } => primary,
            _ => {
                return Err(Error::conflict(
                    "high_availability",
                    "only a failover is converted to primary",
                ));
            }
        };
        let joined = joined_primary(self.dir())?;
        promote()?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.is_failover()? {
            if std::time::Instant::now() > deadline {
                return Err(Error::conflict(
                    "high_availability",
                    "the engine did not leave recovery within 60 s",
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let control = joined.map(|j| format!("{}:{}", j.address, j.ha_port));
        self.write(|tx| {
            tx.execute(
                "UPDATE ha_nodes SET role = 'failover', configured_at = NULL,
                        control_address = COALESCE(?2, control_address)
                 WHERE role = 'primary' AND name <> ?1",
                params![own_name, control],
            )?;
            let n = tx.execute(
                "UPDATE ha_nodes SET role = 'primary', configured_at = NULL WHERE name = ?1",
                params![own_name],
            )?;
            // What the hosts were told named this node as the failover:
            // the new primary tells them again once a failover replicates.
            tx.execute(
                "DELETE FROM preferences WHERE name = 'ha_host_failovers'",
                params![],
            )?;
            if n == 0 {
                return Err(Error::not_found("failover", own_name));
            }
            audit_actor(
                tx,
                actor,
                Severity::Warn,
                None,
                &format!(
                    "converted {own_name} to primary in place of {old}; {old} is fenced and must rejoin as a failover"
                ),
            )
        })?;
        Ok(old)
    }

    /// A fenced former primary rejoins: what it knows of the new primary,
    /// so the replicate call from it is accepted.
    pub fn save_joined_primary(&self, primary: &JoinedPrimary) -> Result<()> {
        let base = self.dir().join(NODE_DIR);
        std::fs::create_dir_all(&base).map_err(|source| Error::Io {
            path: base.clone(),
            source,
        })?;
        let json = serde_json::to_vec_pretty(primary)
            .map_err(|_| Error::Crypto("the primary's details cannot be stored"))?;
        super::write_atomic(&base.join(PRIMARY_FILE), &json)
    }

    /// §11 Notify All Hosts: the configured failovers, where hosts reach
    /// their key service, kept so every key answer from now on tells the
    /// hosts (the agent keeps it). Refused when no failover replicates.
    pub fn notify_hosts(&self, actor: &Actor) -> Result<Vec<HostFailover>> {
        actor.require_system(Access::Write)?;
        let list: Vec<HostFailover> = self.read(|tx| {
            Ok(tx
                .prepare(
                    "SELECT name, control_address, keys_port, keys_ec_port FROM ha_nodes
                     WHERE role = 'failover' AND configured_at IS NOT NULL AND control_address IS NOT NULL
                     ORDER BY name",
                )?
                .query_map(params![], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                    ))
                })?
                .collect::<super::db::DbResult<Vec<_>>>()?
                .into_iter()
                .filter_map(|(name, control, keys, keys_ec)| {
                    let addr: std::net::SocketAddr = control.parse().ok()?;
                    Some(HostFailover {
                        name,
                        address: addr.ip().to_string(),
                        keys_port: u16::try_from(keys.unwrap_or(8444)).ok()?,
                        keys_ec_port: u16::try_from(keys_ec.unwrap_or(8447)).ok()?,
                    })
                })
                .collect())
        })?;
        if list.is_empty() {
            return Err(Error::conflict(
                "high_availability",
                "no failover replicates yet: Config Replication first",
            ));
        }
        let json = serde_json::to_string(&list)
            .map_err(|_| Error::Crypto("the failover list cannot be stored"))?;
        let names: Vec<&str> = list.iter().map(|f| f.name.as_str()).collect();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO preferences(name, value) VALUES ('ha_host_failovers', ?1)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                params![json],
            )?;
            audit_actor(
                tx,
                actor,
                Severity::Info,
                None,
                &format!("told the hosts about the failovers: {}", names.join(", ")),
            )
        })?;
        Ok(list)
    }

    /// The failovers the hosts were told of (Notify All Hosts), for the
    /// key answers.
    pub fn host_failovers(&self) -> Result<Vec<HostFailover>> {
        let text: Option<String> = self.read(|tx| {
            Ok(tx
                .query_row(
                    "SELECT value FROM preferences WHERE name = 'ha_host_failovers'",
                    params![],
                    |r| r.get(0),
                )
                .optional()?)
        })?;
        Ok(text
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default())
    }

    /// Whether the group replicates synchronously (§11 setting; default
    /// asynchronous).
    pub fn ha_synchronous(&self) -> Result<bool> {
        self.read(|tx| {
            Ok(tx
                .query_row(
                    "SELECT value FROM preferences WHERE name = 'ha_replication_mode'",
                    params![],
                    |r| r.get::<_, String>(0),
                )
                .optional()?
                .is_some_and(|v| v == "synchronous"))
        })
    }

    /// Sets the group's replication mode: `asynchronous` or `synchronous`.
    pub fn set_ha_replication_mode(&self, actor: &Actor, mode: &str) -> Result<bool> {
        actor.require_system(Access::Write)?;
        let synchronous = match mode {
            "asynchronous" => false,
            "synchronous" => true,
            _ => {
                return Err(Error::invalid(
                    "mode",
                    "must be asynchronous or synchronous",
                ));
            }
        };
        self.write(|tx| {
            tx.execute(
                "INSERT INTO preferences(name, value) VALUES ('ha_replication_mode', ?1)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                params![mode],
            )?;
            audit_actor(
                tx,
                actor,
                Severity::Info,
                None,
                &format!("set the HA replication mode to {mode}"),
            )
        })?;
        Ok(synchronous)
    }

    /// On the primary: the failover's replication was configured.
    pub fn mark_ha_configured(&self, actor: &Actor, name: &str) -> Result<()> {
        actor.require_system(Access::Write)?;
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE ha_nodes SET configured_at = ?2 WHERE name = ?1 AND role = 'failover'",
                params![name, fmt_time(now())],
            )?;
            if n == 0 {
                return Err(Error::not_found("failover", name));
            }
            audit_actor(
                tx,
                actor,
                Severity::Info,
                None,
                &format!("configured the replication to HA failover {name}"),
            )
        })
    }
}

/// Replication as the primary's engine sees one failover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicationLine {
    /// The failover's host name (its connection's `application_name`).
    pub name: String,
    /// `streaming`, `catchup`, `startup`, `backup`.
    pub state: String,
    /// `async`, `sync`, `potential`, `quorum`.
    pub sync_state: String,
    /// When the failover last confirmed what it received (UTC).
    pub last_reply: Option<String>,
    /// WAL bytes the failover has yet to replay.
    pub lag_bytes: i64,
}

/// The group as `ha show` and the HA page show it: the role, the nodes,
/// and the replication's own view of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HaStatus {
    pub role: HaRole,
    pub nodes: Vec<HaNodeView>,
    /// On a primary on PostgreSQL: each streaming failover.
    pub replication: Vec<ReplicationLine>,
    /// On a failover: when the last change it replayed was made on the
    /// primary (UTC), `None` before the first.
    pub last_synchronised: Option<String>,
    /// The group's replication mode: a change is acknowledged once on at
    /// least one failover too (synchronous), or once durable here.
    pub synchronous: bool,
}

const UTC_TEXT: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'";

impl Store {
    /// [`HaStatus`] now. System-level (§5), like the HA page.
    pub fn ha_status(&self, actor: &Actor) -> Result<HaStatus> {
        actor.require_system(Access::Read)?;
        self.ha_status_unchecked()
    }

    /// [`HaStatus`] for the admin CLI (its own session is the check).
    pub fn ha_status_unchecked(&self) -> Result<HaStatus> {
        let role = self.ha_role()?;
        let nodes = self.ha_nodes_unchecked()?;
        let on_postgres = matches!(self.backend(), super::Backend::Postgres(_));
        let (replication, last_synchronised) = match (&role, on_postgres) {
            (HaRole::Failover { .. }, true) => {
                let last: Option<String> = self.read(|tx| {
                    Ok(tx.query_row(
                        &format!(
                            "SELECT to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', {UTC_TEXT})"
                        ),
                        params![],
                        |r| r.get(0),
                    )?)
                })?;
                (Vec::new(), last)
            }
            (_, true) => {
                let lines = self.read(|tx| {
                    Ok(tx
                        .prepare(&format!(
                            "SELECT COALESCE(application_name, ''), COALESCE(state, ''), COALESCE(sync_state, ''),
                                    to_char(reply_time AT TIME ZONE 'UTC', {UTC_TEXT}),
                                    COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint
                             FROM pg_stat_replication ORDER BY application_name"
                        ))?
                        .query_map(params![], |r| {
                            Ok(ReplicationLine {
                                name: r.get(0)?,
                                state: r.get(1)?,
                                sync_state: r.get(2)?,
                                last_reply: r.get(3)?,
                                lag_bytes: r.get(4)?,
                            })
                        })?
                        .collect::<super::db::DbResult<Vec<_>>>()?)
                })?;
                (lines, None)
            }
            (_, false) => (Vec::new(), None),
        };
        Ok(HaStatus {
            role,
            nodes,
            replication,
            last_synchronised,
            synchronous: self.ha_synchronous()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{store, system_actor};

    fn csr(kind: CaKind) -> String {
        let key = match kind {
            CaKind::Ec => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            CaKind::Rsa => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        }
        .expect("key");
        rcgen::CertificateParams::new(vec!["ignored.example.com".to_owned()])
            .expect("params")
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem")
    }

    #[test]
    fn failovers_are_added_registered_and_deleted_by_system_administrators() {
        let (_d, s) = store();
        s.ensure_identities("custos-a.example.com", &["custos-a.example.com".into()])
            .expect("identities");
        let sys = system_actor(&s);
        // The rules, each naming the field.
        for (bad, why) in [
            ("failover", "fully qualified"),
            ("custos-a.example.com", "own host name"),
            ("bad name.example.com", "name"),
        ] {
            let e = s
                .add_ha_node(&sys, bad, "custos-a.example.com")
                .expect_err(bad);
            assert!(e.to_string().starts_with("name:"), "{e}");
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        let b = s
            .add_ha_node(&sys, "Custos-B.example.com", "custos-a.example.com")
            .expect("add");
        assert!(!b.registered && !b.configured);
        assert_eq!(b.role, "failover");
        // Case-sensitive: another name; the same name twice is refused.
        s.add_ha_node(&sys, "custos-b.example.com", "custos-a.example.com")
            .expect("another case");
        let e = s
            .add_ha_node(&sys, "Custos-B.example.com", "custos-a.example.com")
            .expect_err("twice");
        assert!(e.to_string().contains("in the group already"), "{e}");

        // Registration: only a node added first; the certificate is the
        // node's, from the CA of the mode, and opens the channels.
        let e = s
            .register_ha_node(
                &sys,
                "custos-c.example.com",
                &csr(CaKind::Ec),
                CaKind::Ec,
                None,
                (8444, 8447),
            )
            .expect_err("not added");
        assert!(
            e.to_string().contains("add it under High Availability"),
            "{e}"
        );
        let e = s
            .register_ha_node(
                &sys,
                "Custos-B.example.com",
                "not a csr",
                CaKind::Ec,
                None,
                (8444, 8447),
            )
            .expect_err("garbage");
        assert!(e.to_string().starts_with("csr:"), "{e}");
        let cert = s
            .register_ha_node(
                &sys,
                "Custos-B.example.com",
                &csr(CaKind::Ec),
                CaKind::Ec,
                None,
                (8444, 8447),
            )
            .expect("register");
        let der = pki::pem_to_der(&cert.certificate_pem).expect("der");
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("x509");
        assert_eq!(
            parsed
                .subject()
                .iter_common_name()
                .next()
                .and_then(|c| c.as_str().ok()),
            Some("custos-ha:Custos-B.example.com")
        );
        assert_eq!(
            Some(cert.ca_fingerprint.clone()),
            s.ca_fingerprint(CaKind::Ec).expect("fingerprint")
        );
        let fp = fingerprint(&der);
        assert_eq!(
            s.is_registered_node(&fp).expect("check").as_deref(),
            Some("Custos-B.example.com")
        );
        let listed = s.ha_nodes(&sys).expect("list");
        assert_eq!(listed.len(), 3, "two failovers and the primary: {listed:?}");
        assert!(
            listed
                .iter()
                .any(|n| n.name == "custos-a.example.com" && n.role == "primary")
        );
        assert_eq!(
            s.ha_role().expect("role"),
            HaRole::Primary {
                failovers: vec!["Custos-B.example.com".into(), "custos-b.example.com".into()]
            }
        );
        assert_eq!(
            s.ha_role().expect("role").snmp_text("custos-a.example.com"),
            "Failover: Custos-B.example.com; Failover: custos-b.example.com; Primary: custos-a.example.com; "
        );
        // The primary's row is not a failover's: it neither registers nor goes.
        let e = s
            .register_ha_node(
                &sys,
                "custos-a.example.com",
                &csr(CaKind::Ec),
                CaKind::Ec,
                None,
                (8444, 8447),
            )
            .expect_err("the primary");
        assert!(e.to_string().starts_with("name:"), "{e}");
        assert!(matches!(
            s.delete_ha_node(&sys, "custos-a.example.com"),
            Err(Error::NotFound { .. })
        ));
        assert!(
            listed
                .iter()
                .any(|n| n.name == "Custos-B.example.com" && n.registered)
        );

        // Only System Administrators.
        let sa = crate::store::test_support::key_admin(&s);
        assert!(matches!(s.ha_nodes(&sa), Err(Error::Forbidden(_))));
        assert!(matches!(
            s.add_ha_node(&sa, "custos-d.example.com", "custos-a.example.com"),
            Err(Error::Forbidden(_))
        ));

        // Deleting ends what its certificate opened; without failovers the
        // appliance is standalone again.
        s.delete_ha_node(&sys, "Custos-B.example.com")
            .expect("delete");
        assert_eq!(s.is_registered_node(&fp).expect("check"), None);
        s.delete_ha_node(&sys, "custos-b.example.com")
            .expect("delete");
        assert_eq!(s.ha_role().expect("role"), HaRole::Standalone);
        assert!(s.ha_nodes(&sys).expect("list").is_empty());
        assert!(matches!(
            s.delete_ha_node(&sys, "Custos-B.example.com"),
            Err(Error::NotFound { .. })
        ));
        let log = s
            .read(|tx| {
                Ok(tx
                    .prepare("SELECT what FROM audit WHERE what LIKE '%HA failover%' ORDER BY id")?
                    .query_map(params![], |r| r.get::<_, String>(0))?
                    .collect::<super::super::db::DbResult<Vec<_>>>()?)
            })
            .expect("audit");
        assert_eq!(log.len(), 5, "{log:?}");
    }
}
