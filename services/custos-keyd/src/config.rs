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
    /// Seconds between two runs of the key rotation scheduler.
    #[arg(long, env = "CUSTOS_ROTATION_INTERVAL")]
    pub rotation_interval: Option<u64>,
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
    local: Option<bool>,
    listen: Option<IpAddr>,
    host_name: Option<String>,
    web_port: Option<u16>,
    web_alt_port: Option<u16>,
    enrol_port: Option<u16>,
    keys_port: Option<u16>,
    enrol_ec_port: Option<u16>,
    keys_ec_port: Option<u16>,
    rotation_interval: Option<u64>,
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
    pub listen: IpAddr,
    pub host_name: String,
    pub web_port: u16,
    /// `None` when skipped (local runs).
    pub web_alt_port: Option<u16>,
    pub enrol_port: u16,
    pub keys_port: u16,
    pub enrol_ec_port: u16,
    pub keys_ec_port: u16,
    pub rotation_interval: std::time::Duration,
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
        Ok(Config {
            limits,
            key_limits,
            session_lifetime: time::Duration::seconds(lifetime as i64),
            data,
            listen,
            host_name,
            web_port: flags.web_port.or(file.web_port).unwrap_or(8445),
            web_alt_port,
            enrol_port: flags.enrol_port.or(file.enrol_port).unwrap_or(8443),
            keys_port: flags.keys_port.or(file.keys_port).unwrap_or(8444),
            enrol_ec_port: flags.enrol_ec_port.or(file.enrol_ec_port).unwrap_or(8446),
            keys_ec_port: flags.keys_ec_port.or(file.keys_ec_port).unwrap_or(8447),
            rotation_interval: std::time::Duration::from_secs(rotation),
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
}
