//! Bootstrap configuration: `/etc/custos/custos-notifyd.toml` and flags
//! (`CUSTOS_…` environment variables), parsed once into [`Config`]. The
//! SMTP server and the notification groups live in the store.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde::Deserialize;

const DEFAULT_CONFIG: &str = "/etc/custos/custos-notifyd.toml";

#[derive(Debug, Parser)]
#[command(
    name = "custos-notifyd",
    version,
    about = "Custos email notifications: log messages, expiring keys and certificates, over SMTP"
)]
pub struct Flags {
    /// Configuration file (TOML); unknown keys are an error.
    #[arg(long, env = "CUSTOS_NOTIFYD_CONFIG")]
    pub config: Option<PathBuf>,
    /// custos-keyd's local socket, through which the notifier reaches the
    /// outbox, the log and the SMTP settings (it never opens the store).
    #[arg(long, env = "CUSTOS_KEYD_SOCKET")]
    pub keyd_socket: Option<PathBuf>,
    /// This appliance's host name, in mails (default: the system's).
    #[arg(long, env = "CUSTOS_HOST_NAME")]
    pub host_name: Option<String>,
    /// Seconds between two looks at the audit log and the outbox.
    #[arg(long, env = "CUSTOS_NOTIFY_POLL_INTERVAL")]
    pub poll_interval: Option<u64>,
    /// Seconds between two looks for expiring keys and certificates.
    #[arg(long, env = "CUSTOS_NOTIFY_EXPIRY_INTERVAL")]
    pub expiry_interval: Option<u64>,
    /// Seconds before the first retry of a failed delivery; each further
    /// retry waits twice as long, up to --retry-max.
    #[arg(long, env = "CUSTOS_NOTIFY_RETRY_MIN")]
    pub retry_min: Option<u64>,
    /// The longest wait between two retries, in seconds.
    #[arg(long, env = "CUSTOS_NOTIFY_RETRY_MAX")]
    pub retry_max: Option<u64>,
    /// Hours after which an undelivered notice is given up.
    #[arg(long, env = "CUSTOS_NOTIFY_GIVE_UP_AFTER")]
    pub give_up_after: Option<u64>,
    /// Tests only: a file holding a whole number of days that is added to
    /// the clock of the expiry schedule and of the retries, read again at
    /// every round. A command-line flag only (no variable, no
    /// configuration key, not in --help), so it is never on by accident;
    /// the daemon says so loudly when it is.
    #[arg(long, hide = true, value_name = "FILE")]
    pub test_clock_offset_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    keyd_socket: Option<PathBuf>,
    host_name: Option<String>,
    poll_interval: Option<u64>,
    expiry_interval: Option<u64>,
    retry_min: Option<u64>,
    retry_max: Option<u64>,
    give_up_after: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub keyd_socket: PathBuf,
    pub host_name: String,
    pub poll_interval: Duration,
    pub expiry_interval: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub give_up_after: time::Duration,
    pub test_clock_offset_file: Option<PathBuf>,
}

fn at_least(name: &str, v: u64, min: u64) -> anyhow::Result<u64> {
    anyhow::ensure!(v >= min, "{name}: must be at least {min}");
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
        let host_name = match flags.host_name.or(file.host_name) {
            Some(h) => h,
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "custos".into()),
        };
        appliance::model::check_host_name("host_name", &host_name)
            .context("the configured host name")?;
        let secs = |name: &str, flag: Option<u64>, file: Option<u64>, default: u64| {
            at_least(name, flag.or(file).unwrap_or(default), 1).map(Duration::from_secs)
        };
        let retry_min = secs("retry_min", flags.retry_min, file.retry_min, 30)?;
        let retry_max = secs("retry_max", flags.retry_max, file.retry_max, 3600)?;
        anyhow::ensure!(
            retry_max >= retry_min,
            "retry_max: must not be less than retry_min"
        );
        let give_up = at_least(
            "give_up_after",
            flags.give_up_after.or(file.give_up_after).unwrap_or(72),
            1,
        )?;
        Ok(Config {
            keyd_socket: flags
                .keyd_socket
                .or(file.keyd_socket)
                .context("keyd_socket: required (the path of custos-keyd's local socket)")?,
            host_name,
            poll_interval: secs("poll_interval", flags.poll_interval, file.poll_interval, 5)?,
            expiry_interval: secs(
                "expiry_interval",
                flags.expiry_interval,
                file.expiry_interval,
                300,
            )?,
            retry_min,
            retry_max,
            give_up_after: time::Duration::hours(
                i64::try_from(give_up).context("give_up_after: too large")?,
            ),
            test_clock_offset_file: flags.test_clock_offset_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_and_the_test_clock_is_no_key() {
        assert!(toml::from_str::<File>("poll_interval = 1\nbogus = 2").is_err());
        assert!(toml::from_str::<File>("test_clock_offset_file = \"/tmp/x\"").is_err());
        assert!(toml::from_str::<File>("poll_interval = 1\nretry_min = 5").is_ok());
        // The notifier never opens the store.
        assert!(toml::from_str::<File>("data = \"/var/lib/custos\"").is_err());
        assert!(Flags::try_parse_from(["custos-notifyd", "--data", "/var/lib/custos"]).is_err());
    }

    #[test]
    fn defaults_and_limits() {
        let flags = |args: &[&str]| {
            Flags::try_parse_from(
                [
                    "custos-notifyd",
                    "--keyd-socket",
                    "/run/custos/keyd.sock",
                    "--config",
                    "/dev/null",
                    "--host-name",
                    "custos",
                ]
                .iter()
                .chain(args),
            )
            .expect("flags")
        };
        let c = Config::load(flags(&[])).expect("config");
        assert_eq!(c.poll_interval, Duration::from_secs(5));
        assert_eq!(c.retry_min, Duration::from_secs(30));
        assert!(c.test_clock_offset_file.is_none());
        assert!(Config::load(flags(&["--retry-min", "10", "--retry-max", "5"])).is_err());
        assert!(Config::load(flags(&["--poll-interval", "0"])).is_err());
    }
}
