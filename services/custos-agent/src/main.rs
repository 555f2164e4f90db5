//! `custos-agent`: the host agent a protected host (an application server) runs.
//!
//! `register` enrols the host with the appliance: it fetches the appliance CA,
//! checks it (and the certificate chain of the TLS handshake) against the
//! fingerprint the operator pinned with `--ca-fingerprint` — or, only with
//! `--insecure-first-contact`, trusts it and says so — and only then sends a
//! certificate signing request with the domain's shared secret (read from
//! `--secret-file` or the terminal, never from argv or the environment). It
//! saves the issued certificate and the pin in `--dir`. `get-key` and `status`
//! then talk to the key service over mutual TLS against that pinned CA,
//! falling back to the failover appliance when the primary does not answer.
//!
//! Modules: `tls` builds the rustls configurations, `state` keeps the registration
//! folder, `api` speaks the agent API, `secret` reads the shared secret. Exit status: 0 on success, 1 on an error,
//! 2 when `status` finds the appliance unreachable.

mod api;
mod secret;
mod state;
mod tls;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use clap::{Args, Parser, Subcommand};
use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P384_SHA384, PublicKeyData as _};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

use crate::api::{Agent, Endpoint, Failure, RegisterRequest};
use crate::state::{Registration, Saved};
use crate::tls::{Fingerprint, FirstUseCa};

/// The appliance's enrolment port in compatible mode.
const DEFAULT_ENROL_PORT: u16 = 8443;

#[derive(Debug, Parser)]
#[command(
    name = "custos-agent",
    version,
    about = "Custos host agent: register with the appliance and fetch keys"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register this host with the appliance and save its certificate in --dir.
    Register(RegisterArgs),
    /// Fetch a key over mutual TLS and show its metadata.
    GetKey(GetKeyArgs),
    /// Show the saved registration and whether the appliance answers.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
struct RegisterArgs {
    /// The primary appliance; PORT is the enrolment port.
    #[arg(long, value_name = "HOST[:PORT]")]
    server: String,
    /// The domain to register in.
    #[arg(long)]
    domain: String,
    /// File holding the domain's registration shared secret (one line); `-`
    /// reads it from standard input. Without it, it is asked for on the terminal.
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
    /// Folder for the registration (created 0700).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The name to register under [default: this machine's host name].
    #[arg(long, value_name = "NAME")]
    host_name: Option<String>,
    /// The failover appliance; PORT is its key-service port [default: the primary's].
    #[arg(long, value_name = "HOST[:PORT]")]
    failover: Option<String>,
    /// The SHA-256 fingerprint of the appliance CA (RSA for port 8443, EC for
    /// 8446), as the dashboard and `setinfo show` print it; colons and case
    /// do not matter. Required unless --insecure-first-contact.
    #[arg(long, value_name = "HEX")]
    ca_fingerprint: Option<Fingerprint>,
    /// Trust whatever CA the appliance presents, without a fingerprint to
    /// check it against (prints the fingerprint it trusted). Anyone between
    /// this host and the appliance could then receive the shared secret.
    #[arg(long, conflicts_with = "ca_fingerprint")]
    insecure_first_contact: bool,
    #[command(flatten)]
    timeout: Timeout,
}

#[derive(Debug, Args)]
struct GetKeyArgs {
    /// The key's name.
    name: String,
    /// A given version instead of the current one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    version: Option<u32>,
    /// Print the key material (hex) on stdout.
    #[arg(long)]
    reveal: bool,
    /// Write the raw key bytes to FILE (created 0600).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The registration folder.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    #[command(flatten)]
    timeout: Timeout,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The registration folder.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    #[command(flatten)]
    timeout: Timeout,
}

#[derive(Debug, Args)]
struct Timeout {
    /// Seconds to wait for the appliance before giving up (or failing over).
    #[arg(
        long = "timeout",
        value_name = "SECS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    seconds: u64,
}

impl Timeout {
    fn duration(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Register(args) => register(args).await,
        Command::GetKey(args) => get_key(args).await,
        Command::Status(args) => status(args).await,
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn register(args: RegisterArgs) -> Result<ExitCode> {
    let server = Endpoint::parse(&args.server, DEFAULT_ENROL_PORT).context("--server")?;
    let failover = match &args.failover {
        Some(failover) => {
            // The default port is only known after registration; check the syntax now.
            Endpoint::parse(failover, DEFAULT_ENROL_PORT).context("--failover")?;
            Some(failover.trim().to_owned())
        }
        None => None,
    };
    let host_name = match args.host_name {
        Some(name) => name.trim().to_owned(),
        None => machine_host_name()?,
    };
    ensure!(!host_name.is_empty(), "--host-name: the host name is empty");
    let timeout = args.timeout.duration();
    let pinned = match (args.ca_fingerprint, args.insecure_first_contact) {
        (Some(pinned), _) => Some(pinned),
        (None, true) => None,
        (None, false) => bail!(
            "refusing to send the shared secret to an appliance this host cannot \
             check: pass --ca-fingerprint with the appliance CA's SHA-256 \
             fingerprint (the RSA CA for enrolment port 8443, the EC CA for 8446), \
             as shown on the web console's dashboard or by `setinfo show` in the \
             admin CLI; or pass --insecure-first-contact to trust whatever CA \
             answers (only on a network you trust)"
        ),
    };
    let secret = secret::read(args.secret_file.as_deref(), &args.domain)?;

    // (a) The CA, fetched without trusting anything and without sending
    // anything secret, then checked against the pin, and the certificate
    // chain of that handshake against the CA.
    let (config, presented) = tls::first_use()?;
    let answer = Agent::new(config, timeout)?
        .ca(&server)
        .await
        .map_err(|failure| failure.into_error(Some(&server)))?;
    let ca = FirstUseCa::from_response(&answer.ca_certificate, &answer.fingerprint)?;
    match &pinned {
        Some(pinned) => {
            ca.check_pin(pinned, &server.to_string())?;
            let chain = presented
                .chain()
                .context("the TLS handshake presented no certificate")?;
            tls::check_presented(&ca.certificate, &chain, &server.host)?;
            println!(
                "CA fingerprint: {} (matches --ca-fingerprint)",
                ca.fingerprint
            );
        }
        None => eprintln!(
            "warning: --insecure-first-contact: trusting the CA {server} presented \
             without checking it: SHA-256 fingerprint {}. Compare it now with the \
             appliance dashboard or `setinfo show`; if it differs, delete {} and \
             change the domain's shared secret.",
            ca.fingerprint,
            args.dir.display()
        ),
    }

    // (b) A P-384 key and a CSR naming the host.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).context("generating the host key")?;
    let mut params = CertificateParams::new(vec![host_name.clone()]).with_context(|| {
        format!("the host name {host_name:?} cannot go into a certificate request")
    })?;
    params
        .distinguished_name
        .push(DnType::CommonName, host_name.as_str());
    let csr = params
        .serialize_request(&key)
        .context("signing the certificate request")?
        .pem()
        .context("encoding the certificate request")?;

    // (c) Registration, with the server verified against that CA.
    let request = RegisterRequest {
        host_name: &host_name,
        domain: &args.domain,
        shared_secret: secret.expose(),
        csr: &csr,
    };
    let (config, presented) = tls::enrolment(&ca.certificate)?;
    let registered = match Agent::new(config, timeout)?
        .register(&server, &request)
        .await
    {
        Ok(registered) => registered,
        Err(failure) => {
            // A handshake refused because the chain does not lead to the CA
            // is named as such, not as an unreachable server.
            if let Some(chain) = presented.chain()
                && let Some(end_entity) = chain.first()
                && tls::check_presented(&ca.certificate, &chain, &server.host).is_err()
            {
                return Err(tls::chain_mismatch(
                    &ca.certificate,
                    end_entity,
                    &server.to_string(),
                    &"the registration connection was refused before the secret was sent",
                ));
            }
            return Err(failure.into_error(Some(&server)));
        }
    };

    // Check what came back before anything is saved.
    let returned_ca = tls::single_certificate(&registered.ca_certificate, "the returned CA")?;
    ensure!(
        Fingerprint::of(&returned_ca) == ca.fingerprint,
        "the appliance returned a different CA ({}) from the one it served ({}); not saving",
        Fingerprint::of(&returned_ca),
        ca.fingerprint
    );
    let certificate =
        tls::single_certificate(&registered.certificate, "the issued host certificate")?;
    ensure!(
        certificate_public_key(&certificate)? == key.subject_public_key_info(),
        "the issued host certificate is not for the key this host sent; not saving"
    );
    tls::check_client_certificate(&ca.certificate, &certificate)?;

    // (d) Save.
    let registered_at = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .context("truncating the time")?
        .format(&Rfc3339)
        .context("formatting the time")?;
    let saved = Saved {
        registration: Registration {
            server: server.host.clone(),
            enrol_port: server.port,
            key_port: registered.key_port,
            domain: registered.domain,
            host_name: registered.host_name,
            failover,
            registered_at,
            ca_fingerprint: ca.fingerprint.to_string(),
        },
        key_pem: Zeroizing::new(key.serialize_pem()),
        certificate_pem: registered.certificate,
        ca_pem: registered.ca_certificate,
    };
    state::save(&args.dir, &saved)?;
    println!(
        "registered {} in domain {}; certificate fingerprint {}",
        saved.registration.host_name,
        saved.registration.domain,
        Fingerprint::of(&certificate)
    );
    Ok(ExitCode::SUCCESS)
}

async fn get_key(args: GetKeyArgs) -> Result<ExitCode> {
    let saved = state::load(&args.dir)?;
    let (primary, failover) = key_service(&saved.registration)?;
    let agent = Agent::new(mutual_tls(&saved)?, args.timeout.duration())?;
    let name = args.name.as_str();
    let mut answer = api::with_failover(&primary, failover.as_ref(), |endpoint| {
        let agent = &agent;
        async move { agent.key(&endpoint, name, args.version).await }
    })
    .await
    .map_err(|failure| failure.into_error(None))?;

    // §11 Notify All Hosts: keep the failover the appliance names, for the
    // next time the primary does not answer.
    if let Some(notice) = answer.failovers.first() {
        let endpoint = notice.endpoint();
        if saved.registration.failover.as_deref() != Some(endpoint.as_str()) {
            let mut updated = saved.registration.clone();
            updated.failover = Some(endpoint.clone());
            state::save_registration(&args.dir, &updated)?;
            eprintln!(
                "failover {} ({endpoint}) kept, as the appliance told",
                notice.name
            );
        }
    }
    let encoded = Zeroizing::new(std::mem::take(&mut answer.key));
    let key = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .context("the appliance sent key material that is not base64")?,
    );
    println!("name: {}", answer.name);
    println!("domain: {}", answer.domain);
    println!("version: {}", answer.version);
    println!("current version: {}", answer.current_version);
    println!("algorithm: {}", answer.algorithm);
    println!("key type: {}", answer.key_type);
    println!("refresh period: {} minutes", answer.refresh_period_minutes);
    println!("created: {}", answer.created_at);
    println!(
        "expires: {}",
        answer.expires_at.as_deref().unwrap_or("never")
    );
    if args.reveal {
        let hex = Zeroizing::new(hex::encode(key.as_slice()));
        println!("key: {}", hex.as_str());
    }
    if let Some(out) = &args.out {
        state::write_atomic(out, &key, 0o600)?;
        println!("key written to {} ({} bytes)", out.display(), key.len());
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(args: StatusArgs) -> Result<ExitCode> {
    let saved = state::load(&args.dir)?;
    let registration = &saved.registration;
    let (primary, failover) = key_service(registration)?;
    let certificate = tls::single_certificate(&saved.certificate_pem, "host.crt")?;
    let (not_before, not_after) = certificate_validity(&certificate)?;

    println!("registration: {}", args.dir.display());
    println!("primary: {}", registration.server);
    println!("enrolment port: {}", registration.enrol_port);
    println!("key port: {}", registration.key_port);
    match &failover {
        Some(failover) => println!("failover: {failover}"),
        None => println!("failover: none"),
    }
    println!("domain: {}", registration.domain);
    println!("host name: {}", registration.host_name);
    println!("registered: {}", registration.registered_at);
    println!("certificate fingerprint: {}", Fingerprint::of(&certificate));
    println!("CA fingerprint (pinned): {}", registration.ca_fingerprint);
    println!("certificate valid from: {not_before}");
    println!("certificate valid until: {not_after}");

    let agent = Agent::new(mutual_tls(&saved)?, args.timeout.duration())?;
    let answer = api::with_failover(&primary, failover.as_ref(), |endpoint| {
        let agent = &agent;
        async move {
            let answer = agent.status(&endpoint).await?;
            Ok((endpoint, answer))
        }
    })
    .await;
    match answer {
        Ok((endpoint, answer)) => {
            println!("server: reachable");
            println!("answered by: {endpoint}");
            println!("server host name: {}", answer.host_name);
            println!("server domain: {}", answer.domain);
            println!("server registered at: {}", answer.registered_at);
            println!(
                "last contact: {}",
                answer.last_contact.as_deref().unwrap_or("never")
            );
            println!("server time: {}", answer.server_time);
            println!("security mode: {}", answer.security_mode);
            Ok(ExitCode::SUCCESS)
        }
        Err(Failure::Unreachable(reason)) => {
            println!("server: unreachable ({reason})");
            Ok(ExitCode::from(2))
        }
        Err(Failure::Failed(error)) => Err(error),
    }
}

/// The primary's and the failover's key-service endpoints.
fn key_service(registration: &Registration) -> Result<(Endpoint, Option<Endpoint>)> {
    let primary = Endpoint {
        host: registration.server.clone(),
        port: registration.key_port,
    };
    let failover = registration
        .failover
        .as_deref()
        .map(|failover| Endpoint::parse(failover, registration.key_port))
        .transpose()
        .context("agent.json: failover")?;
    Ok((primary, failover))
}

/// Mutual TLS against the CA pinned at registration: `ca.crt` is used only
/// when it still has the pinned fingerprint, for the primary and the failover.
fn mutual_tls(saved: &Saved) -> Result<rustls::ClientConfig> {
    let ca = tls::single_certificate(&saved.ca_pem, "ca.crt")?;
    let pinned: Fingerprint = saved
        .registration
        .ca_fingerprint
        .parse()
        .context("agent.json: ca_fingerprint")?;
    ensure!(
        Fingerprint::of(&ca) == pinned,
        "ca.crt (SHA-256 {}) is not the CA pinned at registration ({pinned}); \
         not connecting (register again if the appliance CA was regenerated)",
        Fingerprint::of(&ca)
    );
    tls::mutual(
        &ca,
        tls::single_certificate(&saved.certificate_pem, "host.crt")?,
        tls::private_key(&saved.key_pem)?,
    )
}

fn machine_host_name() -> Result<String> {
    let path = Path::new("/proc/sys/kernel/hostname");
    let name = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}; pass --host-name", path.display()))?;
    let name = name.trim();
    if name.is_empty() {
        bail!("this machine has no host name; pass --host-name");
    }
    Ok(name.to_owned())
}

/// The DER SubjectPublicKeyInfo of a certificate.
fn certificate_public_key(certificate: &[u8]) -> Result<Vec<u8>> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate)
        .context("the issued host certificate is not valid X.509")?;
    Ok(parsed.public_key().raw.to_vec())
}

/// A certificate's validity period, in RFC 3339.
fn certificate_validity(certificate: &[u8]) -> Result<(String, String)> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(certificate).context("host.crt is not valid X.509")?;
    let validity = parsed.validity();
    let format = |time: OffsetDateTime| time.format(&Rfc3339).context("formatting a time");
    Ok((
        format(validity.not_before.to_datetime())?,
        format(validity.not_after.to_datetime())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    const FP: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn register(extra: &[&str]) -> Result<Cli, clap::Error> {
        let mut args = vec![
            "custos-agent",
            "register",
            "--server",
            "custos.example",
            "--domain",
            "recording",
            "--dir",
            "/var/lib/custos-agent",
        ];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args)
    }

    #[test]
    fn register_parses_with_defaults() {
        let cli = register(&["--ca-fingerprint", FP, "--secret-file", "-"]).expect("parses");
        let Command::Register(args) = cli.command else {
            panic!("not register");
        };
        assert_eq!(args.timeout.seconds, 5);
        assert_eq!(args.host_name, None);
        assert_eq!(args.secret_file.as_deref(), Some(Path::new("-")));
        assert_eq!(args.ca_fingerprint, Some(FP.parse().expect("fingerprint")));
        assert!(!args.insecure_first_contact);
    }

    #[test]
    fn the_secret_is_never_taken_from_the_command_line() {
        for flag in ["--secret", "--shared-secret"] {
            let error = register(&[flag, "Secret!1"]).expect_err(flag);
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::UnknownArgument,
                "{flag}"
            );
        }
    }

    #[test]
    fn a_pin_and_insecure_first_contact_exclude_each_other() {
        assert!(register(&["--ca-fingerprint", FP, "--insecure-first-contact"]).is_err());
        let cli = register(&["--insecure-first-contact"]).expect("parses");
        let Command::Register(args) = cli.command else {
            panic!("not register");
        };
        assert!(args.insecure_first_contact);
        assert_eq!(args.ca_fingerprint, None);
    }

    #[test]
    fn get_key_parses_version_and_refuses_zero() {
        let cli = Cli::try_parse_from([
            "custos-agent",
            "get-key",
            "recorder",
            "--version",
            "3",
            "--reveal",
            "--dir",
            "d",
        ])
        .expect("parses");
        let Command::GetKey(args) = cli.command else {
            panic!("not get-key");
        };
        assert_eq!(args.version, Some(3));
        assert!(args.reveal);
        assert!(
            Cli::try_parse_from([
                "custos-agent",
                "get-key",
                "k",
                "--version",
                "0",
                "--dir",
                "d"
            ])
            .is_err()
        );
    }

    #[test]
    fn ca_fingerprint_is_checked_when_parsing() {
        assert!(register(&["--ca-fingerprint", "AB:CD"]).is_err());
        assert!(register(&["--ca-fingerprint", &FP.to_uppercase()]).is_ok());
    }

    #[test]
    fn failover_defaults_to_the_primary_key_port() {
        let registration = Registration {
            server: "custos-a.example".to_owned(),
            enrol_port: 8446,
            key_port: 8447,
            domain: "d".to_owned(),
            host_name: "h".to_owned(),
            failover: Some("custos-b.example".to_owned()),
            registered_at: "2025-01-02T03:04:05Z".to_owned(),
            ca_fingerprint: FP.to_owned(),
        };
        let (primary, failover) = key_service(&registration).expect("endpoints");
        assert_eq!(primary.to_string(), "custos-a.example:8447");
        assert_eq!(
            failover.expect("failover").to_string(),
            "custos-b.example:8447"
        );
    }
}
