//! The automatic backup of spec §12 against a real OpenSSH `sshd` that the
//! test starts on 127.0.0.1 with its own configuration, host key and
//! `authorized_keys` (holding the appliance's public key): Backup Now
//! pushes the encrypted backup with SCP, the target's host key is pinned on
//! first contact, a new host key is refused with an ERROR entry and nothing
//! written, a scheduled run happens at its UTC minute, and an unreachable
//! target is retried with growing delays and logged.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::*;

const SSHD: &str = "/usr/sbin/sshd";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn user() -> String {
    run(Command::new("id").arg("-un"))
}

/// An OpenSSH server of the test's own on 127.0.0.1.
struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Sshd {
    fn start(authorized_key: &str) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (cargo xtask test does)"
        );
        // sshd running as root wants its privilege separation directory.
        if user() == "root" {
            std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("authorized_keys"),
            format!("{authorized_key}\n"),
        )
        .expect("authorized_keys");
        std::fs::create_dir(dir.path().join("backups")).expect("backups dir");
        let mut s = Sshd {
            port: free_port(),
            dir,
            child: None,
        };
        s.new_host_key();
        s.spawn();
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn backups(&self) -> PathBuf {
        self.path("backups")
    }

    fn new_host_key(&self) {
        let key = self.path("host_ed25519");
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "test-target", "-f"])
            .arg(&key));
    }

    /// `ssh-keygen -l` of the host key: `SHA256:…`.
    fn fingerprint(&self) -> String {
        let out = run(Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.path("host_ed25519.pub")));
        out.split_whitespace()
            .nth(1)
            .expect("fingerprint")
            .to_owned()
    }

    fn spawn(&mut self) {
        let d = self.dir.path().display();
        let config = format!(
            "ListenAddress 127.0.0.1\n\
             Port {port}\n\
             HostKey {d}/host_ed25519\n\
             PidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             StrictModes no\n\
             UsePAM no\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\n\
             AllowUsers {user}\n\
             LogLevel VERBOSE\n",
            port = self.port,
            user = user(),
        );
        std::fs::write(self.path("sshd_config"), config).expect("sshd_config");
        let log = std::fs::File::create(self.path("sshd.log")).expect("log");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }

    /// File name, size and modification time of each file in the target
    /// directory.
    fn listing(&self) -> Vec<(String, u64, std::time::SystemTime)> {
        let mut v: Vec<_> = std::fs::read_dir(self.backups())
            .expect("backups dir")
            .flatten()
            .map(|e| {
                let m = e.metadata().expect("metadata");
                (
                    e.file_name().to_string_lossy().into_owned(),
                    m.len(),
                    m.modified().expect("mtime"),
                )
            })
            .collect();
        v.sort();
        v
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn history(api: &Api) -> Vec<Value> {
    api.get("/api/v1/backups/history")
        .ok()
        .as_array()
        .expect("history array")
        .clone()
}

/// Waits until the history has `n` entries; returns them, newest first.
fn wait_history(api: &Api, n: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let h = history(api);
        if h.len() >= n {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "the history did not reach {n} entries: {h:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn audit(api: &Api, query: &str) -> Vec<Value> {
    api.get(&format!("/api/v1/audit?{query}"))
        .ok()
        .get("entries")
        .and_then(Value::as_array)
        .expect("entries")
        .clone()
}

fn is_backup_name(name: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix("backup_config_custos-test_")
        .and_then(|r| r.strip_suffix(".tar"))
    else {
        return false;
    };
    // yyyy_mm_dd_hhmm
    let parts: Vec<&str> = stamp.split('_').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [4, 2, 2, 4]
        && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit()))
}

/// Seconds since 1970 of a stored time, `YYYY-MM-DDTHH:MM:SSZ`.
fn epoch_seconds(t: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| -> i64 { t[r].parse().expect("digits") };
    assert_eq!((t.len(), &t[19..]), (20, "Z"), "{t}");
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

fn stale_tmp_files(app: &Appliance) -> Vec<String> {
    std::fs::read_dir(app.data_dir().join("tmp"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("backupd-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn backup_now_pushes_to_a_real_sshd_and_a_changed_host_key_is_refused() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let sys = &s.sys;

    // The appliance's key, for the target's authorized_keys.
    let public_key = sys.get("/api/v1/backups/ssh-public-key").ok();
    let public_key = public_key.as_str().expect("text").trim().to_owned();
    assert!(
        public_key.starts_with("ecdsa-sha2-nistp256 AAAA")
            && public_key.ends_with(" custos@custos-test"),
        "{public_key}"
    );
    let mut sshd = Sshd::start(&public_key);
    let first_key = sshd.fingerprint();

    let dir = sshd.backups().display().to_string();
    let v = sys
        .call(
            "PUT",
            "/api/v1/backups/automatic",
            Some(json!({
                "schedule": {"frequency": "weekly", "time": "14:30", "weekday": "Monday"},
                "target": {"host": "127.0.0.1", "port": sshd.port, "directory": format!("{dir}/"), "user": user()},
            })),
        )
        .ok();
    assert_eq!(
        v["schedule"],
        json!({"frequency": "weekly", "time": "14:30", "time_12h": "2:30 PM", "time_zone": "UTC", "weekday": "monday"})
    );
    assert_eq!(v["target"]["directory"], json!(dir));
    assert_eq!(v["host_key_fingerprint"], Value::Null);
    assert!(
        v["next_run"]
            .as_str()
            .is_some_and(|t| t.ends_with("T14:30:00Z")),
        "{v}"
    );

    let mut backupd = app.start_backupd(&["--retry-base-secs", "1", "--attempts", "3"]);

    // No wrapper key yet: the push fails at once, with an ERROR saying so,
    // and is not retried.
    sys.post("/api/v1/backups/now", json!({})).expect(202);
    let h = wait_history(sys, 1, Duration::from_secs(60));
    assert_eq!(h[0]["result"], "failed", "{h:#?}");
    assert!(
        h[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("wrapper key")),
        "{h:#?}"
    );
    assert_eq!(h[0]["retry_in_secs"], Value::Null);
    assert!(sshd.listing().is_empty());

    // With a wrapper key: Backup Now pushes the file.
    sys.post("/api/v1/wrapper-key", json!({})).expect(201);
    sys.post("/api/v1/backups/now", json!({})).expect(202);
    let h = wait_history(sys, 2, Duration::from_secs(60));
    let pushed = &h[0];
    assert_eq!(
        pushed["result"],
        "success",
        "{h:#?}\nsshd log:\n{}",
        sshd.log()
    );
    assert_eq!(pushed["kind"], "now");
    assert_eq!(pushed["attempt"], 1);
    let file = pushed["file_name"].as_str().expect("file name").to_owned();
    assert!(is_backup_name(&file), "{file}");
    let listing = sshd.listing();
    assert_eq!(listing.len(), 1, "{listing:?}");
    assert_eq!(listing[0].0, file);
    assert_eq!(Some(listing[0].1), pushed["bytes"].as_u64());
    let bytes = std::fs::read(sshd.backups().join(&file)).expect("pushed file");
    assert_eq!(
        &bytes[..13],
        b"manifest.json",
        "a tar with the manifest first"
    );
    assert!(
        stale_tmp_files(&app).is_empty(),
        "{:?}",
        stale_tmp_files(&app)
    );

    // The host key was learned and pinned, and is shown.
    let v = sys.get("/api/v1/backups/automatic").ok();
    assert_eq!(v["host_key_fingerprint"], json!(first_key));
    let info = audit(sys, "source=backupd&severity=INFO");
    assert!(
        info.iter().any(|e| e["who"] == "custos-backupd"
            && e["what"]
                .as_str()
                .is_some_and(|w| w.contains("pinned it: ") && w.contains(&first_key))),
        "{info:#?}"
    );
    assert!(
        info.iter().any(|e| e["what"]
            .as_str()
            .is_some_and(|w| w.starts_with("backup pushed to ") && w.contains(&file))),
        "{info:#?}"
    );

    // The target comes back with a new host key: refused before
    // authenticating, nothing written, an ERROR naming both keys.
    sshd.stop();
    sshd.new_host_key();
    sshd.spawn();
    let second_key = sshd.fingerprint();
    assert_ne!(first_key, second_key);
    let before = sshd.listing();
    std::thread::sleep(Duration::from_millis(1100));
    sys.post("/api/v1/backups/now", json!({})).expect(202);
    let h = wait_history(sys, 3, Duration::from_secs(60));
    let refused = &h[0];
    assert_eq!(refused["result"], "failed", "{h:#?}");
    let error = refused["error"].as_str().expect("error");
    assert!(
        error.contains("host key changed")
            && error.contains(&first_key)
            && error.contains(&second_key),
        "{error}"
    );
    assert_eq!(
        refused["retry_in_secs"],
        Value::Null,
        "a changed key is not retried"
    );
    assert_eq!(sshd.listing(), before, "nothing was written");
    assert!(
        !sshd.log().contains("Accepted publickey"),
        "the appliance authenticated to the changed host:\n{}",
        sshd.log()
    );
    let errors = audit(sys, "source=backupd&severity=ERROR");
    assert!(
        errors.iter().any(|e| e["who"] == "custos-backupd"
            && e["what"].as_str().is_some_and(|w| w.starts_with(&format!(
                "backup push to {}@127.0.0.1:{dir} (port {}) failed: the target's host key changed",
                user(),
                sshd.port
            )) && w.contains(&first_key)
                && w.contains(&second_key))),
        "{errors:#?}"
    );
    assert_eq!(
        sys.get("/api/v1/backups/automatic").ok()["host_key_fingerprint"],
        json!(first_key),
        "the pinned key stays"
    );

    // The operator confirms the change: forget the pinned key, push again.
    let v = sys
        .call(
            "PUT",
            "/api/v1/backups/automatic",
            Some(json!({"forget_host_key": true})),
        )
        .ok();
    assert_eq!(v["host_key_fingerprint"], Value::Null);
    sys.post("/api/v1/backups/now", json!({})).expect(202);
    let h = wait_history(sys, 4, Duration::from_secs(60));
    assert_eq!(h[0]["result"], "success", "{h:#?}");
    assert_eq!(
        sys.get("/api/v1/backups/automatic").ok()["host_key_fingerprint"],
        json!(second_key)
    );

    // A scheduled run at the next UTC minute.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    // The minute is chosen before the PUT arrives and backupd reads it:
    // leave a margin so the chosen minute has not begun by then.
    let ahead = if now % 60 > 45 { 2 } else { 1 };
    let next_minute = (now / 60 + ahead) % (24 * 60);
    let hhmm = format!("{:02}:{:02}", next_minute / 60, next_minute % 60);
    let v = sys
        .call(
            "PUT",
            "/api/v1/backups/automatic",
            Some(json!({"schedule": {"frequency": "daily", "time": hhmm}})),
        )
        .ok();
    assert_eq!(v["schedule"]["weekday"], Value::Null);
    let h = wait_history(sys, 5, Duration::from_secs(200));
    assert_eq!(h[0]["kind"], "scheduled", "{h:#?}");
    assert_eq!(h[0]["result"], "success", "{h:#?}");
    let stamp = h[0]["file_name"].as_str().expect("file name");
    assert!(
        stamp.ends_with(&format!("_{}.tar", hhmm.replace(':', ""))),
        "{stamp}"
    );

    // A clean stop.
    let status = backupd.stop().expect("status");
    assert!(status.success(), "{status:?}");
    assert!(stale_tmp_files(&app).is_empty());

    // Remove Schedule and Settings keeps the appliance's key.
    sys.call("DELETE", "/api/v1/backups/automatic", None)
        .expect(204);
    let v = sys.get("/api/v1/backups/automatic").ok();
    assert_eq!(
        (v["schedule"].clone(), v["target"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(
        sys.get("/api/v1/backups/ssh-public-key")
            .ok()
            .as_str()
            .map(str::trim),
        Some(public_key.as_str())
    );
}

#[test]
fn an_unreachable_target_is_retried_with_growing_delays_and_logged() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let sys = &s.sys;
    sys.post("/api/v1/wrapper-key", json!({})).expect(201);
    let closed = free_port();
    sys.call(
        "PUT",
        "/api/v1/backups/automatic",
        Some(json!({"target": {"host": "127.0.0.1", "port": closed, "directory": "/srv/backups", "user": "backup"}})),
    )
    .ok();
    // Bad input names its field and changes nothing.
    let before = app.snapshot();
    for (body, status, field) in [
        (
            json!({"schedule": {"frequency": "weekly", "time": "25:00", "weekday": "monday"}}),
            400,
            "time",
        ),
        (
            json!({"schedule": {"frequency": "weekly", "time": "2:30 PM", "weekday": "monday"}}),
            400,
            "time",
        ),
        (
            json!({"schedule": {"frequency": "weekly", "time": "02:30"}}),
            400,
            "weekday",
        ),
        (
            json!({"schedule": {"frequency": "daily", "time": "02:30", "weekday": "lundi"}}),
            400,
            "weekday",
        ),
        (
            json!({"schedule": {"frequency": "hourly", "time": "02:30"}}),
            400,
            "frequency",
        ),
        (
            json!({"target": {"host": "a b", "directory": "/b", "user": "u"}}),
            400,
            "target_host",
        ),
        (
            json!({"target": {"host": "h", "port": 0, "directory": "/b", "user": "u"}}),
            400,
            "target_port",
        ),
        (
            json!({"target": {"host": "h", "directory": "b", "user": "u"}}),
            400,
            "target_directory",
        ),
        (
            json!({"target": {"host": "h", "directory": "/b\n", "user": "u"}}),
            400,
            "target_directory",
        ),
        (
            json!({"target": {"host": "h", "directory": "/b", "user": "u;x"}}),
            400,
            "target_user",
        ),
        (json!({"forget_host_key": true}), 409, "forget_host_key"),
        (
            json!({"host_key_fingerprint": "SHA256:x"}),
            400,
            "host_key_fingerprint",
        ),
    ] {
        let r = sys.call("PUT", "/api/v1/backups/automatic", Some(body.clone()));
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (status, Some(field)),
            "{body}: {}",
            r.body
        );
    }
    let r = sys.get("/api/v1/backups/history?limit=0");
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (400, Some("limit")),
        "{}",
        r.body
    );
    assert_eq!(app.snapshot(), before);

    let _backupd = app.start_backupd(&["--retry-base-secs", "1", "--attempts", "4"]);
    sys.post("/api/v1/backups/now", json!({})).expect(202);
    let mut h = wait_history(sys, 4, Duration::from_secs(90));
    h.reverse();
    let retries: Vec<Value> = h.iter().map(|e| e["retry_in_secs"].clone()).collect();
    assert_eq!(
        retries,
        [json!(1), json!(2), json!(4), Value::Null],
        "{h:#?}"
    );
    let at: Vec<i64> = h
        .iter()
        .map(|e| epoch_seconds(e["at"].as_str().expect("at")))
        .collect();
    for (i, e) in h.iter().enumerate() {
        assert_eq!(e["result"], "failed");
        assert_eq!(e["attempt"], i + 1);
        assert_eq!(e["kind"], "now");
        assert_eq!(e["file_name"].as_str().map(is_backup_name), Some(true));
        assert!(
            e["error"]
                .as_str()
                .is_some_and(|m| m.contains("cannot connect to 127.0.0.1")),
            "{e}"
        );
        if i > 0 {
            let waited = at[i] - at[i - 1];
            let delay = h[i - 1]["retry_in_secs"].as_i64().expect("delay");
            assert!(
                waited >= delay,
                "attempt {} came {waited} s after the one before, not {delay}",
                i + 1
            );
        }
    }
    let errors = audit(sys, "source=backupd&severity=ERROR");
    let target = format!("backup@127.0.0.1:/srv/backups (port {closed})");
    for suffix in [
        "(attempt 1 of 4; next attempt in 1 s)",
        "(attempt 2 of 4; next attempt in 2 s)",
        "(attempt 3 of 4; next attempt in 4 s)",
        "(attempt 4 of 4; giving up)",
    ] {
        assert!(
            errors.iter().any(|e| e["severity"] == "ERROR"
                && e["what"].as_str().is_some_and(|w| w
                    .starts_with(&format!("backup push to {target} failed: cannot connect"))
                    && w.ends_with(suffix))),
            "no ERROR ending {suffix}: {errors:#?}"
        );
    }
    // No more attempts after the last one.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(history(sys).len(), 4);
    assert!(stale_tmp_files(&app).is_empty());
}

/// The message next to a console field, if any.
fn field_error(b: &tests::browser::Browser, field: &str) -> Option<String> {
    b.text(&format!("#{field}-error"))
}

#[test]
fn the_automatic_page_sets_a_utc_schedule_and_shows_the_key_and_the_history() {
    use tests::browser::Browser;
    let app = Appliance::start();
    let s = recommended_setup(&app);
    s.sys.post("/api/v1/wrapper-key", json!({})).expect(201);
    let mut b = Browser::start(app.url("web"), "backup-automatic");
    b.open("/login");
    b.fill("login", "SystemAdministrator");
    b.fill("password", SYS_PW);
    b.press("Log In");
    b.open("/system/backup/automatic");
    assert_eq!(b.text("h1").as_deref(), Some("Backup and Restore"));
    assert_eq!(b.texts("nav.tabs a"), ["Manual", "Automatic"]);
    let key = s.sys.get("/api/v1/backups/ssh-public-key").ok();
    assert_eq!(
        b.text("#ssh-public-key").as_deref(),
        key.as_str().map(str::trim)
    );
    b.screenshot("empty");

    // A refused form says why next to the field and changes nothing.
    b.click("#frequency-weekly");
    b.choose("hour", "2");
    b.choose("minute", "30");
    b.choose("meridiem", "PM");
    b.choose("weekday", "monday");
    b.fill("target_host", "bad host");
    b.fill("target_directory", "srv/backups");
    b.fill("target_user", "custos");
    b.press("Apply");
    assert!(
        field_error(&b, "target_host").is_some_and(|m| m.contains("neither an IP address")),
        "{}",
        b.body()
    );
    b.screenshot("refused");
    assert_eq!(
        s.sys.get("/api/v1/backups/automatic").ok()["schedule"],
        Value::Null
    );
    b.fill("target_host", "backup.example.com");
    b.press("Apply");
    assert!(
        field_error(&b, "target_directory").is_some_and(|m| m.contains("absolute path")),
        "{}",
        b.body()
    );
    b.fill("target_directory", "/srv/backups");
    b.press("Apply");
    assert_eq!(b.path(), "/system/backup/automatic", "{}", b.body());
    assert!(
        b.body().contains(
            "Saved: backups run weekly on Monday at 14:30 UTC (2:30 PM) to custos@backup.example.com:/srv/backups."
        ),
        "{}",
        b.body()
    );
    assert!(
        b.body().contains("Stored as 14:30 UTC (2:30 PM)"),
        "{}",
        b.body()
    );
    let v = s.sys.get("/api/v1/backups/automatic").ok();
    assert_eq!(
        v["schedule"],
        json!({"frequency": "weekly", "time": "14:30", "time_12h": "2:30 PM", "time_zone": "UTC", "weekday": "monday"})
    );
    assert_eq!(v["target"]["port"], 22);
    b.screenshot("saved");

    // Backup Now to an unreachable port: the history shows the failure.
    let closed = free_port();
    b.fill("target_host", "127.0.0.1");
    b.fill("target_port", &closed.to_string());
    b.press("Apply");
    let _backupd = app.start_backupd(&["--attempts", "1"]);
    b.press("Backup Now");
    assert!(b.body().contains("Backup Now requested"), "{}", b.body());
    wait_history(&s.sys, 1, Duration::from_secs(60));
    b.open("/system/backup/automatic");
    let rows = b.texts("table.list tbody tr");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(
        rows[0].contains("Backup Now")
            && rows[0].contains("Failed")
            && rows[0].contains("cannot connect"),
        "{rows:?}"
    );
    b.screenshot("history");

    // A read-only System Administrator sees it all and can change nothing.
    s.admin
        .post(
            "/api/v1/administrators",
            json!({"login": "sysro", "password": "Tmp!Passw0rd", "read_only": true}),
        )
        .expect(201);
    app.api()
        .login_changing("sysro", "Tmp!Passw0rd", "Sys!ro-Pw1");
    b.press("Log Out");
    b.open("/login");
    b.fill("login", "sysro");
    b.fill("password", "Sys!ro-Pw1");
    b.press("Log In");
    b.open("/system/backup/automatic");
    assert!(
        b.body().contains("custos@127.0.0.1:/srv/backups"),
        "{}",
        b.body()
    );
    assert!(b.text("#ssh-public-key").is_some());
    let buttons = b.texts("main button");
    for label in ["Apply", "Backup Now", "Remove Schedule and Settings"] {
        assert!(
            !buttons.iter().any(|t| t == label),
            "a read-only administrator sees {label}: {buttons:?}"
        );
    }
    b.screenshot("read-only");

    // Remove Schedule and Settings, as the System Administrator.
    b.press("Log Out");
    b.open("/login");
    b.fill("login", "SystemAdministrator");
    b.fill("password", SYS_PW);
    b.press("Log In");
    b.open("/system/backup/automatic");
    b.press("Remove Schedule and Settings");
    assert!(b.body().contains("were removed"), "{}", b.body());
    let v = s.sys.get("/api/v1/backups/automatic").ok();
    assert_eq!(
        (v["schedule"].clone(), v["target"].clone()),
        (Value::Null, Value::Null)
    );
}

#[test]
fn sigterm_abandons_a_hanging_push_and_stops_cleanly() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let sys = &s.sys;
    sys.post("/api/v1/wrapper-key", json!({})).expect(201);
    // A target that accepts connections and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = silent.local_addr().expect("addr").port();
    let (accepted, contacted) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = vec![];
        for c in silent.incoming().flatten() {
            held.push(c);
            let _ = accepted.send(());
        }
    });
    sys.call(
        "PUT",
        "/api/v1/backups/automatic",
        Some(json!({"target": {"host": "127.0.0.1", "port": port, "directory": "/srv/backups", "user": "backup"}})),
    )
    .ok();
    let mut backupd = app.start_backupd(&["--stop-grace-secs", "1", "--timeout-secs", "120"]);
    sys.post("/api/v1/backups/now", json!({})).expect(202);
    contacted
        .recv_timeout(Duration::from_secs(60))
        .expect("custos-backupd connects");
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let status = backupd.stop().expect("status");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopping took {:?}",
        started.elapsed()
    );
    let h = history(sys);
    assert_eq!(h.len(), 1, "{h:#?}");
    assert_eq!(h[0]["result"], "failed");
    assert!(
        h[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("stopped during the push")),
        "{h:#?}"
    );
    assert_eq!(h[0]["retry_in_secs"], Value::Null);
    assert!(stale_tmp_files(&app).is_empty());
}
