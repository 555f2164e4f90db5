//! Build orchestration for Custos, run as `cargo xtask TASK` (matklad/cargo-xtask):
//!
//! * `run [--data DIR] [--release]`: build the appliance's daemons (`custos-keyd`,
//!   then `custos-backupd`, `custos-notifyd` and `custos-snmpd`) and run them locally
//!   until Ctrl-C, which is passed on as SIGTERM.
//! * `test [-- ARGS]`: install what the tests need (Debian, as root), build every
//!   binary, run every test, and close with one summary line.
//! * `bench keys [--hosts N] [--seconds S]`: the key-service load benchmark.
//! * `bench snmp [--clients N] [--seconds S]`: SNMP GET requests per second.
//! * `bench abuse [--hosts N] [--seconds S]`: key retrieval during bad
//!   sign-ins, slow sockets and bad registrations, against none.
//! * `fuzz [--seconds S]`: the `cargo fuzz` targets of `fuzz/` (SNMP messages, licence files,
//!   host CSRs, backup files, agent registration bodies, CLI lines), each for a bounded time;
//!   `test` runs each for 25 s unless `CUSTOS_FUZZ=0`.
//! * `dist`: the image build, which is not there yet and says so.
//! * `licence [--issued-to NAME] [--key-agents N] [--fs-agents N] [--domains N]
//!   [--expires YYYY-MM-DD] [--out FILE]`: a signed licence file (§10), by
//!   default with the development key.
//!
//! Everything runs from the workspace root, found from this crate's manifest folder.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc;
use std::{env, fs, io, thread};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use xshell::{Shell, cmd};

mod dist;
mod fuzz;
mod image;
mod licence;

/// Programs the build and the tests run, and the Debian package that provides each:
/// (command, package).
const REQUIRED_DEBIAN_PACKAGES: &[(&str, &str)] = &[
    // aws-lc (rustls' crypto) and SQLite are C code compiled by the build.
    ("cc", "gcc"),
    // TLS tests check the appliance ports with `openssl s_client`.
    ("openssl", "openssl"),
    // custos-backupd's ssh2 (libssh2) links the system OpenSSL.
    ("/usr/include/openssl/ssl.h", "libssl-dev"),
    ("pkg-config", "pkg-config"),
];

/// What `cargo xtask test` needs beyond the build: the web console's tests
/// drive a real Chromium through chromedriver.
const TEST_DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("chromium", "chromium"),
    ("chromedriver", "chromium-driver"),
    // The SNMP agent's tests ask it with net-snmp (snmpget, snmpwalk, …).
    ("snmpget", "snmp"),
    // The automatic backup's tests push to a real OpenSSH server.
    ("/usr/sbin/sshd", "openssh-server"),
    // The TLS ports are scanned by testssl.sh in both security modes.
    ("testssl", "testssl.sh"),
    // The UEFI smoke test gives the VM a TPM 2.0 to seal the master key to.
    ("swtpm", "swtpm"),
    // The store's PostgreSQL backend (HA): the tests start servers of
    // their own from Debian's binaries.
    ("/usr/lib/postgresql/15/bin/initdb", "postgresql-15"),
];

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Custos build orchestration"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Build the appliance's daemons and run them locally (--local) until Ctrl-C.
    Run {
        /// The data folder [default: target/custos-data in the workspace].
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Build and run the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Install test prerequisites, build every binary, run every test.
    Test {
        /// Extra arguments for `cargo test --workspace`, e.g. a test name filter,
        /// or `-- --nocapture` for the test binaries.
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Boot the built appliance in QEMU with its ports forwarded; Ctrl-C
    /// powers it off cleanly.
    Vm {
        /// Install from the Hyper-V ISO onto an empty disk first.
        #[arg(long)]
        iso: bool,
        /// Legacy BIOS instead of UEFI.
        #[arg(long)]
        bios: bool,
        /// Forget the disk of earlier runs.
        #[arg(long)]
        fresh: bool,
    },
    /// Issue a signed licence file (spec §10), by default with the
    /// development key, into target/licence/custos-dev.lic.
    Licence(licence::LicenceArgs),
    /// Run the fuzz targets (cargo fuzz, libFuzzer) for a bounded time each.
    Fuzz {
        /// How long to run each target.
        #[arg(long, value_name = "S", default_value_t = 60)]
        seconds: u64,
    },
    /// Run a benchmark.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
    /// Build the appliance images into target/dist (the OVA; the ISO with its issue).
    Dist {
        /// Add a development profile from image/mkosi.profiles (e.g. `dev`:
        /// root autologin on the serial console); artefacts are then named
        /// with the profile.
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
        /// Use the release binaries already in target/release instead of
        /// building them (for iterating on the image itself).
        #[arg(long)]
        no_build: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Key fetches per second over mutual TLS from many registered hosts.
    Keys {
        /// Number of simulated protected hosts.
        #[arg(long, value_name = "N", default_value_t = 10)]
        hosts: u32,
        /// How long to measure.
        #[arg(long, value_name = "S", default_value_t = 10)]
        seconds: u32,
    },
    /// Key fetch latency and failures while the service is attacked (500
    /// parallel bad sign-ins, 1,000 slow sockets, a registration flood),
    /// each against the same without attack.
    Abuse {
        /// Number of simulated protected hosts.
        #[arg(long, value_name = "N", default_value_t = 16)]
        hosts: u32,
        /// How long to measure each phase.
        #[arg(long, value_name = "S", default_value_t = 10)]
        seconds: u32,
    },
    /// SNMP v2c GET requests per second answered by custos-snmpd.
    Snmp {
        /// Concurrent managers, each waiting for its answer.
        #[arg(long, value_name = "N", default_value_t = 4)]
        clients: u32,
        /// How long to measure each object.
        #[arg(long, value_name = "S", default_value_t = 5)]
        seconds: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.task {
        Task::Run { data, release } => run(data, release),
        Task::Test { args } => test(&args),
        Task::Bench {
            bench: Bench::Keys { hosts, seconds },
        } => bench_keys(hosts, seconds),
        Task::Bench {
            bench: Bench::Snmp { clients, seconds },
        } => bench_snmp(clients, seconds),
        Task::Bench {
            bench: Bench::Abuse { hosts, seconds },
        } => bench_abuse(hosts, seconds),
        Task::Vm { iso, bios, fresh } => vm(iso, bios, fresh),
        Task::Dist { profile, no_build } => dist_task(profile.as_deref(), no_build),
        Task::Licence(args) => licence_task(&args),
        Task::Fuzz { seconds } => fuzz_task(seconds),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// How long `cargo xtask test` runs each fuzz target: six targets at 25 s
/// keep the fuzzing step at 2.5 minutes (plus one build of `fuzz/`).
const FUZZ_SECONDS_IN_TEST: u64 = 25;

/// Runs every fuzz target of [`fuzz::TARGETS`] for `seconds`; true when
/// none crashed. Each prints one `xtask: fuzz` line.
fn fuzz_all(sh: &Shell, seconds: u64) -> Result<bool> {
    let root = workspace_root()?;
    let mut ok = true;
    for target in fuzz::TARGETS {
        match fuzz::run(sh, &root, target, seconds) {
            Ok(o) => println!(
                "xtask: fuzz {}: {} runs in {} s, no crash",
                o.target, o.runs, o.seconds
            ),
            Err(error) => {
                eprintln!("error: {error:#}");
                println!("xtask: FAILED: fuzz {target}");
                ok = false;
            }
        }
    }
    Ok(ok)
}

fn fuzz_task(seconds: u64) -> Result<ExitCode> {
    let sh = shell()?;
    ensure_packages(&sh)?;
    Ok(if fuzz_all(&sh, seconds)? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn licence_task(args: &licence::LicenceArgs) -> Result<ExitCode> {
    let root = workspace_root()?;
    licence::issue(&root, &target_dir(&root), args)?;
    Ok(ExitCode::SUCCESS)
}

fn dist_task(profile: Option<&str>, no_build: bool) -> Result<ExitCode> {
    let sh = shell()?;
    ensure_packages_for(&sh, REQUIRED_DEBIAN_PACKAGES)?;
    ensure_packages_for(&sh, dist::IMAGE_PACKAGES)?;
    let root = workspace_root()?;
    dist::dist(&sh, &root, &target_dir(&root), profile, !no_build)?;
    Ok(ExitCode::SUCCESS)
}

fn vm(iso: bool, bios: bool, fresh: bool) -> Result<ExitCode> {
    let sh = shell()?;
    ensure_packages_for(&sh, dist::SMOKE_PACKAGES)?;
    let cargo = cargo();
    let mut flags = vec![];
    for (on, flag) in [(iso, "--iso"), (bios, "--bios"), (fresh, "--fresh")] {
        if on {
            flags.push(flag);
        }
    }
    let dist = target_dir(&workspace_root()?).join("dist");
    let status = Command::new(&cargo)
        .current_dir(workspace_root()?)
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "tests",
            "--bin",
            "custos-vm",
            "--",
        ])
        .args(&flags)
        .arg("--dist")
        .arg(dist)
        .status()
        .context("starting the VM runner")?;
    Ok(exit_code(status))
}

fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .context("the xtask crate has no parent folder")
}

/// The cargo that runs us (so `cargo +toolchain xtask` keeps its toolchain).
fn cargo() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn shell() -> Result<Shell> {
    let sh = Shell::new().context("creating a shell")?;
    sh.change_dir(workspace_root()?);
    Ok(sh)
}

fn target_dir(root: &Path) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// The appliance's daemons `run` starts, in this order, each once the one
/// before printed its first `ready` line (the key service creates and
/// migrates the store and opens the local socket `DIR/keyd.sock` the others
/// reach it through): (package and binary, arguments besides `--data DIR`
/// for the key service and `--keyd-socket DIR/keyd.sock` for the others).
const RUN_DAEMONS: &[(&str, &[&str])] = &[
    ("custos-keyd", &["--local"]),
    ("custos-backupd", &[]),
    ("custos-notifyd", &[]),
    // SNMP on 10161 (for 161) and 7025, once enabled under System → SNMP.
    ("custos-snmpd", &["--local"]),
];

/// What the supervising loop of `run` waits for.
enum Event {
    Interrupted,
    /// Daemon `i` printed its first `ready` line.
    Ready(usize),
    Exited(usize, io::Result<ExitStatus>),
}

/// Starts daemon `i` of [`RUN_DAEMONS`] in its own process group (so Ctrl-C
/// at the terminal reaches only this supervisor, which turns it into the
/// SIGTERM the daemons shut down on), its output passed through.
fn spawn_daemon(
    i: usize,
    bin_dir: &Path,
    data: &Path,
    events: &mpsc::Sender<Event>,
) -> Result<Pid> {
    let (name, args) = RUN_DAEMONS[i];
    let binary = bin_dir.join(name);
    let place = if name == "custos-keyd" {
        ["--data".into(), data.as_os_str().to_owned()]
    } else {
        [
            "--keyd-socket".into(),
            data.join("keyd.sock").into_os_string(),
        ]
    };
    let mut child = Command::new(&binary)
        .args(place)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = Pid::from_raw(i32::try_from(child.id()).context("child process id")?);
    let stdout = child.stdout.take().context("the daemon's stdout")?;
    let ready = events.clone();
    thread::spawn(move || {
        let mut said_ready = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            if !said_ready && line.starts_with("ready ") {
                said_ready = true;
                let _ = ready.send(Event::Ready(i));
            }
        }
    });
    let exited = events.clone();
    thread::spawn(move || {
        let _ = exited.send(Event::Exited(i, child.wait()));
    });
    Ok(pid)
}

fn run(data: Option<PathBuf>, release: bool) -> Result<ExitCode> {
    let root = workspace_root()?;
    let sh = shell()?;
    ensure_packages(&sh)?;
    let cargo = cargo();
    let release_flag = release.then_some("--release");
    let pflags: Vec<&str> = RUN_DAEMONS.iter().flat_map(|(n, _)| ["-p", n]).collect();
    cmd!(sh, "{cargo} build {pflags...} {release_flag...}")
        .run()
        .context("building the appliance's daemons")?;

    let data = data.unwrap_or_else(|| root.join("target").join("custos-data"));
    fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let bin_dir = target_dir(&root).join(if release { "release" } else { "debug" });

    let (events, received) = mpsc::channel();
    let interrupts = events.clone();
    ctrlc::set_handler(move || {
        let _ = interrupts.send(Event::Interrupted);
    })
    .context("installing the Ctrl-C handler")?;

    let mut pids: Vec<Option<Pid>> = vec![Some(spawn_daemon(0, &bin_dir, &data, &events)?)];
    let mut stopping = false;
    // The exit code once everything stopped: the first daemon that exited
    // on its own decides it.
    let mut code = ExitCode::SUCCESS;
    let signal_all = |pids: &[Option<Pid>], signal: Signal| -> Result<()> {
        for (i, pid) in pids.iter().enumerate().rev() {
            let Some(pid) = pid else { continue };
            eprintln!("stopping {} ({signal})", RUN_DAEMONS[i].0);
            match kill(*pid, signal) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(error) => {
                    return Err(error).with_context(|| format!("signalling {}", RUN_DAEMONS[i].0));
                }
            }
        }
        Ok(())
    };
    loop {
        match received.recv().context("waiting for the daemons")? {
            Event::Ready(i) => {
                let next = i + 1;
                if !stopping && next == pids.len() && next < RUN_DAEMONS.len() {
                    pids.push(Some(spawn_daemon(next, &bin_dir, &data, &events)?));
                }
            }
            Event::Exited(i, status) => {
                let name = RUN_DAEMONS[i].0;
                let status = status.with_context(|| format!("waiting for {name}"))?;
                pids[i] = None;
                if stopping {
                    eprintln!("{name} stopped ({status})");
                } else {
                    eprintln!("{name} exited ({status})");
                    code = exit_code(status);
                    stopping = true;
                    signal_all(&pids, Signal::SIGTERM)?;
                }
                if pids.iter().all(Option::is_none) {
                    return Ok(code);
                }
            }
            Event::Interrupted => {
                // A second Ctrl-C while waiting does not wait any longer.
                let signal = if stopping {
                    Signal::SIGKILL
                } else {
                    Signal::SIGTERM
                };
                stopping = true;
                signal_all(&pids, signal)?;
            }
        }
    }
}

/// The status to exit with for a child's status: its code, or 128 + signal.
fn exit_code(status: ExitStatus) -> ExitCode {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(signal)) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(1)),
        (None, None) => ExitCode::FAILURE,
    }
}

fn test(args: &[String]) -> Result<ExitCode> {
    let sh = shell()?;
    ensure_packages(&sh)?;
    ensure_packages_for(&sh, TEST_DEBIAN_PACKAGES)?;
    ensure_aiosmtpd(&sh)?;
    let schemathesis = ensure_schemathesis(&sh, &workspace_root()?)?;
    let cargo = cargo();
    if let Err(error) = cmd!(sh, "{cargo} build --workspace --bins").run() {
        eprintln!("{error}");
        println!("xtask: FAILED: the workspace does not build");
        return Ok(ExitCode::FAILURE);
    }
    // The images and their QEMU smoke tests are part of the test run unless
    // CUSTOS_SMOKE=0 says otherwise (for quick local runs).
    let root = workspace_root()?;
    let smoke_dist = if env::var("CUSTOS_SMOKE").is_ok_and(|v| v == "0") {
        eprintln!(
            "xtask: CUSTOS_SMOKE=0: the images are not built and the QEMU smoke tests are skipped"
        );
        None
    } else {
        ensure_packages_for(&sh, dist::IMAGE_PACKAGES)?;
        ensure_packages_for(&sh, dist::SMOKE_PACKAGES)?;
        match dist::dist(&sh, &root, &target_dir(&root), None, true) {
            Ok(d) => Some(d),
            Err(error) => {
                eprintln!("error: {error:#}");
                println!("xtask: FAILED: cargo xtask dist failed");
                return Ok(ExitCode::FAILURE);
            }
        }
    };

    // cargo test's stdout is passed through line by line and its result lines
    // are added up for the summary.
    eprintln!(
        "$ {cargo} test --workspace --no-fail-fast {}",
        args.join(" ")
    );
    // A test that cannot run here records itself in this folder
    // (`tests::skip`); it is counted as skipped, not passed.
    let skipped_dir = target_dir(&root).join("skipped-tests");
    if skipped_dir.exists() {
        fs::remove_dir_all(&skipped_dir)
            .with_context(|| format!("clearing {}", skipped_dir.display()))?;
    }
    let mut command = Command::new(&cargo);
    command.env("CUSTOS_SKIPPED_DIR", &skipped_dir);
    if let Some(d) = &smoke_dist {
        command.env("CUSTOS_SMOKE_DIST", d);
    }
    let mut child = command
        .current_dir(&root)
        // Every test binary runs even after one fails, so a red run shows
        // all that is wrong at once.
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let stdout = child.stdout.take().context("cargo test's stdout")?;
    let mut totals = TestCounts::default();
    let mut out = io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test's output")?;
        if let Some(counts) = TestCounts::parse(&line) {
            totals.add(counts);
        }
        writeln!(out, "{line}").context("writing to stdout")?;
    }
    drop(out);
    let mut status = child.wait().context("waiting for cargo test")?;
    // The same store tests again on the PostgreSQL backend.
    if status.success() {
        let (ran, second) = run_on_postgresql(&cargo, &root, &skipped_dir)?;
        totals.add(ran);
        status = second;
    }
    // The schemathesis run against the API document is `#[ignore]`d (a plain
    // `cargo test` has no schemathesis and reports it skipped); here it runs.
    // Its count moves from skipped to passed or failed.
    if status.success() {
        let (ran, contract) = run_schemathesis(&cargo, &root, &schemathesis)?;
        totals.ignored = totals.ignored.saturating_sub(ran.passed + ran.failed);
        totals.add(ran);
        status = contract;
    }
    let skipped = skipped_tests(&skipped_dir)?;
    for why in &skipped {
        println!("xtask: skipped {why}");
    }
    totals.count_skipped(skipped.len() as u64);
    // The decoders of network input are fuzzed for a bounded time too,
    // unless CUSTOS_FUZZ=0 says otherwise (for quick local runs).
    let fuzzed = if env::var("CUSTOS_FUZZ").is_ok_and(|v| v == "0") {
        eprintln!("xtask: CUSTOS_FUZZ=0: the fuzz targets are not run");
        true
    } else {
        fuzz_all(&sh, FUZZ_SECONDS_IN_TEST)?
    };

    if status.success() && fuzzed {
        println!(
            "xtask: {} passed, {} failed, {} skipped",
            totals.passed, totals.failed, totals.ignored
        );
        Ok(ExitCode::SUCCESS)
    } else {
        let why = if status.success() {
            "a fuzz target failed".to_owned()
        } else {
            format!("cargo test {status}")
        };
        println!(
            "xtask: FAILED ({why}): {} passed, {} failed, {} skipped",
            totals.passed, totals.failed, totals.ignored
        );
        Ok(ExitCode::FAILURE)
    }
}

/// The counts of libtest's `test result:` lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct TestCounts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestCounts {
    /// Reads `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; …`.
    fn parse(line: &str) -> Option<Self> {
        let rest = line.trim().strip_prefix("test result: ")?;
        let (_, counts) = rest.split_once(". ")?;
        let mut result = TestCounts::default();
        for part in counts.split(';') {
            let Some((number, what)) = part.trim().split_once(' ') else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            match what {
                "passed" => result.passed = number,
                "failed" => result.failed = number,
                "ignored" => result.ignored = number,
                _ => {}
            }
        }
        Some(result)
    }

    /// Moves `n` tests that passed by returning early (they recorded
    /// themselves as skipped) from passed to skipped.
    fn count_skipped(&mut self, n: u64) {
        let n = n.min(self.passed);
        self.passed -= n;
        self.ignored += n;
    }

    fn add(&mut self, other: TestCounts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }
}

/// The reasons recorded by tests that could not run (`tests::skip`), sorted.
fn skipped_tests(dir: &Path) -> Result<Vec<String>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut reasons = Vec::new();
    for entry in entries {
        let path = entry.context("reading the skipped-tests folder")?.path();
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        reasons.push(text.trim().to_owned());
    }
    reasons.sort();
    Ok(reasons)
}

/// Makes sure the programs in [`REQUIRED_DEBIAN_PACKAGES`] are installed: as root
/// on Debian it installs the missing packages, otherwise it names them and fails.
fn ensure_packages(sh: &Shell) -> Result<()> {
    ensure_packages_for(sh, REQUIRED_DEBIAN_PACKAGES)
}

/// Makes sure every (command or file, packages) of `list` is there, installing
/// the packages as root on Debian.
fn ensure_packages_for(sh: &Shell, list: &[(&str, &'static str)]) -> Result<()> {
    let missing = missing_packages(sh, list);
    if missing.is_empty() {
        return Ok(());
    }
    let uid = cmd!(sh, "id -u")
        .quiet()
        .read()
        .context("reading the user id")?;
    let debian = Path::new("/etc/debian_version").exists();
    if uid.trim() != "0" || !debian {
        bail!(
            "these Debian packages are needed and missing: {}\n\
             install them as root with: apt-get install --no-install-recommends {}",
            missing.join(", "),
            missing.join(" ")
        );
    }
    eprintln!("installing missing packages: {}", missing.join(" "));
    cmd!(sh, "apt-get update").run().context("apt-get update")?;
    cmd!(
        sh,
        "apt-get install -y --allow-downgrades --no-install-recommends {missing...}"
    )
    .env("DEBIAN_FRONTEND", "noninteractive")
    .run()
    .context("apt-get install")?;
    let still_missing = missing_packages(sh, list);
    if !still_missing.is_empty() {
        bail!("installed, yet still missing: {}", still_missing.join(", "));
    }
    Ok(())
}

/// The email tests run a real SMTP server on loopback: aiosmtpd, from PyPI.
/// Installed with pip when `python3` cannot import it; Debian's own Python
/// refuses pip (PEP 668), so there, as root, its package is the fallback.
fn ensure_aiosmtpd(sh: &Shell) -> Result<()> {
    let probe = "import aiosmtpd";
    let present = |sh: &Shell| {
        cmd!(sh, "python3 -c {probe}")
            .quiet()
            .ignore_stderr()
            .run()
            .is_ok()
    };
    ensure_packages_for(sh, &[("python3", "python3")])?;
    if present(sh) {
        return Ok(());
    }
    eprintln!("installing aiosmtpd (PyPI) for the email tests");
    if cmd!(sh, "python3 -m pip install --quiet aiosmtpd")
        .run()
        .is_err()
        || !present(sh)
    {
        ensure_packages_for(
            sh,
            &[(
                "/usr/lib/python3/dist-packages/aiosmtpd",
                "python3-aiosmtpd",
            )],
        )?;
    }
    if !present(sh) {
        bail!("python3 cannot import aiosmtpd; install it with: python3 -m pip install aiosmtpd");
    }
    Ok(())
}

/// The schemathesis release the API contract test runs (PyPI).
const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// The API contract test (`tests/tests/api_contract.rs`) runs schemathesis
/// from PyPI, pinned. It goes into its own virtual environment under the
/// target directory: the same on every machine, no PEP 668 refusal from
/// Debian's Python, nothing installed system-wide. Debian 12 needs
/// `python3-venv` for that, installed as root when missing. Returns the
/// path of its `st`.
fn ensure_schemathesis(sh: &Shell, root: &Path) -> Result<PathBuf> {
    let venv = target_dir(root).join(format!("schemathesis-{SCHEMATHESIS_VERSION}"));
    let st = venv.join("bin/st");
    let want = format!("st, version {SCHEMATHESIS_VERSION}");
    let present = |sh: &Shell| {
        cmd!(sh, "{st} --version")
            .quiet()
            .ignore_stderr()
            .read()
            .is_ok_and(|v| v.trim() == want)
    };
    if present(sh) {
        return Ok(st);
    }
    eprintln!(
        "installing schemathesis {SCHEMATHESIS_VERSION} (PyPI) into {}",
        venv.display()
    );
    if cmd!(sh, "python3 -m venv --clear {venv}")
        .quiet()
        .run()
        .is_err()
    {
        ensure_packages_for(sh, &[("/usr/share/doc/python3-venv", "python3-venv")])?;
        cmd!(sh, "python3 -m venv --clear {venv}")
            .run()
            .context("creating the virtual environment for schemathesis")?;
    }
    let pip = venv.join("bin/pip");
    let spec = format!("schemathesis=={SCHEMATHESIS_VERSION}");
    cmd!(
        sh,
        "{pip} install --quiet --disable-pip-version-check {spec}"
    )
    .run()
    .context("pip install schemathesis")?;
    if !present(sh) {
        bail!("{} does not report {want}", st.display());
    }
    Ok(st)
}

/// Runs the `#[ignore]`d schemathesis test with the installed `st`:
/// its counts and cargo's status.
/// The second pass: the store's tests (the appliance library's) and the
/// end-to-end suites that exercise the store, with the store on a
/// PostgreSQL server of the tests' own (`CUSTOS_TEST_STORE=postgresql`).
fn run_on_postgresql(cargo: &str, root: &Path, skipped: &Path) -> Result<(TestCounts, ExitStatus)> {
    let mut counts = TestCounts::default();
    let mut status = None;
    for args in POSTGRESQL_PASS {
        eprintln!(
            "$ CUSTOS_TEST_STORE=postgresql {cargo} test {}",
            args.join(" ")
        );
        let output = Command::new(cargo)
            .current_dir(root)
            .env("CUSTOS_TEST_STORE", "postgresql")
            .env("CUSTOS_SKIPPED_DIR", skipped)
            .arg("test")
            .args(*args)
            .stderr(Stdio::inherit())
            .output()
            .context("running the PostgreSQL pass")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        for line in stdout.lines() {
            if let Some(c) = TestCounts::parse(line) {
                counts.add(c);
            }
        }
        print!("{stdout}");
        if !output.status.success() || status.is_none() {
            status = Some(output.status);
        }
    }
    Ok((counts, status.context("the PostgreSQL pass ran nothing")?))
}

/// What the PostgreSQL pass runs (`cargo test` arguments): the store's
/// tests and every end-to-end suite but those that never reach the store
/// (`smoke`: the images; `tls_scan`: the TLS ports; `tidy`: the sources).
const POSTGRESQL_PASS: &[&[&str]] = &[
    &["-p", "appliance", "--lib"],
    &[
        "-p",
        "tests",
        "--no-fail-fast",
        "--test",
        "abuse",
        "--test",
        "agent_failover",
        "--test",
        "api_contract",
        "--test",
        "audit_flood",
        "--test",
        "backup",
        "--test",
        "backup_push",
        "--test",
        "bad_input",
        "--test",
        "cli",
        "--test",
        "crash_safety",
        "--test",
        "custody",
        "--test",
        "email",
        "--test",
        "ha",
        "--test",
        "enrolment",
        "--test",
        "licence",
        "--test",
        "permissions",
        "--test",
        "privsep",
        "--test",
        "recommended_setup",
        "--test",
        "snmp",
        "--test",
        "suite_b",
        "--test",
        "units",
        "--test",
        "uploads",
        "--test",
        "web_console",
    ],
];

fn run_schemathesis(cargo: &str, root: &Path, st: &Path) -> Result<(TestCounts, ExitStatus)> {
    eprintln!("$ {cargo} test -p tests --test api_contract -- --ignored schemathesis");
    let output = Command::new(cargo)
        .current_dir(root)
        .env("CUSTOS_SCHEMATHESIS", st)
        .args(["test", "-p", "tests", "--test", "api_contract", "--"])
        .args(["--ignored", "schemathesis"])
        .stderr(Stdio::inherit())
        .output()
        .context("running the schemathesis test")?;
    let mut counts = TestCounts::default();
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in stdout.lines() {
        if let Some(c) = TestCounts::parse(line) {
            counts.add(c);
        }
    }
    print!("{stdout}");
    Ok((counts, output.status))
}

/// The packages of `list` whose command (or, for a path, file) is missing.
/// One entry may name several packages, separated by spaces.
fn missing_packages(sh: &Shell, list: &[(&str, &'static str)]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = list
        .iter()
        .filter(|(what, _)| {
            if what.starts_with('/') {
                !Path::new(what).exists()
            } else {
                !has_command(sh, what)
            }
        })
        .flat_map(|(_, packages)| packages.split_whitespace())
        .collect();
    out.dedup();
    out
}

fn has_command(sh: &Shell, command: &str) -> bool {
    let script = r#"command -v "$1" >/dev/null 2>&1"#;
    cmd!(sh, "sh -c {script} sh {command}")
        .quiet()
        .ignore_status()
        .output()
        .is_ok_and(|output| output.status.success())
}

fn bench_keys(hosts: u32, seconds: u32) -> Result<ExitCode> {
    let sh = shell()?;
    let cargo = cargo();
    let hosts = hosts.to_string();
    let seconds = seconds.to_string();
    // The benchmark drives the release daemon it finds next to itself.
    cmd!(sh, "{cargo} build --release -p custos-keyd -p custos-agent")
        .run()
        .context("building the release binaries")?;
    cmd!(
        sh,
        "{cargo} run --release -p tests --bin bench-keys -- --hosts {hosts} --seconds {seconds}"
    )
    .run()
    .context("the key benchmark failed")?;
    Ok(ExitCode::SUCCESS)
}

fn bench_abuse(hosts: u32, seconds: u32) -> Result<ExitCode> {
    let sh = shell()?;
    let cargo = cargo();
    let hosts = hosts.to_string();
    let seconds = seconds.to_string();
    // The release key service next to the benchmark is the one attacked.
    cmd!(sh, "{cargo} build --release -p custos-keyd")
        .run()
        .context("building the release binaries")?;
    cmd!(
        sh,
        "{cargo} run --release -p tests --bin bench-abuse -- --hosts {hosts} --seconds {seconds}"
    )
    .run()
    .context("the abuse benchmark failed")?;
    Ok(ExitCode::SUCCESS)
}

fn bench_snmp(clients: u32, seconds: u32) -> Result<ExitCode> {
    let sh = shell()?;
    ensure_packages(&sh)?;
    let cargo = cargo();
    let clients = clients.to_string();
    let seconds = seconds.to_string();
    // The benchmark drives the release daemons it finds next to itself.
    cmd!(sh, "{cargo} build --release -p custos-keyd -p custos-snmpd")
        .run()
        .context("building the release binaries")?;
    cmd!(
        sh,
        "{cargo} run --release -p tests --bin bench-snmp -- --clients {clients} --seconds {seconds}"
    )
    .run()
    .context("the SNMP benchmark failed")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Task {
        Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied()))
            .expect("parses")
            .task
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults_to_debug_and_the_target_data_folder() {
        assert!(matches!(
            parse(&["run"]),
            Task::Run {
                data: None,
                release: false
            }
        ));
        let Task::Run { data, release } = parse(&["run", "--data", "/tmp/d", "--release"]) else {
            panic!("not run");
        };
        assert_eq!(data, Some(PathBuf::from("/tmp/d")));
        assert!(release);
    }

    #[test]
    fn licence_has_the_documented_defaults() {
        let Task::Licence(a) = parse(&["licence"]) else {
            panic!("not licence");
        };
        assert_eq!(
            (a.issued_to.as_str(), a.key_agents, a.fs_agents, a.domains),
            ("Development", 100, 0, 10)
        );
        assert!(a.expires.is_none() && a.out.is_none() && a.signing_key.is_none());
        let Task::Licence(a) = parse(&["licence", "--key-agents", "1", "--expires", "2030-01-01"])
        else {
            panic!("not licence");
        };
        assert_eq!(
            (a.key_agents, a.expires.as_deref()),
            (1, Some("2030-01-01"))
        );
    }

    #[test]
    fn test_passes_arguments_after_the_separator() {
        let Task::Test { args } = parse(&["test", "--", "agent", "--", "--nocapture"]) else {
            panic!("not test");
        };
        assert_eq!(args, ["agent", "--", "--nocapture"]);
        assert!(Cli::try_parse_from(["xtask", "test", "--nocapture"]).is_err());
    }

    #[test]
    fn bench_keys_takes_hosts_and_seconds() {
        let Task::Bench {
            bench: Bench::Keys { hosts, seconds },
        } = parse(&["bench", "keys", "--hosts", "50", "--seconds", "30"])
        else {
            panic!("not bench keys");
        };
        assert_eq!((hosts, seconds), (50, 30));
        assert!(matches!(
            parse(&["bench", "keys"]),
            Task::Bench {
                bench: Bench::Keys {
                    hosts: 10,
                    seconds: 10
                }
            }
        ));
    }

    #[test]
    fn test_result_lines_are_counted() {
        assert_eq!(
            TestCounts::parse(
                "test result: ok. 22 passed; 0 failed; 1 ignored; 0 measured; \
                 0 filtered out; finished in 0.13s"
            ),
            Some(TestCounts {
                passed: 22,
                failed: 0,
                ignored: 1
            })
        );
        assert_eq!(
            TestCounts::parse("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured"),
            Some(TestCounts {
                passed: 3,
                failed: 2,
                ignored: 0
            })
        );
        assert_eq!(TestCounts::parse("test agent::works ... ok"), None);
    }

    /// A new end-to-end suite runs on PostgreSQL too unless it is one of
    /// those that never reach the store.
    #[test]
    fn every_end_to_end_suite_that_reaches_the_store_runs_on_postgresql() {
        let dir = workspace_root().expect("root").join("tests").join("tests");
        let listed: Vec<&str> = POSTGRESQL_PASS[1]
            .windows(2)
            .filter(|w| w[0] == "--test")
            .map(|w| w[1])
            .collect();
        for e in fs::read_dir(&dir).expect("tests/tests") {
            let path = e.expect("entry").path();
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if ["smoke", "tls_scan", "tidy"].contains(&name) {
                continue;
            }
            assert!(
                listed.contains(&name),
                "tests/tests/{name}.rs is not in POSTGRESQL_PASS"
            );
        }
    }

    #[test]
    fn tests_that_recorded_a_skip_count_as_skipped_not_passed() {
        let dir = tempfile_dir();
        let skipped = dir.join("skipped-tests");
        fs::create_dir_all(&skipped).expect("the test folder");
        fs::write(skipped.join("smoke--ova"), "smoke::ova: no images\n").expect("the test folder");
        fs::write(
            skipped.join("tls_scan--scan"),
            "tls_scan::scan: no testssl\n",
        )
        .expect("the test folder");
        let reasons = skipped_tests(&skipped).expect("the test folder");
        assert_eq!(
            reasons,
            ["smoke::ova: no images", "tls_scan::scan: no testssl"]
        );
        let mut totals = TestCounts {
            passed: 10,
            failed: 1,
            ignored: 1,
        };
        totals.count_skipped(reasons.len() as u64);
        assert_eq!(
            totals,
            TestCounts {
                passed: 8,
                failed: 1,
                ignored: 3
            }
        );
        assert!(
            skipped_tests(&dir.join("absent"))
                .expect("the test folder")
                .is_empty()
        );
        fs::remove_dir_all(&dir).expect("the test folder");
    }

    /// A fresh folder under the system's temporary directory.
    fn tempfile_dir() -> PathBuf {
        let dir = env::temp_dir().join(format!("xtask-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("the test folder");
        dir
    }

    #[test]
    fn exit_code_follows_the_child() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), ExitCode::SUCCESS);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), ExitCode::from(3));
        assert_eq!(exit_code(ExitStatus::from_raw(15)), ExitCode::from(143));
    }

    #[test]
    fn commands_are_found_with_command_v() {
        let sh = Shell::new().expect("shell");
        assert!(has_command(&sh, "sh"));
        assert!(!has_command(&sh, "custos-no-such-command"));
    }

    #[test]
    fn a_path_entry_is_checked_as_a_file_and_entries_may_name_several_packages() {
        let sh = Shell::new().expect("shell");
        let list: &[(&str, &'static str)] = &[
            ("/nonexistent/custos-probe", "pkg-a pkg-b"),
            ("sh", "dash"),
            ("/", "never"),
        ];
        assert_eq!(missing_packages(&sh, list), ["pkg-a", "pkg-b"]);
    }
}
