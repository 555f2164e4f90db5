//! The SNMP agent for the tests: the built `custos-snmpd` started on an
//! appliance's data directory with free loopback ports, and net-snmp's
//! command-line tools (`snmpget`, `snmpgetnext`, `snmpwalk`,
//! `snmpbulkwalk`, `snmptranslate`; Debian package `snmp`) to talk to it as
//! any manager would.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{Appliance, bin};

/// A running `custos-snmpd`; killed when dropped.
pub struct Snmpd {
    child: Option<Child>,
    /// The standard port's stand-in (161 on the appliance) and the second one (7025).
    pub port: u16,
    pub alt_port: u16,
}

/// A loopback port free for both UDP and TCP.
pub fn free_udp_tcp_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
        let port = udp.local_addr().expect("address").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

impl Appliance {
    /// Starts `custos-snmpd` on this appliance's data directory. It reads
    /// the settings every 200 ms, so changes apply at once for the tests.
    pub fn start_snmpd(&self) -> Snmpd {
        let port = free_udp_tcp_port();
        let mut alt_port = free_udp_tcp_port();
        while alt_port == port {
            alt_port = free_udp_tcp_port();
        }
        let mut child = Command::new(bin("custos-snmpd"))
            .arg("--keyd-socket")
            .arg(self.keyd_socket())
            .args(["--local", "--host-name", "custos-test", "--poll-ms", "200"])
            .args([
                "--port",
                &port.to_string(),
                "--alt-port",
                &alt_port.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning custos-snmpd");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut ready = vec![];
        loop {
            let line = lines
                .next()
                .unwrap_or_else(|| {
                    panic!(
                        "custos-snmpd exited before it was ready: {:?}",
                        child.wait()
                    )
                })
                .expect("stdout line");
            if line.starts_with("snmp: ") {
                break;
            }
            ready.push(line);
        }
        for (name, p) in [("snmp", port), ("snmp-alt", alt_port)] {
            for proto in ["udp", "tcp"] {
                let want = format!("ready {name} {proto}://127.0.0.1:{p}");
                assert!(ready.contains(&want), "no '{want}' in {ready:?}");
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Snmpd {
            child: Some(child),
            port,
            alt_port,
        }
    }
}

impl Snmpd {
    /// SIGTERM and wait; the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok();
        None
    }
}

impl Drop for Snmpd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The folder of the appliance's MIB module (`CUSTOS-MIB.txt`).
pub fn mib_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("image/mkosi.extra/usr/share/snmp/mibs")
}

/// What a net-snmp tool printed.
#[derive(Debug)]
pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The answer, or a panic with what the tool said.
    pub fn ok(&self) -> &str {
        assert!(
            self.ok,
            "net-snmp failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Whether the tool gave up waiting for an answer.
    pub fn timed_out(&self) -> bool {
        !self.ok && self.stderr.contains("Timeout")
    }

    /// Whether no answer came: a timeout, or (TCP from outside the access
    /// list) the connection closed without one.
    pub fn unanswered(&self) -> bool {
        !self.ok
            && !self.stdout.contains(" = ")
            && (self.timed_out() || self.stderr.contains("Session abort failure"))
    }
}

/// Runs a net-snmp tool with `args` after the common ones: no MIBs but the
/// ones asked for, and for the tools that ask an agent one try of one
/// second (a refused request simply gets no answer).
pub fn net_snmp(tool: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(tool);
    if tool != "snmptranslate" {
        cmd.args(["-t", "1", "-r", "0"]);
    }
    let out = cmd.args(args).env("MIBS", "").output().unwrap_or_else(|e| {
        panic!("{tool} (Debian package snmp; cargo xtask test installs it): {e}")
    });
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `tool -v VERSION -c COMMUNITY -On TARGET OIDS…` where the target is
/// `udp:127.0.0.1:PORT` or `tcp:127.0.0.1:PORT`.
pub fn query(tool: &str, version: &str, community: &str, target: &str, oids: &[&str]) -> Output {
    let mut args = vec!["-v", version, "-c", community, "-On", target];
    args.extend_from_slice(oids);
    net_snmp(tool, &args)
}

/// The value net-snmp printed for `oid` (`.1.3… = TYPE: value`), with
/// a string's quotes removed; None when the OID is not in the output.
pub fn value_of(output: &str, oid: &str) -> Option<String> {
    let prefix = format!("{oid} = ");
    let start = output.find(&prefix)? + prefix.len();
    // A value runs to the next line that starts another binding.
    let rest = &output[start..];
    let end = rest.find("\n.").unwrap_or(rest.len());
    let v = rest[..end].trim_end_matches('\n');
    let v = v.split_once(": ").map_or(v, |(_, v)| v);
    Some(v.trim_matches('"').to_owned())
}
