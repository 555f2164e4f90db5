//! `custos-cli`, the admin CLI of spec §3 (the library `custos_cli` is the
//! shell and documents its decisions): flags, the store, the terminal.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use custos_cli::{host, session, term};

const APPLIANCE_DATA: &str = "/var/lib/custos";
const APPLIANCE_ROOT: &str = "/";

#[derive(Debug, Parser)]
#[command(
    name = "custos-cli",
    version,
    about = "Custos admin CLI (the shell of cliadmin)"
)]
struct Flags {
    /// Data directory holding the appliance store (development runs).
    #[arg(long, requires = "root")]
    data: Option<PathBuf>,
    /// Root of the system to configure; any root but / only records the
    /// commands it would run (development runs and tests).
    #[arg(long, requires = "data")]
    root: Option<PathBuf>,
    /// A command for a shell (`ssh host CMD`): refused, the CLI is interactive.
    #[arg(short = 'c', hide = true)]
    command: Option<String>,
}

/// Where the session comes from, for the audit log.
fn source() -> String {
    ["SSH_CONNECTION", "SSH_CLIENT"]
        .iter()
        .find_map(|v| {
            let value = std::env::var(v).ok()?;
            let ip = value
                .split_whitespace()
                .next()?
                .parse::<std::net::IpAddr>()
                .ok()?;
            Some(ip.to_string())
        })
        .unwrap_or_else(|| "console".into())
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "ERROR: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let login_shell = std::env::args_os()
        .next()
        .is_some_and(|a| a.to_string_lossy().starts_with('-'));
    let flags = if login_shell {
        Flags {
            data: None,
            root: None,
            command: None,
        }
    } else {
        Flags::parse()
    };
    if flags.command.is_some() {
        let _ = writeln!(
            std::io::stderr(),
            "ERROR: the admin CLI is interactive: log in without a command"
        );
        return Ok(ExitCode::FAILURE);
    }
    let (data, root) = match (flags.data, flags.root) {
        (Some(d), Some(r)) => (d, r),
        _ => {
            if !is_root() {
                let exe = std::env::current_exe().context("finding the CLI's own path")?;
                let err = std::process::Command::new("sudo")
                    .arg("-n")
                    .arg("--")
                    .arg(exe)
                    .exec();
                return Err(err).context("the admin CLI needs root: running it with sudo");
            }
            (PathBuf::from(APPLIANCE_DATA), PathBuf::from(APPLIANCE_ROOT))
        }
    };
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGQUIT,
        signal_hook::consts::SIGTSTP,
    ] {
        signal_hook::flag::register(sig, &session::INTERRUPTED)
            .context("installing the signal handlers")?;
    }
    let store = appliance::Store::open(&data)
        .with_context(|| format!("opening the appliance store in {}", data.display()))?;
    let host = host::Host::new(&root);
    let mut term = term::Terminal::new().context("opening the terminal")?;
    Ok(match session::run(&store, &host, &mut term, &source())? {
        session::End::Normal => ExitCode::SUCCESS,
        session::End::Refused => ExitCode::FAILURE,
    })
}
