//! The SNMP agent's settings (§13, System → SNMP): whether it answers, its
//! community string (sealed like every secret), the access list of IPv4
//! addresses, sysContact and sysLocation. Also the objects the agent
//! serves, named and described once for the agent and the console's MIB tab.
//!
//! The field rules are here, each once: [`check_community`],
//! [`AclEntry::parse`], [`check_sys_text`].

use std::net::Ipv4Addr;

use crate::store::db::{OptionalExtension, Tx, params};
use serde::Serialize;

use super::system::ca_name;
use super::{Store, audit_actor, now};
use crate::access::{Access, Actor};
use crate::model::{Severity, check_text, fmt_time};
use crate::pki::{CaKind, pem_to_der};
use crate::secret::SecretString;
use crate::{Error, Result};

/// §13: the community string until an administrator changes it.
pub const COMMUNITY_DEFAULT: &str = "public";
pub const COMMUNITY_MAX: usize = 64;
/// §13: sysContact and sysLocation.
pub const SYS_TEXT_MAX: usize = 256;
/// Entries an access list may hold.
pub const ACL_MAX: usize = 256;

const SEAL_CONTEXT: &str = "snmp_settings:1";

// ---------------------------------------------------------------------------
// Field rules.

/// The community string: 1 to 64 printable ASCII characters without spaces
/// (what every SNMP manager can type and send).
pub fn check_community(s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid("community", "is required"));
    }
    if s.len() > COMMUNITY_MAX {
        return Err(Error::invalid(
            "community",
            format!("must be at most {COMMUNITY_MAX} characters"),
        ));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "community",
            "must be printable ASCII characters without spaces",
        ));
    }
    Ok(())
}

/// sysContact and sysLocation: one line, at most 256 characters.
pub fn check_sys_text(field: &'static str, s: &str) -> Result<()> {
    check_text(field, s, SYS_TEXT_MAX)
}

/// One access list entry: an IPv4 address whose fourth octet may be `*`
/// (any host of that /24). Host names are refused: the agent decides on the
/// source address of each request and never resolves names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AclEntry {
    first: [u8; 3],
    /// `None`: `*`.
    last: Option<u8>,
}

impl AclEntry {
    pub fn parse(s: &str) -> Result<AclEntry> {
        const FIELD: &str = "acl";
        const EXAMPLE: &str = "such as 10.1.2.3 or 10.1.2.*";
        let s = s.trim();
        if s.is_empty() {
            return Err(Error::invalid(
                FIELD,
                format!("an entry is empty; give an IPv4 address {EXAMPLE}"),
            ));
        }
        if s.contains(':') {
            return Err(Error::invalid(
                FIELD,
                format!(
                    "'{s}' is not an IPv4 address; only IPv4 addresses are accepted, {EXAMPLE}"
                ),
            ));
        }
        if s.chars().any(|c| c.is_alphabetic()) {
            return Err(Error::invalid(
                FIELD,
                format!(
                    "'{s}' is a host name; host names are not accepted, give an IPv4 address {EXAMPLE}"
                ),
            ));
        }
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() != 4 {
            return Err(Error::invalid(
                FIELD,
                format!("'{s}' must have four octets, {EXAMPLE}"),
            ));
        }
        if parts[..3].contains(&"*") {
            return Err(Error::invalid(
                FIELD,
                format!("'{s}': only the fourth octet may be '*'"),
            ));
        }
        let octet = |p: &str| -> Result<u8> {
            let ok = !p.is_empty()
                && p.len() <= 3
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p == "0" || !p.starts_with('0'));
            p.parse::<u8>().ok().filter(|_| ok).ok_or_else(|| {
                Error::invalid(
                    FIELD,
                    format!(
                        "'{s}': each octet must be a number from 0 to 255 without leading zeros ('*' is allowed in the fourth)"
                    ),
                )
            })
        };
        let first = [octet(parts[0])?, octet(parts[1])?, octet(parts[2])?];
        let last = match parts[3] {
            "*" => None,
            p => Some(octet(p)?),
        };
        Ok(AclEntry { first, last })
    }

    /// Whether a request from `ip` matches this entry.
    pub fn allows(&self, ip: Ipv4Addr) -> bool {
        let o = ip.octets();
        o[..3] == self.first && self.last.is_none_or(|l| l == o[3])
    }
}

impl std::fmt::Display for AclEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c] = self.first;
        match self.last {
            Some(d) => write!(f, "{a}.{b}.{c}.{d}"),
            None => write!(f, "{a}.{b}.{c}.*"),
        }
    }
}

/// Parses a whole access list: every entry valid, none twice, at most
/// [`ACL_MAX`].
pub fn parse_acl(entries: &[String]) -> Result<Vec<AclEntry>> {
    if entries.len() > ACL_MAX {
        return Err(Error::invalid(
            "acl",
            format!("must hold at most {ACL_MAX} entries"),
        ));
    }
    let mut out: Vec<AclEntry> = Vec::with_capacity(entries.len());
    for e in entries {
        let entry = AclEntry::parse(e)?;
        if out.contains(&entry) {
            return Err(Error::invalid("acl", format!("{entry} is listed twice")));
        }
        out.push(entry);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Settings.

/// What System → SNMP and `GET /api/v1/snmp` show. The community string is
/// never shown, only whether it is still the default.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SnmpSettings {
    pub enabled: bool,
    /// Still `public` (§13 recommends changing it).
    pub community_is_default: bool,
    pub acl: Vec<String>,
    pub sys_contact: String,
    pub sys_location: String,
}

/// A change: every field given replaces the stored one.
#[derive(Debug, Default)]
pub struct SnmpUpdate {
    pub enabled: Option<bool>,
    pub community: Option<SecretString>,
    pub acl: Option<Vec<String>>,
    pub sys_contact: Option<String>,
    pub sys_location: Option<String>,
}

/// What the agent needs to answer: the settings with the community string
/// itself, and the fingerprint of the certificate authority of the security
/// mode in the store (1.3.6.1.4.1.21513.2.0).
#[derive(Debug, Clone)]
pub struct SnmpAgentConfig {
    pub enabled: bool,
    pub community: SecretString,
    pub acl: Vec<AclEntry>,
    pub sys_contact: String,
    pub sys_location: String,
    /// `None` until the key service has created the authorities.
    pub ca_fingerprint: Option<String>,
}

struct Row {
    enabled: bool,
    community_sealed: Option<Vec<u8>>,
    sys_contact: String,
    sys_location: String,
    acl: Vec<String>,
}

fn load(tx: &Tx<'_>) -> Result<Row> {
    let (enabled, community_sealed, sys_contact, sys_location) = tx.query_row(
        "SELECT enabled, community_sealed, sys_contact, sys_location FROM snmp_settings WHERE id = 1",
        params![],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let acl = tx
        .prepare_cached("SELECT entry FROM snmp_acl ORDER BY id")?
        .query_map(crate::store::db::params![], |r| r.get(0))?
        .collect::<crate::store::db::DbResult<Vec<String>>>()?;
    Ok(Row {
        enabled,
        community_sealed,
        sys_contact,
        sys_location,
        acl,
    })
}

fn view(row: &Row) -> SnmpSettings {
    SnmpSettings {
        enabled: row.enabled,
        community_is_default: row.community_sealed.is_none(),
        acl: row.acl.clone(),
        sys_contact: row.sys_contact.clone(),
        sys_location: row.sys_location.clone(),
    }
}

/// Adds `entries` (already parsed and not yet listed) to the access list,
/// with one audit note each (§13: adding an entry is logged).
fn add_entries(tx: &Tx<'_>, actor: &Actor, entries: &[AclEntry]) -> Result<Vec<String>> {
    let mut notes = vec![];
    for e in entries {
        tx.execute(
            "INSERT INTO snmp_acl(entry, added_at, added_by) VALUES (?1, ?2, ?3)",
            params![e.to_string(), fmt_time(now()), actor.login],
        )?;
        notes.push(format!("added access list entry {e}"));
    }
    Ok(notes)
}

fn remove_entries(tx: &Tx<'_>, entries: &[String]) -> Result<Vec<String>> {
    let mut notes = vec![];
    for e in entries {
        tx.execute("DELETE FROM snmp_acl WHERE entry = ?1", [e])?;
        notes.push(format!("removed access list entry {e}"));
    }
    Ok(notes)
}

fn audit_changes(tx: &Tx<'_>, actor: &Actor, notes: &[String]) -> Result<()> {
    if notes.is_empty() {
        return Ok(());
    }
    audit_actor(
        tx,
        actor,
        Severity::Info,
        None,
        &format!("changed the SNMP settings: {}", notes.join(", ")),
    )
}

impl Store {
    /// System → SNMP (§5: SNMP is System Administrators' work).
    pub fn snmp_settings(&self, actor: &Actor) -> Result<SnmpSettings> {
        actor.require_system(Access::Read)?;
        self.read(|tx| Ok(view(&load(tx)?)))
    }

    /// Changes the SNMP settings in one transaction with its audit entry.
    /// The community string is audited as "changed", never by value.
    pub fn update_snmp_settings(&self, actor: &Actor, up: SnmpUpdate) -> Result<SnmpSettings> {
        actor.require_system(Access::Write)?;
        if let Some(c) = &up.community {
            check_community(c.expose())?;
        }
        let acl = up.acl.as_deref().map(parse_acl).transpose()?;
        if let Some(s) = &up.sys_contact {
            check_sys_text("sys_contact", s)?;
        }
        if let Some(s) = &up.sys_location {
            check_sys_text("sys_location", s)?;
        }
        let sealed = up
            .community
            .as_ref()
            .map(|c| self.master.seal(SEAL_CONTEXT, c.expose().as_bytes()))
            .transpose()?;
        self.write(|tx| {
            let before = load(tx)?;
            // Item 8 of issue 12: the agent never answers to `public`,
            // which every scanner tries first.
            let enabled_after = up.enabled.unwrap_or(before.enabled);
            if enabled_after {
                let default_after = match (&up.community, &before.community_sealed) {
                    (Some(c), _) => c.ct_eq(COMMUNITY_DEFAULT),
                    (None, None) => true,
                    (None, Some(sealed)) => {
                        let plain = self.master.open(SEAL_CONTEXT, sealed)?;
                        crate::secret::ct_eq(plain.expose(), COMMUNITY_DEFAULT.as_bytes())
                    }
                };
                if default_after {
                    return Err(Error::invalid(
                        "community",
                        format!(
                            "must be changed from the default '{COMMUNITY_DEFAULT}' before SNMP is enabled"
                        ),
                    ));
                }
            }
            let mut notes = vec![];
            if let Some(e) = up.enabled.filter(|e| *e != before.enabled) {
                tx.execute("UPDATE snmp_settings SET enabled = ?1 WHERE id = 1", [e])?;
                notes.push(
                    if e {
                        "enabled the agent"
                    } else {
                        "disabled the agent"
                    }
                    .to_owned(),
                );
            }
            if let Some(sealed) = &sealed {
                tx.execute(
                    "UPDATE snmp_settings SET community_sealed = ?1 WHERE id = 1",
                    [sealed],
                )?;
                notes.push("changed the community string".to_owned());
            }
            if let Some(acl) = &acl {
                let wanted: Vec<String> = acl.iter().map(ToString::to_string).collect();
                let gone: Vec<String> = before
                    .acl
                    .iter()
                    .filter(|e| !wanted.contains(e))
                    .cloned()
                    .collect();
                notes.extend(remove_entries(tx, &gone)?);
                let new: Vec<AclEntry> = acl
                    .iter()
                    .filter(|e| !before.acl.contains(&e.to_string()))
                    .copied()
                    .collect();
                notes.extend(add_entries(tx, actor, &new)?);
            }
            for (field, column, value, old) in [
                (
                    "sysContact",
                    "sys_contact",
                    &up.sys_contact,
                    &before.sys_contact,
                ),
                (
                    "sysLocation",
                    "sys_location",
                    &up.sys_location,
                    &before.sys_location,
                ),
            ] {
                if let Some(v) = value.as_ref().filter(|v| *v != old) {
                    tx.execute(
                        &format!("UPDATE snmp_settings SET {column} = ?1 WHERE id = 1"),
                        [v],
                    )?;
                    notes.push(format!("{field} '{v}'"));
                }
            }
            audit_changes(tx, actor, &notes)?;
            Ok(view(&load(tx)?))
        })
    }

    /// System → SNMP → Access Control List → Add: one entry.
    pub fn add_snmp_acl_entry(&self, actor: &Actor, entry: &str) -> Result<SnmpSettings> {
        actor.require_system(Access::Write)?;
        let entry = AclEntry::parse(entry)?;
        self.write(|tx| {
            let before = load(tx)?;
            if before.acl.contains(&entry.to_string()) {
                return Err(Error::conflict("acl", format!("{entry} is already listed")));
            }
            if before.acl.len() >= ACL_MAX {
                return Err(Error::invalid(
                    "acl",
                    format!("must hold at most {ACL_MAX} entries"),
                ));
            }
            let notes = add_entries(tx, actor, &[entry])?;
            audit_changes(tx, actor, &notes)?;
            Ok(view(&load(tx)?))
        })
    }

    /// System → SNMP → Access Control List → Delete: the entries given, each
    /// of which must be listed.
    pub fn delete_snmp_acl_entries(
        &self,
        actor: &Actor,
        entries: &[String],
    ) -> Result<SnmpSettings> {
        actor.require_system(Access::Write)?;
        let mut unique: Vec<String> = Vec::with_capacity(entries.len());
        for e in entries {
            if !unique.contains(e) {
                unique.push(e.clone());
            }
        }
        let entries = unique;
        self.write(|tx| {
            let before = load(tx)?;
            if let Some(missing) = entries.iter().find(|e| !before.acl.contains(e)) {
                return Err(Error::not_found("access list entry", missing.clone()));
            }
            let notes = remove_entries(tx, &entries)?;
            audit_changes(tx, actor, &notes)?;
            Ok(view(&load(tx)?))
        })
    }

    /// Everything the agent answers with, for `custos-snmpd` (no actor: it
    /// is a service). Stored values are parsed again, so a row written
    /// around this code cannot widen the access list.
    pub fn snmp_agent_config_unchecked(&self) -> Result<SnmpAgentConfig> {
        let kind = CaKind::for_mode(self.preferences_unchecked()?.security_mode);
        let (row, ca_pem) = self.read(|tx| {
            let ca_pem: Option<String> = tx
                .query_row(
                    "SELECT cert_pem FROM system_identities WHERE name = ?1",
                    [ca_name(kind)],
                    |r| r.get(0),
                )
                .optional()?;
            Ok((load(tx)?, ca_pem))
        })?;
        let community = match &row.community_sealed {
            None => SecretString::new(COMMUNITY_DEFAULT),
            Some(sealed) => {
                let plain = self.master.open(SEAL_CONTEXT, sealed)?;
                SecretString::new(
                    std::str::from_utf8(plain.expose())
                        .map_err(|_| Error::Crypto("stored community string is not UTF-8"))?,
                )
            }
        };
        let acl = parse_acl(&row.acl)
            .map_err(|_| Error::Crypto("stored SNMP access list is malformed"))?;
        let ca_fingerprint = ca_pem
            .map(|pem| pem_to_der(&pem).map(|der| crate::crypto::fingerprint(&der)))
            .transpose()?;
        Ok(SnmpAgentConfig {
            enabled: row.enabled,
            community,
            acl,
            sys_contact: row.sys_contact,
            sys_location: row.sys_location,
            ca_fingerprint,
        })
    }
}

// ---------------------------------------------------------------------------
// The objects of §13.

/// One object the agent serves (a scalar's instance), as the console's MIB
/// tab and `CUSTOS-MIB.txt` describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnmpObject {
    /// Dotted, with the instance (`.0`).
    pub oid: &'static str,
    /// The MIB module and descriptor, as `snmpget -m +CUSTOS-MIB` prints them.
    pub module: &'static str,
    pub name: &'static str,
    pub syntax: &'static str,
    pub description: &'static str,
}

const fn obj(
    oid: &'static str,
    module: &'static str,
    name: &'static str,
    syntax: &'static str,
    description: &'static str,
) -> SnmpObject {
    SnmpObject {
        oid,
        module,
        name,
        syntax,
        description,
    }
}

/// The enterprise number of §13; also the agent's sysObjectID.
pub const ENTERPRISE_OID: &str = "1.3.6.1.4.1.21513";

/// Every object the agent serves, in OID order: the standard system group,
/// the SNMP statistics (where refused requests are counted), and the
/// appliance's own objects under 1.3.6.1.4.1.21513 (all OCTET STRING,
/// read-only, computed when asked).
pub const SNMP_OBJECTS: &[SnmpObject] = &[
    obj(
        "1.3.6.1.2.1.1.1.0",
        "SNMPv2-MIB",
        "sysDescr",
        "DisplayString",
        "The product, its version and the operating system kernel.",
    ),
    obj(
        "1.3.6.1.2.1.1.2.0",
        "SNMPv2-MIB",
        "sysObjectID",
        "OBJECT IDENTIFIER",
        "The appliance's enterprise identifier, 1.3.6.1.4.1.21513.",
    ),
    obj(
        "1.3.6.1.2.1.1.3.0",
        "SNMPv2-MIB",
        "sysUpTime",
        "TimeTicks",
        "Hundredths of a second since the SNMP agent started.",
    ),
    obj(
        "1.3.6.1.2.1.1.4.0",
        "SNMPv2-MIB",
        "sysContact",
        "DisplayString",
        "The contact person for this appliance, as set on this page (up to 256 characters).",
    ),
    obj(
        "1.3.6.1.2.1.1.5.0",
        "SNMPv2-MIB",
        "sysName",
        "DisplayString",
        "The appliance's host name.",
    ),
    obj(
        "1.3.6.1.2.1.1.6.0",
        "SNMPv2-MIB",
        "sysLocation",
        "DisplayString",
        "Where the appliance is, as set on this page (up to 256 characters).",
    ),
    obj(
        "1.3.6.1.2.1.1.7.0",
        "SNMPv2-MIB",
        "sysServices",
        "INTEGER",
        "72: the appliance offers application and end-to-end services.",
    ),
    obj(
        "1.3.6.1.2.1.11.1.0",
        "SNMPv2-MIB",
        "snmpInPkts",
        "Counter32",
        "SNMP messages received since the agent started.",
    ),
    obj(
        "1.3.6.1.2.1.11.3.0",
        "SNMPv2-MIB",
        "snmpInBadVersions",
        "Counter32",
        "Messages of an SNMP version other than v1 and v2c (not answered).",
    ),
    obj(
        "1.3.6.1.2.1.11.4.0",
        "SNMPv2-MIB",
        "snmpInBadCommunityNames",
        "Counter32",
        "Requests with a wrong community string (not answered; logged at most once a minute per address).",
    ),
    obj(
        "1.3.6.1.2.1.11.5.0",
        "SNMPv2-MIB",
        "snmpInBadCommunityUses",
        "Counter32",
        "Requests from an address outside the access control list (not answered; logged at most once a minute per address).",
    ),
    obj(
        "1.3.6.1.2.1.11.6.0",
        "SNMPv2-MIB",
        "snmpInASNParseErrs",
        "Counter32",
        "Messages that could not be decoded (not answered).",
    ),
    obj(
        "1.3.6.1.2.1.11.30.0",
        "SNMPv2-MIB",
        "snmpEnableAuthenTraps",
        "INTEGER",
        "2 (disabled): the appliance sends no traps.",
    ),
    obj(
        "1.3.6.1.2.1.11.31.0",
        "SNMPv2-MIB",
        "snmpSilentDrops",
        "Counter32",
        "Requests dropped because the response would have been too large.",
    ),
    obj(
        "1.3.6.1.2.1.11.32.0",
        "SNMPv2-MIB",
        "snmpProxyDrops",
        "Counter32",
        "Always 0: the agent is no proxy.",
    ),
    obj(
        "1.3.6.1.4.1.21513.1.0",
        "CUSTOS-MIB",
        "custosVersion",
        "OCTET STRING",
        "The appliance software version.",
    ),
    obj(
        "1.3.6.1.4.1.21513.2.0",
        "CUSTOS-MIB",
        "custosCaFingerprint",
        "OCTET STRING",
        "SHA-256 fingerprint of the certificate authority of the current security mode (RSA in compatible mode, EC P-384 in Suite B), as on the dashboard.",
    ),
    obj(
        "1.3.6.1.4.1.21513.3.0",
        "CUSTOS-MIB",
        "custosServerTime",
        "OCTET STRING",
        "The server's date and time in its time zone, e.g. 2015-08-18 20:56:53.135 PDT.",
    ),
    obj(
        "1.3.6.1.4.1.21513.5.0",
        "CUSTOS-MIB",
        "custosLicences",
        "OCTET STRING",
        "The installed licence: per agent type whether installed, maximum agents and expiry; key vault, multiple domains, maximum domains and to whom it is issued.",
    ),
    obj(
        "1.3.6.1.4.1.21513.6.0",
        "CUSTOS-MIB",
        "custosHaNodes",
        "OCTET STRING",
        "The high-availability nodes and their roles, e.g. 'Failover: b.example.com; Primary: a.example.com; '.",
    ),
    obj(
        "1.3.6.1.4.1.21513.7.0",
        "CUSTOS-MIB",
        "custosDiskUsage",
        "OCTET STRING",
        "Disk usage per mounted file system, like df -hk -B 1024K.",
    ),
    obj(
        "1.3.6.1.4.1.21513.8.0",
        "CUSTOS-MIB",
        "custosSystemStats",
        "OCTET STRING",
        "Processes, memory, paging, block I/O, interrupts and CPU since boot, like vmstat.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::UserType;
    use crate::store::NewAdmin;
    use crate::store::test_support::{store, system_actor};

    fn field_and_rule(e: Error) -> (&'static str, String) {
        match e {
            Error::Invalid { field, rule } | Error::Conflict { field, rule } => (field, rule),
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn acl_entries() {
        for ok in [
            "10.1.2.3",
            "10.1.2.*",
            "0.0.0.0",
            "255.255.255.255",
            " 192.168.0.* ",
        ] {
            assert!(AclEntry::parse(ok).is_ok(), "{ok}");
        }
        let cases = [
            ("host.example.com", "host name"),
            ("localhost", "host name"),
            ("10.*.2.3", "only the fourth octet"),
            ("10.1.*.*", "only the fourth octet"),
            ("10.1.2", "four octets"),
            ("10.1.2.3.4", "four octets"),
            ("10.1.2.256", "from 0 to 255"),
            ("10.1.2.03", "leading zeros"),
            ("10.1..3", "from 0 to 255"),
            ("10.1.2.-1", "from 0 to 255"),
            ("fe80::1", "only IPv4"),
            ("", "empty"),
        ];
        for (bad, rule) in cases {
            let (field, msg) = field_and_rule(AclEntry::parse(bad).expect_err(bad));
            assert_eq!(field, "acl");
            assert!(msg.contains(rule), "{bad}: {msg}");
        }
        let any = AclEntry::parse("10.1.2.*").expect("wildcard");
        assert!(any.allows(Ipv4Addr::new(10, 1, 2, 200)));
        assert!(!any.allows(Ipv4Addr::new(10, 1, 3, 200)));
        let one = AclEntry::parse("10.1.2.3").expect("address");
        assert!(one.allows(Ipv4Addr::new(10, 1, 2, 3)));
        assert!(!one.allows(Ipv4Addr::new(10, 1, 2, 4)));
        assert_eq!(any.to_string(), "10.1.2.*");
        let twice = parse_acl(&["10.1.2.*".into(), "10.1.2.*".into()]).expect_err("twice");
        assert!(field_and_rule(twice).1.contains("listed twice"));
    }

    #[test]
    fn community_and_text_rules() {
        assert!(check_community("s3cr3t-Community!").is_ok());
        for bad in ["", "has space", "tab\there", "ümlaut", &"c".repeat(65)] {
            assert_eq!(
                field_and_rule(check_community(bad).expect_err(bad)).0,
                "community"
            );
        }
        assert!(check_sys_text("sys_contact", &"x".repeat(256)).is_ok());
        assert_eq!(
            field_and_rule(check_sys_text("sys_location", &"x".repeat(257)).expect_err("long")).0,
            "sys_location"
        );
    }

    #[test]
    fn enabling_with_the_default_community_is_refused() {
        let (_d, s) = store();
        let sys = system_actor(&s);
        let enable = |community: Option<&str>| SnmpUpdate {
            enabled: Some(true),
            community: community.map(SecretString::new),
            sys_location: Some("Rack 1".into()),
            ..SnmpUpdate::default()
        };
        for community in [None, Some("public")] {
            let e = s
                .update_snmp_settings(&sys, enable(community))
                .expect_err("public refused");
            let (field, rule) = field_and_rule(e);
            assert_eq!(field, "community");
            assert!(rule.contains("default 'public'"), "{rule}");
            let v = s.snmp_settings(&sys).expect("read");
            assert!(!v.enabled && v.community_is_default && v.sys_location.is_empty());
        }
        // Set explicitly to `public` while disabled, then enabled: refused too.
        s.update_snmp_settings(
            &sys,
            SnmpUpdate {
                community: Some(SecretString::new("public")),
                ..SnmpUpdate::default()
            },
        )
        .expect("disabled with public is allowed");
        let e = s
            .update_snmp_settings(&sys, enable(None))
            .expect_err("still public");
        assert_eq!(field_and_rule(e).0, "community");
        // Changed and enabled in one step; then back to `public` is refused.
        s.update_snmp_settings(&sys, enable(Some("N0t-Public")))
            .expect("enabled");
        let back = SnmpUpdate {
            community: Some(SecretString::new("public")),
            ..SnmpUpdate::default()
        };
        let e = s
            .update_snmp_settings(&sys, back)
            .expect_err("public again");
        assert_eq!(field_and_rule(e).0, "community");
        assert_eq!(
            s.snmp_agent_config_unchecked()
                .expect("agent")
                .community
                .expose(),
            "N0t-Public"
        );
    }

    #[test]
    fn defaults_update_and_audit() {
        let (_d, s) = store();
        let sys = system_actor(&s);
        let v = s.snmp_settings(&sys).expect("read");
        assert!(!v.enabled && v.community_is_default && v.acl.is_empty());
        let agent = s.snmp_agent_config_unchecked().expect("agent view");
        assert_eq!(agent.community.expose(), "public");
        assert!(agent.ca_fingerprint.is_none());

        let v = s
            .update_snmp_settings(
                &sys,
                SnmpUpdate {
                    enabled: Some(true),
                    community: Some(SecretString::new("N0t-Public")),
                    acl: Some(vec!["10.1.2.*".into(), "192.168.1.5".into()]),
                    sys_contact: Some("ops@example.com".into()),
                    sys_location: Some("Rack 4".into()),
                },
            )
            .expect("update");
        assert!(v.enabled && !v.community_is_default);
        assert_eq!(v.acl, ["10.1.2.*", "192.168.1.5"]);
        let agent = s.snmp_agent_config_unchecked().expect("agent view");
        assert_eq!(agent.community.expose(), "N0t-Public");
        assert_eq!(agent.acl.len(), 2);
        // The community is sealed: its text is nowhere in the database.
        for raw in crate::store::test_support::stored_bytes(&s) {
            assert!(!raw.windows(10).any(|w| w == b"N0t-Public"));
        }

        let log = s
            .audit_log(&sys, &crate::store::AuditQuery::default())
            .expect("log");
        let what = &log.entries[0].what;
        assert!(what.contains("added access list entry 10.1.2.*"), "{what}");
        assert!(what.contains("changed the community string"), "{what}");
        assert!(!what.contains("N0t-Public"), "{what}");

        // Replacing the list removes what is gone and adds what is new.
        let v = s
            .update_snmp_settings(
                &sys,
                SnmpUpdate {
                    acl: Some(vec!["192.168.1.5".into(), "172.16.0.*".into()]),
                    ..Default::default()
                },
            )
            .expect("replace");
        assert_eq!(v.acl, ["192.168.1.5", "172.16.0.*"]);
        let v = s.add_snmp_acl_entry(&sys, "10.9.9.*").expect("add");
        assert_eq!(v.acl.len(), 3);
        assert!(matches!(
            s.add_snmp_acl_entry(&sys, "10.9.9.*"),
            Err(Error::Conflict { field: "acl", .. })
        ));
        let v = s
            .delete_snmp_acl_entries(&sys, &["10.9.9.*".into(), "192.168.1.5".into()])
            .expect("delete");
        assert_eq!(v.acl, ["172.16.0.*"]);
        assert!(matches!(
            s.delete_snmp_acl_entries(&sys, &["1.2.3.4".into()]),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn a_refused_change_changes_nothing() {
        let (_d, s) = store();
        let sys = system_actor(&s);
        let before = s.snmp_settings(&sys).expect("read");
        let e = s
            .update_snmp_settings(
                &sys,
                SnmpUpdate {
                    enabled: Some(true),
                    acl: Some(vec!["10.1.2.*".into(), "monitor.example.com".into()]),
                    ..Default::default()
                },
            )
            .expect_err("host name");
        assert_eq!(field_and_rule(e).0, "acl");
        assert_eq!(s.snmp_settings(&sys).expect("read"), before);
    }

    #[test]
    fn only_writing_system_administrators_change_it() {
        let (_d, s) = store();
        let sys = system_actor(&s);
        for (login, t, ro) in [
            ("sec", UserType::Security, false),
            ("dom", UserType::Domain, false),
            ("ro", UserType::System, true),
        ] {
            s.create_admin(
                &sys,
                NewAdmin {
                    login: login.into(),
                    description: String::new(),
                    rsa_user_id: None,
                    password: SecretString::new("Passw0rd!x"),
                    confirm_password: None,
                    user_type: t,
                    restrict_to_domain: None,
                    read_only: ro,
                },
            )
            .expect("admin");
            let mut a = s.actor(login, "test", "api").expect("actor");
            a.must_change_password = false;
            let up = SnmpUpdate {
                enabled: Some(true),
                ..Default::default()
            };
            assert!(matches!(
                s.update_snmp_settings(&a, up),
                Err(Error::Forbidden(_))
            ));
            assert_eq!(s.snmp_settings(&a).is_ok(), ro, "{login} reads");
        }
        assert!(!s.snmp_settings(&sys).expect("read").enabled);
    }

    #[test]
    fn objects_are_in_oid_order_and_unique() {
        let arcs = |o: &str| {
            o.split('.')
                .map(|a| a.parse::<u32>().expect("arc"))
                .collect::<Vec<_>>()
        };
        for w in SNMP_OBJECTS.windows(2) {
            assert!(
                arcs(w[0].oid) < arcs(w[1].oid),
                "{} before {}",
                w[0].oid,
                w[1].oid
            );
        }
        for o in SNMP_OBJECTS {
            assert!(o.oid.ends_with(".0") && !o.description.is_empty());
            if o.module == "CUSTOS-MIB" {
                assert!(o.oid.starts_with(ENTERPRISE_OID) && o.syntax == "OCTET STRING");
            }
        }
    }
}
