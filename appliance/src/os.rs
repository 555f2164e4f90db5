//! The appliance's own operating-system settings (§3, §2): the eth0
//! management interface, DNS, NTP, the host name and the time zone.
//!
//! Each value here ends up in a rendered system file (a systemd-networkd
//! unit, a resolved or timesyncd drop-in, `/etc/hostname`), so each is a
//! validated newtype: it is parsed once, here, and can hold no newline, quote
//! or space. Only the rules live here; reading the tz database and writing the
//! files is the admin CLI's business (this module does no I/O).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::model::check_host_name;
use crate::{Error, Result};

/// The only interface the network commands change (§2: eth1 is the backup
/// network and is left alone).
pub const MANAGEMENT_INTERFACE: &str = "eth0";
/// The appliance's host name: at most this many characters (§3, §9).
pub const APPLIANCE_HOST_NAME_MAX: usize = 64;
/// At most this many NTP servers.
pub const NTP_SERVERS_MAX: usize = 8;

macro_rules! string_newtype {
    ($name:ident, $field:literal) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                Self::parse($field, &s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
    };
}

/// The appliance's fully qualified host name (`setinfo hostname`): case is
/// kept as typed, at most 64 characters, at least two labels, and not an
/// address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostName(String);
string_newtype!(HostName, "host_name");

impl HostName {
    pub fn parse(field: &'static str, s: &str) -> Result<HostName> {
        check_certificate_host_name(field, s)?;
        if !s.contains('.') {
            return Err(Error::invalid(
                field,
                "must be a fully qualified domain name (host.domain)",
            ));
        }
        if s.rsplit('.')
            .next()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(Error::invalid(
                field,
                "must be a domain name, not an address",
            ));
        }
        Ok(HostName(s.to_owned()))
    }
}

/// A host name as it may appear in a certificate subject (§9 Host Name):
/// a valid host name of at most 64 characters; a single label is allowed.
pub fn check_certificate_host_name(field: &'static str, s: &str) -> Result<()> {
    if s.chars().count() > APPLIANCE_HOST_NAME_MAX {
        return Err(Error::invalid(
            field,
            format!("must be at most {APPLIANCE_HOST_NAME_MAX} characters"),
        ));
    }
    check_host_name(field, s)
}

/// A DNS search domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DomainName(String);
string_newtype!(DomainName, "search");

impl DomainName {
    pub fn parse(field: &'static str, s: &str) -> Result<DomainName> {
        check_host_name(field, s)?;
        Ok(DomainName(s.to_owned()))
    }
}

/// An NTP server: a host name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NtpServer(String);
string_newtype!(NtpServer, "server");

impl NtpServer {
    pub fn parse(field: &'static str, s: &str) -> Result<NtpServer> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            check_unicast(field, ip)?;
            return Ok(NtpServer(ip.to_string()));
        }
        check_host_name(field, s).map_err(|_| {
            Error::invalid(
                field,
                format!("'{}' is neither an IP address nor a host name", shown(s)),
            )
        })?;
        if s.rsplit('.')
            .next()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(Error::invalid(
                field,
                format!("'{}' is not a valid IP address", shown(s)),
            ));
        }
        Ok(NtpServer(s.to_owned()))
    }
}

/// A tz database name such as `Europe/Berlin` or `UTC`. Whether the zone
/// exists is checked against the tz database by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeZone(String);
string_newtype!(TimeZone, "time_zone");

impl TimeZone {
    pub fn parse(field: &'static str, s: &str) -> Result<TimeZone> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part.starts_with(|c: char| c.is_ascii_alphabetic())
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
            });
        if !ok {
            return Err(Error::invalid(
                field,
                format!(
                    "'{}' is not a time zone name (Area/City, e.g. Europe/Berlin)",
                    shown(s)
                ),
            ));
        }
        Ok(TimeZone(s.to_owned()))
    }
}

/// A value quoted back in an error: at most 64 characters, control
/// characters replaced.
pub fn shown(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

fn check_unicast(field: &'static str, ip: IpAddr) -> Result<()> {
    let bad = match ip {
        IpAddr::V4(v4) => {
            v4.is_unspecified() || v4.is_loopback() || v4.is_multicast() || v4.is_broadcast()
        }
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_loopback() || v6.is_multicast(),
    };
    if bad {
        return Err(Error::invalid(
            field,
            format!("{ip} is not a unicast address of another host"),
        ));
    }
    Ok(())
}

/// Parses an IPv4 address, naming the field and the value when it is not one.
pub fn parse_ipv4(field: &'static str, s: &str) -> Result<Ipv4Addr> {
    s.parse::<Ipv4Addr>()
        .map_err(|_| Error::invalid(field, format!("'{}' is not an IPv4 address", shown(s))))
}

/// A DNS server address (IPv4 or IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DnsServer(IpAddr);

impl DnsServer {
    pub fn parse(field: &'static str, s: &str) -> Result<DnsServer> {
        let ip = s
            .parse::<IpAddr>()
            .map_err(|_| Error::invalid(field, format!("'{}' is not an IP address", shown(s))))?;
        check_unicast(field, ip)?;
        Ok(DnsServer(ip))
    }
    pub fn ip(&self) -> IpAddr {
        self.0
    }
}

impl fmt::Display for DnsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TryFrom<String> for DnsServer {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse("dns", &s)
    }
}

impl From<DnsServer> for String {
    fn from(v: DnsServer) -> String {
        v.0.to_string()
    }
}

/// eth0's static address with its prefix length (`10.1.1.5/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Interface {
    address: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Interface {
    pub fn parse(s: &str) -> Result<Ipv4Interface> {
        let Some((addr, prefix)) = s.split_once('/') else {
            return Err(Error::invalid(
                "address",
                format!("'{}' must be ADDRESS/PREFIX, e.g. 10.1.1.5/24", shown(s)),
            ));
        };
        let address = parse_ipv4("address", addr)?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (1..=32).contains(p))
            .ok_or_else(|| {
                Error::invalid(
                    "prefix",
                    format!(
                        "'/{}' must be a prefix length between 1 and 32",
                        shown(prefix)
                    ),
                )
            })?;
        check_unicast("address", IpAddr::V4(address))?;
        let net = Ipv4Interface { address, prefix };
        if prefix <= 30 && (address == net.network() || address == net.broadcast()) {
            return Err(Error::invalid(
                "address",
                format!(
                    "{address} is the network or broadcast address of {}/{prefix}",
                    net.network()
                ),
            ));
        }
        Ok(net)
    }
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) & self.mask())
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) | !self.mask())
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.address) & self.mask()
    }
}

impl fmt::Display for Ipv4Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl TryFrom<String> for Ipv4Interface {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<Ipv4Interface> for String {
    fn from(v: Ipv4Interface) -> String {
        v.to_string()
    }
}

/// eth0, the management interface. First boot: DHCP (§2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Eth0 {
    pub dhcp: bool,
    pub address: Option<Ipv4Interface>,
    pub gateway: Option<Ipv4Addr>,
}

impl Default for Eth0 {
    fn default() -> Self {
        Eth0 {
            dhcp: true,
            address: None,
            gateway: None,
        }
    }
}

impl Eth0 {
    /// The default gateway rule: a unicast address other than eth0's own,
    /// inside eth0's network when eth0 has a static address.
    pub fn check_gateway(&self, gw: Ipv4Addr) -> Result<()> {
        check_unicast("gateway", IpAddr::V4(gw))?;
        if let Some(net) = self.address {
            if gw == net.address() {
                return Err(Error::invalid(
                    "gateway",
                    format!("{gw} is eth0's own address"),
                ));
            }
            if !net.contains(gw) {
                return Err(Error::invalid(
                    "gateway",
                    format!(
                        "{gw} is not in eth0's network {}/{}",
                        net.network(),
                        net.prefix()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// DNS servers and search domain (systemd-resolved).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dns {
    pub dns1: Option<DnsServer>,
    pub dns2: Option<DnsServer>,
    pub search: Option<DomainName>,
}

/// NTP (systemd-timesyncd). First boot: on, with the system's default servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ntp {
    pub enabled: bool,
    pub servers: Vec<NtpServer>,
}

impl Default for Ntp {
    fn default() -> Self {
        Ntp {
            enabled: true,
            servers: vec![],
        }
    }
}

impl Ntp {
    pub fn add(&mut self, server: NtpServer) -> Result<()> {
        if self.servers.contains(&server) {
            return Err(Error::conflict(
                "server",
                format!("{server} is already an NTP server"),
            ));
        }
        if self.servers.len() >= NTP_SERVERS_MAX {
            return Err(Error::invalid(
                "server",
                format!("at most {NTP_SERVERS_MAX} NTP servers can be set"),
            ));
        }
        self.servers.push(server);
        Ok(())
    }
    pub fn delete(&mut self, server: &NtpServer) -> Result<()> {
        let before = self.servers.len();
        self.servers.retain(|s| s != server);
        if self.servers.len() == before {
            return Err(Error::not_found("NTP server", server.as_str()));
        }
        Ok(())
    }
}

/// Every operating-system setting the admin CLI manages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsSettings {
    /// `None` until set with `setinfo hostname`; the system's own name is
    /// used until then.
    pub host_name: Option<HostName>,
    pub eth0: Eth0,
    pub dns: Dns,
    pub ntp: Ntp,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: Error) -> &'static str {
        match e {
            Error::Invalid { field, .. } | Error::Conflict { field, .. } => field,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn host_names() {
        assert!(HostName::parse("host_name", "Custos.Example.com").is_ok());
        assert_eq!(
            HostName::parse("host_name", "Custos.Example.com")
                .expect("valid")
                .as_str(),
            "Custos.Example.com"
        );
        let long = format!("{}.example.com", "a".repeat(53));
        assert_eq!(long.len(), 65);
        assert_eq!(
            HostName::parse("host_name", &long)
                .expect_err("too long")
                .to_string(),
            "host_name: must be at most 64 characters"
        );
        assert!(HostName::parse("host_name", &long[1..]).is_ok());
        for bad in [
            "custos",
            "my host.example.com",
            "a\"b.example.com",
            "10.1.1.5",
            "",
        ] {
            assert_eq!(
                field(HostName::parse("host_name", bad).expect_err(bad)),
                "host_name"
            );
        }
    }

    #[test]
    fn interfaces_and_gateways() {
        let net = Ipv4Interface::parse("10.1.1.5/24").expect("valid");
        assert_eq!(net.to_string(), "10.1.1.5/24");
        assert_eq!(net.network(), Ipv4Addr::new(10, 1, 1, 0));
        assert_eq!(
            field(Ipv4Interface::parse("300.1.1.1/16").expect_err("octet")),
            "address"
        );
        assert_eq!(
            field(Ipv4Interface::parse("10.1.1.1/33").expect_err("prefix")),
            "prefix"
        );
        assert_eq!(
            field(Ipv4Interface::parse("10.1.1.1").expect_err("no prefix")),
            "address"
        );
        assert!(Ipv4Interface::parse("10.1.1.0/24").is_err());
        assert!(Ipv4Interface::parse("127.0.0.1/8").is_err());
        let eth0 = Eth0 {
            dhcp: false,
            address: Some(net),
            gateway: None,
        };
        assert!(eth0.check_gateway(Ipv4Addr::new(10, 1, 1, 1)).is_ok());
        assert!(eth0.check_gateway(Ipv4Addr::new(10, 2, 1, 1)).is_err());
        assert!(eth0.check_gateway(Ipv4Addr::new(10, 1, 1, 5)).is_err());
    }

    #[test]
    fn servers_zones_and_round_trips() {
        assert!(NtpServer::parse("server", "ntp.example.com").is_ok());
        assert!(NtpServer::parse("server", "192.0.2.1").is_ok());
        assert!(NtpServer::parse("server", "300.1.1.1").is_err());
        assert!(NtpServer::parse("server", "a b").is_err());
        assert!(TimeZone::parse("time_zone", "America/Argentina/Buenos_Aires").is_ok());
        assert!(TimeZone::parse("time_zone", "Etc/GMT+5").is_ok());
        assert!(TimeZone::parse("time_zone", "../etc/passwd").is_err());
        assert!(TimeZone::parse("time_zone", "Europe/").is_err());
        let mut ntp = Ntp::default();
        ntp.add(NtpServer::parse("server", "ntp.example.com").expect("ok"))
            .expect("add");
        assert!(
            ntp.add(NtpServer::parse("server", "ntp.example.com").expect("ok"))
                .is_err()
        );
        let json = serde_json::to_string(&ntp).expect("json");
        assert_eq!(serde_json::from_str::<Ntp>(&json).expect("back"), ntp);
        assert!(serde_json::from_str::<Ntp>(r#"{"enabled":true,"servers":["a\nb"]}"#).is_err());
        let eth0 = Eth0 {
            dhcp: false,
            address: Some(Ipv4Interface::parse("192.0.2.10/24").expect("ok")),
            gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
        };
        let json = serde_json::to_string(&eth0).expect("json");
        assert_eq!(serde_json::from_str::<Eth0>(&json).expect("back"), eth0);
    }
}
