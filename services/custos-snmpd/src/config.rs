//! Bootstrap configuration: `/etc/custos/custos-snmpd.toml` and flags
//! (`CUSTOS_…` environment variables), parsed once into [`Config`]. The
//! operator's settings (enabled, community, access list, contact, location)
//! live in the store and are read while the agent runs.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde::Deserialize;

const DEFAULT_CONFIG: &str = "/etc/custos/custos-snmpd.toml";
/// §1: the standard SNMP port and the appliance's second one.
const PORT: u16 = 161;
const ALT_PORT: u16 = 7025;
/// Where a local run puts the privileged port (as `cargo xtask vm` forwards it).
const LOCAL_PORT: u16 = 10161;

#[derive(Debug, Parser)]
#[command(
    name = "custos-snmpd",
    version,
    about = "Custos SNMP agent: v1 and v2c GET, GETNEXT and GETBULK on UDP and TCP"
)]
pub struct Flags {
    /// Configuration file (TOML); unknown keys are an error.
    #[arg(long, env = "CUSTOS_SNMPD_CONFIG")]
    pub config: Option<PathBuf>,
    /// custos-keyd's local socket, through which the agent reads its
    /// settings and writes its audit entries (it never opens the store).
    #[arg(long, env = "CUSTOS_KEYD_SOCKET")]
    pub keyd_socket: Option<PathBuf>,
    /// Local (non-VM) run: listen on loopback, 161 becomes 10161.
    #[arg(long, env = "CUSTOS_LOCAL")]
    pub local: bool,
    /// Address to listen on (default 0.0.0.0, or 127.0.0.1 with --local).
    #[arg(long, env = "CUSTOS_LISTEN")]
    pub listen: Option<IpAddr>,
    /// This appliance's host name for sysName (default: the kernel's, read
    /// again while running).
    #[arg(long, env = "CUSTOS_HOST_NAME")]
    pub host_name: Option<String>,
    /// The standard SNMP port [default: 161; 10161 with --local].
    #[arg(long, env = "CUSTOS_SNMP_PORT")]
    pub port: Option<u16>,
    /// The second SNMP port [default: 7025].
    #[arg(long, env = "CUSTOS_SNMP_ALT_PORT")]
    pub alt_port: Option<u16>,
    /// Milliseconds between two reads of the settings in the store.
    #[arg(long, env = "CUSTOS_SNMP_POLL_MS")]
    pub poll_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    keyd_socket: Option<PathBuf>,
    local: Option<bool>,
    listen: Option<IpAddr>,
    host_name: Option<String>,
    port: Option<u16>,
    alt_port: Option<u16>,
    poll_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub keyd_socket: PathBuf,
    pub listen: IpAddr,
    /// `None`: the kernel's host name.
    pub host_name: Option<String>,
    pub port: u16,
    pub alt_port: u16,
    pub poll: Duration,
    pub local: bool,
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
        let host_name = flags.host_name.or(file.host_name);
        if let Some(h) = &host_name {
            appliance::model::check_host_name("host_name", h)
                .context("the configured host name")?;
        }
        let port = flags
            .port
            .or(file.port)
            .unwrap_or(if local { LOCAL_PORT } else { PORT });
        let alt_port = flags.alt_port.or(file.alt_port).unwrap_or(ALT_PORT);
        anyhow::ensure!(
            port != 0 && alt_port != 0 && port != alt_port,
            "port, alt_port: must be two different ports other than 0 (given {port} and {alt_port})"
        );
        let poll_ms = flags.poll_ms.or(file.poll_ms).unwrap_or(2000);
        anyhow::ensure!(
            (100..=60_000).contains(&poll_ms),
            "poll_ms: must be between 100 and 60000 milliseconds"
        );
        Ok(Config {
            keyd_socket: flags
                .keyd_socket
                .or(file.keyd_socket)
                .context("keyd_socket: required (the path of custos-keyd's local socket)")?,
            listen: flags.listen.or(file.listen).unwrap_or(if local {
                IpAddr::from([127, 0, 0, 1])
            } else {
                IpAddr::from([0, 0, 0, 0])
            }),
            host_name,
            port,
            alt_port,
            poll: Duration::from_millis(poll_ms),
            local,
        })
    }

    /// The host of the readiness lines' URLs.
    pub fn url_host(&self) -> String {
        if self.listen.is_unspecified() {
            "127.0.0.1".into()
        } else if self.listen.is_ipv6() {
            format!("[{}]", self.listen)
        } else {
            self.listen.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::try_parse_from(
            ["custos-snmpd", "--keyd-socket", "/run/custos/keyd.sock"]
                .into_iter()
                .chain(args.iter().copied()),
        )
        .expect("flags")
    }

    #[test]
    fn defaults_local_and_refusals() {
        let dir = tempfile::tempdir().expect("tempdir");
        let none = dir.path().join("none.toml");
        std::fs::write(&none, "").expect("write");
        let cfg = Config::load(flags(&["--config", none.to_str().expect("utf-8")])).expect("load");
        assert_eq!((cfg.port, cfg.alt_port), (161, 7025));
        assert!(cfg.listen.is_unspecified());
        let cfg = Config::load(flags(&[
            "--config",
            none.to_str().expect("utf-8"),
            "--local",
        ]))
        .expect("load");
        assert_eq!((cfg.port, cfg.alt_port), (10161, 7025));
        assert_eq!(cfg.url_host(), "127.0.0.1");
        let same = Config::load(flags(&[
            "--config",
            none.to_str().expect("utf-8"),
            "--port",
            "7025",
        ]));
        assert!(same.is_err());
        assert!(toml::from_str::<File>("port = 1\nbogus = 2").is_err());
        // The agent never opens the store: no data directory, and the
        // socket is required.
        assert!(toml::from_str::<File>("data = \"/var/lib/custos\"").is_err());
        assert!(Flags::try_parse_from(["custos-snmpd", "--data", "/var/lib/custos"]).is_err());
        let no_socket =
            Flags::try_parse_from(["custos-snmpd", "--config", none.to_str().expect("utf-8")])
                .expect("flags");
        if std::env::var_os("CUSTOS_KEYD_SOCKET").is_none() {
            let e = Config::load(no_socket).expect_err("keyd_socket is required");
            assert!(e.to_string().contains("keyd_socket"), "{e}");
        }
    }
}
