//! The one place that renders system configuration files. Every value comes
//! from a validated type of `appliance::os` (no newline, quote or space can
//! reach a file), and every file says who wrote it.

use appliance::os::{Dns, Eth0, HostName, MANAGEMENT_INTERFACE, Ntp, TimeZone};

/// eth0's systemd-networkd unit. It sorts before the image's own files, and
/// a file of the same name in `/usr/lib/systemd/network` (the image's DHCP
/// default) is overridden by this one.
pub const NETWORK_FILE: &str = "/etc/systemd/network/10-custos-eth0.network";
/// systemd-resolved drop-in: DNS servers and search domain.
pub const RESOLVED_FILE: &str = "/etc/systemd/resolved.conf.d/custos.conf";
/// systemd-timesyncd drop-in: NTP servers.
pub const TIMESYNCD_FILE: &str = "/etc/systemd/timesyncd.conf.d/custos.conf";
/// Written by hostnamed on the live system.
pub const HOSTNAME_FILE: &str = "/etc/hostname";
/// The time zone link, maintained by timedated on the live system.
pub const LOCALTIME_LINK: &str = "/etc/localtime";
/// The tz database.
pub const ZONEINFO_DIR: &str = "/usr/share/zoneinfo";

const HEADER: &str = "# Written by custos-cli (the admin CLI, spec §3); changes made here are\n# replaced by the next change made with the CLI.\n";

/// A configuration file: where it goes (absolute, under the root) and what
/// it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemFile {
    pub path: &'static str,
    pub contents: String,
}

pub fn eth0(e: &Eth0) -> SystemFile {
    let mut s = String::from(HEADER);
    s.push_str("# eth1, the backup network, is never configured here.\n\n");
    s.push_str(&format!(
        "[Match]\nName={MANAGEMENT_INTERFACE}\n\n[Network]\n"
    ));
    s.push_str(if e.dhcp { "DHCP=ipv4\n" } else { "DHCP=no\n" });
    if let Some(a) = e.address {
        s.push_str(&format!("Address={a}\n"));
    }
    if let Some(g) = e.gateway {
        s.push_str(&format!("Gateway={g}\n"));
    }
    SystemFile {
        path: NETWORK_FILE,
        contents: s,
    }
}

pub fn resolved(d: &Dns) -> SystemFile {
    let servers: Vec<String> = [d.dns1, d.dns2]
        .iter()
        .flatten()
        .map(|s| s.to_string())
        .collect();
    let mut s = String::from(HEADER);
    s.push_str("\n[Resolve]\n");
    s.push_str(&format!("DNS={}\n", servers.join(" ")));
    s.push_str(&format!(
        "Domains={}\n",
        d.search.as_ref().map(|d| d.as_str()).unwrap_or_default()
    ));
    SystemFile {
        path: RESOLVED_FILE,
        contents: s,
    }
}

pub fn timesyncd(n: &Ntp) -> SystemFile {
    let servers: Vec<&str> = n.servers.iter().map(|s| s.as_str()).collect();
    let mut s = String::from(HEADER);
    s.push_str("# An empty list means the system's fallback servers.\n\n[Time]\n");
    s.push_str(&format!("NTP={}\n", servers.join(" ")));
    SystemFile {
        path: TIMESYNCD_FILE,
        contents: s,
    }
}

/// `/etc/hostname` as hostnamed writes it.
pub fn hostname(h: &HostName) -> SystemFile {
    SystemFile {
        path: HOSTNAME_FILE,
        contents: format!("{h}\n"),
    }
}

/// The target of `/etc/localtime` as timedated sets it.
pub fn localtime_target(tz: &TimeZone) -> String {
    format!("..{ZONEINFO_DIR}/{tz}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use appliance::os::{DnsServer, DomainName, Ipv4Interface, NtpServer};
    use expect_test::expect;

    #[test]
    fn eth0_static_and_dhcp() {
        let e = Eth0 {
            dhcp: false,
            address: Some(Ipv4Interface::parse("10.1.1.5/24").expect("valid")),
            gateway: Some("10.1.1.1".parse().expect("ip")),
        };
        expect![[r#"
            # Written by custos-cli (the admin CLI, spec §3); changes made here are
            # replaced by the next change made with the CLI.
            # eth1, the backup network, is never configured here.

            [Match]
            Name=eth0

            [Network]
            DHCP=no
            Address=10.1.1.5/24
            Gateway=10.1.1.1
        "#]]
        .assert_eq(&eth0(&e).contents);
        expect![[r#"
            # Written by custos-cli (the admin CLI, spec §3); changes made here are
            # replaced by the next change made with the CLI.
            # eth1, the backup network, is never configured here.

            [Match]
            Name=eth0

            [Network]
            DHCP=ipv4
        "#]]
        .assert_eq(&eth0(&Eth0::default()).contents);
    }

    #[test]
    fn resolved_and_timesyncd() {
        let d = Dns {
            dns1: Some(DnsServer::parse("dns1", "10.1.1.53").expect("ip")),
            dns2: Some(DnsServer::parse("dns2", "2001:db8::53").expect("ip")),
            search: Some(DomainName::parse("search", "example.com").expect("domain")),
        };
        expect![[r#"
            # Written by custos-cli (the admin CLI, spec §3); changes made here are
            # replaced by the next change made with the CLI.

            [Resolve]
            DNS=10.1.1.53 2001:db8::53
            Domains=example.com
        "#]]
        .assert_eq(&resolved(&d).contents);
        let n = Ntp {
            enabled: true,
            servers: vec![
                NtpServer::parse("server", "ntp1.example.com").expect("name"),
                NtpServer::parse("server", "10.1.1.2").expect("ip"),
            ],
        };
        expect![[r#"
            # Written by custos-cli (the admin CLI, spec §3); changes made here are
            # replaced by the next change made with the CLI.
            # An empty list means the system's fallback servers.

            [Time]
            NTP=ntp1.example.com 10.1.1.2
        "#]]
        .assert_eq(&timesyncd(&n).contents);
        assert_eq!(
            localtime_target(&TimeZone::parse("tz", "Europe/Berlin").expect("tz")),
            "../usr/share/zoneinfo/Europe/Berlin"
        );
    }
}
