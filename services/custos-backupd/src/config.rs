//! Bootstrap configuration: `/etc/custos/custos-backupd.toml` and flags
//! (`CUSTOS_…` environment variables), parsed once into [`Config`]. The
//! schedule and the target are operator settings and live in the store.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde::Deserialize;

const DEFAULT_CONFIG: &str = "/etc/custos/custos-backupd.toml";

#[derive(Debug, Parser)]
#[command(
    name = "custos-backupd",
    version,
    about = "Custos automatic backup: runs the backup schedule and pushes encrypted backups over SCP"
)]
pub struct Flags {
    /// Configuration file (TOML); unknown keys are an error.
    #[arg(long, env = "CUSTOS_BACKUPD_CONFIG")]
    pub config: Option<PathBuf>,
    /// custos-keyd's local socket: the settings, the SSH key and the
    /// encrypted backup come through it (the pusher never opens the store).
    #[arg(long, env = "CUSTOS_KEYD_SOCKET")]
    pub keyd_socket: Option<PathBuf>,
    /// Where the encrypted backup is spooled while it is pushed
    /// [default: the temporary directory, $TMPDIR or /tmp].
    #[arg(long, env = "CUSTOS_BACKUP_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// This appliance's host name, for the backup file's name (default: the
    /// one set with the CLI's `setinfo hostname`, else the system's).
    #[arg(long, env = "CUSTOS_HOST_NAME")]
    pub host_name: Option<String>,
    /// Seconds before the first retry of a failed push; each further retry
    /// waits twice as long.
    #[arg(long, env = "CUSTOS_BACKUP_RETRY_BASE_SECS")]
    pub retry_base_secs: Option<u64>,
    /// The longest wait between two attempts, in seconds.
    #[arg(long, env = "CUSTOS_BACKUP_RETRY_MAX_SECS")]
    pub retry_max_secs: Option<u64>,
    /// Attempts of one push, the first included.
    #[arg(long, env = "CUSTOS_BACKUP_ATTEMPTS")]
    pub attempts: Option<u32>,
    /// Seconds to wait for a TCP connection or any one SSH step.
    #[arg(long, env = "CUSTOS_BACKUP_TIMEOUT_SECS")]
    pub timeout_secs: Option<u64>,
    /// Seconds a push in progress may finish after SIGTERM before it is
    /// abandoned.
    #[arg(long, env = "CUSTOS_BACKUP_STOP_GRACE_SECS")]
    pub stop_grace_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    keyd_socket: Option<PathBuf>,
    spool_dir: Option<PathBuf>,
    host_name: Option<String>,
    retry_base_secs: Option<u64>,
    retry_max_secs: Option<u64>,
    attempts: Option<u32>,
    timeout_secs: Option<u64>,
    stop_grace_secs: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub keyd_socket: PathBuf,
    pub spool_dir: PathBuf,
    /// `None`: looked up at each push (the CLI may change it).
    pub host_name: Option<String>,
    pub retry: Retry,
    pub timeout: Duration,
    pub stop_grace: Duration,
}

/// Back-off of a failed push: `base`, then twice as long each time, at most
/// `max`, for `attempts` attempts in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub base: Duration,
    pub max: Duration,
    pub attempts: u32,
}

impl Retry {
    /// The wait after failed attempt `attempt` (1-based), or `None` when it
    /// was the last.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.attempts {
            return None;
        }
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        Some(self.base.saturating_mul(factor).min(self.max))
    }
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
        let host_name = flags.host_name.or(file.host_name);
        if let Some(h) = &host_name {
            appliance::model::check_host_name("host_name", h)
                .context("the configured host name")?;
        }
        let retry = Retry {
            base: Duration::from_secs(flags.retry_base_secs.or(file.retry_base_secs).unwrap_or(60)),
            max: Duration::from_secs(flags.retry_max_secs.or(file.retry_max_secs).unwrap_or(3600)),
            attempts: flags.attempts.or(file.attempts).unwrap_or(5),
        };
        anyhow::ensure!(
            retry.base >= Duration::from_secs(1),
            "retry_base_secs: must be at least 1 second"
        );
        anyhow::ensure!(
            retry.max >= retry.base,
            "retry_max_secs: must be at least retry_base_secs"
        );
        anyhow::ensure!(
            (1..=20).contains(&retry.attempts),
            "attempts: must be between 1 and 20"
        );
        let timeout = flags.timeout_secs.or(file.timeout_secs).unwrap_or(30);
        anyhow::ensure!(
            (1..=3600).contains(&timeout),
            "timeout_secs: must be between 1 and 3600"
        );
        Ok(Config {
            keyd_socket: flags
                .keyd_socket
                .or(file.keyd_socket)
                .context("keyd_socket: required (the path of custos-keyd's local socket)")?,
            spool_dir: flags
                .spool_dir
                .or(file.spool_dir)
                .unwrap_or_else(std::env::temp_dir),
            host_name,
            retry,
            timeout: Duration::from_secs(timeout),
            stop_grace: Duration::from_secs(
                flags.stop_grace_secs.or(file.stop_grace_secs).unwrap_or(10),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<File>("attempts = 3\nbogus = 2").is_err());
        assert!(toml::from_str::<File>("attempts = 3").is_ok());
        // The pusher never opens the store.
        assert!(toml::from_str::<File>("data = \"/var/lib/custos\"").is_err());
        assert!(Flags::try_parse_from(["custos-backupd", "--data", "/var/lib/custos"]).is_err());
    }

    #[test]
    fn retries_back_off_and_stop() {
        let r = Retry {
            base: Duration::from_secs(60),
            max: Duration::from_secs(300),
            attempts: 5,
        };
        let delays: Vec<_> = (1..=5)
            .map(|a| r.delay_after(a).map(|d| d.as_secs()))
            .collect();
        assert_eq!(delays, [Some(60), Some(120), Some(240), Some(300), None]);
        let one = Retry { attempts: 1, ..r };
        assert_eq!(one.delay_after(1), None);
        let many = Retry {
            base: Duration::from_secs(1),
            max: Duration::from_secs(u64::MAX / 4),
            attempts: 20,
        };
        assert!(many.delay_after(19).is_some());
    }
}
