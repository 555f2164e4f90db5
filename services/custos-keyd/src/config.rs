//! Bootstrap configuration: `/etc/custos/custos-keyd.toml` and flags
//! (`CUSTOS_…` environment variables), parsed once into [`Config`].
//! Operator settings (security mode, preferences) live in the store instead.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use serde::Deserialize;

const DEFAULT_CONFIG: &str = "/etc/custos/custos-keyd.toml";

#[derive(Debug, Parser)]
#[command(
    name = "custos-keyd",
    version,
    about = "Custos key service: web console and admin REST API, agent enrolment, key retrieval"
)]
pub struct Flags {
    /// Configuration file (TOML); unknown keys are an error.
    #[arg(long, env = "CUSTOS_KEYD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory holding the store, the master key and certificates.
    #[arg(long, env = "CUSTOS_DATA")]
    pub data: Option<PathBuf>,
    /// The local socket custos-snmpd, custos-notifyd and custos-backupd
    /// reach the store through [default: DATA/keyd.sock].
    #[arg(long, env = "CUSTOS_LOCAL_SOCKET")]
    pub local_socket: Option<PathBuf>,
    /// Local (non-VM) run: listen on loopback and skip the privileged port 443.
    #[arg(long, env = "CUSTOS_LOCAL")]
    pub local: bool,
    /// Address to listen on (default 0.0.0.0, or 127.0.0.1 with --local).
    #[arg(long, env = "CUSTOS_LISTEN")]
    pub listen: Option<IpAddr>,
    /// This appliance's host name (default: the system's).
    #[arg(long, env = "CUSTOS_HOST_NAME")]
    pub host_name: Option<String>,
    #[arg(long, env = "CUSTOS_WEB_PORT")]
    pub web_port: Option<u16>,
    /// The standard HTTPS port; skipped when it cannot be bound.
    #[arg(long, env = "CUSTOS_WEB_ALT_PORT")]
    pub web_alt_port: Option<u16>,
    #[arg(long, env = "CUSTOS_ENROL_PORT")]
    pub enrol_port: Option<u16>,
    #[arg(long, env = "CUSTOS_KEYS_PORT")]
    pub keys_port: Option<u16>,
    #[arg(long, env = "CUSTOS_ENROL_EC_PORT")]
    pub enrol_ec_port: Option<u16>,
    #[arg(long, env = "CUSTOS_KEYS_EC_PORT")]
    pub keys_ec_port: Option<u16>,
    /// The HA control API, node to node (§1: 8080).
    #[arg(long, env = "CUSTOS_HA_PORT")]
    pub ha_port: Option<u16>,
    /// HA replication: this node's PostgreSQL (§1: 50000).
    #[arg(long, env = "CUSTOS_REPLICATION_PORT")]
    pub replication_port: Option<u16>,
    /// PostgreSQL 15's server binaries (default /usr/lib/postgresql/15/bin).
    #[arg(long, env = "CUSTOS_PG_BIN")]
    pub pg_bin: Option<PathBuf>,
    /// The node PostgreSQL's socket and TLS key, on tmpfs (default
    /// /run/custos-pg; `<data>/pg-run` with --local).
    #[arg(long, env = "CUSTOS_PG_RUN")]
    pub pg_run: Option<PathBuf>,
    /// Seconds between two runs of the key rotation scheduler.
    #[arg(long, env = "CUSTOS_ROTATION_INTERVAL")]
    pub rotation_interval: Option<u64>,
    /// Seconds within which failed registration secrets are counted.
    #[arg(long, env = "CUSTOS_ENROL_FAILURE_WINDOW")]
    pub enrol_failure_window: Option<u64>,
    /// Seconds of the first back-off after too many failed secrets; each
    /// further one doubles, up to 900.
    #[arg(long, env = "CUSTOS_ENROL_BACKOFF")]
    pub enrol_backoff: Option<u64>,
    /// Seconds during which repeated failed sign-ins or registrations from
    /// one address are counted, then written as one entry [default: 60].
    #[arg(long, env = "CUSTOS_REFUSAL_WINDOW")]
    pub refusal_window: Option<u64>,
    /// MiB the data partition keeps free: below, refusals are only counted
    /// [default: 64].
    #[arg(long, env = "CUSTOS_DISK_RESERVE_MB")]
    pub disk_reserve_mb: Option<u64>,
    /// Rows the audit table keeps; older ones are archived to
    /// DATA/audit/*.jsonl.gz, then deleted [default: 1000000].
    #[arg(long, env = "CUSTOS_AUDIT_MAX_ROWS")]
    pub audit_max_rows: Option<i64>,
    /// Open connections allowed on each web and enrolment listener
    /// (default 512).
    #[arg(long, env = "CUSTOS_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open connections allowed on each key listener, a budget of its own
    /// (default 1024).
    #[arg(long, env = "CUSTOS_MAX_KEY_CONNECTIONS")]
    pub max_key_connections: Option<usize>,
    /// Open connections from one client address on one listener (default 64).
    #[arg(long, env = "CUSTOS_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,
    /// Seconds allowed for a TLS handshake (default 10).
    #[arg(long, env = "CUSTOS_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Option<u64>,
    /// Seconds allowed for a request header, counted from when the
    /// connection waits for a request: also the idle keep-alive timeout
    /// (default 10).
    #[arg(long, env = "CUSTOS_HEADER_TIMEOUT")]
    pub header_timeout: Option<u64>,
    /// Seconds allowed for a request body after its header, plus one second
    /// per 16 KiB received (default 30).
    #[arg(long, env = "CUSTOS_BODY_TIMEOUT")]
    pub body_timeout: Option<u64>,
    /// Absolute lifetime of a sign-in (API token or console session) in
    /// seconds, whatever its activity (default 43200: 12 hours).
    #[arg(long, env = "CUSTOS_SESSION_LIFETIME")]
    pub session_lifetime: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    data: Option<PathBuf>,
    local_socket: Option<PathBuf>,
    local: Option<bool>,
    listen: Option<IpAddr>,
    host_name: Option<String>,
    web_port: Option<u16>,
    web_alt_port: Option<u16>,
    enrol_port: Option<u16>,
    keys_port: Option<u16>,
    enrol_ec_port: Option<u16>,
    keys_ec_port: Option<u16>,
    ha_port: Option<u16>,
    replication_port: Option<u16>,
    pg_bin: Option<PathBuf>,
    pg_run: Option<PathBuf>,
    rotation_interval: Option<u64>,
    enrol_failure_window: Option<u64>,
    enrol_backoff: Option<u64>,
    refusal_window: Option<u64>,
    disk_reserve_mb: Option<u64>,
    audit_max_rows: Option<i64>,
    max_connections: Option<usize>,
    max_key_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
    handshake_timeout: Option<u64>,
    header_timeout: Option<u64>,
    body_timeout: Option<u64>,
    session_lifetime: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data: PathBuf,
    /// The local socket of the other daemons (`local.rs`).
    pub local_socket: PathBuf,
    pub listen: IpAddr,
    pub host_name: String,
    pub web_port: u16,
    /// `None` when skipped (local runs).
    pub web_alt_port: Option<u16>,
    pub enrol_port: u16,
    pub keys_port: u16,
    pub enrol_ec_port: u16,
    pub keys_ec_port: u16,
    pub ha_port: u16,
    /// This node's PostgreSQL, once HA is set up (`pgnode.rs`).
    pub pg: appliance::pgnode::PgNode,
    pub rotation_interval: std::time::Duration,
    /// The enrolment back-off (window and first delay from the flags).
    pub enrol_guard: crate::enrol_guard::Policy,
    pub refusal_window: std::time::Duration,
    pub disk_reserve_bytes: u64,
    pub audit_max_rows: i64,
    /// Budget and deadlines of the web and enrolment listeners.
    pub limits: crate::serve::Limits,
    /// Budget and deadlines of the key listeners.
    pub key_limits: crate::serve::Limits,
    pub session_lifetime: time::Duration,
}

/// A positive count or number of seconds, naming its setting when not.
fn positive<T: Default + PartialOrd>(name: &str, v: T) -> anyhow::Result<T> {
    anyhow::ensure!(v > T::default(), "{name}: must be at least 1");
    Ok(v)
}

impl Config {
    pub fn load(flags: Flags) -> anyhow::Result<Config> {
        let path = flags.config.clone().or_else(|| {
            let p = PathBuf::from(DEFAULT_CONFIG);
            p.exists().then_some(p)
        });
        let file: File = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?
            }
            None => File::default(),
        };
        let local = flags.local || file.local.unwrap_or(false);
        let host_name = match flags.host_name.or(file.host_name) {
            Some(h) => h,
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "custos".into()),
        };
        appliance::model::check_host_name("host_name", &host_name)
            .context("the configured host name")?;
        let data = flags
            .data
            .or(file.data)
            .unwrap_or_else(|| PathBuf::from("/var/lib/custos"));
        let listen = flags.listen.or(file.listen).unwrap_or(if local {
            IpAddr::from([127, 0, 0, 1])
        } else {
            IpAddr::from([0, 0, 0, 0])
        });
        let web_alt_port = if local {
            None
        } else {
            Some(flags.web_alt_port.or(file.web_alt_port).unwrap_or(443))
        };
        let rotation = flags
            .rotation_interval
            .or(file.rotation_interval)
            .unwrap_or(60);
        anyhow::ensure!(
            rotation >= 1,
            "rotation_interval: must be at least 1 second"
        );
        let mut enrol_guard = crate::enrol_guard::Policy::default();
        if let Some(secs) = flags.enrol_failure_window.or(file.enrol_failure_window) {
            anyhow::ensure!(
                (1..=86_400).contains(&secs),
                "enrol_failure_window: must be 1 to 86400 seconds"
            );
            enrol_guard.window = std::time::Duration::from_secs(secs);
        }
        if let Some(secs) = flags.enrol_backoff.or(file.enrol_backoff) {
            anyhow::ensure!(
                (1..=900).contains(&secs),
                "enrol_backoff: must be 1 to 900 seconds"
            );
            enrol_guard.base = std::time::Duration::from_secs(secs);
        }
        let refusal_window = flags
            .refusal_window
            .or(file.refusal_window)
            .unwrap_or(appliance::store::REFUSAL_WINDOW.as_secs());
        anyhow::ensure!(
            (1..=3600).contains(&refusal_window),
            "refusal_window: must be between 1 and 3600 seconds"
        );
        let disk_reserve_mb = flags
            .disk_reserve_mb
            .or(file.disk_reserve_mb)
            .unwrap_or(appliance::store::DISK_RESERVE_DEFAULT / (1024 * 1024));
        anyhow::ensure!(
            disk_reserve_mb <= 1024 * 1024,
            "disk_reserve_mb: must be at most 1048576 (1 TiB)"
        );
        let audit_max_rows = flags
            .audit_max_rows
            .or(file.audit_max_rows)
            .unwrap_or(appliance::store::AUDIT_MAX_ROWS_DEFAULT);
        anyhow::ensure!(audit_max_rows >= 10, "audit_max_rows: must be at least 10");
        let secs = |v: u64, name: &str| -> anyhow::Result<std::time::Duration> {
            Ok(std::time::Duration::from_secs(positive(name, v)?))
        };
        let limits = crate::serve::Limits {
            max_connections: positive(
                "max_connections",
                flags
                    .max_connections
                    .or(file.max_connections)
                    .unwrap_or(512),
            )?,
            max_per_address: positive(
                "max_connections_per_address",
                flags
                    .max_connections_per_address
                    .or(file.max_connections_per_address)
                    .unwrap_or(64),
            )?,
            handshake: secs(
                flags
                    .handshake_timeout
                    .or(file.handshake_timeout)
                    .unwrap_or(10),
                "handshake_timeout",
            )?,
            header: secs(
                flags.header_timeout.or(file.header_timeout).unwrap_or(10),
                "header_timeout",
            )?,
            body: secs(
                flags.body_timeout.or(file.body_timeout).unwrap_or(30),
                "body_timeout",
            )?,
        };
        let key_limits = crate::serve::Limits {
            max_connections: positive(
                "max_key_connections",
                flags
                    .max_key_connections
                    .or(file.max_key_connections)
                    .unwrap_or(1024),
            )?,
            ..limits
        };
        let lifetime = positive(
            "session_lifetime",
            flags
                .session_lifetime
                .or(file.session_lifetime)
                .unwrap_or(12 * 3600),
        )?;
        anyhow::ensure!(
            lifetime <= 366 * 24 * 3600,
            "session_lifetime: must be at most 366 days in seconds"
        );
        let pg = appliance::pgnode::PgNode {
            bin: flags
                .pg_bin
                .or(file.pg_bin)
                .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin")),
            dir: data.join("pg"),
            run: flags.pg_run.or(file.pg_run).unwrap_or_else(|| {
                if local {
                    data.join("pg-run")
                } else {
                    PathBuf::from("/run/custos-pg")
                }
            }),
            port: flags
                .replication_port
                .or(file.replication_port)
                .unwrap_or(appliance::pgnode::REPLICATION_PORT),
            listen: if listen.is_unspecified() {
                "*".to_owned()
            } else {
                listen.to_string()
            },
        };
        Ok(Config {
            pg,
            enrol_guard,
            limits,
            key_limits,
            session_lifetime: time::Duration::seconds(lifetime as i64),
            local_socket: flags
                .local_socket
                .or(file.local_socket)
                .unwrap_or_else(|| data.join("keyd.sock")),
            data,
            listen,
            host_name,
            web_port: flags.web_port.or(file.web_port).unwrap_or(8445),
            web_alt_port,
            enrol_port: flags.enrol_port.or(file.enrol_port).unwrap_or(8443),
            keys_port: flags.keys_port.or(file.keys_port).unwrap_or(8444),
            enrol_ec_port: flags.enrol_ec_port.or(file.enrol_ec_port).unwrap_or(8446),
            keys_ec_port: flags.keys_ec_port.or(file.keys_ec_port).unwrap_or(8447),
            ha_port: flags.ha_port.or(file.ha_port).unwrap_or(8080),
            rotation_interval: std::time::Duration::from_secs(rotation),
            refusal_window: std::time::Duration::from_secs(refusal_window),
            disk_reserve_bytes: disk_reserve_mb * 1024 * 1024,
            audit_max_rows,
        })
    }

    /// Names the server certificates cover.
    pub fn server_names(&self) -> Vec<String> {
        let mut names = vec![
            self.host_name.clone(),
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
        ];
        if !self.listen.is_unspecified() && !names.contains(&self.listen.to_string()) {
            names.push(self.listen.to_string());
        }
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<File>("web_port = 1\nbogus = 2").is_err());
        assert!(toml::from_str::<File>("web_port = 1").is_ok());
    }

    #[test]
    fn the_local_socket_defaults_to_the_data_directory() {
        let load = |args: &[&str]| {
            let flags = Flags::try_parse_from(
                [
                    "custos-keyd",
                    "--config",
                    "/dev/null",
                    "--host-name",
                    "custos",
                ]
                .iter()
                .chain(args),
            )
            .expect("flags");
            Config::load(flags).expect("config")
        };
        if std::env::var_os("CUSTOS_LOCAL_SOCKET").is_none() {
            let c = load(&["--data", "/srv/custos"]);
            assert_eq!(c.local_socket, PathBuf::from("/srv/custos/keyd.sock"));
        }
        let c = load(&["--local-socket", "/run/custos/keyd.sock"]);
        assert_eq!(c.local_socket, PathBuf::from("/run/custos/keyd.sock"));
        assert!(toml::from_str::<File>("local_socket = \"/run/custos/keyd.sock\"").is_ok());
    }
}
