//! The system the CLI changes, and the one switch between really changing
//! it and recording what would be changed.
//!
//! Configuration files are always written, under the root (`/` on the
//! appliance). Commands that make the running system pick them up are
//! [`Apply::Live`] on `/`: they run. Under any other root they are
//! [`Apply::Recorded`]: each is appended to `ROOT/var/lib/custos-cli/actions.log`
//! (one line per command, secrets never written), and the files the command
//! itself would have written (hostnamed's `/etc/hostname`, timedated's
//! `/etc/localtime`) are written under the root instead, so a test can read
//! exactly what the appliance would apply while nothing on the machine
//! running the test changes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use appliance::secret::SecretString;

use crate::render::SystemFile;

/// The actions log, relative to the root.
pub const ACTIONS_LOG: &str = "/var/lib/custos-cli/actions.log";
/// A command that has not finished after this long is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// Whether commands run or are recorded (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Apply {
    Live,
    Recorded { log: PathBuf },
}

/// A file a command writes by itself on the live system.
#[derive(Debug, Clone)]
pub enum Emulated {
    File(SystemFile),
    Symlink { path: &'static str, target: String },
}

/// A command that applies configuration.
#[derive(Debug)]
pub struct Cmd {
    pub argv: Vec<String>,
    /// Written to the command's standard input (never recorded).
    pub stdin: Option<SecretString>,
    /// What the command writes by itself, written under a test root instead.
    pub emulated: Vec<Emulated>,
}

impl Cmd {
    pub fn new(argv: &[&str]) -> Cmd {
        Cmd {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            stdin: None,
            emulated: vec![],
        }
    }
    pub fn emulating(mut self, e: Emulated) -> Cmd {
        self.emulated.push(e);
        self
    }
    pub fn with_stdin(mut self, secret: SecretString) -> Cmd {
        self.stdin = Some(secret);
        self
    }
    /// The command line as recorded and shown in errors.
    pub fn line(&self) -> String {
        let mut parts: Vec<String> = self.argv.iter().map(|a| quote(a)).collect();
        if self.stdin.is_some() {
            parts.push("< (secret on standard input)".into());
        }
        parts.join(" ")
    }
}

fn quote(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=+@,".contains(c))
    {
        a.to_owned()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

#[derive(Debug)]
pub struct Host {
    root: PathBuf,
    apply: Apply,
}

impl Host {
    /// The live system is the root `/`; every other root is recorded.
    pub fn new(root: &Path) -> Host {
        let apply = if root == Path::new("/") {
            Apply::Live
        } else {
            Apply::Recorded {
                log: under(root, ACTIONS_LOG),
            }
        };
        Host {
            root: root.to_path_buf(),
            apply,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// An absolute system path under the root.
    pub fn path(&self, abs: &str) -> PathBuf {
        under(&self.root, abs)
    }

    /// Writes a configuration file under the root (atomically: a temporary
    /// file renamed over the old one).
    pub fn write_file(&self, f: &SystemFile) -> anyhow::Result<()> {
        write_atomically(&self.path(f.path), f.contents.as_bytes())
    }

    /// Runs a command on the live system, or records it (the switch).
    pub fn run(&self, cmd: &Cmd) -> anyhow::Result<()> {
        match &self.apply {
            Apply::Live => run_live(cmd),
            Apply::Recorded { log } => {
                for e in &cmd.emulated {
                    match e {
                        Emulated::File(f) => self.write_file(f)?,
                        Emulated::Symlink { path, target } => {
                            let p = self.path(path);
                            make_parent(&p)?;
                            match std::fs::remove_file(&p) {
                                Ok(()) => {}
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                                Err(e) => {
                                    return Err(e)
                                        .with_context(|| format!("removing {}", p.display()));
                                }
                            }
                            std::os::unix::fs::symlink(target, &p)
                                .with_context(|| format!("linking {}", p.display()))?;
                        }
                    }
                }
                make_parent(log)?;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .with_context(|| format!("opening {}", log.display()))?;
                writeln!(f, "{}", cmd.line())
                    .and_then(|()| f.sync_data())
                    .with_context(|| format!("writing {}", log.display()))
            }
        }
    }

    /// Reads live state with a command that changes nothing (`ip`,
    /// `timedatectl show`). Under a test root nothing runs: `None`.
    pub fn query(&self, argv: &[&str]) -> Option<anyhow::Result<String>> {
        match self.apply {
            Apply::Live => Some(run_capture(&Cmd::new(argv))),
            Apply::Recorded { .. } => None,
        }
    }
}

fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

fn make_parent(p: &Path) -> anyhow::Result<()> {
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

fn write_atomically(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    make_parent(path)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("a file name")?;
    let tmp = path.with_file_name(format!(".{name}.custos-cli.tmp"));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

fn command(cmd: &Cmd) -> anyhow::Result<Command> {
    let (prog, args) = cmd.argv.split_first().context("an empty command")?;
    let mut c = Command::new(prog);
    c.args(args)
        .env("LC_ALL", "C")
        .env("SYSTEMD_PAGER", "")
        .env("SYSTEMD_COLORS", "0")
        .stdin(if cmd.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    Ok(c)
}

/// Runs to completion (or the timeout) and returns standard output; a
/// failure carries the command line, its status and standard error.
fn run_capture(cmd: &Cmd) -> anyhow::Result<String> {
    let mut child = command(cmd)?
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", cmd.line()))?;
    if let (Some(secret), Some(mut stdin)) = (&cmd.stdin, child.stdin.take()) {
        stdin
            .write_all(secret.expose().as_bytes())
            .and_then(|()| stdin.write_all(b"\n"))
            .with_context(|| format!("writing to {}", cmd.argv[0]))?;
    }
    // Drain both pipes on their own threads so a chatty command cannot block.
    let mut out_pipe = child.stdout.take().context("stdout")?;
    let mut err_pipe = child.stderr.take().context("stderr")?;
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out_pipe, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err_pipe, &mut s);
        s
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{} did not finish within {} seconds",
                cmd.line(),
                COMMAND_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    if !status.success() {
        let detail = stderr.trim();
        bail!(
            "{} failed ({status}){}{}",
            cmd.line(),
            if detail.is_empty() { "" } else { ": " },
            detail.lines().next().unwrap_or_default()
        );
    }
    Ok(stdout)
}

fn run_live(cmd: &Cmd) -> anyhow::Result<()> {
    run_capture(cmd).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_root_writes_files_and_logs_commands() {
        let root = tempfile::tempdir().expect("tempdir");
        let host = Host::new(root.path());
        assert_ne!(host.apply, Apply::Live);
        assert_eq!(Host::new(Path::new("/")).apply, Apply::Live);
        let file = SystemFile {
            path: "/etc/hostname",
            contents: "custos.example.com\n".into(),
        };
        host.run(
            &Cmd::new(&["hostnamectl", "set-hostname", "custos.example.com"])
                .emulating(Emulated::File(file.clone())),
        )
        .expect("recorded");
        host.run(&Cmd::new(&["chpasswd"]).with_stdin(SecretString::new("cliadmin:S3cret!pw")))
            .expect("recorded");
        host.run(&Cmd::new(&[
            "timedatectl",
            "set-time",
            "2027-01-31 12:00:00",
        ]))
        .expect("recorded");
        let log = std::fs::read_to_string(root.path().join("var/lib/custos-cli/actions.log"))
            .expect("log");
        assert_eq!(
            log,
            "hostnamectl set-hostname custos.example.com\nchpasswd < (secret on standard input)\ntimedatectl set-time '2027-01-31 12:00:00'\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.path().join("etc/hostname")).expect("hostname"),
            "custos.example.com\n"
        );
        assert!(host.query(&["ip", "address"]).is_none());
    }

    #[test]
    fn live_commands_report_their_failure() {
        let e =
            run_capture(&Cmd::new(&["sh", "-c", "echo broken >&2; exit 3"])).expect_err("fails");
        assert!(e.to_string().contains("broken"), "{e}");
        assert_eq!(
            run_capture(&Cmd::new(&["sh", "-c", "echo hello"])).expect("runs"),
            "hello\n"
        );
        let e = run_capture(&Cmd::new(&["/nonexistent/tool"])).expect_err("missing");
        assert!(e.to_string().contains("cannot run"), "{e}");
    }
}
