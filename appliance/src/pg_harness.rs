//! A PostgreSQL server of a test's own: Debian's `postgresql-15` binaries,
//! a cluster made by `initdb` in a private temporary directory, reachable
//! only through its Unix socket there (no TCP listener), trusted for the
//! `postgres` role. Nothing depends on a server the machine happens to run.
//!
//! `initdb` refuses to run as root: as root, the cluster belongs to the
//! `postgres` system user (which Debian's package creates) and its commands
//! run through `runuser`. The server is stopped and its directory removed
//! when the test process ends, by a watcher beside it, so a test that
//! panics leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where Debian puts PostgreSQL 15's server binaries (not on PATH).
pub const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// The server binaries, or why there are none.
pub fn bin_dir() -> Result<PathBuf, String> {
    let dir =
        std::env::var_os("CUSTOS_PG_BIN").map_or_else(|| PathBuf::from(BIN_DIR), PathBuf::from);
    if dir.join("initdb").exists() && dir.join("postgres").exists() {
        Ok(dir)
    } else {
        Err(format!(
            "PostgreSQL 15 server binaries not found in {} (apt-get install postgresql-15)",
            dir.display()
        ))
    }
}

/// One running test server.
#[derive(Debug)]
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgServer {
    /// Makes a cluster and starts its server; returns once it accepts
    /// connections. `settings` are extra `-c name=value` server settings.
    pub fn start(settings: &[&str]) -> Result<PgServer, String> {
        let bin = bin_dir()?;
        let as_postgres = is_root();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("custos-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let server = PgServer {
            dir,
            bin,
            as_postgres,
        };
        if as_postgres {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(&server.dir))?;
        }
        let data = server.data_dir();
        run(server.command("initdb").arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]))?;
        server.launch(settings)?;
        Ok(server)
    }

    /// A hot standby of `primary`, made as an HA failover's is: a base
    /// backup over the replication protocol (`pg_basebackup -R`, which
    /// also writes the standby's `primary_conninfo`), then the server
    /// started, streaming from the primary.
    pub fn start_standby_of(primary: &PgServer) -> Result<PgServer, String> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("custos-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let server = PgServer {
            dir,
            bin: primary.bin.clone(),
            as_postgres: primary.as_postgres,
        };
        if server.as_postgres {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(&server.dir))?;
        }
        run(server
            .command("pg_basebackup")
            .arg("-h")
            .arg(primary.socket_dir())
            .args([
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
                "-D",
            ])
            .arg(server.data_dir()))?;
        server.launch(&[])?;
        Ok(server)
    }

    /// A command of the server's binaries, as the cluster's owner.
    pub fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The directory of the server's socket (libpq's `host`).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// Starts the server with its watcher: the server stops, and the whole
    /// directory goes, when this process ends.
    fn launch(&self, settings: &[&str]) -> Result<(), String> {
        let mut args = format!(
            "'{}' -D '{}' -k '{}' -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.bin.join("postgres").display(),
            self.data_dir().display(),
            self.dir.display()
        );
        for s in settings {
            args.push_str(&format!(" -c '{s}'"));
        }
        let script = format!(
            "{args} >'{dir}/server.log' 2>&1 & p=$!
             while [ -d /proc/{me} ] && kill -0 $p 2>/dev/null; do sleep 0.5; done
             kill -INT $p 2>/dev/null; wait $p; rm -rf '{dir}'",
            dir = self.dir.display(),
            me = std::process::id()
        );
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", &script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        };
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c.spawn().map_err(|e| format!("starting postgres: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match postgres::Client::connect(&self.conninfo("postgres"), postgres::NoTls) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    let log =
                        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                    return Err(format!("postgres did not start: {e}\n{log}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The same database on another server (a standby of this one).
    pub fn conninfo_on(&self, other: &PgServer, conninfo: &str) -> String {
        conninfo.replace(
            &self.dir.display().to_string(),
            &other.dir.display().to_string(),
        )
    }

    /// libpq connection parameters for database `db` on this server.
    pub fn conninfo(&self, db: &str) -> String {
        format!("host={} user=postgres dbname={db}", self.dir.display())
    }

    /// Creates an empty database; its connection parameters.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        let mut c = postgres::Client::connect(&self.conninfo("postgres"), postgres::NoTls)
            .map_err(|e| format!("connecting to the test server: {e}"))?;
        c.batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        Ok(self.conninfo(name))
    }

    /// A fresh database with a unique name.
    pub fn fresh_database(&self) -> Result<String, String> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.create_database(&format!("t{n}"))
    }
}

fn run(c: &mut Command) -> Result<(), String> {
    let out = c.output().map_err(|e| format!("{c:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{c:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// One server shared by every test of this process (each test takes a
/// database of its own).
pub fn shared() -> Result<&'static PgServer, String> {
    static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| PgServer::start(&[]))
        .as_ref()
        .map_err(Clone::clone)
}

/// The engine the store tests run on: `CUSTOS_TEST_STORE=postgresql` runs
/// them on PostgreSQL (what `cargo xtask test` does in its second pass).
pub fn wants_postgres() -> bool {
    std::env::var("CUSTOS_TEST_STORE").is_ok_and(|v| v == "postgresql")
}

/// Records that `test` could not run here (PostgreSQL, a tool or the images
/// missing), so that `cargo xtask test` counts it as skipped, not passed:
/// libtest has no skip decided at run time, so the test returns early after
/// calling this. `cargo xtask test` sets `CUSTOS_SKIPPED_DIR` and reads one
/// file per skipped test from it; a plain `cargo test` only prints the
/// line. The end-to-end tests use it as `tests::skip`.
pub fn skip(test: &str, why: &str) {
    eprintln!("skipped: {test}: {why}");
    if let Some(dir) = std::env::var_os("CUSTOS_SKIPPED_DIR") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("the skipped-tests folder");
        let name: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        std::fs::write(dir.join(name), format!("{test}: {why}\n"))
            .expect("recording a skipped test");
    }
}
