//! `ping` and `checkport`: real probes with timeouts, the same on the
//! appliance and under a test root.
//!
//! `ping` sends ICMP echo requests itself: through an unprivileged ICMP
//! socket where the kernel allows one (`net.ipv4.ping_group_range`),
//! otherwise through a raw socket (the CLI runs as root on the appliance).

use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType, ipproto, sockopt::Timeout};

use crate::menu::Failure;
use crate::session::interrupted;
use crate::term::Hangup;

const COUNT: u16 = 4;
const INTERVAL: Duration = Duration::from_secs(1);
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
const PAYLOAD: usize = 56;

/// A host name or address to probe.
fn check_target(host: &str) -> anyhow::Result<()> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let numeric = host
        .rsplit('.')
        .next()
        .is_some_and(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_digit()));
    if numeric {
        bail!(
            "host: '{}' is not a valid IP address",
            appliance::os::shown(host)
        );
    }
    appliance::model::check_host_name("host", host).map_err(|_| {
        anyhow::anyhow!(
            "host: '{}' is neither an IP address nor a host name",
            appliance::os::shown(host)
        )
    })?;
    Ok(())
}

/// The address `ping` sends to: an address as given, or the host name's
/// first IPv4 address (IPv6 with `ipv6`).
pub fn resolve(host: &str, ipv6: bool) -> anyhow::Result<IpAddr> {
    check_target(host)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        if ipv6 && ip.is_ipv4() {
            bail!("host: {ip} is an IPv4 address; leave out 'ipv6'");
        }
        return Ok(ip);
    }
    (host, 0)
        .to_socket_addrs()
        .with_context(|| format!("host: cannot resolve {host}"))?
        .map(|a| a.ip())
        .find(|ip| ip.is_ipv6() == ipv6)
        .with_context(|| {
            format!(
                "host: {host} has no {} address",
                if ipv6 { "IPv6" } else { "IPv4" }
            )
        })
}

/// Every address of `host` with `port`.
pub fn resolve_all(host: &str, port: u16) -> anyhow::Result<Vec<SocketAddr>> {
    check_target(host)?;
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("host: cannot resolve {host}"))?
        .collect();
    if addrs.is_empty() {
        bail!("host: {host} has no address");
    }
    Ok(addrs)
}

/// A TCP connection to the first address that accepts one; returns how long
/// it took. The error is the last address's.
pub fn connect(addrs: &[SocketAddr], timeout: Duration) -> anyhow::Result<Duration> {
    let mut last = None;
    for addr in addrs {
        let started = Instant::now();
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(_) => return Ok(started.elapsed()),
            Err(e) => last = Some((addr, e)),
        }
    }
    match last {
        Some((addr, e)) if e.kind() == std::io::ErrorKind::TimedOut => {
            bail!("{addr}: no answer within {} seconds", timeout.as_secs())
        }
        Some((addr, e)) => bail!("{addr}: {e}"),
        None => bail!("no address to connect to"),
    }
}

#[derive(Debug)]
pub struct PingReport {
    pub sent: u16,
    pub received: u16,
}

struct Socket {
    fd: OwnedFd,
    /// Raw IPv4 sockets deliver the IP header too, and every ICMP message.
    raw: bool,
    v6: bool,
    id: u16,
}

fn open(target: IpAddr) -> anyhow::Result<Socket> {
    let (family, proto) = match target {
        IpAddr::V4(_) => (AddressFamily::INET, ipproto::ICMP),
        IpAddr::V6(_) => (AddressFamily::INET6, ipproto::ICMPV6),
    };
    let (fd, raw) = match rustix::net::socket(family, SocketType::DGRAM, Some(proto)) {
        Ok(fd) => (fd, false),
        Err(_) => (
            rustix::net::socket(family, SocketType::RAW, Some(proto))
                .context("cannot open an ICMP socket (the CLI needs root or ping_group_range)")?,
            true,
        ),
    };
    rustix::net::connect(&fd, &SocketAddr::new(target, 0))
        .with_context(|| format!("cannot send to {target}"))?;
    Ok(Socket {
        fd,
        raw,
        v6: target.is_ipv6(),
        id: (std::process::id() & 0xffff) as u16,
    })
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn echo_request(s: &Socket, seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; 8 + PAYLOAD];
    p[0] = if s.v6 { 128 } else { 8 };
    p[4..6].copy_from_slice(&s.id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    if !s.v6 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// Waits for the reply to `seq`; returns its TTL when known.
fn await_reply(s: &Socket, seq: u16, deadline: Instant) -> anyhow::Result<Option<Option<u8>>> {
    let mut buf = [0u8; 1500];
    loop {
        let now = Instant::now();
        if now >= deadline || interrupted() {
            return Ok(None);
        }
        rustix::net::sockopt::set_socket_timeout(&s.fd, Timeout::Recv, Some(deadline - now))?;
        let n = match rustix::net::recv(&s.fd, &mut buf[..], RecvFlags::empty()) {
            Ok((n, _)) => n,
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e).context("receiving the reply"),
        };
        let (msg, ttl) = if s.raw && !s.v6 {
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            if n < ihl + 8 {
                continue;
            }
            (&buf[ihl..n], Some(buf[8]))
        } else {
            (&buf[..n], None)
        };
        if msg.len() < 8 {
            continue;
        }
        let reply_type = if s.v6 { 129 } else { 0 };
        let id = u16::from_be_bytes([msg[4], msg[5]]);
        let got_seq = u16::from_be_bytes([msg[6], msg[7]]);
        // Datagram ICMP sockets get only their own replies (the kernel sets the id).
        if msg[0] == reply_type && got_seq == seq && (!s.raw || id == s.id) {
            return Ok(Some(ttl));
        }
    }
}

/// Sends four echo requests a second apart, printing each reply as it comes.
pub fn ping(
    target: IpAddr,
    mut out: impl FnMut(&str) -> Result<(), Hangup>,
) -> Result<PingReport, Failure> {
    let s = open(target)?;
    out(&format!("PING {target}: {PAYLOAD} data bytes"))?;
    let mut report = PingReport {
        sent: 0,
        received: 0,
    };
    for seq in 1..=COUNT {
        if interrupted() {
            break;
        }
        let started = Instant::now();
        rustix::net::send(&s.fd, &echo_request(&s, seq), SendFlags::empty())
            .with_context(|| format!("sending to {target}"))?;
        report.sent += 1;
        match await_reply(&s, seq, started + REPLY_TIMEOUT)? {
            Some(ttl) => {
                report.received += 1;
                let ttl = ttl.map(|t| format!(" ttl={t}")).unwrap_or_default();
                out(&format!(
                    "{} bytes from {target}: icmp_seq={seq}{ttl} time={:.3} ms",
                    8 + PAYLOAD,
                    started.elapsed().as_secs_f64() * 1000.0
                ))?;
            }
            None if interrupted() => break,
            None => out(&format!("Request timeout for icmp_seq {seq}"))?,
        }
        if seq < COUNT {
            while started.elapsed() < INTERVAL && !interrupted() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    out(&format!("--- {target} ping statistics ---"))?;
    let loss = 100 * u32::from(report.sent - report.received) / u32::from(report.sent.max(1));
    out(&format!(
        "{} packets transmitted, {} received, {loss}% packet loss",
        report.sent, report.received
    ))?;
    if interrupted() {
        return Err(Failure::Error(anyhow::anyhow!("ping interrupted")));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_an_echo_request() {
        // Known-good: type 8, id 0x1234, seq 1, no payload.
        let p = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
        assert_eq!(checksum(&p), 0xe5ca);
    }

    #[test]
    fn targets_are_checked() {
        assert!(resolve("127.0.0.1", false).is_ok());
        assert!(resolve("127.0.0.1", true).is_err());
        assert!(resolve("bad host", false).is_err());
        assert!(resolve_all("300.1.1.1", 80).is_err());
    }

    #[test]
    fn checkport_connects_and_reports_refusal() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let open = l.local_addr().expect("addr");
        assert!(connect(&[open], Duration::from_secs(2)).is_ok());
        let closed = {
            let l2 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l2.local_addr().expect("addr")
        };
        let e = connect(&[closed], Duration::from_secs(2)).expect_err("refused");
        assert!(e.to_string().contains("refused"), "{e}");
    }
}
