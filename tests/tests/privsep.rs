//! Privilege separation (issue 12, item 10): `custos-snmpd`,
//! `custos-notifyd` and `custos-backupd` reach the store only through
//! custos-keyd's local socket, which gives each role only its operations
//! and each uid only its role. The protocol is spoken here by hand, as any
//! other local client would: newline-delimited JSON.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::snmp::*;
use tests::*;

const COMMUNITY: &str = "N0t-Public!";
const SYS_CONTACT: &str = ".1.3.6.1.2.1.1.4.0";

/// One connection to the local socket.
struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    fn open(path: &Path) -> Conn {
        let s = UnixStream::connect(path).expect("connecting to the local socket");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Conn {
            reader: BufReader::new(s.try_clone().expect("clone")),
            writer: s,
        }
    }

    /// A connection that said hello as `role`; the answer to the hello.
    fn hello(path: &Path, role: &str) -> (Conn, Option<Value>) {
        let mut c = Conn::open(path);
        let answer = c.ask(&json!({ "hello": role }));
        (c, answer)
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        // keyd may close first; what it answered is what counts.
        let _ = self.writer.write_all(bytes);
    }

    /// The next line, or `None` when keyd closed the connection.
    fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).expect("a JSON line")),
        }
    }

    fn ask(&mut self, v: &Value) -> Option<Value> {
        let mut line = serde_json::to_vec(v).expect("json");
        line.push(b'\n');
        self.send_raw(&line);
        self.recv()
    }
}

fn refused(answer: &Option<Value>) -> bool {
    answer
        .as_ref()
        .is_some_and(|a| a["error"]["kind"] == "refused")
}

fn audit(api: &Api, query: &str) -> Vec<Value> {
    api.get(&format!("/api/v1/audit?{query}&limit=1000"))
        .ok()
        .get("entries")
        .and_then(Value::as_array)
        .expect("entries")
        .clone()
}

fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting until {what}");
}

fn db(app: &Appliance) -> tests::StoreDb {
    tests::StoreDb::open(app.data_dir())
}

/// An ERROR entry as any part of the appliance would write it.
fn error_entry(app: &Appliance, what: &str) {
    let db = db(app);
    db.execute(
        &format!(
            "INSERT INTO audit(at, who, source, via, severity, domain_id, what)
             VALUES ({}, 'test', 'appliance', 'test', 'ERROR', NULL, ?1)",
            db.now_sql()
        ),
        [what],
    )
    .expect("audit entry");
}

fn outbox_rows(app: &Appliance) -> i64 {
    db(app)
        .query_row(
            "SELECT COUNT(*) FROM email_outbox",
            tests::store_params![],
            |r| r.get(0),
        )
        .expect("outbox")
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn sys_contact(port: u16) -> Option<String> {
    let out = query(
        "snmpget",
        "2c",
        COMMUNITY,
        &format!("udp:127.0.0.1:{port}"),
        &[SYS_CONTACT],
    );
    if !out.ok {
        return None;
    }
    value_of(&out.stdout, SYS_CONTACT)
}

#[test]
fn a_role_gets_only_its_operations_and_refusals_are_aggregated() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    s.sys
        .call(
            "PUT",
            "/api/v1/snmp",
            Some(json!({"enabled": true, "community": COMMUNITY})),
        )
        .ok();
    let sock = app.keyd_socket();
    let mode = std::fs::metadata(&sock)
        .expect("the socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o666, "authorisation is by uid, not by mode");

    // Its own operations work; the community itself never crosses.
    let (mut c, hello) = Conn::hello(&sock, "snmp");
    assert_eq!(hello, Some(json!({"ok": null})));
    let config = c.ask(&json!({"op": "snmp_config"})).expect("an answer");
    assert_eq!(config["ok"]["enabled"], true, "{config}");
    assert!(
        !config.to_string().contains(COMMUNITY),
        "the community string stays in keyd: {config}"
    );
    assert!(config["ok"]["community"]["digest"].is_string(), "{config}");

    // Another role's operation: refused and the connection closed.
    let smtp = c.ask(&json!({"op": "smtp_config"}));
    assert!(refused(&smtp), "{smtp:?}");
    assert!(
        smtp.as_ref().is_some_and(|v| v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("snmp role may not ask for smtp_config"))),
        "{smtp:?}"
    );
    assert_eq!(c.recv(), None, "keyd closes the connection");

    // The same refusal over and over: one audit entry, the rest counted.
    let before = app.snapshot();
    for _ in 0..6 {
        let (mut c, hello) = Conn::hello(&sock, "notify");
        assert_eq!(hello, Some(json!({"ok": null})));
        let backup = c.ask(&json!({"op": "write_backup", "host_name": "custos-test"}));
        assert!(refused(&backup), "{backup:?}");
        assert_eq!(c.recv(), None);
    }
    assert_eq!(app.snapshot(), before, "a refused request changes nothing");
    let entries = audit(&s.sys, "text=may%20not%20ask%20for");
    assert_eq!(
        entries.len(),
        2,
        "one entry per reason (smtp_config, write_backup), not one per attempt: {entries:#?}"
    );
    assert!(
        entries
            .iter()
            .all(|e| e["who"] == "custos-keyd" && e["via"] == "local" && e["severity"] == "WARN")
    );

    // No hello, an unknown role, an unknown operation, an oversized line.
    let (_, no_role) = Conn::hello(&sock, "admin");
    assert!(refused(&no_role), "{no_role:?}");
    let mut c = Conn::open(&sock);
    let not_hello = c.ask(&json!({"op": "snmp_config"}));
    assert!(refused(&not_hello), "{not_hello:?}");
    let (mut c, _) = Conn::hello(&sock, "backup");
    let unknown = c.ask(&json!({"op": "release_key", "key": "k"}));
    assert!(refused(&unknown), "{unknown:?}");
    let (mut c, _) = Conn::hello(&sock, "backup");
    c.send_raw(&vec![b'x'; 2 * 1024 * 1024]);
    assert_eq!(c.recv(), None, "a line over the limit ends the connection");

    // The socket still serves.
    let (mut c, _) = Conn::hello(&sock, "backup");
    let settings = c.ask(&json!({"op": "automatic_backup"})).expect("answer");
    assert!(settings.get("ok").is_some(), "{settings}");
}

#[test]
fn a_peer_of_a_foreign_uid_is_refused() {
    let uid = Command::new("id").arg("-u").output().expect("id");
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        skip(
            "a_peer_of_a_foreign_uid_is_refused",
            "needs root to run a client as another user (setpriv --reuid=nobody)",
        );
        return;
    }
    let nobody = Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .expect("id nobody");
    let nobody = String::from_utf8_lossy(&nobody.stdout).trim().to_owned();
    assert!(!nobody.is_empty(), "no user nobody");
    // A directory everyone may enter, so only keyd's check decides.
    let dir = tempfile::Builder::new()
        .prefix("custos-sock")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let sock = dir.path().join("keyd.sock");
    let app = Appliance::start_with(&["--local-socket", sock.to_str().expect("utf-8")]);
    let s = recommended_setup(&app);

    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
f = s.makefile("rwb")
f.write(b'{"hello":"backup"}\n'); f.flush()
print(f.readline().decode().strip())
try:
    f.write(b'{"op":"backup_ssh_key","host_name":"custos-test"}\n'); f.flush()
    rest = f.readline()
except OSError:
    rest = b""
print("closed" if rest == b"" else "answered: " + rest.decode().strip())
"#;
    for _ in 0..3 {
        let out = Command::new("setpriv")
            .args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                // The system's, not a per-user shim nobody may not read.
                "/usr/bin/python3",
                "-c",
                script,
            ])
            .arg(&sock)
            .output()
            .expect("setpriv /usr/bin/python3");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines = stdout.lines();
        let first: Value = serde_json::from_str(lines.next().expect("an answer")).expect("json");
        assert_eq!(first["error"]["kind"], "refused", "{first}");
        let message = first["error"]["message"].as_str().expect("message");
        assert!(
            message.contains(&format!("uid {nobody}")) && message.contains("custos-backup"),
            "{message}"
        );
        assert_eq!(lines.next(), Some("closed"), "{stdout}");
    }
    let entries = audit(&s.sys, &format!("source=uid%20{nobody}"));
    assert_eq!(
        entries.len(),
        1,
        "repeated refusals are aggregated: {entries:#?}"
    );
    // The backup key was not made for the refused peer.
    assert!(
        audit(&s.sys, "text=SSH%20key").is_empty(),
        "nothing was done for the refused peer"
    );
    // keyd's own uid (the test's) may take the role on the same socket.
    let (mut c, hello) = Conn::hello(&sock, "backup");
    assert_eq!(hello, Some(json!({"ok": null})));
    assert!(
        c.ask(&json!({"op": "host_name"}))
            .is_some_and(|v| v.get("ok").is_some())
    );
}

#[test]
fn the_daemons_keep_working_across_keyd_restarts_in_any_order() {
    let mut app = Appliance::start();
    let s = recommended_setup(&app);
    s.sys
        .call(
            "PUT",
            "/api/v1/snmp",
            Some(json!({"enabled": true, "community": COMMUNITY, "sys_contact": "before"})),
        )
        .ok();
    s.sys.post("/api/v1/wrapper-key", json!({})).expect(201);
    s.sys
        .call(
            "PUT",
            "/api/v1/backups/automatic",
            Some(json!({"target": {"host": "127.0.0.1", "port": closed_port(), "directory": "/srv/backups", "user": "backup"}})),
        )
        .ok();
    s.sys
        .call(
            "PUT",
            "/api/v1/email/smtp",
            Some(
                json!({"host": "127.0.0.1", "port": closed_port(), "security": "none",
                        "sender": "custos@custos-test.example.com"}),
            ),
        )
        .ok();
    s.sys
        .post(
            "/api/v1/email/groups",
            json!({"name": "ops", "recipients": "ops@example.com"}),
        )
        .expect(201);
    let snmpd = app.start_snmpd();
    eventually("the agent answers", Duration::from_secs(15), || {
        sys_contact(snmpd.port).as_deref() == Some("before")
    });

    // keyd stops; the notifier and the pusher start before it is back.
    app.stop();
    assert!(!app.keyd_socket().exists(), "keyd removes its socket");
    let notifyd = app.start_notifyd(&["--poll-interval", "1", "--retry-min", "1"]);
    let backupd = app.start_backupd(&[]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        sys_contact(snmpd.port).as_deref(),
        Some("before"),
        "the agent keeps its last settings while keyd is away"
    );
    app.start_again();

    for round in 1..=2 {
        let sys = app.api().login("SystemAdministrator", SYS_PW);
        // SNMP: a change made now reaches the agent through the new keyd.
        let contact = format!("after restart {round}");
        sys.call(
            "PUT",
            "/api/v1/snmp",
            Some(json!({"sys_contact": contact.clone()})),
        )
        .ok();
        eventually(
            "the agent reads the new keyd",
            Duration::from_secs(20),
            || sys_contact(snmpd.port).as_deref() == Some(contact.as_str()),
        );
        // Backup: Backup Now streams a backup through the socket, then the
        // push fails at the closed port and is recorded.
        sys.post("/api/v1/backups/now", json!({})).expect(202);
        eventually("the push is recorded", Duration::from_secs(30), || {
            let h = sys
                .get("/api/v1/backups/history")
                .ok()
                .as_array()
                .expect("history")
                .clone();
            h.len() >= round
                && h[0]["file_name"].is_string()
                && h[0]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("connect"))
        });
        // Notices: a new ERROR entry is queued through the socket (once the
        // notifier, started while keyd was away, has begun reading the log).
        eventually(
            "the notifier reads the log",
            Duration::from_secs(20),
            || {
                db(&app)
                    .query_row(
                        "SELECT COUNT(*) FROM email_progress WHERE name = 'audit_cursor'",
                        tests::store_params![],
                        |r| r.get::<_, i64>(0),
                    )
                    .unwrap_or(0)
                    > 0
            },
        );
        let queued = outbox_rows(&app);
        error_entry(&app, &format!("something failed ({round})"));
        eventually("the notice is queued", Duration::from_secs(20), || {
            outbox_rows(&app) > queued
        });
        if round == 1 {
            eventually(
                "the notifier records its outage through keyd",
                Duration::from_secs(20),
                || {
                    audit(&sys, "source=notifyd").iter().any(|e| {
                        e["what"]
                            .as_str()
                            .is_some_and(|w| w.contains("cannot be delivered"))
                    })
                },
            );
            // A restart with the daemons' connections open (as after a
            // restore, status 75).
            app.restart();
        }
    }
    drop((notifyd, backupd, snmpd));
}

/// The processes whose command line names `needle`.
fn pids_naming(needle: &str) -> Vec<u32> {
    let mut pids = vec![];
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline)
            .split('\0')
            .any(|a| a == needle)
        {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn snmpd_notifyd_and_backupd_hold_no_store_file_and_take_no_data_directory() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    s.sys
        .call(
            "PUT",
            "/api/v1/snmp",
            Some(json!({"enabled": true, "community": COMMUNITY})),
        )
        .ok();
    let snmpd = app.start_snmpd();
    let notifyd = app.start_notifyd(&["--poll-interval", "1"]);
    let backupd = app.start_backupd(&[]);
    eventually("the agent answers", Duration::from_secs(15), || {
        sys_contact(snmpd.port).is_some()
    });
    std::thread::sleep(Duration::from_secs(2));

    let sock = app.keyd_socket();
    let pids = pids_naming(sock.to_str().expect("utf-8"));
    assert_eq!(pids.len(), 3, "the three daemons name the socket: {pids:?}");
    let data = app.data_dir().canonicalize().expect("data dir");
    for pid in pids {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe");
        let mut open = vec![];
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("fds")
            .flatten()
        {
            if let Ok(target) = std::fs::read_link(fd.path())
                && target.starts_with(&data)
                && !target.starts_with(data.join("tmp"))
            {
                open.push(target);
            }
        }
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        assert!(
            open.is_empty() && !maps.contains(data.to_str().expect("utf-8")),
            "{} holds files of the data directory: {open:?}",
            exe.display()
        );
    }
    drop((snmpd, notifyd, backupd));

    // And none of them can be pointed at the store any more.
    for name in ["custos-snmpd", "custos-notifyd", "custos-backupd"] {
        let out = Command::new(bin(name))
            .arg("--data")
            .arg(app.data_dir())
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{name} refuses --data");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--data"), "{name}: {stderr}");
    }
}
