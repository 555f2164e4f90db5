//! `cargo xtask fuzz` and the fuzzing step of `cargo xtask test`: the
//! `cargo fuzz` targets (libFuzzer) of every decoder of outside input, each
//! run for a bounded time from its seeds. They are all in one crate,
//! `fuzz/` at the repository root, so their sanitized dependencies are
//! compiled once.
//!
//! cargo-fuzz wants a nightly toolchain for its sanitizer flags; the
//! project builds with stable Rust only, so they run with
//! `RUSTC_BOOTSTRAP=1`, which lets stable rustc take `-Z` flags. cargo-fuzz
//! itself is installed with `cargo install` when it is missing.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

/// The folder of the fuzz crate, from the repository root.
const FUZZ_DIR: &str = "fuzz";

/// The targets of `fuzz/` that `cargo xtask test` runs.
pub const TARGETS: &[&str] = &[
    "snmp_decode",
    "licence",
    "csr",
    "backup",
    "agent_json",
    "cli_line",
];

/// What one bounded run did.
#[derive(Debug)]
pub struct Outcome {
    pub target: String,
    pub runs: u64,
    pub seconds: u64,
}

fn ensure_cargo_fuzz(sh: &Shell, cargo: &str) -> Result<()> {
    if cmd!(sh, "{cargo} fuzz --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok()
    {
        return Ok(());
    }
    eprintln!("fuzz: installing cargo-fuzz");
    cmd!(sh, "{cargo} install cargo-fuzz --locked")
        .run()
        .context("cargo install cargo-fuzz")
}

/// The run count libFuzzer reports last: `Done 3069332 runs in 61 second(s)`.
fn runs_done(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|l| {
        l.strip_prefix("Done ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Runs `target` for `seconds`, starting from its seeds
/// (`fuzz/seeds/<target>`) and the corpus of earlier runs
/// (`fuzz/corpus/<target>`, not in git). A crash is an error with
/// libFuzzer's report; its input is kept under `fuzz/artifacts/<target>/`.
pub fn run(sh: &Shell, root: &Path, target: &str, seconds: u64) -> Result<Outcome> {
    let cargo = crate::cargo();
    ensure_cargo_fuzz(sh, &cargo)?;
    let fuzz = root.join(FUZZ_DIR);
    let corpus = fuzz.join("corpus").join(target);
    let seeds = fuzz.join("seeds").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let time = format!("-max_total_time={seconds}");
    eprintln!("fuzz: {target} for {seconds} s");
    // libFuzzer reports on stderr: passed through without its progress
    // lines (thousands of `#N NEW …`, each with its `NEW_FUNC` lines) and
    // its dictionary suggestions, the last ones kept for a failure.
    let mut child = Command::new(&cargo)
        .current_dir(root)
        .args(["fuzz", "run", "-O", target])
        .arg(&corpus)
        .arg(&seeds)
        .args([
            "--",
            &time,
            "-rss_limit_mb=1024",
            "-max_len=16384",
            "-timeout=10",
        ])
        .env("RUSTC_BOOTSTRAP", "1")
        .stderr(Stdio::piped())
        .spawn()
        .context("starting cargo fuzz")?;
    let stderr = child.stderr.take().context("cargo fuzz's stderr")?;
    let mut tail: VecDeque<String> = VecDeque::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading cargo fuzz's output")?;
        if !line.starts_with('#')
            && !line.starts_with('"')
            && !line.trim_start().starts_with("NEW_FUNC")
        {
            eprintln!("{line}");
        }
        tail.push_back(line);
        if tail.len() > 60 {
            tail.pop_front();
        }
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    let log: Vec<String> = tail.into();
    let log = log.join("\n");
    if !status.success() {
        bail!("cargo fuzz run {target} failed ({status}):\n{log}");
    }
    let runs = runs_done(&log).context("libFuzzer did not report its runs")?;
    Ok(Outcome {
        target: target.to_owned(),
        runs,
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_count_is_read_from_libfuzzer() {
        let log = "#1024 pulse cov: 10\nDone 3069332 runs in 61 second(s)\n";
        assert_eq!(runs_done(log), Some(3_069_332));
        assert_eq!(runs_done("INFO: nothing"), None);
    }

    #[test]
    fn every_target_has_seeds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let fuzz = root.join(FUZZ_DIR);
        let manifest =
            std::fs::read_to_string(fuzz.join("Cargo.toml")).expect("the fuzz crate's manifest");
        for target in TARGETS {
            let seeds = fuzz.join("seeds").join(target);
            let n = std::fs::read_dir(&seeds).map(|d| d.count()).unwrap_or(0);
            assert!(n > 0, "{} has no seeds", seeds.display());
            assert!(manifest.contains(&format!("name = \"{target}\"")));
        }
        // Every target of the crate is run.
        let declared = manifest.matches("[[bin]]").count();
        assert_eq!(
            declared,
            TARGETS.len(),
            "fuzz/Cargo.toml has targets TARGETS lacks"
        );
    }
}
