//! `cargo xtask licence`: issues a signed licence file (spec §10) with the
//! appliance's own `appliance::licence::issue`, so the file is signed by the
//! same code that verifies it. By default it signs with the development key
//! committed next to this crate, which only development builds accept.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use appliance::licence::{self, AgentTerms, FORMAT, LicenceTerms};
use time::Date;

/// The development signing key, relative to the workspace root.
pub const DEV_SIGNING_KEY: &str = "xtask/licence-dev-signing.key";

#[derive(Debug, clap::Args)]
pub struct LicenceArgs {
    /// To whom the licence is issued.
    #[arg(long, value_name = "NAME", default_value = "Development")]
    pub issued_to: String,
    /// Maximum number of Key agents (registered hosts); 0: not installed.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub key_agents: u32,
    /// Maximum number of FS agents; 0: not installed.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub fs_agents: u32,
    /// Maximum number of domains (1: multiple domains not licensed).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub domains: u32,
    /// Last day of validity of both agent types, YYYY-MM-DD [default: one year from today].
    #[arg(long, value_name = "DATE")]
    pub expires: Option<String>,
    /// Where to write the file [default: target/licence/custos-dev.lic].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The Ed25519 signing key (PKCS#8 PEM) [default: the development key].
    #[arg(long, value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
}

/// The same day a year later (28 February for 29 February).
fn one_year_after(day: Date) -> Date {
    day.replace_year(day.year() + 1)
        .or_else(|_| {
            day.replace_day(28)
                .and_then(|d| d.replace_year(d.year() + 1))
        })
        .unwrap_or(day)
}

pub fn terms(args: &LicenceArgs, today: Date, id: &str) -> Result<LicenceTerms> {
    let expires = match &args.expires {
        Some(d) => licence::parse_date("--expires", d)?,
        None => one_year_after(today),
    }
    .to_string();
    let agent = |n: u32| AgentTerms {
        installed: n > 0,
        max_agents: n,
        expires: expires.clone(),
    };
    if args.domains == 0 {
        bail!("--domains: must be at least 1");
    }
    Ok(LicenceTerms {
        format: FORMAT,
        licence_id: id.to_owned(),
        issued_to: args.issued_to.clone(),
        issued_at: today.to_string(),
        key_agent: agent(args.key_agents),
        fs_agent: agent(args.fs_agents),
        key_vault: false,
        multiple_domains: args.domains > 1,
        max_domains: args.domains,
    })
}

/// Issues the licence and writes it; returns the file's path.
pub fn issue(root: &Path, target: &Path, args: &LicenceArgs) -> Result<PathBuf> {
    let key_path = args
        .signing_key
        .clone()
        .unwrap_or_else(|| root.join(DEV_SIGNING_KEY));
    let pem = fs::read_to_string(&key_path)
        .with_context(|| format!("reading the signing key {}", key_path.display()))?;
    let key = licence::pkcs8_from_pem(&pem).with_context(|| key_path.display().to_string())?;
    let today = licence::today();
    let mut random = [0u8; 4];
    appliance::crypto::fill_random(&mut random);
    let id = format!(
        "DEV-{}-{}",
        today.to_string().replace('-', ""),
        hex::encode_upper(random)
    );
    let terms = terms(args, today, &id)?;
    let text = licence::issue(&key, &terms).context("issuing the licence")?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| target.join("licence").join("custos-dev.lic"));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("{}", out.display());
    println!(
        "licence {} issued to {}: {}",
        terms.licence_id,
        terms.issued_to,
        terms.summary()
    );
    if args.signing_key.is_none() {
        println!("signed with the development key: only development builds accept it");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Date {
        licence::parse_date("day", s).expect("date")
    }

    #[test]
    fn a_year_later() {
        assert_eq!(one_year_after(day("2025-03-04")), day("2026-03-04"));
        assert_eq!(one_year_after(day("2024-02-29")), day("2025-02-28"));
    }

    #[test]
    fn issues_a_file_the_appliance_accepts() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("root");
        let dir = std::env::temp_dir().join(format!("xtask-licence-{}", std::process::id()));
        let args = LicenceArgs {
            issued_to: "Example Ltd".into(),
            key_agents: 3,
            fs_agents: 0,
            domains: 1,
            expires: Some("2031-01-31".into()),
            out: Some(dir.join("x.lic")),
            signing_key: None,
        };
        let out = issue(root, &dir, &args).expect("issue");
        let text = fs::read_to_string(&out).expect("read");
        let _ = fs::remove_dir_all(&dir);
        if licence::is_development_key() {
            let t = licence::verify(&text).expect("verifies");
            assert_eq!(t.key_agent.max_agents, 3);
            assert!(!t.fs_agent.installed && !t.multiple_domains);
            assert_eq!(t.key_agent.expires, "2031-01-31");
        }
        let mut bad = args;
        bad.expires = Some("31.01.2031".into());
        assert!(terms(&bad, day("2025-01-01"), "X").is_err());
    }
}
