//! The admin CLI (spec §3) driven through a real pseudo-terminal, as an
//! operator on SSH or the console would: first login, every category and
//! command, prefixes, usage messages, confirmations answered `no` and `yes`,
//! bad values, and input that must not crash it. Each test has its own data
//! directory and test root; the files the CLI writes under the root and the
//! commands it records in `ROOT/var/lib/custos-cli/actions.log` are what the
//! appliance would apply.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use rexpect::session::PtySession;
use tempfile::TempDir;

const DEFAULT_PW: &str = "cliadmin123";
const NEW_PW: &str = "Cl1admin!pw";
const TIMEOUT_MS: u64 = 60_000;

/// Removes terminal control sequences and carriage returns.
fn plain(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

struct Cli {
    data: TempDir,
    root: TempDir,
    pty: PtySession,
    counter: u32,
    transcript: String,
}

impl Cli {
    fn spawn(data: TempDir, root: TempDir) -> Cli {
        let mut cmd = Command::new(tests::bin("custos-cli"));
        cmd.arg("--data")
            .arg(data.path())
            .arg("--root")
            .arg(root.path())
            .env("TERM", "xterm")
            .env_remove("SSH_CONNECTION")
            .env_remove("SSH_CLIENT");
        let pty = rexpect::session::spawn_command(cmd, Some(TIMEOUT_MS))
            .expect("custos-cli starts on a pty");
        Cli {
            data,
            root,
            pty,
            counter: 0,
            transcript: String::new(),
        }
    }

    fn start() -> Cli {
        Cli::spawn(tests::data_dir(), tempdir())
    }

    /// A new session on the same data directory and root.
    fn again(self) -> Cli {
        let (data, root) = self.exit();
        Cli::spawn(data, root)
    }

    fn expect(&mut self, needle: &str) -> String {
        let before = self.pty.exp_string(needle).unwrap_or_else(|e| {
            panic!("waiting for {needle:?}: {e}\ntranscript:\n{}", self.tail())
        });
        let text = plain(&before);
        self.transcript.push_str(&text);
        self.transcript.push_str(needle);
        text
    }

    /// The end of the transcript, for failure messages.
    fn tail(&self) -> &str {
        let t = &self.transcript;
        let mut start = t.len().saturating_sub(3000);
        while !t.is_char_boundary(start) {
            start += 1;
        }
        &t[start..]
    }

    fn send(&mut self, line: &str) {
        self.pty.send_line(line).expect("send");
        self.pty.flush().expect("flush");
    }

    fn expect_prompt(&mut self) -> String {
        let re = format!(r"{:04}:[a-z]+\$ ", self.counter);
        let (before, prompt) = self.pty.exp_regex(&re).unwrap_or_else(|e| {
            panic!("waiting for prompt {re}: {e}\ntranscript:\n{}", self.tail())
        });
        let text = plain(&before);
        self.transcript.push_str(&text);
        self.transcript.push_str(&prompt);
        text
    }

    /// The first login of §2: agreement, forced change, then the menu.
    fn first_login(&mut self) {
        self.expect("CUSTOS APPLIANCE LICENCE AGREEMENT");
        self.expect("Type Y to accept the licence agreement: ");
        self.send("Y");
        self.expect("Current password: ");
        self.send(DEFAULT_PW);
        self.expect("New password: ");
        self.send(NEW_PW);
        self.expect("Retype new password: ");
        self.send(NEW_PW);
        self.expect("SUCCESS: the password of cliadmin was changed");
        self.expect_prompt();
    }

    fn logged_in() -> Cli {
        let mut c = Cli::start();
        c.first_login();
        c
    }

    /// Types a line and returns everything printed until the next prompt.
    fn run(&mut self, line: &str) -> String {
        self.send(line);
        if !line.trim().is_empty() {
            self.counter += 1;
        }
        self.expect_prompt()
    }

    /// Types a line that asks to continue, answers, and returns the output.
    fn confirm(&mut self, line: &str, answer: &str) -> String {
        self.send(line);
        self.counter += 1;
        let mut out = self.expect("Continue? (yes|no) [no]: ");
        self.send(answer);
        out.push_str(&self.expect_prompt());
        out
    }

    fn exit(mut self) -> (TempDir, TempDir) {
        self.send("exit");
        self.pty.exp_eof().expect("the CLI ends");
        let status = self.pty.process().wait().expect("exit status");
        assert!(exited_cleanly(&format!("{status:?}")), "{status:?}");
        (self.data, self.root)
    }

    fn file(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.root.path().join(rel)).ok()
    }

    fn actions(&self) -> Vec<String> {
        self.file("var/lib/custos-cli/actions.log")
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn db(&self) -> tests::StoreDb {
        tests::StoreDb::open(self.data.path())
    }

    fn audit(&self) -> Vec<(String, String, String, String)> {
        self.db()
            .rows(
                "SELECT who, source, via, what FROM audit ORDER BY id",
                tests::store_params![],
            )
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .collect::<Result<_, appliance::store::db::DbError>>()
            .expect("audit")
    }

    /// Every row of every table but the audit log.
    fn snapshot(&self) -> String {
        tests::store_snapshot(self.data.path())
    }

    /// Every file under the test root, with its contents.
    fn tree(&self) -> String {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                let meta = std::fs::symlink_metadata(&p).expect("metadata");
                if meta.is_dir() {
                    walk(&p, base, out);
                } else {
                    let rel = p
                        .strip_prefix(base)
                        .expect("under root")
                        .display()
                        .to_string();
                    let body = if meta.file_type().is_symlink() {
                        format!("-> {}", std::fs::read_link(&p).expect("link").display())
                    } else {
                        std::fs::read_to_string(&p).unwrap_or_else(|_| "(binary)".into())
                    };
                    out.push(format!("{rel}: {body}"));
                }
            }
        }
        let mut out = vec![];
        walk(self.root.path(), self.root.path(), &mut out);
        out.sort();
        out.join("\n")
    }
}

/// `WaitStatus::Exited(pid, 0)` (rexpect does not re-export the type).
fn exited_cleanly(status: &str) -> bool {
    status.starts_with("Exited(") && status.ends_with(", 0)")
}

fn tempdir() -> TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// The last line of a command's output: its SUCCESS or ERROR line.
fn last_line(out: &str) -> &str {
    out.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
}

#[test]
fn first_login_agreement_lockout_and_password_change() {
    // Declining the agreement ends the session.
    let mut c = Cli::start();
    c.expect("Type Y to accept the licence agreement: ");
    c.send("n");
    c.expect("ERROR: the licence agreement was not accepted; the session ends");
    c.pty.exp_eof().expect("ends");
    let Cli { data, root, .. } = c;

    // Wrong current passwords count towards the lock-out (5 by default).
    let mut c = Cli::spawn(data, root);
    c.expect("Type Y to accept the licence agreement: ");
    c.send("Y");
    for _ in 0..4 {
        c.expect("Current password: ");
        c.send("wrong-password");
        c.expect("ERROR: the password is wrong");
    }
    c.expect("Current password: ");
    c.send("wrong-password");
    c.expect("ERROR: the account is locked after repeated failed logins; try again later");
    c.pty.exp_eof().expect("ends");
    assert!(c.actions().is_empty(), "nothing applied: {:?}", c.actions());
    let audit = c.audit();
    assert!(
        audit
            .iter()
            .filter(|(who, _, via, what)| who == "cliadmin"
                && via == "cli"
                && what.starts_with("wrong password"))
            .count()
            == 5,
        "{audit:?}"
    );
    let Cli { data, root, .. } = c;

    // A locked account is refused at once, even before any prompt.
    let mut c = Cli::spawn(data, root);
    c.expect("ERROR: the account is locked");
    c.pty.exp_eof().expect("ends");

    // A fresh appliance: weak and mismatched new passwords are refused.
    let mut c = Cli::start();
    c.expect("Type Y to accept the licence agreement: ");
    c.send("Y");
    c.expect("Current password: ");
    c.send(DEFAULT_PW);
    c.expect("New password: ");
    c.send("weak");
    c.expect("ERROR: new password: must be at least 8 characters");
    c.expect("New password: ");
    c.send("cliadmin!Cliadmin1");
    c.expect("Retype new password: ");
    c.send("something-else");
    c.expect("ERROR: the passwords do not match");
    c.expect("New password: ");
    c.send(NEW_PW);
    c.expect("Retype new password: ");
    c.send(NEW_PW);
    c.expect("SUCCESS: the password of cliadmin was changed");
    let top = c.expect_prompt();
    assert!(c.transcript.ends_with("0000:custos$ "), "{top}");
    assert!(!c.transcript.contains(NEW_PW), "the password was echoed");
    assert!(
        !c.transcript.contains(DEFAULT_PW),
        "the password was echoed"
    );
    assert_eq!(c.actions(), ["chpasswd < (secret on standard input)"]);

    // The next session goes straight to the menu.
    let mut c = c.again();
    c.expect("Type ? for help.");
    c.expect_prompt();
    let audit = c.audit();
    for what in [
        "accepted the licence agreement",
        "changed the cliadmin password",
        "signed in to the admin CLI",
        "signed out of the admin CLI",
    ] {
        assert!(
            audit.iter().any(|(who, source, via, w)| who == "cliadmin"
                && source == "console"
                && via == "cli"
                && w == what),
            "no '{what}' in {audit:?}"
        );
    }
    c.exit();
}

#[test]
fn menu_navigation_prefixes_usage_and_help() {
    let mut c = Cli::logged_in();
    let help = c.run("?");
    for cat in ["network", "maintenance", "system", "ha", "exit | quit"] {
        assert!(help.contains(cat), "{help}");
    }
    // The backup commands live in `system` (§3).
    assert!(!help.contains("\n  backup"), "{help}");
    // A unique prefix enters a category; the counter counts every line.
    c.run("net");
    assert!(c.transcript.ends_with("0002:network$ "), "{}", c.transcript);
    let help = c.run("?");
    for cmd in [
        "ip dhcp release eth0 version 4",
        "ip address init ADDRESS/PREFIX dev eth0",
        "ip route add default table main.table dev eth0 via GATEWAY",
        "dns search DOMAIN",
        "ping IPADDRESS [ipv6]",
        "checkport IPADDRESS PORT timeout SECONDS",
        "up",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from:\n{help}");
    }
    let out = c.run("ping");
    assert!(out.contains("usage: ping IPADDRESS [ipv6]"), "{out}");
    assert!(out.contains("example: ping 10.1.1.1"), "{out}");
    assert_eq!(last_line(&out), "ERROR: missing IPADDRESS");
    let out = c.run("ip");
    assert!(out.contains("usage: ip address show"), "{out}");
    assert_eq!(
        last_line(&out),
        "ERROR: incomplete command 'ip'; type ? for the commands"
    );
    let out = c.run("ip r ?");
    assert!(
        out.contains("ip route show") && !out.contains("ip address"),
        "{out}"
    );
    let out = c.run("bogus");
    assert_eq!(
        last_line(&out),
        "ERROR: unknown command 'bogus' in network; type ? for the list"
    );
    let out = c.run("ip addr frobnicate");
    assert_eq!(
        last_line(&out),
        "ERROR: unknown command 'ip addr frobnicate' in network; type ? for the list"
    );
    let out = c.run("ip a s");
    assert!(out.contains("eth0 configuration: DHCP"), "{out}");
    assert_eq!(last_line(&out), "SUCCESS: ip address show");
    c.run("up");
    assert!(c.transcript.ends_with(":custos$ "), "{}", c.transcript);
    let out = c.run("up");
    assert_eq!(last_line(&out), "ERROR: already at the top menu");
    let out = c.run("x");
    assert_eq!(
        last_line(&out),
        "ERROR: unknown command 'x'; type ? for the list"
    );
    // A category and a command on one line run it without entering.
    let out = c.run("sys security suiteb show");
    assert!(out.contains("Current mode is: compatible"), "{out}");
    assert!(c.transcript.ends_with(":custos$ "), "{}", c.transcript);
    let out = c.run("sys sec s");
    assert!(
        out.contains("usage: security suiteb set suiteb|compatible"),
        "{out}"
    );
    assert!(out.contains("usage: security suiteb show"), "{out}");
    c.run("ma");
    assert!(c.transcript.ends_with(":maintenance$ "), "{}", c.transcript);
    let out = c.run("n");
    assert!(out.contains("usage: ntpdate show"), "{out}");
    let out = c.run("quitx");
    assert!(
        last_line(&out).starts_with("ERROR: unknown command"),
        "{out}"
    );
    c.exit();
}

#[test]
fn network_commands_write_networkd_and_resolved_files() {
    let mut c = Cli::logged_in();
    c.run("network");
    let before_store = c.snapshot();
    let before_files = c.tree();
    // Bad values: an ERROR naming the problem, nothing written.
    for (line, error) in [
        (
            "ip address init 300.1.1.1/16 dev eth0",
            "ERROR: address: '300.1.1.1' is not an IPv4 address",
        ),
        (
            "ip address init 10.1.1.5/33 dev eth0",
            "ERROR: prefix: '/33' must be a prefix length between 1 and 32",
        ),
        (
            "ip address init 10.1.1.5/24 dev eth1",
            "ERROR: dev: eth1 is the backup network and is never changed by the CLI; only eth0 can be configured",
        ),
        (
            "ip address init 10.1.1.0/24 dev eth0",
            "ERROR: address: 10.1.1.0 is the network or broadcast address of 10.1.1.0/24",
        ),
        (
            "ip dhcp release eth1 version 4",
            "ERROR: dev: eth1 is the backup network and is never changed by the CLI; only eth0 can be configured",
        ),
        (
            "ip route add default table main.table dev eth0 via 10.1.1",
            "ERROR: gateway: '10.1.1' is not an IPv4 address",
        ),
        (
            "dns dns1 not-an-address",
            "ERROR: dns1: 'not-an-address' is not an IP address",
        ),
        (
            "dns search bad_domain",
            "ERROR: search: must be a host name: dot-separated labels of 1-63 letters, digits or '-', not starting or ending with '-'",
        ),
    ] {
        let out = c.run(line);
        assert_eq!(last_line(&out), error, "{line}");
    }
    // Answered no: nothing changes.
    let out = c.confirm("ip address init 10.1.1.5/24 dev eth0", "no");
    assert!(
        out.contains("WARNING: Changing eth0's address can disconnect this session."),
        "{out}"
    );
    assert_eq!(last_line(&out), "ERROR: cancelled; nothing was changed");
    let out = c.confirm("ip dhcp release eth0 version 4", "");
    assert_eq!(last_line(&out), "ERROR: cancelled; nothing was changed");
    assert_eq!(c.snapshot(), before_store);
    assert_eq!(c.tree(), before_files);

    // DHCP off, then a static address and a gateway.
    let out = c.confirm("ip dhcp release eth0 version 4", "yes");
    assert_eq!(
        last_line(&out),
        "SUCCESS: DHCP is off on eth0. Restart the server software (system restart) to use the new address."
    );
    let out = c.confirm("ip address init 10.1.1.5/24 dev eth0", "yes");
    assert_eq!(
        last_line(&out),
        "SUCCESS: eth0's static address is 10.1.1.5/24"
    );
    let out = c.run("ip route add default table main.table dev eth0 via 10.2.0.1");
    assert_eq!(
        last_line(&out),
        "ERROR: gateway: 10.2.0.1 is not in eth0's network 10.1.1.0/24"
    );
    let out = c.confirm(
        "i r a default table main.table dev eth0 via 10.1.1.1",
        "YES",
    );
    assert_eq!(
        last_line(&out),
        "SUCCESS: the default gateway is 10.1.1.1 via eth0"
    );
    let unit = c
        .file("etc/systemd/network/10-custos-eth0.network")
        .expect("networkd unit");
    assert_eq!(
        unit,
        "# Written by custos-cli (the admin CLI, spec §3); changes made here are\n\
         # replaced by the next change made with the CLI.\n\
         # eth1, the backup network, is never configured here.\n\
         \n[Match]\nName=eth0\n\n[Network]\nDHCP=no\nAddress=10.1.1.5/24\nGateway=10.1.1.1\n"
    );
    let out = c.run("ip address show");
    assert!(
        out.contains("eth0 configuration: static 10.1.1.5/24"),
        "{out}"
    );
    let out = c.run("ip route show");
    assert!(out.contains("Default gateway: 10.1.1.1 via eth0"), "{out}");

    // DNS through systemd-resolved.
    assert_eq!(
        last_line(&c.run("dns dns1 10.1.1.53")),
        "SUCCESS: DNS server 1 is 10.1.1.53"
    );
    assert_eq!(
        last_line(&c.run("dns dns2 2001:db8::53")),
        "SUCCESS: DNS server 2 is 2001:db8::53"
    );
    assert_eq!(
        last_line(&c.run("dns dns2 10.1.1.53")),
        "ERROR: dns2: 10.1.1.53 is already the other DNS server"
    );
    assert_eq!(
        last_line(&c.run("dns search example.com")),
        "SUCCESS: the DNS search domain is example.com"
    );
    let out = c.run("dns show");
    assert!(out.contains("DNS server 1: 10.1.1.53"), "{out}");
    assert!(out.contains("DNS server 2: 2001:db8::53"), "{out}");
    assert!(out.contains("Search domain: example.com"), "{out}");
    let resolved = c
        .file("etc/systemd/resolved.conf.d/custos.conf")
        .expect("drop-in");
    assert!(
        resolved.ends_with("[Resolve]\nDNS=10.1.1.53 2001:db8::53\nDomains=example.com\n"),
        "{resolved}"
    );
    assert_eq!(
        c.actions(),
        [
            "chpasswd < (secret on standard input)",
            "networkctl reload",
            "networkctl reconfigure eth0",
            "networkctl reload",
            "networkctl reconfigure eth0",
            "networkctl reload",
            "networkctl reconfigure eth0",
            "systemctl restart systemd-resolved",
            "systemctl restart systemd-resolved",
            "systemctl restart systemd-resolved",
        ]
    );
    // eth1 is never configured.
    assert!(!c.tree().contains("Name=eth1"), "{}", c.tree());
    let audit = c.audit();
    for what in [
        "turned DHCP off on eth0",
        "set eth0's static address to 10.1.1.5/24 (DHCP off)",
        "set the default gateway to 10.1.1.1 via eth0",
        "set DNS server 1 to 10.1.1.53",
        "set the DNS search domain to example.com",
    ] {
        assert!(
            audit
                .iter()
                .any(|(who, _, via, w)| who == "cliadmin" && via == "cli" && w == what),
            "no '{what}' in {audit:?}"
        );
    }
    c.exit();
}

#[test]
fn ping_and_checkport_probe_for_real() {
    let mut c = Cli::logged_in();
    c.run("network");
    let out = c.run("ping 127.0.0.1");
    assert!(out.contains("icmp_seq=1"), "{out}");
    assert!(
        out.contains("4 packets transmitted, 4 received, 0% packet loss"),
        "{out}"
    );
    assert!(out.contains("ping SUCCESS"), "{out}");
    assert_eq!(
        last_line(&out),
        "SUCCESS: 127.0.0.1 answered 4 of 4 echo requests"
    );
    let out = c.run("ping 127.0.0.1 ipv6");
    assert_eq!(
        last_line(&out),
        "ERROR: host: 127.0.0.1 is an IPv4 address; leave out 'ipv6'"
    );
    let out = c.run("ping 300.1.1.1");
    assert_eq!(
        last_line(&out),
        "ERROR: host: '300.1.1.1' is not a valid IP address"
    );

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let open = listener.local_addr().expect("addr").port();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let out = c.run(&format!("checkport 127.0.0.1 {open} timeout 2"));
    assert!(
        last_line(&out).starts_with(&format!("SUCCESS: connected to 127.0.0.1 port {open} in ")),
        "{out}"
    );
    let out = c.run(&format!("check 127.0.0.1 {closed} timeout 2"));
    assert!(
        last_line(&out).starts_with(&format!("ERROR: 127.0.0.1:{closed}: Connection refused")),
        "{out}"
    );
    let out = c.run("checkport 127.0.0.1 70000 timeout 2");
    assert_eq!(
        last_line(&out),
        "ERROR: port: '70000' must be a number between 1 and 65535"
    );
    let out = c.run(&format!("checkport 127.0.0.1 {open}"));
    assert!(
        out.contains("usage: checkport IPADDRESS PORT timeout SECONDS"),
        "{out}"
    );
    assert!(
        out.contains("example: checkport 10.1.1.20 8443 timeout 5"),
        "{out}"
    );
    assert_eq!(last_line(&out), "ERROR: missing timeout");
    drop(listener);
    c.exit();
}

/// A tz database under the test root, so the test does not depend on the
/// machine's tzdata: Europe/Berlin copied from the machine when it has it.
fn install_zoneinfo(root: &Path) {
    let dir = root.join("usr/share/zoneinfo");
    std::fs::create_dir_all(dir.join("Europe")).expect("zoneinfo");
    let berlin = std::fs::read("/usr/share/zoneinfo/Europe/Berlin")
        .unwrap_or_else(|_| b"TZif2\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0".to_vec());
    std::fs::write(dir.join("Europe/Berlin"), &berlin).expect("zone");
    std::fs::write(dir.join("UTC"), &berlin).expect("zone");
    std::fs::write(
        dir.join("zone1970.tab"),
        "# tzdb timezone descriptions\nDE,DK,NO,SE,SJ\t+5230+01322\tEurope/Berlin\tmost of Germany\n",
    )
    .expect("table");
}

#[test]
fn maintenance_commands_ntp_time_zone_and_clock() {
    let mut c = Cli::start();
    install_zoneinfo(c.root.path());
    c.first_login();
    c.run("maintenance");
    let out = c.run("ntpdate show");
    assert!(out.contains("NTP: on"), "{out}");
    assert!(out.contains("NTP servers: none set"), "{out}");
    assert_eq!(
        last_line(&c.run("ntpdate add ntp1.example.com")),
        "SUCCESS: NTP server ntp1.example.com added"
    );
    assert_eq!(
        last_line(&c.run("ntp a 10.1.1.2")),
        "SUCCESS: NTP server 10.1.1.2 added"
    );
    assert_eq!(
        last_line(&c.run("ntpdate add 300.1.1.1")),
        "ERROR: server: '300.1.1.1' is not a valid IP address"
    );
    assert_eq!(
        last_line(&c.run("ntpdate add ntp1.example.com")),
        "ERROR: server: ntp1.example.com is already an NTP server"
    );
    assert_eq!(
        last_line(&c.run("ntpdate delete nope.example.com")),
        "ERROR: NTP server 'nope.example.com' does not exist"
    );
    let out = c.run("ntpdate show");
    assert!(
        out.contains("NTP servers: ntp1.example.com, 10.1.1.2"),
        "{out}"
    );
    let timesyncd = c
        .file("etc/systemd/timesyncd.conf.d/custos.conf")
        .expect("drop-in");
    assert!(
        timesyncd.ends_with("[Time]\nNTP=ntp1.example.com 10.1.1.2\n"),
        "{timesyncd}"
    );
    let out = c.run("ntpdate sync");
    assert!(
        last_line(&out).starts_with("SUCCESS: NTP synchronisation requested"),
        "{out}"
    );
    assert_eq!(
        last_line(&c.run("time 12:00:00")),
        "ERROR: NTP sets the clock; turn NTP off first (ntpdate off)"
    );
    assert_eq!(last_line(&c.run("ntpdate off")), "SUCCESS: NTP is off");
    assert_eq!(
        last_line(&c.run("ntpdate sync")),
        "ERROR: NTP is off; turn it on first (ntpdate on)"
    );
    assert_eq!(
        last_line(&c.run("ntpdate delete 10.1.1.2")),
        "SUCCESS: NTP server 10.1.1.2 removed"
    );
    assert_eq!(
        last_line(&c.run("date 12/31/2026")),
        "SUCCESS: date set to 12/31/2026"
    );
    assert_eq!(
        last_line(&c.run("time 23:59:58")),
        "SUCCESS: time set to 23:59:58"
    );
    assert_eq!(
        last_line(&c.run("date 02/30/2026")),
        "ERROR: date: '02/30/2026' is not a date as MM/DD/YYYY"
    );
    assert_eq!(
        last_line(&c.run("time 24:00:00")),
        "ERROR: time: '24:00:00' is not a time as HH:MM:SS (24-hour)"
    );
    let out = c.run("date");
    assert!(out.contains("Date: "), "{out}");
    assert_eq!(last_line(&out), "SUCCESS: date");

    // Time zones come from the tz database.
    assert_eq!(
        last_line(&c.run("gmttimezone set Mars/Olympus_Mons")),
        "ERROR: time_zone: 'Mars/Olympus_Mons' is not in the time zone database (see gmttimezone list)"
    );
    assert_eq!(
        last_line(&c.run("gmttimezone set ../../etc/passwd")),
        "ERROR: time_zone: '../../etc/passwd' is not a time zone name (Area/City, e.g. Europe/Berlin)"
    );
    assert!(std::fs::symlink_metadata(c.root.path().join("etc/localtime")).is_err());
    let out = c.run("gmttimezone set Europe/Berlin");
    assert_eq!(
        last_line(&out),
        "SUCCESS: the time zone is Europe/Berlin. Restart the server software (system restart) to apply it to the services."
    );
    assert_eq!(
        std::fs::read_link(c.root.path().join("etc/localtime")).expect("link"),
        Path::new("../usr/share/zoneinfo/Europe/Berlin")
    );
    let out = c.run("gmt show");
    assert!(out.contains("Time zone: Europe/Berlin"), "{out}");
    let out = c.run("gmttimezone list eu");
    assert!(
        out.contains("Europe/Berlin") && !out.contains("UTC"),
        "{out}"
    );
    assert_eq!(last_line(&out), "SUCCESS: 1 time zones");

    let actions = c.actions();
    let expected_prefix = [
        "chpasswd < (secret on standard input)",
        "systemctl restart systemd-timesyncd",
        "systemctl restart systemd-timesyncd",
        "systemctl restart systemd-timesyncd",
        "timedatectl set-ntp false",
    ];
    assert_eq!(actions[..5], expected_prefix, "{actions:?}");
    assert!(
        actions[5].starts_with("timedatectl set-time '2026-12-31 "),
        "{actions:?}"
    );
    assert!(
        actions[6].starts_with("timedatectl set-time '") && actions[6].ends_with(" 23:59:58'"),
        "{actions:?}"
    );
    assert_eq!(actions[7], "timedatectl set-timezone Europe/Berlin");
    assert_eq!(actions.len(), 8, "{actions:?}");
    c.exit();
}

/// `ha show` (§3): the role, the peers and the last synchronisation, as
/// the group's table says them.
#[test]
fn ha_show_prints_the_role_and_the_peers() {
    let mut c = Cli::logged_in();
    c.run("ha");
    let out = c.run("show");
    assert!(
        out.contains("Role: Standalone: no failover configured"),
        "{out}"
    );
    assert!(out.contains("Peers: none"), "{out}");
    assert_eq!(last_line(&out), "SUCCESS: ha show");
    // A failover added on the primary (as High Availability → Add does).
    tests::StoreDb::open(c.data.path())
        .execute(
            "INSERT INTO ha_nodes(name, role, added_at, added_by) VALUES
             ('custos-a.example.com', 'primary', '2026-12-05T10:00:00Z', 'admin'),
             ('custos-b.example.com', 'failover', '2026-12-05T10:00:00Z', 'admin')",
            tests::store_params![],
        )
        .expect("the group");
    let out = c.run("show");
    assert!(
        out.contains("Role: Primary; failovers: custos-b.example.com"),
        "{out}"
    );
    assert!(
        out.contains("  custos-b.example.com (failover): registered no, configured no"),
        "{out}"
    );
    c.exit();
}

#[test]
fn system_commands_host_name_restart_security_mode_and_ca() {
    let mut c = Cli::logged_in();
    c.run("system");
    let out = c.run("setinfo show");
    assert!(out.contains("Version: Custos 0.1.0"), "{out}");
    assert!(out.contains("Kernel: Linux"), "{out}");
    assert!(out.contains("Security mode: compatible"), "{out}");
    let before = c.snapshot();
    for (line, error) in [
        (
            "setinfo hostname my host.example.com".to_string(),
            "ERROR: unexpected 'host.example.com' (a value cannot contain spaces)",
        ),
        (
            format!("setinfo hostname {}.example.com", "a".repeat(53)),
            "ERROR: host_name: must be at most 64 characters",
        ),
        (
            "setinfo hostname custos".to_string(),
            "ERROR: host_name: must be a fully qualified domain name (host.domain)",
        ),
        (
            "setinfo hostname custos\"x.example.com".to_string(),
            "ERROR: host_name: must be a host name: dot-separated labels of 1-63 letters, digits or '-', not starting or ending with '-'",
        ),
    ] {
        let out = c.run(&line);
        assert_eq!(last_line(&out), error, "{line}");
    }
    assert_eq!(c.snapshot(), before);
    assert!(c.file("etc/hostname").is_none());
    let name = format!("Custos-{}.Example.com", "b".repeat(45));
    assert_eq!(name.len(), 64);
    assert_eq!(
        last_line(&c.run(&format!("setinfo hostname {name}"))),
        format!("SUCCESS: the host name is {name}")
    );
    assert_eq!(
        c.file("etc/hostname").as_deref(),
        Some(format!("{name}\n").as_str())
    );
    let out = c.run("setinfo show");
    assert!(out.contains(&format!("Host name: {name}")), "{out}");

    // Restart: no, then yes.
    let out = c.confirm("restart", "no");
    assert_eq!(last_line(&out), "ERROR: cancelled; nothing was changed");
    let out = c.confirm("restart", "yes");
    assert_eq!(
        last_line(&out),
        "SUCCESS: the server software was restarted"
    );

    // Security mode.
    let out = c.confirm("security suiteb set suiteb", "no");
    assert_eq!(last_line(&out), "ERROR: cancelled; nothing was changed");
    let out = c.run("security suiteb show");
    assert!(out.contains("Current mode is: compatible"), "{out}");
    let out = c.run("security suiteb set fips");
    assert!(
        out.contains("usage: security suiteb set suiteb|compatible"),
        "{out}"
    );
    assert_eq!(
        last_line(&out),
        "ERROR: expected suiteb or compatible instead of 'fips'"
    );
    let out = c.confirm("sec sui set suiteb", "yes");
    assert_eq!(
        last_line(&out),
        "SUCCESS: the security mode is suiteb; the server software was restarted"
    );
    let out = c.run("security suiteb show");
    assert!(out.contains("Current mode is: suiteb"), "{out}");
    let stored: String = c
        .db()
        .query_row(
            "SELECT value FROM preferences WHERE name = 'security_mode'",
            tests::store_params![],
            |r| r.get(0),
        )
        .expect("stored mode");
    assert_eq!(stored, "suite_b");

    // security genca: a bad field aborts with nothing changed.
    let identities = |c: &Cli| -> Vec<String> {
        c.db()
            .rows(
                "SELECT name || ' ' || cert_pem FROM system_identities ORDER BY name",
                tests::store_params![],
            )
            .iter()
            .map(|r| r.get(0))
            .collect::<Result<_, _>>()
            .expect("identities")
    };
    let before = identities(&c);
    c.send("security genca");
    c.counter += 1;
    c.expect("Continue? (yes|no) [no]: ");
    c.send("yes");
    c.expect(&format!("Host name [{name}]: "));
    c.send("");
    c.expect("Organizational unit [Key Management]: ");
    c.send("Recording, Operations");
    c.expect("Organization [Custos]: ");
    c.send(&"o".repeat(33));
    let out = c.expect_prompt();
    assert_eq!(
        last_line(&out),
        "ERROR: organization: must be at most 32 characters"
    );
    assert_eq!(identities(&c), before);

    c.send("security genca");
    c.counter += 1;
    c.expect("Continue? (yes|no) [no]: ");
    c.send("yes");
    c.expect("Host name [");
    c.send("custos.example.com");
    c.expect("Organizational unit [Key Management]: ");
    c.send("Recording, Operations");
    c.expect("Organization [Custos]: ");
    c.send("Example");
    c.expect("City: ");
    c.send("Zürich");
    c.expect("State: ");
    c.send("ZH");
    c.expect("Country code [US]: ");
    c.send("ch");
    let out = c.expect_prompt();
    assert!(
        out.contains("0 registered hosts must register again."),
        "{out}"
    );
    assert!(
        last_line(&out)
            .starts_with("SUCCESS: the certificate authority was regenerated (RSA fingerprint "),
        "{out}"
    );
    // `setinfo show` prints the new CA fingerprints, for
    // `custos-agent register --ca-fingerprint`, as the dashboard labels them.
    let success = last_line(&out).to_owned();
    let between = |from: &str, to: char| {
        success
            .split(from)
            .nth(1)
            .and_then(|rest| rest.split(to).next())
            .expect("a fingerprint")
            .to_owned()
    };
    let (rsa, ec) = (
        between("RSA fingerprint ", ','),
        between("EC fingerprint ", ')'),
    );
    let show = c.run("setinfo show");
    assert!(
        show.contains(&format!("RSA CA Fingerprint (SHA-256): {rsa}")),
        "{show}"
    );
    assert!(
        show.contains(&format!("EC CA Fingerprint (SHA-256): {ec}")),
        "{show}"
    );
    let after = identities(&c);
    assert_eq!(after.len(), 4);
    assert!(
        after.iter().all(|a| !before.contains(a)),
        "every identity replaced"
    );
    assert_eq!(
        c.actions()[1..],
        [
            format!("hostnamectl set-hostname {name}"),
            "systemctl restart custos-keyd custos-backupd".to_string(),
            "systemctl restart custos-keyd custos-backupd".to_string(),
            "systemctl restart custos-keyd custos-backupd".to_string(),
        ]
    );
    let audit = c.audit();
    for what in [
        &format!("set the host name to {name}"),
        "restarted the server software",
        "changed preferences: security mode suite_b (applies when the key service restarts)",
    ] {
        assert!(
            audit
                .iter()
                .any(|(who, _, via, w)| who == "cliadmin" && via == "cli" && w == what),
            "no '{what}' in {audit:?}"
        );
    }
    assert!(
        audit.iter().any(|(who, _, _, w)| who == "cliadmin"
            && w.starts_with("regenerated the certificate authorities")),
        "{audit:?}"
    );
    c.exit();
}

#[test]
fn system_backup_commands_configure_the_automatic_backup() {
    let mut c = Cli::logged_in();
    c.run("system");
    let help = c.run("?");
    for cmd in [
        "backup show",
        "backup schedule daily HH:MM",
        "backup schedule weekly DAY HH:MM",
        "backup target HOST DIRECTORY USER [PORT]",
        "backup pubkey",
        "backup hostkey forget",
        "backup now",
        "backup history",
        "backup remove",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from:\n{help}");
    }
    let out = c.run("backup show");
    assert!(out.contains("Schedule: not set"), "{out}");
    assert!(out.contains("SCP target: not set"), "{out}");
    assert!(out.contains("Last push: none yet"), "{out}");
    assert_eq!(last_line(&out), "SUCCESS: backup show");

    // Usage, and refusals that name the field and change nothing.
    let before = c.snapshot();
    let out = c.run("backup");
    assert!(
        out.contains("usage: backup schedule weekly DAY HH:MM"),
        "{out}"
    );
    let out = c.run("backup schedule daily");
    assert!(out.contains("usage: backup schedule daily HH:MM"), "{out}");
    assert!(
        out.contains("example: backup schedule daily 02:30"),
        "{out}"
    );
    assert_eq!(last_line(&out), "ERROR: missing HH:MM");
    for (line, error) in [
        (
            "backup schedule daily 25:00",
            "ERROR: time: '25:00' is not a 24-hour time HH:MM (00:00 to 23:59, e.g. 02:30 or 14:30)",
        ),
        (
            "backup schedule daily 2:30pm",
            "ERROR: time: '2:30pm' is not a 24-hour time HH:MM (00:00 to 23:59, e.g. 02:30 or 14:30)",
        ),
        (
            "backup schedule weekly lundi 02:00",
            "ERROR: weekday: 'lundi' is not a day of the week (monday, tuesday, wednesday, thursday, friday, saturday or sunday)",
        ),
        (
            "backup target backup.example.com backups custos",
            "ERROR: target_directory: must be an absolute path starting with / (e.g. /srv/backups/custos)",
        ),
        (
            "backup target backup.example.com /srv/b'x custos",
            "ERROR: target_directory: must not contain ' (quotes, backslashes, backticks and $ are refused)",
        ),
        (
            "backup target bad_host /srv/b custos",
            "ERROR: target_host: 'bad_host' is neither an IP address nor a host name",
        ),
        (
            "backup target 10.1.1.20 /srv/b -custos",
            "ERROR: target_user: must start with a letter, a digit or '_'",
        ),
        (
            "backup target 10.1.1.20 /srv/b custos 70000",
            "ERROR: target_port: must be a port number from 1 to 65535",
        ),
        (
            "backup now",
            "ERROR: target: set the SCP target (host, directory, user) before Backup Now",
        ),
        (
            "backup hostkey forget",
            "ERROR: forget_host_key: no host key is pinned yet; it is learned on the first push",
        ),
    ] {
        let out = c.run(line);
        assert_eq!(last_line(&out), error, "{line}");
    }
    assert_eq!(c.snapshot(), before);

    // The schedule is stored as 24-hour UTC and an English day name.
    let out = c.run("backup sc weekly Sunday 14:30");
    assert_eq!(
        last_line(&out),
        "SUCCESS: backups run weekly on Sunday at 14:30 UTC (2:30 PM); set the SCP target with 'backup target' too"
    );
    let stored = |c: &Cli| -> (Option<String>, Option<String>, Option<String>) {
        c.db()
            .query_row(
                "SELECT frequency, time_utc, weekday FROM backup_automatic",
                tests::store_params![],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("settings")
    };
    assert_eq!(
        stored(&c),
        (
            Some("weekly".into()),
            Some("14:30".into()),
            Some("sunday".into())
        )
    );
    let out = c.run("backup target 10.1.1.20 /srv/backups/ custos-bk 2222");
    assert_eq!(
        last_line(&out),
        "SUCCESS: backups go to custos-bk@10.1.1.20:/srv/backups (port 2222); its host key is learned and pinned on the first push. Add the key of 'backup pubkey' to ~custos-bk/.ssh/authorized_keys there"
    );
    let out = c.run("backup schedule daily 2:05");
    assert_eq!(
        last_line(&out),
        "SUCCESS: backups run daily at 02:05 UTC (2:05 AM)"
    );
    assert_eq!(
        stored(&c),
        (Some("daily".into()), Some("02:05".into()), None)
    );
    let out = c.run("backup pubkey");
    let key = out
        .lines()
        .find(|l| l.starts_with("ecdsa-sha2-nistp256 AAAA"))
        .unwrap_or_else(|| panic!("no public key in:\n{out}"));
    assert!(
        key.split(' ')
            .nth(2)
            .is_some_and(|c| c.starts_with("custos@")),
        "{key}"
    );
    assert!(!out.contains("PRIVATE"), "{out}");
    assert_eq!(
        last_line(&out),
        "SUCCESS: backup pubkey: add this line to the target user's ~/.ssh/authorized_keys"
    );
    let out = c.run("backup now");
    assert!(
        last_line(&out).starts_with(
            "SUCCESS: a backup to custos-bk@10.1.1.20:/srv/backups (port 2222) was requested"
        ),
        "{out}"
    );
    let out = c.run("backup show");
    for line in [
        "Schedule: daily at 02:05 UTC (2:05 AM)",
        "SCP target: custos-bk@10.1.1.20:/srv/backups (port 2222)",
        "Target host key: not pinned yet (learned on the first push)",
        "Backup Now: requested, waiting for custos-backupd",
    ] {
        assert!(out.contains(line), "{line} missing from:\n{out}");
    }
    assert!(
        out.contains("Next backup: 20") && out.contains("T02:05:00Z"),
        "{out}"
    );
    let out = c.run("backup history");
    assert!(out.contains("No backup was pushed yet."), "{out}");
    assert_eq!(last_line(&out), "SUCCESS: backup history: 0 entries");

    // A pinned key (as custos-backupd pins it) is forgotten only on "yes".
    tests::StoreDb::open(c.data.path())
        .execute(
            "UPDATE backup_automatic SET host_key_fingerprint = 'SHA256:pinned-by-test'",
            tests::store_params![],
        )
        .expect("pin");
    let out = c.confirm("backup hostkey forget", "no");
    assert!(out.contains("SHA256:pinned-by-test"), "{out}");
    assert_eq!(last_line(&out), "ERROR: cancelled; nothing was changed");
    let out = c.confirm("backup hostkey forget", "yes");
    assert_eq!(
        last_line(&out),
        "SUCCESS: the host key SHA256:pinned-by-test is forgotten; the next push learns and pins the target's key"
    );

    // Remove Schedule and Settings asks first.
    let out = c.confirm("backup remove", "no");
    assert_eq!(last_line(&out), "ERROR: cancelled; nothing was changed");
    let out = c.confirm("backup remove", "yes");
    assert_eq!(
        last_line(&out),
        "SUCCESS: the automatic backup schedule and settings were removed"
    );
    let out = c.run("backup show");
    assert!(
        out.contains("Schedule: not set") && out.contains("SCP target: not set"),
        "{out}"
    );
    assert_eq!(stored(&c), (None, None, None));
    let audit = c.audit();
    for what in [
        "changed the automatic backup: schedule weekly on Sunday at 14:30 UTC (2:30 PM)",
        "changed the automatic backup: SCP target custos-bk@10.1.1.20:/srv/backups (port 2222)",
        "changed the automatic backup: schedule daily at 02:05 UTC (2:05 AM)",
        "requested Backup Now to custos-bk@10.1.1.20:/srv/backups (port 2222)",
        "changed the automatic backup: forgot the pinned host key SHA256:pinned-by-test; the next push learns the target's key again",
        "removed the automatic backup schedule and settings",
    ] {
        assert!(
            audit
                .iter()
                .any(|(who, _, via, w)| who == "cliadmin" && via == "cli" && w == what),
            "no '{what}' in {audit:?}"
        );
    }
    c.exit();
}

#[test]
fn hostile_input_does_not_crash_it() {
    let mut c = Cli::logged_in();
    // Ctrl-C at the prompt: a new prompt, the counter unchanged.
    c.pty.send_control('c').expect("ctrl-c");
    c.expect_prompt();
    // A very long line is refused whole.
    let out = c.run(&"x".repeat(1100));
    assert_eq!(
        last_line(&out),
        "ERROR: the line is too long (at most 1024 characters)"
    );
    // Bytes that are not UTF-8.
    {
        let mut raw = c.pty.process().get_file_handle().expect("pty");
        raw.write_all(b"net\xff\xfe\r").expect("write");
    }
    c.counter += 1;
    let out = c.expect_prompt();
    assert!(
        out.contains("ERROR: the input is not valid UTF-8 text"),
        "{out}"
    );
    let out = c.run("network ping");
    assert_eq!(last_line(&out), "ERROR: missing IPADDRESS");
    // Ctrl-C at a confirmation is a no.
    c.send("system restart");
    c.counter += 1;
    c.expect("Continue? (yes|no) [no]: ");
    c.pty.send_control('c').expect("ctrl-c");
    let out = c.expect_prompt();
    assert_eq!(last_line(&out), "ERROR: cancelled; nothing was changed");
    // Ctrl-D ends the session cleanly.
    c.pty.send_control('d').expect("ctrl-d");
    c.pty.exp_eof().expect("ends");
    let status = c.pty.process().wait().expect("status");
    assert!(exited_cleanly(&format!("{status:?}")), "{status:?}");
    assert_eq!(c.actions(), ["chpasswd < (secret on standard input)"]);
}

#[test]
fn without_a_terminal_it_reads_plain_lines_and_survives_a_closed_output() {
    let data = tests::data_dir();
    let root = tempdir();
    let run = |input: &[u8], close_stdout: bool| {
        let mut child = Command::new(tests::bin("custos-cli"))
            .arg("--data")
            .arg(data.path())
            .arg("--root")
            .arg(root.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        if close_stdout {
            drop(child.stdout.take());
        }
        let _ = stdin.write_all(input);
        drop(stdin);
        let out = child.wait_with_output().expect("wait");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let login = format!("Y\n{DEFAULT_PW}\n{NEW_PW}\n{NEW_PW}\n");
    let mut input = format!("{login}net\nip address show\n").into_bytes();
    input.extend_from_slice(b"\xff bad\nup\nsystem security suiteb show\n");
    let (status, out, err) = run(&input, false);
    assert!(status.success(), "{status:?} {err}");
    assert!(
        out.contains("0000:custos$ 0001:network$ eth0 configuration: DHCP"),
        "{out}"
    );
    assert!(
        out.contains("ERROR: the input is not valid UTF-8 text"),
        "{out}"
    );
    assert!(out.contains("Current mode is: compatible"), "{out}");
    assert!(
        !out.contains(NEW_PW) && !err.contains("panicked"),
        "{out}{err}"
    );
    // Nobody reads the output: the CLI ends without a panic.
    let (_, _, err) = run(b"network ip address show\n?\n?\n", true);
    assert!(!err.contains("panicked"), "{err}");
    // A command line is refused: the CLI is interactive.
    let out = Command::new(tests::bin("custos-cli"))
        .args(["-c", "network ip address show"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("interactive"));
}

/// Issue 12: when so many shares are lost that no quorum can be pasted, the
/// admin CLI (a credential of its own) discards the wrapper key after its
/// id is typed; ERROR in the log; a new key is then created and exported
/// without a quorum.
#[test]
fn a_wrapper_key_without_a_quorum_is_discarded_from_the_cli() {
    use serde_json::json;
    let mut app = tests::Appliance::start();
    let admin = app
        .api()
        .login_changing("admin", "admin123", tests::ADMIN_PW);
    tests::install_licence(&admin, &tests::generous_licence()).ok();
    for login in ["KeeperOne", "KeeperTwo"] {
        admin
            .post(
                "/api/v1/administrators",
                json!({"login": login, "password": "Tmp!Cust0dy", "confirm_password": "Tmp!Cust0dy", "user_type": "system"}),
            )
            .expect(201);
    }
    admin.post("/api/v1/wrapper-key", json!({})).expect(201);
    let v = admin
        .post(
            "/api/v1/wrapper-key/export",
            json!({"minimum_custodians": 2, "total_custodians": 2, "custodians": ["KeeperOne", "KeeperTwo"]}),
        )
        .ok();
    let key_id = v["key_id"].as_str().expect("key id").to_owned();
    // KeeperTwo's share is withdrawn by a password reset: one share is left,
    // so no quorum can be pasted.
    admin
        .call(
            "PATCH",
            "/api/v1/administrators/KeeperTwo",
            Some(json!({"password": "Reset!K33per"})),
        )
        .ok();
    let e = admin
        .post("/api/v1/wrapper-key", json!({"replace": true}))
        .expect(400);
    assert_eq!(e["field"], "shares", "{e}");

    let data = std::mem::replace(&mut app.data, tempdir());
    let mut c = Cli::spawn(data, tempdir());
    c.first_login();
    c.run("system");
    let out = c.run("backup wrapperkey show");
    assert!(out.contains(&format!("Wrapper key: {key_id}")), "{out}");
    assert!(out.contains("Exported: 2 of 2"), "{out}");
    // Answering no, or typing another id, changes nothing.
    let before = c.snapshot();
    let out = c.confirm("backup wrapperkey discard", "no");
    assert!(
        out.contains(&format!("Wrapper key {key_id} and every share")),
        "{out}"
    );
    c.send("backup wrapperkey discard");
    c.counter += 1;
    c.expect("Continue? (yes|no) [no]: ");
    c.send("yes");
    c.expect("Type the wrapper key's id to discard it: ");
    c.send("0123456789abcdef");
    let out = c.expect_prompt();
    assert!(
        out.contains("ERROR: key_id: type the id of the current wrapper key"),
        "{out}"
    );
    assert_eq!(c.snapshot(), before);
    c.send("backup wrapperkey discard");
    c.counter += 1;
    c.expect("Continue? (yes|no) [no]: ");
    c.send("yes");
    c.expect("Type the wrapper key's id to discard it: ");
    c.send(&key_id);
    let out = c.expect_prompt();
    assert!(
        out.contains(&format!("SUCCESS: wrapper key {key_id} was discarded")),
        "{out}"
    );
    let entry = c
        .audit()
        .into_iter()
        .find(|(_, _, _, what)| what.starts_with(&format!("discarded wrapper key {key_id}")))
        .expect("audited");
    assert_eq!(entry.0, "cliadmin");
    let severity: String = c
        .db()
        .query_row(
            "SELECT severity FROM audit WHERE what LIKE 'discarded wrapper key%'",
            tests::store_params![],
            |r| r.get(0),
        )
        .expect("severity");
    assert_eq!(severity, "ERROR");

    // A new key is created and exported without a quorum.
    admin.post("/api/v1/wrapper-key", json!({})).expect(201);
    admin
        .post(
            "/api/v1/wrapper-key/export",
            json!({"minimum_custodians": 2, "total_custodians": 2, "custodians": ["KeeperOne", "KeeperTwo"]}),
        )
        .ok();
}

/// Issue 12: whoever guesses the web administrator's password from the
/// network can keep `admin` locked; the operator at the console unlocks it.
#[test]
fn unlock_admin_ends_the_web_administrators_lock_out() {
    let mut c = Cli::logged_in();
    // The lock-out that failed web sign-ins leave (as the store writes it).
    {
        let db = tests::StoreDb::open(c.data.path());
        db.execute(
            "UPDATE administrators SET locked_until = '2999-01-01T00:00:00Z', failed_logins = 0 WHERE login = 'admin'",
            tests::store_params![],
        )
        .expect("lock admin");
    }
    c.run("maintenance");
    // Answering anything but yes changes nothing.
    let out = c.confirm("unlock admin", "no");
    assert!(
        out.contains("WARNING: The lock-out of the web administrator admin ends"),
        "{out}"
    );
    let locked = |c: &Cli| -> Option<String> {
        c.db()
            .query_row(
                "SELECT locked_until FROM administrators WHERE login = 'admin'",
                tests::store_params![],
                |r| r.get(0),
            )
            .expect("admin")
    };
    assert!(locked(&c).is_some(), "cancelled: still locked");
    let out = c.confirm("unl adm", "yes");
    assert_eq!(
        last_line(&out),
        "SUCCESS: the web administrator admin is unlocked"
    );
    assert_eq!(locked(&c), None);
    let audit = c.audit();
    assert!(
        audit.iter().any(|(who, _, via, what)| who == "cliadmin"
            && via == "cli"
            && what == "unlocked the web administrator admin"),
        "{audit:?}"
    );
    let out = c.confirm("unlock admin", "yes");
    assert_eq!(
        last_line(&out),
        "SUCCESS: the web administrator admin was not locked; its failed sign-ins are cleared"
    );
    c.exit();
}
