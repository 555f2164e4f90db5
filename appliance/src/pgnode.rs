//! An HA node's own PostgreSQL 15 server (§11): the engine whose
//! streaming replication carries the store from the primary to the
//! failovers. This module makes the cluster, writes its configuration,
//! starts and stops it, makes a failover's copy from the primary by a base
//! backup, promotes a failover, and reads the replication's own views.
//!
//! - **Where.** The cluster lives in `<data>/pg/data` (the data partition).
//!   Its socket and the node's TLS key live in a run directory on tmpfs
//!   (`/run/custos-pg` on the appliance): the key is never written to disk
//!   in clear, and is written again, from the store's sealed copy, before
//!   each start.
//! - **Who connects.** Locally, only through the socket, in a 0700
//!   directory of the cluster's owner (`trust` is safe there: nobody else
//!   can reach it). Over the network, port 50000, only replication, only
//!   over TLS (`hostssl replication … cert`): the peer's certificate must
//!   chain to the appliance CA and name a registered node
//!   (`custos-ha:<host name>`, mapped to the replication role in
//!   `pg_ident.conf`); anything else is refused at authentication.
//! - **Suite B** (§9): TLS 1.2 only, ECDHE-ECDSA-AES256-GCM-SHA384 on P-384
//!   (PostgreSQL 15 cannot narrow TLS 1.3's suites, so 1.3 is off there).
//!   Compatible mode: TLS 1.2 and 1.3, modern suites.
//! - **Who runs it.** The cluster's owner is the user keyd runs as on the
//!   appliance; PostgreSQL refuses to run as root, so a root caller (the
//!   tests) runs its commands as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

/// The TCP port of replication (§1).
pub const REPLICATION_PORT: u16 = 50000;

/// The database that holds the store.
pub const DATABASE: &str = "custos";

/// The role failovers replicate as.
pub const REPLICATION_ROLE: &str = "custos_replica";

/// One node's PostgreSQL server.
#[derive(Debug, Clone)]
pub struct PgNode {
    /// The server binaries (`/usr/lib/postgresql/15/bin`).
    pub bin: PathBuf,
    /// `<data>/pg`: the cluster is its `data` directory.
    pub dir: PathBuf,
    /// Socket and TLS key (tmpfs on the appliance).
    pub run: PathBuf,
    /// TCP port for replication (and the socket's name).
    pub port: u16,
    /// Addresses replication listens on (`*`, or `127.0.0.1` in tests).
    pub listen: String,
}

/// The node's TLS identity for replication: its certificate and key (PEM)
/// and the CA certificate peers must chain to.
#[derive(Debug)]
pub struct NodeTls<'a> {
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
    pub ca_pem: &'a str,
    pub suite_b: bool,
}

/// Replication as the primary sees one failover (`pg_stat_replication`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaState {
    /// The failover's host name (its `application_name`).
    pub name: String,
    /// `streaming`, `catchup`, `startup`, `backup`.
    pub state: String,
    /// `async`, `sync`, `potential`, `quorum`.
    pub sync_state: String,
    /// WAL bytes written on the primary and not yet replayed there.
    pub lag_bytes: i64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    })
}

impl PgNode {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// libpq parameters of the store's database through the local socket.
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} user={} dbname={DATABASE}",
            self.run.display(),
            self.port,
            self.superuser()
        )
    }

    fn superuser(&self) -> &'static str {
        if is_root() { "postgres" } else { "custos" }
    }

    /// A tool of the server, as the cluster's owner.
    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, c: &mut Command, what: &str) -> Result<()> {
        let out = c.output().map_err(io(&self.bin))?;
        if out.status.success() {
            return Ok(());
        }
        Err(Error::conflict(
            "postgresql",
            format!(
                "{what} failed: {}{}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }

    /// Gives a path to the cluster's owner (when run as root).
    fn own(&self, path: &Path) -> Result<()> {
        if is_root() {
            self.run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(path),
                "chown",
            )?;
        }
        Ok(())
    }

    fn private_dir(&self, path: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        // Run as root (the tests), the cluster's owner must reach into the
        // data directory that holds it.
        if is_root() {
            for parent in path.ancestors().skip(1).take(2) {
                if let Ok(m) = std::fs::metadata(parent) {
                    let mode = m.permissions().mode();
                    if mode & 0o001 == 0 {
                        let _ = std::fs::set_permissions(
                            parent,
                            std::fs::Permissions::from_mode(mode | 0o011),
                        );
                    }
                }
            }
        }
        std::fs::create_dir_all(path).map_err(io(path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io(path))?;
        self.own(path)
    }

    /// Writes the TLS files: certificate and CA beside the cluster, the key
    /// in the run directory only.
    pub fn write_tls(&self, tls: &NodeTls<'_>) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        self.private_dir(&self.run)?;
        let tls_dir = self.dir.join("tls");
        self.private_dir(&tls_dir)?;
        for (path, text) in [
            (tls_dir.join("node.crt"), tls.cert_pem),
            (tls_dir.join("ca.crt"), tls.ca_pem),
            (self.run.join("node.key"), tls.key_pem),
        ] {
            let _ = std::fs::remove_file(&path);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io(&path))?;
            std::io::Write::write_all(&mut f, text.as_bytes()).map_err(io(&path))?;
            self.own(&path)?;
        }
        Ok(())
    }

    /// Whether this node has a cluster (HA was set up here).
    pub fn exists(&self) -> bool {
        self.data_dir().join("PG_VERSION").exists()
    }

    /// The certificate the cluster presents (written by [`PgNode::configure`]).
    pub fn certificate_pem(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("tls").join("node.crt")).ok()
    }

    /// Writes the node key into the run directory again (it is on tmpfs:
    /// gone at every boot), before [`PgNode::start`].
    pub fn write_key(&self, key_pem: &str) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        self.private_dir(&self.run)?;
        let path = self.run.join("node.key");
        let _ = std::fs::remove_file(&path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        std::io::Write::write_all(&mut f, key_pem.as_bytes()).map_err(io(&path))?;
        self.own(&path)
    }

    /// Makes the cluster when there is none (a primary's first failover).
    pub fn init(&self) -> Result<()> {
        let data = self.data_dir();
        if data.join("PG_VERSION").exists() {
            return Ok(());
        }
        self.private_dir(&self.dir)?;
        self.run(
            self.command("initdb").arg("-D").arg(&data).args([
                "-U",
                self.superuser(),
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
            ]),
            "initdb",
        )
    }

    /// Writes the node's server configuration, access rules and the names
    /// of the nodes allowed to replicate (`peers`, host names).
    pub fn configure(&self, tls: &NodeTls<'_>, peers: &[String], synchronous: bool) -> Result<()> {
        let data = self.data_dir();
        let tls_dir = self.dir.join("tls");
        let suite = if tls.suite_b {
            "ssl_min_protocol_version = 'TLSv1.2'\nssl_max_protocol_version = 'TLSv1.2'\nssl_ciphers = 'ECDHE-ECDSA-AES256-GCM-SHA384'\nssl_ecdh_curve = 'secp384r1'\n"
        } else {
            "ssl_min_protocol_version = 'TLSv1.2'\nssl_ciphers = 'HIGH:!aNULL:!MD5:!SHA1:!CBC'\n"
        };
        let sync = if synchronous && !peers.is_empty() {
            "synchronous_standby_names = 'ANY 1 (*)'\n"
        } else {
            "synchronous_standby_names = ''\n"
        };
        let conf = format!(
            "# Written by custos-keyd (pgnode.rs); changes here are overwritten.\n\
             listen_addresses = '{listen}'\n\
             port = {port}\n\
             unix_socket_directories = '{run}'\n\
             unix_socket_permissions = 0700\n\
             ssl = on\n\
             ssl_cert_file = '{tls}/node.crt'\n\
             ssl_key_file = '{run}/node.key'\n\
             ssl_ca_file = '{tls}/ca.crt'\n\
             {suite}\
             wal_level = replica\n\
             max_wal_senders = 10\n\
             wal_keep_size = '512MB'\n\
             hot_standby = on\n\
             {sync}\
             log_connections = on\n\
             jit = off\n",
            listen = self.listen,
            port = self.port,
            run = self.run.display(),
            tls = tls_dir.display(),
        );
        write(&data.join("custos.conf"), &conf)?;
        let main = data.join("postgresql.conf");
        let text = std::fs::read_to_string(&main).map_err(io(&main))?;
        if !text.contains("include_if_exists = 'custos.conf'") {
            write(
                &main,
                &format!("{text}\ninclude_if_exists = 'custos.conf'\n"),
            )?;
        }
        write(
            &data.join("pg_hba.conf"),
            &format!(
                "# Written by custos-keyd (pgnode.rs).\n\
                 local all all trust\n\
                 hostssl replication {REPLICATION_ROLE} 0.0.0.0/0 cert map=custosha\n\
                 hostssl replication {REPLICATION_ROLE} ::/0 cert map=custosha\n"
            ),
        )?;
        let mut ident =
            String::from("# Written by custos-keyd (pgnode.rs): the registered nodes.\n");
        for p in peers {
            ident.push_str(&format!(
                "custosha \"{}\" {REPLICATION_ROLE}\n",
                crate::pki::node_common_name(p)
            ));
        }
        write(&data.join("pg_ident.conf"), &ident)?;
        self.own(&data)?;
        self.write_tls(tls)
    }

    /// Switches the replication between asynchronous and synchronous (a
    /// commit waits until one failover has it), and reloads.
    pub fn set_synchronous(&self, synchronous: bool) -> Result<()> {
        let path = self.data_dir().join("custos.conf");
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let line = if synchronous {
            "synchronous_standby_names = 'ANY 1 (*)'"
        } else {
            "synchronous_standby_names = ''"
        };
        let out: Vec<&str> = text
            .lines()
            .map(|l| {
                if l.starts_with("synchronous_standby_names") {
                    line
                } else {
                    l
                }
            })
            .collect();
        write(&path, &format!("{}\n", out.join("\n")))?;
        self.own(&path)?;
        if self.is_running() {
            self.reload()?;
        }
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        self.command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("status")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> Result<()> {
        if self.is_running() {
            return self.reload();
        }
        let log = self.dir.join("server.log");
        self.run(
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "120", "start"]),
            "starting PostgreSQL",
        )
    }

    pub fn reload(&self) -> Result<()> {
        self.run(
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("reload"),
            "reloading PostgreSQL",
        )
    }

    pub fn stop(&self) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        self.run(
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "fast", "-w", "-t", "120", "stop"]),
            "stopping PostgreSQL",
        )
    }

    /// Stops the server at once, as a power cut would (no checkpoint; it
    /// recovers from its WAL at the next start).
    pub fn stop_now(&self) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        self.run(
            self.command("pg_ctl").arg("-D").arg(self.data_dir()).args([
                "-m",
                "immediate",
                "-w",
                "-t",
                "60",
                "stop",
            ]),
            "stopping PostgreSQL",
        )
    }

    /// On the primary: the replication role and the store's database.
    pub fn prepare_primary(&self) -> Result<()> {
        let mut c = postgres::Client::connect(
            &format!(
                "host={} port={} user={} dbname=postgres",
                self.run.display(),
                self.port,
                self.superuser()
            ),
            postgres::NoTls,
        )
        .map_err(|e| Error::conflict("postgresql", e.to_string()))?;
        let fail = |e: postgres::Error| Error::conflict("postgresql", e.to_string());
        let role = c
            .query_opt(
                "SELECT 1 FROM pg_roles WHERE rolname = $1",
                &[&REPLICATION_ROLE],
            )
            .map_err(fail)?;
        if role.is_none() {
            c.batch_execute(&format!(
                "CREATE ROLE {REPLICATION_ROLE} WITH REPLICATION LOGIN"
            ))
            .map_err(fail)?;
        }
        let db = c
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&DATABASE])
            .map_err(fail)?;
        if db.is_none() {
            c.batch_execute(&format!("CREATE DATABASE {DATABASE}"))
                .map_err(fail)?;
        }
        Ok(())
    }

    /// On a failover: replaces the cluster with a base backup of the
    /// primary's, over TLS with this node's certificate, verifying the
    /// primary's (`host_name` as its name, `address` to connect to), and
    /// leaves it a standby streaming from the primary.
    pub fn base_backup_from(
        &self,
        name: &str,
        host_name: &str,
        address: &str,
        port: u16,
    ) -> Result<()> {
        self.stop()?;
        let data = self.data_dir();
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(io(&data))?;
        }
        self.private_dir(&self.dir)?;
        let tls_dir = self.dir.join("tls");
        let conninfo = format!(
            "host={host_name} hostaddr={address} port={port} user={REPLICATION_ROLE} \
             sslmode=verify-full sslcert={tls}/node.crt sslkey={run}/node.key sslrootcert={tls}/ca.crt \
             application_name={name}",
            tls = tls_dir.display(),
            run = self.run.display(),
        );
        self.run(
            self.command("pg_basebackup")
                .arg("-d")
                .arg(&conninfo)
                .arg("-D")
                .arg(&data)
                .args(["-R", "-X", "stream", "-c", "fast"]),
            "the base backup from the primary",
        )
    }

    /// Makes this standby the primary (`ha convert2primary`).
    pub fn promote(&self) -> Result<()> {
        self.run(
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-t", "120", "promote"]),
            "promoting PostgreSQL",
        )
    }

    /// The failovers streaming from this primary, from its own view.
    pub fn replicas(&self) -> Result<Vec<ReplicaState>> {
        let mut c = postgres::Client::connect(&self.conninfo(), postgres::NoTls)
            .map_err(|e| Error::conflict("postgresql", e.to_string()))?;
        let rows = c
            .query(
                "SELECT application_name, COALESCE(state, ''), COALESCE(sync_state, ''),
                        COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint
                 FROM pg_stat_replication ORDER BY application_name",
                &[],
            )
            .map_err(|e| Error::conflict("postgresql", e.to_string()))?;
        Ok(rows
            .iter()
            .map(|r| ReplicaState {
                name: r.get(0),
                state: r.get(1),
                sync_state: r.get(2),
                lag_bytes: r.get(3),
            })
            .collect())
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CaKind, CaSubject, generate_ca, issue_node};
    use crate::store::{Backend, Store};

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    fn node(root: &Path, name: &str) -> PgNode {
        PgNode {
            bin: crate::pg_harness::bin_dir().expect("binaries"),
            dir: root.join(name).join("pg"),
            run: root.join(name).join("run"),
            port: free_port(),
            listen: "127.0.0.1".into(),
        }
    }

    /// Two nodes on loopback, as §11 pairs them: a primary, and a failover
    /// made by a base backup over TLS on the replication port with its
    /// node certificate, streaming what the primary writes. A node whose
    /// certificate is not registered is refused; so is one that does not
    /// chain to the appliance CA. Suite B's TLS applies.
    #[test]
    fn a_failover_replicates_over_tls_and_an_unregistered_node_is_refused() {
        let test = "pgnode::a_failover_replicates_over_tls_and_an_unregistered_node_is_refused";
        if let Err(why) = crate::pg_harness::bin_dir() {
            crate::pg_harness::skip(test, &why);
            return;
        }
        let root = tempfile::tempdir().expect("tempdir");
        // The cluster's owner must reach these when the test runs as root.
        if is_root() {
            std::process::Command::new("chmod")
                .arg("755")
                .arg(root.path())
                .status()
                .expect("chmod");
        }
        let ca =
            generate_ca(CaKind::Ec, &CaSubject::default_for("custos-a.example.com")).expect("ca");
        let other_ca =
            generate_ca(CaKind::Ec, &CaSubject::default_for("elsewhere.example.com")).expect("ca");
        let ident = |ca: &crate::pki::Identity, name: &str| {
            issue_node(ca, CaKind::Ec, name).expect("node certificate")
        };
        let tls =
            |id: &crate::pki::Identity, ca: &crate::pki::Identity| -> (String, String, String) {
                (
                    id.cert_pem.clone(),
                    id.key_pem.expose().to_owned(),
                    ca.cert_pem.clone(),
                )
            };

        let a = node(root.path(), "a");
        let ta = tls(&ident(&ca, "custos-a.example.com"), &ca);
        a.init().expect("initdb");
        a.configure(&node_tls(&ta), &["custos-b.example.com".into()], false)
            .expect("configure");
        a.start().expect("start");
        let stop_a = Stop(a.clone());
        a.prepare_primary().expect("role and database");
        let data_a = root.path().join("a").join("data");
        let store_a = Store::open_with(&data_a, Backend::Postgres(a.conninfo()))
            .expect("store on the primary");
        let sa = crate::store::test_support::key_admin(&store_a);
        store_a
            .create_key(
                &sa,
                "D",
                crate::store::test_support::new_key("recorder", false, None),
            )
            .expect("key");

        // The failover: a base backup over TLS, then streaming.
        let b = node(root.path(), "b");
        let tb = tls(&ident(&ca, "custos-b.example.com"), &ca);
        b.write_tls(&node_tls(&tb)).expect("tls");
        b.base_backup_from(
            "custos-b.example.com",
            "custos-a.example.com",
            "127.0.0.1",
            a.port,
        )
        .expect("base backup");
        b.configure(&node_tls(&tb), &["custos-a.example.com".into()], false)
            .expect("configure");
        b.start().expect("start the standby");
        let _stop_b = Stop(b.clone());
        let data_b = root.path().join("b").join("data");
        std::fs::create_dir_all(&data_b).expect("data");
        std::fs::copy(
            data_a.join(crate::crypto::MASTER_KEY_FILE),
            data_b.join(crate::crypto::MASTER_KEY_FILE),
        )
        .expect("the group's master key");
        let store_b = Store::open_with(&data_b, Backend::Postgres(b.conninfo()))
            .expect("store on the failover");
        assert!(store_b.is_failover().expect("role"));
        assert_eq!(
            crate::store::test_support::material(&store_b, "recorder", 1),
            crate::store::test_support::material(&store_a, "recorder", 1)
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let r = a.replicas().expect("pg_stat_replication");
            if r.iter()
                .any(|r| r.name == "custos-b.example.com" && r.state == "streaming")
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the failover never streamed: {r:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }

        // A node the primary does not know, and one of another CA.
        for (name, t, why) in [
            (
                "custos-c.example.com",
                tls(&ident(&ca, "custos-c.example.com"), &ca),
                "certificate authentication failed",
            ),
            (
                "custos-b.example.com",
                tls(&ident(&other_ca, "custos-b.example.com"), &ca),
                "unknown ca",
            ),
        ] {
            let c = node(root.path(), &format!("c-{}", t.0.len()));
            c.write_tls(&node_tls(&t)).expect("tls");
            let e = c
                .base_backup_from(name, "custos-a.example.com", "127.0.0.1", a.port)
                .expect_err("refused");
            assert!(e.to_string().contains(why), "{name}: {e}");
        }
        drop(stop_a);
    }

    fn node_tls(t: &(String, String, String)) -> NodeTls<'_> {
        NodeTls {
            cert_pem: &t.0,
            key_pem: &t.1,
            ca_pem: &t.2,
            suite_b: true,
        }
    }

    /// Stops a node's server when the test ends, even on a panic.
    struct Stop(PgNode);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.stop();
        }
    }
}
