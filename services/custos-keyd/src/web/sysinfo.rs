//! Live facts about the machine for the dashboard (§4): addresses, default
//! route, DNS and NTP servers, disk use. Read from the kernel and systemd's
//! runtime files; nothing here changes anything.

use std::path::Path;

/// The machine's IPv4 and IPv6 addresses with their prefix, per interface,
/// loopback left out.
pub fn addresses() -> Vec<String> {
    let Ok(list) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ifa in list {
        if ifa.interface_name == "lo" {
            continue;
        }
        let Some(addr) = ifa.address else { continue };
        let prefix = |mask: Option<nix::sys::socket::SockaddrStorage>| -> String {
            mask.and_then(|m| {
                if let Some(v4) = m.as_sockaddr_in() {
                    Some(u32::from(v4.ip()).count_ones().to_string())
                } else {
                    m.as_sockaddr_in6()
                        .map(|v6| u128::from(v6.ip()).count_ones().to_string())
                }
            })
            .map(|p| format!("/{p}"))
            .unwrap_or_default()
        };
        if let Some(v4) = addr.as_sockaddr_in() {
            out.push(format!(
                "{} {}{}",
                ifa.interface_name,
                v4.ip(),
                prefix(ifa.netmask)
            ));
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            out.push(format!(
                "{} {}{}",
                ifa.interface_name,
                v6.ip(),
                prefix(ifa.netmask)
            ));
        }
    }
    out
}

/// The IPv4 default route from `/proc/net/route`: "gateway via interface".
pub fn default_route() -> Option<String> {
    parse_default_route(&std::fs::read_to_string("/proc/net/route").ok()?)
}

fn parse_default_route(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 3 || cols[1] != "00000000" {
            return None;
        }
        let gw = u32::from_str_radix(cols[2], 16).ok()?;
        let ip = std::net::Ipv4Addr::from(gw.swap_bytes());
        Some(format!("{ip} via {}", cols[0]))
    })
}

/// Name servers in use: systemd-resolved's upstream list when it runs,
/// otherwise `/etc/resolv.conf`.
pub fn dns_servers() -> Vec<String> {
    let text = std::fs::read_to_string("/run/systemd/resolve/resolv.conf")
        .or_else(|_| std::fs::read_to_string("/etc/resolv.conf"))
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether systemd-timesyncd has synchronised the clock.
pub fn ntp_synchronised() -> bool {
    Path::new("/run/systemd/timesync/synchronized").exists()
}

/// Size and free space of the file system holding `dir`, in bytes.
pub struct Disk {
    pub total: u64,
    pub free: u64,
}

impl Disk {
    pub fn used_percent(&self) -> u64 {
        if self.total == 0 {
            return 0;
        }
        (self.total - self.free)
            .saturating_mul(100)
            .div_ceil(self.total)
    }
}

pub fn disk(dir: &Path) -> Option<Disk> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let frag = st.fragment_size() as u64;
    Some(Disk {
        total: st.blocks() as u64 * frag,
        free: st.blocks_available() as u64 * frag,
    })
}

/// Bytes as the dashboard shows them (binary units).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_from_proc() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                     eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\n\
                     eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        assert_eq!(
            parse_default_route(table).as_deref(),
            Some("10.0.2.2 via eth0")
        );
        assert_eq!(parse_default_route("Iface\tDestination\n"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
        assert_eq!(
            Disk {
                total: 200,
                free: 50
            }
            .used_percent(),
            75
        );
    }
}
