//! Test fixtures: the built `custos-keyd` started on a temporary data
//! directory with ephemeral ports, a real HTTPS client for its admin API,
//! and the built `custos-agent`. The daemon is killed when the fixture drops.
//!
//! The binaries come from the workspace's target directory; `cargo xtask
//! test` builds them before running the tests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

pub mod browser;
pub mod snmp;
pub mod vm;

/// The directory holding the workspace's built binaries (next to `deps/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("deps dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace --bins` first (cargo xtask test does)",
        p.display()
    );
    p
}

/// Records that `test` could not run here, for `cargo xtask test` to count
/// it as skipped, not passed (the one implementation is the appliance's
/// test harness, which the store's own tests use too).
pub use appliance::pg_harness::skip;

/// A new appliance's data directory, on the store engine this run tests:
/// with `CUSTOS_TEST_STORE=postgresql` (the second pass of `cargo xtask
/// test`), a fresh database on the tests' own PostgreSQL server, named in
/// the directory's `store.backend` as the appliance names its own.
pub fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    if appliance::pg_harness::wants_postgres() {
        let server = appliance::pg_harness::shared().expect("the tests' PostgreSQL server");
        let conninfo = server.fresh_database().expect("a test database");
        appliance::store::Backend::Postgres(conninfo)
            .record(dir.path())
            .expect("store.backend");
    }
    dir
}

/// The database of the store in a data directory, on whichever engine it
/// is, for a test that looks at rows or stages one as the appliance's own
/// programs would write it. Each call is a transaction of its own.
pub struct StoreDb(std::cell::RefCell<appliance::store::db::Conn>);

pub use appliance::store::db::{Row as StoreRow, params as store_params};

impl StoreDb {
    pub fn open(data: &Path) -> StoreDb {
        StoreDb(std::cell::RefCell::new(
            appliance::store::open_database(data).expect("open the store's database"),
        ))
    }

    pub fn is_postgres(&self) -> bool {
        self.0.borrow().is_postgres()
    }

    pub fn query_row<T>(
        &self,
        sql: &str,
        p: impl appliance::store::db::Params,
        f: impl FnOnce(&StoreRow) -> appliance::store::db::DbResult<T>,
    ) -> appliance::store::db::DbResult<T> {
        self.0.borrow_mut().query_row(sql, p, f)
    }

    /// Every row of a query.
    pub fn rows(&self, sql: &str, p: impl appliance::store::db::Params) -> Vec<StoreRow> {
        self.0.borrow_mut().query_all(sql, p).expect(sql).1
    }

    pub fn execute(
        &self,
        sql: &str,
        p: impl appliance::store::db::Params,
    ) -> appliance::store::db::DbResult<usize> {
        self.0.borrow_mut().execute(sql, p)
    }

    pub fn execute_batch(&self, sql: &str) -> appliance::store::db::DbResult<()> {
        self.0.borrow_mut().execute_batch(sql)
    }

    /// The current time as the store writes it (RFC 3339, seconds, UTC).
    pub fn now_sql(&self) -> &'static str {
        if self.is_postgres() {
            "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
        } else {
            "strftime('%Y-%m-%dT%H:%M:%SZ', 'now')"
        }
    }
}

/// A running key service on its own data directory.
pub struct Appliance {
    pub data: tempfile::TempDir,
    child: Option<Child>,
    pub urls: HashMap<String, String>,
    extra_args: Vec<String>,
    /// Ports of the first start, kept across restarts like a real appliance's.
    ports: Option<Vec<(String, u16)>>,
    /// The CA fingerprints (RSA, EC) `GET /api/v1/system` printed, learned by
    /// `recommended_setup`: how a remote appliance's CA is pinned.
    api_fingerprints: std::sync::Mutex<Option<(String, String)>>,
    /// The host name it runs as.
    pub host_name: String,
    /// Its HA replication port (its own PostgreSQL, once HA is set up).
    pub replication_port: u16,
}

const PORT_FLAGS: [(&str, &str); 6] = [
    ("web", "--web-port"),
    ("enrol", "--enrol-port"),
    ("keys", "--keys-port"),
    ("enrol-ec", "--enrol-ec-port"),
    ("keys-ec", "--keys-ec-port"),
    ("ha", "--ha-port"),
];

impl Appliance {
    pub fn start() -> Appliance {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Appliance {
        Self::start_in(data_dir(), "custos-test", extra)
    }

    /// A new appliance with its own host name (an HA group's nodes): on
    /// SQLite, whatever engine the pass runs on, as every appliance starts
    /// before it joins a group (its store moves into its own PostgreSQL
    /// when HA is set up).
    pub fn start_named(host_name: &str, extra: &[&str]) -> Appliance {
        Self::start_in(tempfile::tempdir().expect("tempdir"), host_name, extra)
    }

    fn start_in(data: tempfile::TempDir, host_name: &str, extra: &[&str]) -> Appliance {
        let replication_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut a = Appliance {
            data,
            child: None,
            urls: HashMap::new(),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            ports: None,
            api_fingerprints: Default::default(),
            host_name: host_name.to_owned(),
            replication_port,
        };
        a.spawn().expect("custos-keyd starts");
        a
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(bin("custos-keyd"));
        cmd.arg("--data")
            .arg(self.data.path())
            .args(["--local", "--host-name", &self.host_name])
            .arg("--replication-port")
            .arg(self.replication_port.to_string());
        for (name, flag) in PORT_FLAGS {
            let port = self
                .ports
                .as_ref()
                .and_then(|p| p.iter().find(|(n, _)| n == name).map(|(_, p)| *p))
                .unwrap_or(0);
            cmd.arg(flag).arg(port.to_string());
        }
        let mut child = cmd
            .args(&self.extra_args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning custos-keyd")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut urls = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut lines = BufReader::new(stdout).lines();
        loop {
            if Instant::now() > deadline {
                bail!("custos-keyd did not become ready");
            }
            let Some(line) = lines.next() else {
                bail!("custos-keyd exited before it was ready: {:?}", child.wait());
            };
            let line = line?;
            if let Some(rest) = line.strip_prefix("ready ") {
                let (name, url) = rest.split_once(' ').context("ready line")?;
                urls.insert(name.to_owned(), url.to_owned());
            } else if line.contains("login") {
                break;
            }
        }
        // Keep draining stdout so the daemon never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        if self.ports.is_none() {
            self.ports = Some(
                urls.iter()
                    .filter_map(|(n, u)| Some((n.clone(), u.rsplit(':').next()?.parse().ok()?)))
                    .collect(),
            );
        }
        self.urls = urls;
        self.child = Some(child);
        Ok(())
    }

    /// An appliance the fixture did not start (a VM), reached at `urls`.
    pub fn remote(urls: HashMap<String, String>) -> Appliance {
        Appliance {
            data: tempfile::tempdir().expect("tempdir"),
            child: None,
            urls,
            extra_args: vec![],
            ports: None,
            api_fingerprints: Default::default(),
            host_name: String::new(),
            replication_port: 0,
        }
    }

    /// Waits for the service to exit asking for a restart (status 75, as
    /// after joining an HA group or a restore), and starts it again, as
    /// systemd does on the appliance.
    pub fn wait_restart(&mut self) {
        let mut child = self.child.take().expect("custos-keyd runs");
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            assert!(Instant::now() < deadline, "custos-keyd did not restart");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(status.code(), Some(75), "custos-keyd exit status");
        self.spawn().expect("custos-keyd starts again");
    }

    /// This appliance's own PostgreSQL (HA), as keyd runs it.
    pub fn pg_node(&self) -> appliance::pgnode::PgNode {
        appliance::pgnode::PgNode {
            bin: appliance::pg_harness::bin_dir().unwrap_or_default(),
            dir: self.data.path().join("pg"),
            run: self.data.path().join("pg-run"),
            port: self.replication_port,
            listen: "127.0.0.1".into(),
        }
    }

    /// SIGKILL to the service and an immediate stop of its PostgreSQL: the
    /// whole node dies at once.
    pub fn kill_node(&mut self) {
        self.kill();
        let pg = self.pg_node();
        if pg.exists() {
            let _ = pg.stop_now();
        }
    }

    pub fn url(&self, name: &str) -> &str {
        self.urls
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no endpoint {name}: {:?}", self.urls))
    }

    pub fn port(&self, name: &str) -> u16 {
        self.url(name)
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn().expect("custos-keyd restarts");
    }

    pub fn start_again(&mut self) {
        self.spawn().expect("custos-keyd restarts");
    }

    /// Every row of every table but the audit log, as text: "the store is
    /// unchanged" is checked by comparing two of these.
    pub fn snapshot(&self) -> String {
        store_snapshot(self.data.path())
    }

    /// The CA certificate served on an enrolment port (trust on first use,
    /// as an operator would, then compared with the API's fingerprint).
    pub fn ca_pem(&self, enrol: &str) -> String {
        let c = reqwest::blocking::Client::builder()
            .tls_danger_accept_invalid_certs(true)
            .build()
            .expect("client");
        let v: Value = c
            .get(format!("{}/agent/v1/ca", self.url(enrol)))
            .send()
            .and_then(|r| r.json())
            .expect("ca");
        v["ca_certificate"].as_str().expect("pem").to_owned()
    }

    /// An API client that verifies the web server against the appliance CA.
    pub fn api(&self) -> Api {
        Api::new(
            self.url("web"),
            &self.ca_pem(if self.urls.contains_key("enrol") {
                "enrol"
            } else {
                "enrol-ec"
            }),
        )
    }

    /// Runs `custos-agent` with `args`.
    pub fn agent(&self, args: &[&str]) -> AgentOutput {
        self.agent_with_input(args, "")
    }

    /// Runs `custos-agent` with `args` and `input` on its standard input
    /// (how the fixture hands it a shared secret: `--secret-file -`).
    pub fn agent_with_input(&self, args: &[&str], input: &str) -> AgentOutput {
        use std::io::Write;
        let mut child = Command::new(bin("custos-agent"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run custos-agent");
        let mut stdin = child.stdin.take().expect("stdin");
        // The agent may exit before reading (a refusal); a closed pipe is fine.
        let _ = stdin.write_all(input.as_bytes());
        drop(stdin);
        let out = child.wait_with_output().expect("custos-agent output");
        AgentOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Remembers the CA fingerprints `GET /api/v1/system` prints, as an
    /// operator copies them from the dashboard.
    pub fn learn_ca_fingerprints(&self, admin: &Api) {
        let v = admin.get("/api/v1/system").ok();
        let fp = |k: &str| v[k].as_str().expect("a CA fingerprint").to_owned();
        *self.api_fingerprints.lock().expect("fingerprints") =
            Some((fp("rsa_ca_fingerprint"), fp("ec_ca_fingerprint")));
    }

    /// The SHA-256 fingerprint (`AB:CD:…`) of the CA behind enrolment port
    /// `enrol` (`enrol`: RSA, `enrol-ec`: EC), for `--ca-fingerprint`. A
    /// fixture-started appliance's is read from its store (current after a
    /// CA change or restore, like `setinfo show`); a remote one's is the one
    /// `learn_ca_fingerprints` read from the API.
    pub fn ca_fingerprint(&self, enrol: &str) -> String {
        let ec = enrol == "enrol-ec";
        let data = self.data.path();
        if data.join("custos.db").exists() || data.join(appliance::store::BACKEND_FILE).exists() {
            let pem: String = StoreDb::open(data)
                .query_row(
                    "SELECT cert_pem FROM system_identities WHERE name = ?1",
                    [if ec { "ca_ec" } else { "ca_rsa" }],
                    |r| r.get(0),
                )
                .expect("the CA certificate");
            return fingerprint_of_pem(&pem);
        }
        let learned = self.api_fingerprints.lock().expect("fingerprints").clone();
        let (rsa, ec_fp) = learned.expect("a remote appliance: run recommended_setup first");
        if ec { ec_fp } else { rsa }
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// The process id of the running key service (resource checks).
    /// The key service's local socket (its default, `DATA/keyd.sock`),
    /// through which the other daemons reach the store.
    pub fn keyd_socket(&self) -> PathBuf {
        self.data.path().join("keyd.sock")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A running `custos-backupd` (the automatic backup of §12) on an
/// appliance's data directory; killed when dropped.
pub struct Backupd {
    child: Option<Child>,
}

impl Appliance {
    /// Starts `custos-backupd` on this appliance's local socket (spooling in
    /// `DATA/tmp`) with
    /// `extra` flags (e.g. `--retry-base-secs 1`) and waits for its
    /// `ready backupd` line.
    pub fn start_backupd(&self, extra: &[&str]) -> Backupd {
        let mut child = Command::new(bin("custos-backupd"))
            .arg("--keyd-socket")
            .arg(self.keyd_socket())
            .arg("--spool-dir")
            .arg(self.data.path().join("tmp"))
            .args(["--host-name", "custos-test"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning custos-backupd");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l == "ready backupd" => break,
                Some(Ok(_)) => {}
                _ => panic!(
                    "custos-backupd exited before it was ready: {:?}",
                    child.wait()
                ),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Backupd { child: Some(child) }
    }
}

impl Backupd {
    /// SIGTERM and wait; the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        c.wait().ok()
    }
}

impl Drop for Backupd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A running `custos-notifyd` (the email notifier of §14) on an appliance's
/// data directory; killed when dropped.
pub struct Notifyd {
    child: Option<Child>,
    socket: PathBuf,
    extra: Vec<String>,
}

impl Appliance {
    /// Starts `custos-notifyd` on this appliance's local socket with
    /// `extra` flags (e.g. `--poll-interval 1`) and waits for its
    /// `ready notify` line.
    pub fn start_notifyd(&self, extra: &[&str]) -> Notifyd {
        let mut n = Notifyd {
            child: None,
            socket: self.keyd_socket(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        n.spawn();
        n
    }
}

impl Notifyd {
    fn spawn(&mut self) {
        let mut child = Command::new(bin("custos-notifyd"))
            .arg("--keyd-socket")
            .arg(&self.socket)
            .args(["--host-name", "custos-test"])
            .args(&self.extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning custos-notifyd");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l == "ready notify" => break,
                Some(Ok(_)) => {}
                _ => panic!(
                    "custos-notifyd exited before it was ready: {:?}",
                    child.wait()
                ),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    /// SIGTERM and wait; the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        c.wait().ok()
    }

    /// A clean stop and a new start with the same flags.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(
            status.is_some_and(|s| s.success()),
            "custos-notifyd stops cleanly on SIGTERM: {status:?}"
        );
        self.spawn();
    }
}

impl Drop for Notifyd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.kill_node();
    }
}

#[derive(Debug)]
pub struct AgentOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl AgentOutput {
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.status, 0,
            "custos-agent failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A blocking HTTPS JSON client of the admin API, signed in or not.
#[derive(Clone)]
pub struct Api {
    base: String,
    client: reqwest::blocking::Client,
    pub token: Option<String>,
}

/// A response: status and JSON body (Null when empty).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
}

impl Resp {
    pub fn ok(self) -> Value {
        assert!(
            (200..300).contains(&self.status),
            "expected success, got {}: {}",
            self.status,
            self.body
        );
        self.body
    }
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        self.body
    }
}

impl Api {
    pub fn new(base: &str, ca_pem: &str) -> Api {
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM");
        let client = reqwest::blocking::Client::builder()
            .tls_certs_only([ca])
            .build()
            .expect("client");
        Api {
            base: base.to_owned(),
            client,
            token: None,
        }
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {}{path}: {e}", self.base))
    }

    /// Like `call`, but a transport failure (daemon gone) is an `Err`.
    pub fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Resp, String> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.client.request(method.parse().expect("method"), &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let text = resp.text().map_err(|e| e.to_string())?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Resp { status, body })
    }

    pub fn raw(&self, method: &str, path: &str, content_type: &str, body: &str) -> Resp {
        let url = format!("{}{}", self.base, path);
        let mut req = self
            .client
            .request(method.parse().expect("method"), &url)
            .header("content-type", content_type)
            .body(body.to_owned());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().expect("send");
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Resp { status, body }
    }

    /// A request with a binary body whose answer is kept as bytes (backup
    /// files): (status, content-disposition, body).
    pub fn bytes(&self, method: &str, path: &str, body: Vec<u8>) -> (u16, String, Vec<u8>) {
        let url = format!("{}{}", self.base, path);
        let mut req = self
            .client
            .request(method.parse().expect("method"), &url)
            .header("content-type", "application/x-tar")
            .body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().expect("send");
        let status = resp.status().as_u16();
        let disposition = resp
            .headers()
            .get("content-disposition")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (status, disposition, resp.bytes().expect("body").to_vec())
    }

    pub fn get(&self, path: &str) -> Resp {
        self.call("GET", path, None)
    }
    pub fn post(&self, path: &str, body: Value) -> Resp {
        self.call("POST", path, Some(body))
    }

    /// Signs in; returns a client carrying the token.
    pub fn login(&self, login: &str, password: &str) -> Api {
        let v = self
            .post(
                "/api/v1/login",
                json!({"login": login, "password": password}),
            )
            .ok();
        let mut a = self.clone();
        a.token = Some(v["token"].as_str().expect("token").to_owned());
        a
    }

    /// Signs in and completes a forced password change when asked for one.
    pub fn login_changing(&self, login: &str, first: &str, new: &str) -> Api {
        let v = self
            .post("/api/v1/login", json!({"login": login, "password": first}))
            .ok();
        let mut a = self.clone();
        a.token = Some(v["token"].as_str().expect("token").to_owned());
        if v["must_change_password"] == json!(true) {
            a.post("/api/v1/password", json!({"old": first, "new": new}))
                .ok();
        }
        a
    }
}

/// Every row of every table but the audit log of the store in `data`, as
/// text (sealed values as their ciphertext, which changes when they do).
pub fn store_snapshot(data: &Path) -> String {
    let db = StoreDb::open(data);
    let sql = if db.is_postgres() {
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' AND tablename NOT IN ('audit', 'schema_version') ORDER BY 1"
    } else {
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'audit' ORDER BY name"
    };
    let tables: Vec<String> = db
        .rows(sql, store_params![])
        .iter()
        .map(|r| r.get(0).expect("a table name"))
        .collect();
    let mut out = String::new();
    for t in tables {
        for row in db.rows(&format!("SELECT * FROM {t} ORDER BY 1, 2"), store_params![]) {
            let vals: Vec<String> = row.into_values().iter().map(|v| format!("{v:?}")).collect();
            out.push_str(&format!("{t}: {}\n", vals.join(" | ")));
        }
    }
    out
}

/// SHA-256 of a PEM certificate's DER, `AB:CD:…` as the appliance prints it.
pub fn fingerprint_of_pem(pem: &str) -> String {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM certificate");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Passwords used by the recommended setup.
pub const ADMIN_PW: &str = "Adm1n!Custos";
pub const SYS_PW: &str = "Sys!Adm1nPw";
pub const DOM_PW: &str = "Dom!Adm1nPw";
pub const SEC_PW: &str = "Sec!Adm1nPw";
pub const SHARED_SECRET: &str = "Rec0rder-Secret!";
pub const DOMAIN: &str = "RecorderDomain";

/// The signed-in administrators of spec §5's recommended setup.
pub struct Setup {
    pub admin: Api,
    pub sys: Api,
    pub dom: Api,
    pub sec: Api,
}

/// The development licence signing key (`xtask/licence-dev-signing.key`),
/// read at run time, as PKCS#8 bytes.
pub fn dev_signing_key() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("xtask")
        .join("licence-dev-signing.key");
    let pem = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.trim())
        .expect("the signing key is base64 PEM")
}

/// A licence file (spec §10) around `payload`, signed with the Ed25519
/// PKCS#8 key `signing_key`: the payload's base64 and the signature's, each
/// in 64-column armour.
pub fn sign_licence(signing_key: &[u8], payload: &[u8]) -> String {
    use aws_lc_rs::signature::Ed25519KeyPair;
    use base64::Engine;
    let key = Ed25519KeyPair::from_pkcs8(signing_key).expect("an Ed25519 PKCS#8 key");
    let armour = |what: &str, bytes: &[u8]| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN {what}-----\n{}\n-----END {what}-----\n",
            lines.join("\n")
        )
    };
    armour("CUSTOS LICENSE", payload)
        + &armour("CUSTOS LICENSE SIGNATURE", key.sign(payload).as_ref())
}

/// The terms of a test licence: `key_agents` Key agents (0: not installed),
/// no FS agents, `domains` domains, both agent types valid through `expires`.
pub fn licence_terms(key_agents: u32, domains: u32, expires: &str) -> Value {
    json!({
        "format": 1,
        "licence_id": format!("TEST-{key_agents}-{domains}-{}", expires.replace('-', "")),
        "issued_to": "Custos tests",
        "issued_at": "2025-01-01",
        "key_agent": {"installed": key_agents > 0, "max_agents": key_agents, "expires": expires},
        "fs_agent": {"installed": false, "max_agents": 0, "expires": expires},
        "key_vault": false,
        "multiple_domains": domains > 1,
        "max_domains": domains,
    })
}

/// A licence file signed with the development key, which the test builds
/// verify against.
pub fn dev_licence(key_agents: u32, domains: u32, expires: &str) -> String {
    sign_licence(
        &dev_signing_key(),
        licence_terms(key_agents, domains, expires)
            .to_string()
            .as_bytes(),
    )
}

/// The licence the recommended setup installs: enough Key agents for the
/// key benchmark's hosts and domains for the permission matrix.
pub fn generous_licence() -> String {
    dev_licence(100_000, 1_000, "2099-12-31")
}

/// Installs `licence` as `admin` (PUT /api/v1/licence).
pub fn install_licence(admin: &Api, licence: &str) -> Resp {
    admin.call(
        "PUT",
        "/api/v1/licence",
        Some(json!({ "licence": licence })),
    )
}

/// Runs spec §5's recommended setup through the REST API and returns the
/// signed-in administrators. Key `recorder` and the shared secret exist, and
/// a generous development licence is installed.
pub fn recommended_setup(app: &Appliance) -> Setup {
    let anon = app.api();
    let admin = anon.login_changing("admin", "admin123", ADMIN_PW);
    install_licence(&admin, &generous_licence()).ok();
    for (login, t, pw) in [
        ("SystemAdministrator", "system", "Sys!Tmp0pw"),
        ("DomainAdministrator", "domain", "Dom!Tmp0pw"),
        ("SecurityAdministrator", "security", "Sec!Tmp0pw"),
    ] {
        admin
            .post(
                "/api/v1/administrators",
                json!({"login": login, "password": pw, "confirm_password": pw, "user_type": t}),
            )
            .expect(201);
    }
    let sys = anon.login_changing("SystemAdministrator", "Sys!Tmp0pw", SYS_PW);
    sys.post(
        "/api/v1/domains",
        json!({"name": DOMAIN, "kind": "global", "description": "Call recordings", "domain_administrator": "DomainAdministrator"}),
    )
    .expect(201);
    let dom = anon.login_changing("DomainAdministrator", "Dom!Tmp0pw", DOM_PW);
    dom.post(
        &format!("/api/v1/domains/{DOMAIN}/administrators"),
        json!({"login": "SecurityAdministrator", "roles": ["audit", "key", "policy", "host", "challenge_response"]}),
    )
    .expect(201);
    let sec = anon.login_changing("SecurityAdministrator", "Sec!Tmp0pw", SEC_PW);
    sec.post(
        &format!("/api/v1/domains/{DOMAIN}/keys"),
        json!({"name": "recorder", "algorithm": "AES256", "key_type": "stored_on_server",
               "automatic_key_rotation": true, "key_version_life_span": 7, "key_refresh_period": 5}),
    )
    .expect(201);
    // Open registration, explicitly: the tests enrol many hosts by name.
    // New secrets require hosts to be added first unless told otherwise
    // (`tests/tests/enrolment.rs` covers that default).
    sec.call(
        "PUT",
        &format!("/api/v1/domains/{DOMAIN}/registration-secret"),
        Some(
            json!({"creation_method": "manual", "shared_secret": SHARED_SECRET,
                    "require_hosts_first_added": false}),
        ),
    )
    .ok();
    app.learn_ca_fingerprints(&admin);
    Setup {
        admin,
        sys,
        dom,
        sec,
    }
}

/// Registers `name` in the recommended setup's domain straight through the
/// enrolment API (as the agent does, without its files) and returns a
/// client holding the host's certificate, kept alive to the key port: the
/// benchmarks' hosts.
pub async fn register_bench_host(
    client: &reqwest::Client,
    enrol: &str,
    name: &str,
) -> anyhow::Result<reqwest::Client> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
    let csr = rcgen::CertificateParams::new(vec![name.to_string()])?
        .serialize_request(&key)?
        .pem()?;
    let resp = client
        .post(format!("{enrol}/agent/v1/register"))
        .json(&json!({"host_name": name, "domain": DOMAIN, "shared_secret": SHARED_SECRET, "csr": csr}))
        .send()
        .await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "registration failed: {}",
        resp.text().await?
    );
    let v: Value = resp.json().await?;
    let cert = v["certificate"].as_str().unwrap_or_default();
    let ca = v["ca_certificate"].as_str().unwrap_or_default();
    let identity =
        reqwest::Identity::from_pem(format!("{cert}\n{}", key.serialize_pem()).as_bytes())?;
    Ok(reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes())?])
        .identity(identity)
        .pool_max_idle_per_host(1)
        .build()?)
}

/// Registers a host with `custos-agent` into `dir`, pinning the CA of
/// `enrol` and handing the secret over standard input.
pub fn register_host(
    app: &Appliance,
    enrol: &str,
    host: &str,
    secret: &str,
    dir: &Path,
) -> AgentOutput {
    register_host_with(app, enrol, host, secret, dir, &[])
}

/// The same, with more `custos-agent register` options.
pub fn register_host_with(
    app: &Appliance,
    enrol: &str,
    host: &str,
    secret: &str,
    dir: &Path,
    extra: &[&str],
) -> AgentOutput {
    let server = format!("127.0.0.1:{}", app.port(enrol));
    let fingerprint = app.ca_fingerprint(enrol);
    let dir = dir.to_str().expect("utf-8 dir");
    let mut args = vec![
        "register",
        "--server",
        &server,
        "--domain",
        DOMAIN,
        "--ca-fingerprint",
        &fingerprint,
        "--secret-file",
        "-",
        "--dir",
        dir,
        "--host-name",
        host,
    ];
    args.extend_from_slice(extra);
    app.agent_with_input(&args, &format!("{secret}\n"))
}

/// Fetches a key's bytes (hex) and version with `custos-agent get-key --reveal`.
pub fn fetch_key(app: &Appliance, dir: &Path, name: &str, version: Option<u32>) -> (String, u32) {
    let mut args = vec![
        "get-key".to_string(),
        name.to_string(),
        "--reveal".into(),
        "--dir".into(),
        dir.display().to_string(),
    ];
    if let Some(v) = version {
        args.push("--version".into());
        args.push(v.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = app.agent(&args);
    out.ok();
    let field = |k: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no '{k}' in agent output: {}", out.stdout))
    };
    (
        field("key:"),
        field("version:").parse().expect("version number"),
    )
}

/// An HTTPS client for the web console's port that trusts the appliance's
/// CA and does not follow redirects (the tests look at where they go).
pub fn console_client(app: &Appliance) -> reqwest::blocking::Client {
    let ca = reqwest::Certificate::from_pem(app.ca_pem("enrol").as_bytes()).expect("CA");
    reqwest::blocking::Client::builder()
        .tls_certs_only([ca])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A console session cookie for `login` (sign-in form with its CSRF
/// cookie), and the `Set-Cookie` line that carried it.
pub fn console_sign_in(app: &Appliance, login: &str, pw: &str) -> (String, String) {
    let c = console_client(app);
    let base = app.url("web");
    let r = c.get(format!("{base}/login")).send().expect("login page");
    let set = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("login cookie")
        .to_owned();
    let token = set
        .strip_prefix("__Host-custos_login=")
        .and_then(|v| v.split(';').next())
        .expect("__Host- login cookie")
        .to_owned();
    let r = c
        .post(format!("{base}/login"))
        .header("Cookie", format!("__Host-custos_login={token}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "csrf={token}&login={login}&password={}",
            pw.replace('!', "%21")
        ))
        .send()
        .expect("sign in");
    assert_eq!(r.status().as_u16(), 303, "console sign-in");
    let set = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-custos_session="))
        .expect("session cookie")
        .to_owned();
    let value = set
        .strip_prefix("__Host-custos_session=")
        .and_then(|v| v.split(';').next())
        .expect("value")
        .to_owned();
    (value, set)
}
