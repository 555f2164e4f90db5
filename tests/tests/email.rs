//! Email notifications (spec §14) end to end: `custos-keyd` and
//! `custos-notifyd` on one data directory, and a real SMTP server on
//! loopback — aiosmtpd from PyPI (`cargo xtask test` installs it) — that
//! writes every message it accepts into a folder.
//!
//! The ERROR and FATAL log entries of other daemons (a failed backup, a
//! damaged store) are written into the store the way those daemons write
//! them; everything else goes through the REST API and the console.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::browser::Browser;
use tests::*;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The SMTP server: aiosmtpd on 127.0.0.1, optionally with STARTTLS
/// (SMTP_CERT/SMTP_KEY) and required authentication (SMTP_USER/
/// SMTP_PASSWORD). Each accepted message becomes one file: a line with the
/// envelope recipients, then the message as received.
const SMTP_SERVER: &str = r#"
import asyncio, os, ssl, sys, uuid
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

out, port = sys.argv[1], int(sys.argv[2])
cert, key = os.environ.get("SMTP_CERT"), os.environ.get("SMTP_KEY")
user, password = os.environ.get("SMTP_USER"), os.environ.get("SMTP_PASSWORD")

class Handler:
    async def handle_DATA(self, server, session, envelope):
        name = uuid.uuid4().hex
        tmp = os.path.join(out, name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(b"X-Envelope-To: " + ",".join(envelope.rcpt_tos).encode() + b"\r\n")
            f.write(envelope.original_content)
        os.rename(tmp, os.path.join(out, name + ".eml"))
        return "250 Message accepted for delivery"

def authenticate(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user \
        and auth_data.password.decode() == password
    return AuthResult(success=ok, handled=False)

def factory():
    kw = {}
    if cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        kw["tls_context"] = ctx
    if user:
        kw["authenticator"] = authenticate
        kw["auth_required"] = True
    return SMTP(Handler(), hostname="smtp.test", **kw)

async def main():
    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", port)
    print("listening", server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"#;

/// How long mail may take to arrive.
const PATIENCE: Duration = Duration::from_secs(60);

/// A running aiosmtpd and the folder it delivers into.
struct Smtp {
    child: Child,
    port: u16,
    inbox: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

#[derive(Debug, Clone)]
struct Mail {
    /// The envelope recipients.
    to: Vec<String>,
    subject: String,
    from: String,
    body: String,
}

/// TLS files of a test SMTP server: its CA (PEM) and the certificate and
/// key it serves.
struct TlsFiles {
    ca_pem: String,
    dir: tempfile::TempDir,
}

impl TlsFiles {
    /// A CA of its own and a certificate for 127.0.0.1 signed by it.
    fn new() -> TlsFiles {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "Custos test mail CA");
        let ca_pem = ca.self_signed(&ca_key).expect("CA").pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("server key");
        let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("server params")
            .signed_by(&key, &issuer)
            .expect("server certificate");
        let dir = tempfile::tempdir().expect("tls dir");
        std::fs::write(dir.path().join("cert.pem"), server.pem()).expect("cert");
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).expect("key");
        TlsFiles { ca_pem, dir }
    }
}

impl Smtp {
    /// Starts the server on `port` (0: any free port).
    fn start(port: u16, tls: Option<&TlsFiles>, auth: Option<(&str, &str)>) -> Smtp {
        let probe = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status();
        assert!(
            probe.is_ok_and(|s| s.success()),
            "the email tests need aiosmtpd: `cargo xtask test` installs it, or run `python3 -m pip install aiosmtpd`"
        );
        let dir = tempfile::tempdir().expect("script dir");
        let inbox = tempfile::tempdir().expect("inbox");
        let script = dir.path().join("smtp_server.py");
        std::fs::write(&script, SMTP_SERVER).expect("script");
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .arg(inbox.path())
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(t) = tls {
            cmd.env("SMTP_CERT", t.dir.path().join("cert.pem"))
                .env("SMTP_KEY", t.dir.path().join("key.pem"));
        }
        if let Some((u, p)) = auth {
            cmd.env("SMTP_USER", u).env("SMTP_PASSWORD", p);
        }
        let mut child = cmd.spawn().expect("python3 runs the SMTP server");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let port = match lines.next() {
            Some(Ok(l)) => l
                .strip_prefix("listening ")
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("unexpected line from the SMTP server: {l}")),
            other => panic!(
                "the SMTP server did not start: {other:?} {:?}",
                child.wait()
            ),
        };
        std::thread::spawn(move || for _ in lines {});
        Smtp {
            child,
            port,
            inbox,
            _dir: dir,
        }
    }

    /// Every message received so far.
    fn mails(&self) -> Vec<Mail> {
        let mut files: Vec<_> = std::fs::read_dir(self.inbox.path())
            .expect("inbox")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        files.iter().map(|p| parse_mail(p)).collect()
    }

    /// Waits until at least `n` messages arrived; returns them all.
    fn wait_for(&self, n: usize) -> Vec<Mail> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let m = self.mails();
            if m.len() >= n {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} mails, got {}: {m:#?}",
                m.len()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads one received message: envelope, unfolded headers, decoded body.
fn parse_mail(path: &Path) -> Mail {
    let raw = std::fs::read_to_string(path)
        .expect("mail file")
        .replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap_or((raw.as_str(), ""));
    let mut headers: Vec<(String, String)> = vec![];
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = headers.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let body = match header("content-transfer-encoding").as_str() {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => {
            let b64: String = body.split_whitespace().collect();
            String::from_utf8(
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
                    .expect("base64 body"),
            )
            .expect("UTF-8 body")
        }
        _ => body.to_owned(),
    };
    Mail {
        to: header("x-envelope-to")
            .split(',')
            .map(str::to_owned)
            .collect(),
        subject: header("subject"),
        from: header("from"),
        body,
    }
}

fn decode_quoted_printable(s: &str) -> String {
    let s = s.replace("=\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'=', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("UTF-8 body")
}

fn count_to(mails: &[Mail], rcpt: &str) -> usize {
    mails
        .iter()
        .filter(|m| m.to.iter().any(|t| t == rcpt))
        .count()
}

/// A free loopback port with nothing listening on it.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A writable connection to the appliance's store.
fn db(app: &Appliance) -> tests::StoreDb {
    tests::StoreDb::open(app.data_dir())
}

/// An audit entry as another daemon writes it (`via` is the daemon).
fn log_entry(app: &Appliance, severity: &str, domain: Option<&str>, via: &str, what: &str) {
    let db = db(app);
    db.execute(
        &format!(
            "INSERT INTO audit(at, who, source, via, severity, domain_id, what)
             VALUES ({}, ?1, 'appliance', ?1, ?2, (SELECT id FROM domains WHERE name = ?3), ?4)",
            db.now_sql()
        ),
        tests::store_params![via, severity, domain, what],
    )
    .expect("audit entry");
}

/// The outbox: (group, notice key, sent, attempts, last error).
fn outbox(app: &Appliance) -> Vec<(String, String, bool, i64, Option<String>)> {
    db(app)
        .rows(
            "SELECT g.name, o.notice, o.sent_at IS NOT NULL, o.attempts, o.last_error
             FROM email_outbox o JOIN email_groups g ON g.id = o.group_id ORDER BY o.id",
            tests::store_params![],
        )
        .iter()
        .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .collect::<Result<_, appliance::store::db::DbError>>()
        .expect("outbox")
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Long enough for several rounds of a notifier polling every second.
fn settle() {
    std::thread::sleep(Duration::from_secs(4));
}

fn set_smtp(sys: &Api, port: u16, extra: Value) -> Value {
    let mut body = json!({
        "host": "127.0.0.1", "port": port, "security": "none", "sender": "custos@custos-test.example.com",
    });
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    sys.call("PUT", "/api/v1/email/smtp", Some(body)).ok()
}

fn add_group(sys: &Api, body: Value) {
    sys.post("/api/v1/email/groups", body).expect(201);
}

fn notifyd_log(sys: &Api) -> Vec<Value> {
    sys.get("/api/v1/audit?source=notifyd&limit=100").ok()["entries"]
        .as_array()
        .expect("entries")
        .clone()
}

#[test]
fn error_entries_reach_the_groups_whose_threshold_filter_and_scope_match() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let smtp = Smtp::start(0, None, None);
    let mut notifyd = app.start_notifyd(&["--poll-interval", "1"]);

    assert_eq!(
        s.sys.get("/api/v1/email/smtp").ok(),
        json!({"configured": false, "status": "SMTP server not set"})
    );
    set_smtp(&s.sys, smtp.port, json!({}));
    for (name, extra) in [
        ("errors", json!({})),
        ("fatal-only", json!({"threshold": "FATAL"})),
        ("backups", json!({"message_contains": "BACKUP"})),
        ("certificates", json!({"message_contains": "certificate"})),
        ("recorders", json!({"domain": DOMAIN})),
        ("switched-off", json!({"enabled": false})),
    ] {
        let mut body =
            json!({"name": name, "recipients": format!("{name}@example.com"), "type": "generic"});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        add_group(&s.sys, body);
    }

    log_entry(
        &app,
        "ERROR",
        None,
        "backupd",
        "scheduled backup to backup.example.com failed: connection refused",
    );
    log_entry(
        &app,
        "FATAL",
        None,
        "keyd",
        "the store could not be written: disk full",
    );
    log_entry(
        &app,
        "ERROR",
        Some(DOMAIN),
        "keyd",
        "host rec1.example.com sent a malformed request",
    );
    log_entry(&app, "WARN", None, "backupd", "the backup is slow");
    // The notifier's own entries never become notices (no mail loop).
    log_entry(
        &app,
        "ERROR",
        None,
        "notifyd",
        "a backup notice could not be delivered",
    );

    let mails = smtp.wait_for(6);
    settle();
    let mails2 = smtp.mails();
    assert_eq!(mails2.len(), 6, "{mails2:#?}");
    for (rcpt, n) in [
        ("errors@example.com", 3),
        ("fatal-only@example.com", 1),
        ("backups@example.com", 1),
        ("recorders@example.com", 1),
        ("certificates@example.com", 0),
        ("switched-off@example.com", 0),
    ] {
        assert_eq!(count_to(&mails, rcpt), n, "{rcpt}: {mails:#?}");
    }
    let fatal = mails
        .iter()
        .find(|m| m.to == ["fatal-only@example.com"])
        .expect("FATAL mail");
    assert!(
        fatal
            .subject
            .contains("FATAL: the store could not be written"),
        "{fatal:?}"
    );
    assert!(fatal.from.contains("custos@custos-test.example.com"));
    let domain = mails
        .iter()
        .find(|m| m.to == ["recorders@example.com"])
        .expect("domain mail");
    assert!(
        domain.body.contains("Domain:   RecorderDomain")
            && domain
                .body
                .contains("host rec1.example.com sent a malformed request")
            && domain.body.contains("Notification group recorders"),
        "{}",
        domain.body
    );
    assert!(
        mails
            .iter()
            .all(|m| !m.body.contains("could not be delivered")),
        "the notifier's own entry was mailed"
    );

    let groups = s.sys.get("/api/v1/email/groups").ok();
    let errors = groups
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["name"] == "errors")
        .expect("errors group");
    assert_eq!(
        (errors["sent"].clone(), errors["pending"].clone()),
        (json!(3), json!(0))
    );

    // Each notice is sent once, also across a restart of the notifier.
    notifyd.restart();
    log_entry(&app, "FATAL", None, "keyd", "after the restart");
    wait_until("the FATAL entry after the restart", || {
        smtp.mails().len() == 8
    });
    settle();
    let mails = smtp.mails();
    assert_eq!(mails.len(), 8, "{mails:#?}");
    assert_eq!(count_to(&mails, "fatal-only@example.com"), 2);
    assert!(
        notifyd_log(&s.sys).iter().all(|e| !e["what"]
            .as_str()
            .is_some_and(|w| w.contains("cannot be delivered through"))),
        "no delivery problems"
    );
    assert_eq!(
        notifyd.stop().map(|s| s.success()),
        Some(true),
        "custos-notifyd stops cleanly on SIGTERM"
    );
}

/// The notifier's clock of the expiry schedule, as the test sets it.
struct TestClock {
    file: tempfile::NamedTempFile,
}

impl TestClock {
    fn new() -> TestClock {
        let file = tempfile::NamedTempFile::new().expect("clock file");
        std::fs::write(file.path(), "0").expect("clock");
        TestClock { file }
    }
    fn arg(&self) -> String {
        self.file.path().display().to_string()
    }

    /// Moves the clock to `days` from now and waits until the notifier
    /// looked for expiries at that time and delivered what it found.
    fn set(&self, app: &Appliance, days: i64) {
        let target =
            OffsetDateTime::now_utc() + time::Duration::days(days) - time::Duration::seconds(1);
        std::fs::write(self.file.path(), days.to_string()).expect("clock");
        wait_until(&format!("an expiry scan at day {days}"), || {
            let scanned: Option<String> = db(app)
                .query_row(
                    "SELECT value FROM email_progress WHERE name = 'expiry_scan'",
                    tests::store_params![],
                    |r| r.get(0),
                )
                .ok();
            scanned
                .and_then(|t| OffsetDateTime::parse(&t, &Rfc3339).ok())
                .is_some_and(|t| t >= target)
        });
        wait_until("the outbox to be delivered", || {
            outbox(app).iter().all(|(_, _, sent, ..)| *sent)
        });
    }
}

#[test]
fn key_and_certificate_expiry_notices_follow_the_schedule_once_each() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let smtp = Smtp::start(0, None, None);
    let clock = TestClock::new();
    let clock_arg = clock.arg();
    let mut notifyd = app.start_notifyd(&[
        "--poll-interval",
        "1",
        "--expiry-interval",
        "1",
        "--test-clock-offset-file",
        &clock_arg,
    ]);
    set_smtp(&s.sys, smtp.port, json!({}));

    // A key whose only version expires in 100 days.
    let expiry = (OffsetDateTime::now_utc() + time::Duration::days(100))
        .format(&Rfc3339)
        .expect("date");
    s.sec
        .post(
            &format!("/api/v1/domains/{DOMAIN}/keys"),
            json!({"name": "quarterly", "expiration_date": expiry}),
        )
        .expect(201);
    add_group(
        &s.sys,
        json!({"name": "keys", "recipients": "keys@example.com", "type": "key_expiration", "message_contains": "quarterly"}),
    );
    add_group(
        &s.sys,
        json!({"name": "domain-keys", "recipients": "domain-keys@example.com", "type": "key_expiration",
               "message_contains": "quarterly", "domain": DOMAIN}),
    );
    add_group(
        &s.sys,
        json!({"name": "certs", "recipients": "certs@example.com", "type": "certificate_expiration"}),
    );

    // (day, what the key groups have received by then)
    let mut expected_notices: Vec<&str> = vec![];
    for (day, new) in [
        (0, None),
        (11, Some("90 days before expiry")),
        (12, None),
        (-1, None), // a restart of the notifier at day 12
        (41, Some("60 days before expiry")),
        (86, Some("15 days before expiry")),
        (87, None),
        (101, None),
        (108, Some("7 days after expiry")),
        (140, None),
    ] {
        if day < 0 {
            notifyd.restart();
            clock.set(&app, 12);
        } else {
            clock.set(&app, day);
        }
        expected_notices.extend(new);
        let mails = smtp.mails();
        for rcpt in ["keys@example.com", "domain-keys@example.com"] {
            let got: Vec<&Mail> = mails
                .iter()
                .filter(|m| m.to.iter().any(|t| t == rcpt))
                .collect();
            let mut notices: Vec<&str> = got
                .iter()
                .map(|m| {
                    assert!(
                        m.body.contains("Key:      quarterly, version 1")
                            && m.subject
                                .contains("key quarterly version 1 in domain RecorderDomain"),
                        "day {day}: {m:#?}"
                    );
                    m.body
                        .lines()
                        .find_map(|l| l.strip_prefix("Notice:   "))
                        .expect("a Notice line")
                })
                .collect();
            notices.sort();
            let mut want = expected_notices.clone();
            want.sort();
            assert_eq!(notices, want, "day {day}, {rcpt}: {got:#?}");
        }
        assert_eq!(count_to(&mails, "certs@example.com"), 0, "day {day}");
    }
    let mails = smtp.mails();
    let d15 = mails
        .iter()
        .find(|m| m.body.contains("Notice:   15 days before expiry"))
        .expect("15-day notice");
    assert!(d15.subject.contains("expires in 14 days"), "{d15:?}");
    let after = mails
        .iter()
        .find(|m| m.body.contains("7 days after expiry"))
        .expect("after-expiry notice");
    assert!(after.subject.contains("expired 8 days ago"), "{after:?}");

    // The web server certificates (825 days) reach the certificate group
    // 90 days before they expire: one notice each, none for the CAs.
    clock.set(&app, 740);
    let mails = smtp.mails();
    let certs: Vec<&Mail> = mails
        .iter()
        .filter(|m| m.to == ["certs@example.com"])
        .collect();
    assert_eq!(certs.len(), 2, "{certs:#?}");
    for kind in ["RSA", "EC P-384"] {
        assert!(
            certs.iter().any(|m| m.subject.contains(&format!(
                "the appliance's {kind} web server certificate expires in"
            )) && m.body.contains("Fingerprint: SHA-256 ")
                && m.body.contains("Notice:      90 days before expiry")),
            "{kind}: {certs:#?}"
        );
    }
    assert_eq!(count_to(&mails, "keys@example.com"), 4);
    notifyd.restart();
    clock.set(&app, 741);
    assert_eq!(smtp.mails().len(), mails.len(), "nothing is sent twice");
}

#[test]
fn smtp_down_then_up_delivers_exactly_once() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let port = free_port();
    let _notifyd = app.start_notifyd(&[
        "--poll-interval",
        "1",
        "--retry-min",
        "1",
        "--retry-max",
        "2",
    ]);
    set_smtp(&s.sys, port, json!({}));

    // Send test mail answers at once with the connection error.
    let r = s
        .sys
        .post("/api/v1/email/test", json!({"to": "ops@example.com"}));
    assert_eq!(r.status, 502, "{}", r.body);
    let message = r.body["message"].as_str().expect("message");
    assert!(
        message.contains(&format!("127.0.0.1:{port}"))
            && message.to_lowercase().contains("connect"),
        "{message}"
    );
    s.sys
        .post("/api/v1/email/test", json!({"to": "not an address"}))
        .expect(400);

    add_group(
        &s.sys,
        json!({"name": "ops", "recipients": "ops@example.com, oncall@example.com"}),
    );
    log_entry(
        &app,
        "ERROR",
        None,
        "backupd",
        "scheduled backup failed: target unreachable",
    );
    wait_until("two failed attempts", || {
        outbox(&app).iter().any(|(g, _, sent, attempts, err)| {
            g == "ops" && !sent && *attempts >= 2 && err.is_some()
        })
    });
    let group = s.sys.get("/api/v1/email/groups/ops").ok();
    assert_eq!(group["pending"], json!(1), "{group}");
    assert!(group["last_error"].as_str().is_some(), "{group}");
    let failures = notifyd_log(&s.sys);
    assert_eq!(failures.len(), 1, "one entry per outage: {failures:#?}");
    assert_eq!(failures[0]["severity"], "WARN");
    assert!(
        failures[0]["what"]
            .as_str()
            .expect("what")
            .contains("cannot be delivered through 127.0.0.1"),
        "{failures:#?}"
    );

    // The server comes up: the notice arrives once, to both addresses.
    let smtp = Smtp::start(port, None, None);
    let mails = smtp.wait_for(1);
    settle();
    assert_eq!(smtp.mails().len(), 1, "{mails:#?}");
    let mut to = mails[0].to.clone();
    to.sort();
    assert_eq!(to, ["oncall@example.com", "ops@example.com"]);
    assert!(
        mails[0]
            .subject
            .contains("ERROR: scheduled backup failed: target unreachable")
    );
    let rows = outbox(&app);
    assert_eq!(rows.len(), 1);
    assert!(rows[0].2, "recorded as sent: {rows:?}");
    let log = notifyd_log(&s.sys);
    assert!(
        log.iter().any(|e| e["what"]
            .as_str()
            .is_some_and(|w| w.contains("delivered again"))),
        "{log:#?}"
    );

    // And Send test mail works now.
    let v = s
        .sys
        .post("/api/v1/email/test", json!({"to": "ops@example.com"}))
        .ok();
    assert_eq!(v["sent"], json!(true));
    let mails = smtp.wait_for(2);
    assert!(
        mails
            .iter()
            .any(|m| m.subject == "Custos custos-test: test mail"),
        "{mails:#?}"
    );
}

#[test]
fn starttls_with_the_operators_ca_and_authentication() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let tls = TlsFiles::new();
    let smtp = Smtp::start(0, Some(&tls), Some(("custos", "Sm7p!secret")));
    let v = set_smtp(
        &s.sys,
        smtp.port,
        json!({"security": "starttls", "username": "custos", "password": "Sm7p!secret", "ca_certificate": tls.ca_pem}),
    );
    assert_eq!(v["password_set"], json!(true));
    let shown = s.sys.get("/api/v1/email/smtp").ok();
    assert!(!shown.to_string().contains("Sm7p"), "{shown}");
    assert_eq!(shown["security"], "starttls");

    s.sys
        .post("/api/v1/email/test", json!({"to": "ops@example.com"}))
        .ok();
    smtp.wait_for(1);

    // The notifier goes the same way.
    let _notifyd = app.start_notifyd(&["--poll-interval", "1"]);
    add_group(
        &s.sys,
        json!({"name": "ops", "recipients": "ops@example.com"}),
    );
    log_entry(&app, "FATAL", None, "keyd", "over STARTTLS");
    let mails = smtp.wait_for(2);
    assert!(
        mails
            .iter()
            .any(|m| m.subject.contains("FATAL: over STARTTLS"))
    );

    // Without the operator's CA the server's certificate is refused; with
    // a wrong password the server's answer says so. The stored password is
    // kept when none is sent.
    set_smtp(
        &s.sys,
        smtp.port,
        json!({"security": "starttls", "username": "custos"}),
    );
    let r = s
        .sys
        .post("/api/v1/email/test", json!({"to": "ops@example.com"}));
    assert_eq!(r.status, 502, "{}", r.body);
    let m = r.body["message"].as_str().expect("message").to_lowercase();
    assert!(m.contains("certificate") || m.contains("issuer"), "{m}");
    set_smtp(
        &s.sys,
        smtp.port,
        json!({"security": "starttls", "username": "custos", "password": "wrong", "ca_certificate": tls.ca_pem}),
    );
    let r = s
        .sys
        .post("/api/v1/email/test", json!({"to": "ops@example.com"}));
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        r.body["message"].as_str().expect("message").contains("535"),
        "{}",
        r.body
    );
    // The test mails are in the audit log; the password never is.
    let log = s.sys.get("/api/v1/audit?text=test%20mail&limit=20").ok();
    let text = log.to_string();
    assert!(
        text.contains("sent a test mail to ops@example.com through 127.0.0.1")
            && text.contains("test mail to ops@example.com through 127.0.0.1")
            && text.contains("failed: "),
        "{text}"
    );
    let all = s.sys.get("/api/v1/audit?limit=1000").ok().to_string();
    assert!(!all.contains("Sm7p") && !all.contains("\"wrong\""), "{all}");
}

#[test]
fn bad_input_names_the_field_and_only_system_administrators_may() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    for (body, field) in [
        (json!({"host": "bad host", "sender": "a@b.example"}), "host"),
        (
            json!({"host": "smtp.example.com", "port": 0, "sender": "a@b.example"}),
            "port",
        ),
        (
            json!({"host": "smtp.example.com", "security": "ssl", "sender": "a@b.example"}),
            "security",
        ),
        (
            json!({"host": "smtp.example.com", "sender": "nobody"}),
            "sender",
        ),
        (
            json!({"host": "smtp.example.com", "sender": "a@b.example", "password": "x"}),
            "username",
        ),
        (
            json!({"host": "smtp.example.com", "sender": "a@b.example", "ca_certificate": "garbage"}),
            "ca_certificate",
        ),
    ] {
        let v = s
            .sys
            .call("PUT", "/api/v1/email/smtp", Some(body))
            .expect(400);
        assert_eq!(v["field"], field, "{v}");
    }
    let r = s
        .sys
        .post("/api/v1/email/test", json!({"to": "ops@example.com"}));
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (409, json!("smtp")),
        "{}",
        r.body
    );
    for (body, field) in [
        (
            json!({"name": "bad name", "recipients": "a@b.example"}),
            "name",
        ),
        (
            json!({"name": "g", "recipients": "a@b.example, not-an-address"}),
            "recipients",
        ),
        (json!({"name": "g", "recipients": ""}), "recipients"),
        (
            json!({"name": "g", "recipients": "a@b.example", "threshold": "WARN"}),
            "threshold",
        ),
        (
            json!({"name": "g", "recipients": "a@b.example", "type": "weekly"}),
            "type",
        ),
        (
            json!({"name": "g", "recipients": "a@b.example", "domain": "NoSuchDomain"}),
            "domain",
        ),
        (
            json!({"name": "g", "recipients": "a@b.example", "message_contains": "two\nlines"}),
            "message_contains",
        ),
    ] {
        let v = s.sys.post("/api/v1/email/groups", body).expect(400);
        assert_eq!(v["field"], field, "{v}");
    }
    let before = app.snapshot();
    for who in [&s.dom, &s.sec] {
        who.post(
            "/api/v1/email/groups",
            json!({"name": "g", "recipients": "a@b.example"}),
        )
        .expect(403);
        who.call(
            "PUT",
            "/api/v1/email/smtp",
            Some(json!({"host": "smtp.example.com", "sender": "a@b.example"})),
        )
        .expect(403);
    }
    assert_eq!(app.snapshot(), before, "refusals change nothing");
}

#[test]
fn console_pages_set_the_server_send_test_mail_and_manage_the_list() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    s.admin
        .post(
            "/api/v1/administrators",
            json!({"login": "Watcher", "password": "Watch!Tmp0", "read_only": true}),
        )
        .expect(201);
    app.api()
        .login_changing("Watcher", "Watch!Tmp0", "Watch!Pw01");
    let smtp = Smtp::start(0, None, None);
    let mut b = Browser::start(app.url("web"), "email");
    b.open("/login");
    b.fill("login", "SystemAdministrator");
    b.fill("password", SYS_PW);
    b.press("Log In");
    assert_eq!(b.path(), "/dashboard", "{}", b.body());

    // System → Email Notification, SMTP Server tab.
    b.open("/system/preferences");
    b.follow("Email Notification");
    assert_eq!(b.path(), "/system/email");
    assert!(b.body().contains("SMTP server not set"), "{}", b.body());
    b.screenshot("smtp-not-set");
    b.fill("host", "bad host");
    b.press("Apply");
    assert!(
        b.text("#host-error")
            .is_some_and(|e| e.contains("host name")),
        "the error is next to the field: {}",
        b.body()
    );
    b.fill("host", "127.0.0.1");
    b.choose("security", "none");
    b.fill("port", &smtp.port.to_string());
    b.press("Apply");
    assert!(b.body().contains("saved"), "{}", b.body());
    assert!(!b.body().contains("SMTP server not set"));
    b.fill("to", "ops@example.com");
    b.press("Send Test Mail");
    assert!(
        b.body().contains("Test mail sent to ops@example.com"),
        "{}",
        b.body()
    );
    b.screenshot("smtp-test-mail");
    assert_eq!(smtp.wait_for(1)[0].to, ["ops@example.com"]);

    // Email Notification List tab: add (a refused field first), edit,
    // disable, enable, delete.
    b.follow("Email Notification List");
    assert!(b.body().contains("No notification groups yet"));
    b.follow("Add");
    b.fill("name", "ops");
    b.fill("recipients", "ops@example.com, nobody");
    b.press("OK");
    assert!(
        b.text("#recipients-error")
            .is_some_and(|e| e.contains("nobody")),
        "{}",
        b.body()
    );
    b.fill("recipients", "ops@example.com, oncall@example.com");
    b.fill("message_contains", "backup");
    b.choose("domain", DOMAIN);
    b.press("OK");
    assert_eq!(b.path(), "/system/email/groups", "{}", b.body());
    assert!(b.body().contains("Notification group ops added"));
    assert!(b.body().contains("Domain RecorderDomain"));
    b.screenshot("group-list");
    b.follow("ops");
    b.choose("threshold", "FATAL");
    b.press("OK");
    assert!(
        b.body().contains("Notification group ops saved"),
        "{}",
        b.body()
    );
    let g = s.sys.get("/api/v1/email/groups/ops").ok();
    assert_eq!(
        (
            g["threshold"].clone(),
            g["domain"].clone(),
            g["message_contains"].clone()
        ),
        (json!("FATAL"), json!(DOMAIN), json!("backup"))
    );
    b.click("input[name=group][value=ops]");
    b.press("Disable");
    assert!(b.body().contains("Disabled ops"), "{}", b.body());
    assert_eq!(
        s.sys.get("/api/v1/email/groups/ops").ok()["enabled"],
        json!(false)
    );
    b.click("input[name=group][value=ops]");
    b.press("Enable");
    assert_eq!(
        s.sys.get("/api/v1/email/groups/ops").ok()["enabled"],
        json!(true)
    );

    // A read-only System Administrator sees both tabs without change buttons.
    let mut ro = Browser::start(app.url("web"), "email-read-only");
    ro.open("/login");
    ro.fill("login", "Watcher");
    ro.fill("password", "Watch!Pw01");
    ro.press("Log In");
    ro.open("/system/email");
    assert!(ro.body().contains("SMTP server 127.0.0.1"), "{}", ro.body());
    assert!(!ro.has("button[type=submit].primary") && !ro.body().contains("Send Test Mail"));
    ro.open("/system/email/groups");
    assert!(ro.body().contains("ops@example.com"));
    assert!(!ro.body().contains("Delete") && !ro.has("a.button[href='/system/email/groups/add']"));
    ro.screenshot("read-only");

    b.click("input[name=group][value=ops]");
    b.press("Delete");
    assert!(b.body().contains("Deleted ops"), "{}", b.body());
    assert!(b.body().contains("No notification groups yet"));
}
