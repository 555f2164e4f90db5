//! The agent's view of the MIB: every [`Object`] it serves with its OID, in
//! OID order. The console's MIB tab describes the same objects from
//! `appliance::store::SNMP_OBJECTS`; a test of the daemon checks that the
//! two lists agree, and the tests check `CUSTOS-MIB.txt` against both.

use rasn::types::ObjectIdentifier;

/// Every object the agent has a value for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Object {
    SysDescr,
    SysObjectId,
    SysUpTime,
    SysContact,
    SysName,
    SysLocation,
    SysServices,
    InPkts,
    InBadVersions,
    InBadCommunityNames,
    InBadCommunityUses,
    InAsnParseErrs,
    EnableAuthenTraps,
    SilentDrops,
    ProxyDrops,
    Version,
    CaFingerprint,
    ServerTime,
    Licences,
    HaNodes,
    DiskUsage,
    SystemStats,
}

impl Object {
    /// Every object, in OID order.
    pub const ALL: [Object; 22] = [
        Object::SysDescr,
        Object::SysObjectId,
        Object::SysUpTime,
        Object::SysContact,
        Object::SysName,
        Object::SysLocation,
        Object::SysServices,
        Object::InPkts,
        Object::InBadVersions,
        Object::InBadCommunityNames,
        Object::InBadCommunityUses,
        Object::InAsnParseErrs,
        Object::EnableAuthenTraps,
        Object::SilentDrops,
        Object::ProxyDrops,
        Object::Version,
        Object::CaFingerprint,
        Object::ServerTime,
        Object::Licences,
        Object::HaNodes,
        Object::DiskUsage,
        Object::SystemStats,
    ];

    /// The instance's OID and the MIB descriptor of its object type.
    pub fn oid_and_name(self) -> (&'static str, &'static str) {
        match self {
            Object::SysDescr => ("1.3.6.1.2.1.1.1.0", "sysDescr"),
            Object::SysObjectId => ("1.3.6.1.2.1.1.2.0", "sysObjectID"),
            Object::SysUpTime => ("1.3.6.1.2.1.1.3.0", "sysUpTime"),
            Object::SysContact => ("1.3.6.1.2.1.1.4.0", "sysContact"),
            Object::SysName => ("1.3.6.1.2.1.1.5.0", "sysName"),
            Object::SysLocation => ("1.3.6.1.2.1.1.6.0", "sysLocation"),
            Object::SysServices => ("1.3.6.1.2.1.1.7.0", "sysServices"),
            Object::InPkts => ("1.3.6.1.2.1.11.1.0", "snmpInPkts"),
            Object::InBadVersions => ("1.3.6.1.2.1.11.3.0", "snmpInBadVersions"),
            Object::InBadCommunityNames => ("1.3.6.1.2.1.11.4.0", "snmpInBadCommunityNames"),
            Object::InBadCommunityUses => ("1.3.6.1.2.1.11.5.0", "snmpInBadCommunityUses"),
            Object::InAsnParseErrs => ("1.3.6.1.2.1.11.6.0", "snmpInASNParseErrs"),
            Object::EnableAuthenTraps => ("1.3.6.1.2.1.11.30.0", "snmpEnableAuthenTraps"),
            Object::SilentDrops => ("1.3.6.1.2.1.11.31.0", "snmpSilentDrops"),
            Object::ProxyDrops => ("1.3.6.1.2.1.11.32.0", "snmpProxyDrops"),
            Object::Version => ("1.3.6.1.4.1.21513.1.0", "custosVersion"),
            Object::CaFingerprint => ("1.3.6.1.4.1.21513.2.0", "custosCaFingerprint"),
            Object::ServerTime => ("1.3.6.1.4.1.21513.3.0", "custosServerTime"),
            Object::Licences => ("1.3.6.1.4.1.21513.5.0", "custosLicences"),
            Object::HaNodes => ("1.3.6.1.4.1.21513.6.0", "custosHaNodes"),
            Object::DiskUsage => ("1.3.6.1.4.1.21513.7.0", "custosDiskUsage"),
            Object::SystemStats => ("1.3.6.1.4.1.21513.8.0", "custosSystemStats"),
        }
    }
}

/// What a GET finds at an OID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Found(Object),
    /// The OID is inside a known object type but names no instance of it.
    NoSuchInstance,
    NoSuchObject,
}

/// The objects in OID order.
#[derive(Debug, Clone)]
pub struct Mib {
    entries: Vec<(Vec<u32>, Object)>,
}

/// A dotted OID as arcs.
pub fn parse_oid(dotted: &str) -> Option<Vec<u32>> {
    dotted.split('.').map(|a| a.parse().ok()).collect()
}

impl Default for Mib {
    fn default() -> Self {
        Self::new()
    }
}

impl Mib {
    pub fn new() -> Mib {
        let mut entries: Vec<(Vec<u32>, Object)> = Object::ALL
            .iter()
            .map(|o| {
                let (oid, _) = o.oid_and_name();
                (
                    parse_oid(oid).expect("the objects' OIDs are dotted numbers"),
                    *o,
                )
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Mib { entries }
    }

    pub fn get(&self, oid: &[u32]) -> Lookup {
        match self
            .entries
            .binary_search_by(|(o, _)| o.as_slice().cmp(oid))
        {
            Ok(i) => Lookup::Found(self.entries[i].1),
            Err(_) => {
                // The object type is the instance's OID without its `.0`.
                let in_type = self
                    .entries
                    .iter()
                    .any(|(o, _)| oid.starts_with(&o[..o.len() - 1]));
                if in_type {
                    Lookup::NoSuchInstance
                } else {
                    Lookup::NoSuchObject
                }
            }
        }
    }

    /// The first object after `oid` in lexicographic order, if any.
    pub fn next(&self, oid: &[u32]) -> Option<(ObjectIdentifier, Object)> {
        let i = self.entries.partition_point(|(o, _)| o.as_slice() <= oid);
        self.entries.get(i).map(|(o, obj)| {
            (
                ObjectIdentifier::new(o.clone()).expect("the MIB's OIDs are valid"),
                *obj,
            )
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_object_is_served_and_lookups_follow_oid_order() {
        let mib = Mib::new();
        assert_eq!(mib.len(), Object::ALL.len());
        let oids: Vec<Vec<u32>> = Object::ALL
            .iter()
            .map(|o| parse_oid(o.oid_and_name().0).expect("oid"))
            .collect();
        assert!(oids.windows(2).all(|w| w[0] < w[1]), "ALL is in OID order");
        let sys_descr = [1, 3, 6, 1, 2, 1, 1, 1, 0];
        assert_eq!(mib.get(&sys_descr), Lookup::Found(Object::SysDescr));
        assert_eq!(mib.get(&[1, 3, 6, 1, 2, 1, 1, 1]), Lookup::NoSuchInstance);
        assert_eq!(
            mib.get(&[1, 3, 6, 1, 2, 1, 1, 1, 1]),
            Lookup::NoSuchInstance
        );
        assert_eq!(mib.get(&[1, 3, 6, 1, 2, 1, 99, 0]), Lookup::NoSuchObject);
        assert_eq!(
            mib.get(&[1, 3, 6, 1, 4, 1, 21513, 4, 0]),
            Lookup::NoSuchObject
        );
        let (first, o) = mib.next(&[1, 3]).expect("first");
        assert_eq!((&first[..], o), (&sys_descr[..], Object::SysDescr));
        let (after, _) = mib.next(&sys_descr).expect("second");
        assert_eq!(&after[..], &[1, 3, 6, 1, 2, 1, 1, 2, 0]);
        let (ent, o) = mib.next(&[1, 3, 6, 1, 4, 1, 21513]).expect("enterprise");
        assert_eq!(
            (&ent[..], o),
            (&[1, 3, 6, 1, 4, 1, 21513, 1, 0][..], Object::Version)
        );
        let (skip, o) = mib
            .next(&[1, 3, 6, 1, 4, 1, 21513, 3, 0])
            .expect("after .3.0");
        assert_eq!(
            (&skip[..], o),
            (&[1, 3, 6, 1, 4, 1, 21513, 5, 0][..], Object::Licences)
        );
        assert!(mib.next(&[1, 3, 6, 1, 4, 1, 21513, 8, 0]).is_none());
        assert!(mib.next(&[2]).is_none());
    }
}
