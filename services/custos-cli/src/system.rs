//! `system`: the host name and system information, restarting the server
//! software, the certificate authority and the security mode (§9); the
//! automatic backup's commands are in `backup`.

use appliance::model::SecurityMode;
use appliance::os::{HostName, OsSettings};
use appliance::pki::{self, CaKind, CaSubject};
use appliance::store::Identities;

use crate::host::{Cmd, Emulated};
use crate::menu::{Args, Category, Command, Failure, Outcome};
use crate::render::{self, HOSTNAME_FILE};
use crate::session::Ctx;

/// The appliance's daemons (systemd units), restarted by `restart` and after
/// a change of CA or security mode. Each daemon of `services/` that runs as
/// a unit belongs here.
pub const APPLIANCE_UNITS: &[&str] = &["custos-keyd", "custos-backupd"];

pub const CATEGORY: Category = Category {
    name: "system",
    help: "host name, restart, certificate authority, security mode and automatic backup",
    commands: &[
        Command {
            words: &["setinfo", "show"],
            args: "",
            example: "setinfo show",
            help: "Show the host name and system information",
            run: setinfo_show,
        },
        Command {
            words: &["setinfo", "hostname"],
            args: "FQDN",
            example: "setinfo hostname custos.example.com",
            help: "Set the host name (case sensitive, at most 64 characters)",
            run: setinfo_hostname,
        },
        Command {
            words: &["restart"],
            args: "",
            example: "restart",
            help: "Restart the server software",
            run: restart,
        },
        Command {
            words: &["security", "genca"],
            args: "",
            example: "security genca",
            help: "Regenerate the certificate authority (hosts must register again)",
            run: genca,
        },
        Command {
            words: &["security", "suiteb", "set"],
            args: "suiteb|compatible",
            example: "security suiteb set suiteb",
            help: "Set the security mode (restarts the server software)",
            run: suiteb_set,
        },
        Command {
            words: &["security", "suiteb", "show"],
            args: "",
            example: "security suiteb show",
            help: "Show the security mode",
            run: suiteb_show,
        },
        crate::backup::SHOW,
        crate::backup::SCHEDULE_DAILY,
        crate::backup::SCHEDULE_WEEKLY,
        crate::backup::TARGET,
        crate::backup::PUBKEY,
        crate::backup::HOSTKEY_FORGET,
        crate::backup::NOW,
        crate::backup::HISTORY,
        crate::backup::REMOVE,
        crate::backup::WRAPPER_SHOW,
        crate::backup::WRAPPER_DISCARD,
    ],
};

/// The appliance's host name: the one set with `setinfo hostname`, else the
/// system's.
pub(crate) fn host_name(ctx: &Ctx<'_>, os: &OsSettings) -> String {
    if let Some(h) = &os.host_name {
        return h.to_string();
    }
    [
        ctx.host.path(HOSTNAME_FILE),
        "/proc/sys/kernel/hostname".into(),
    ]
    .iter()
    .find_map(|p| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    })
    .unwrap_or_else(|| "custos".into())
}

fn proc_line(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

fn uptime() -> String {
    let secs = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map(|s| s as u64);
    match secs {
        Some(s) => format!(
            "{} days, {:02}:{:02}",
            s / 86_400,
            s % 86_400 / 3600,
            s % 3600 / 60
        ),
        None => "unknown".into(),
    }
}

fn mode_name(m: SecurityMode) -> &'static str {
    match m {
        SecurityMode::SuiteB => "suiteb",
        SecurityMode::Compatible => "compatible",
    }
}

/// A CA's fingerprint as the dashboard labels it, for the operator to give
/// `custos-agent register --ca-fingerprint`.
fn ca_line(ctx: &Ctx<'_>, kind: CaKind, name: &str) -> Result<String, Failure> {
    Ok(match ctx.store.ca_fingerprint(kind)? {
        Some(fp) => format!("{name} CA Fingerprint (SHA-256): {fp}"),
        None => format!(
            "{name} CA Fingerprint (SHA-256): not created yet (the key service creates it at its first start)"
        ),
    })
}

fn setinfo_show(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    let os = ctx.store.os_settings()?;
    let mode = ctx.store.preferences_unchecked()?.security_mode;
    let eth0 = match (os.eth0.dhcp, os.eth0.address) {
        (_, Some(a)) => format!("static {a}"),
        (true, None) => "DHCP".into(),
        (false, None) => "no address".into(),
    };
    let lines = [
        format!("Host name: {}", host_name(ctx, &os)),
        format!("Version: Custos {}", appliance::VERSION),
        format!(
            "Kernel: {} {}",
            proc_line("/proc/sys/kernel/ostype"),
            proc_line("/proc/sys/kernel/osrelease")
        ),
        format!("Uptime: {}", uptime()),
        format!("Security mode: {}", mode_name(mode)),
        ca_line(ctx, CaKind::Rsa, "RSA")?,
        ca_line(ctx, CaKind::Ec, "EC")?,
        format!("eth0: {eth0}"),
    ];
    for l in &lines {
        ctx.say(l)?;
    }
    ctx.say("Addresses:")?;
    match ctx.host.query(&["ip", "-brief", "address", "show"]) {
        Some(Ok(text)) => {
            for l in text.lines().filter(|l| !l.trim().is_empty()) {
                ctx.say(&format!("  {}", l.trim_end()))?;
            }
        }
        Some(Err(e)) => ctx.say(&format!("  (not available: {e:#})"))?,
        None => ctx.say(&format!(
            "  (not read: {} is a test root)",
            ctx.host.root().display()
        ))?,
    }
    Ok("setinfo show".into())
}

fn setinfo_hostname(ctx: &mut Ctx<'_>, args: &Args) -> Outcome {
    let name = HostName::parse("host_name", args.value(0))?;
    ctx.store.cli_update_os_settings(ctx.session, |os| {
        os.host_name = Some(name.clone());
        Ok(format!("set the host name to {name}"))
    })?;
    ctx.apply(
        &format!("the host name {name}"),
        &[],
        &[Cmd::new(&["hostnamectl", "set-hostname", name.as_str()])
            .emulating(Emulated::File(render::hostname(&name)))],
    )?;
    Ok(format!("the host name is {name}"))
}

/// Restarts the appliance's daemons.
fn restart_units(ctx: &mut Ctx<'_>, why: &str) -> Result<(), Failure> {
    ctx.say("Restarting the server software...")?;
    let mut argv = vec!["systemctl", "restart"];
    argv.extend(APPLIANCE_UNITS);
    ctx.apply(why, &[], &[Cmd::new(&argv)])
}

fn restart(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    ctx.confirm(&[
        "The server software restarts: the web console, the API and the agent ports are unavailable for a moment.",
    ])?;
    restart_units(ctx, "a restart of the server software")?;
    ctx.audit("restarted the server software")?;
    Ok("the server software was restarted".into())
}

/// The names the server certificates are valid for.
fn server_names(host_name: &str, os: &OsSettings) -> Vec<String> {
    let mut names = vec![
        host_name.to_owned(),
        "localhost".into(),
        "127.0.0.1".into(),
        "::1".into(),
    ];
    if let Some(a) = os.eth0.address {
        names.push(a.address().to_string());
    }
    names
}

/// Asks for one subject field; the answer is checked at once (the fields
/// not asked yet keep their valid defaults, so an error is this field's).
fn ask_field(
    ctx: &mut Ctx<'_>,
    subject: &mut CaSubject,
    prompt: &str,
    field: fn(&mut CaSubject) -> &mut String,
) -> Result<(), Failure> {
    let default = field(subject).clone();
    *field(subject) = ctx.ask(prompt, &default)?;
    subject.check()?;
    Ok(())
}

fn genca(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    ctx.confirm(&[
        "A new certificate authority (RSA and EC P-384) and new server certificates replace the current ones.",
        "The failover's and every protected host's certificates stop working: every host must register again.",
        "The server software restarts.",
    ])?;
    let os = ctx.store.os_settings()?;
    let mut subject = CaSubject::default_for(&host_name(ctx, &os));
    ask_field(ctx, &mut subject, "Host name", |s| &mut s.host_name)?;
    ask_field(ctx, &mut subject, "Organizational unit", |s| {
        &mut s.organizational_unit
    })?;
    ask_field(ctx, &mut subject, "Organization", |s| &mut s.organization)?;
    ask_field(ctx, &mut subject, "City", |s| &mut s.city)?;
    ask_field(ctx, &mut subject, "State", |s| &mut s.state)?;
    subject.country = ctx
        .ask("Country code", &subject.country)?
        .to_ascii_uppercase();
    subject.check()?;

    ctx.say("Generating the new signer certificates (RSA 3072 and EC P-384)...")?;
    let ca_rsa = pki::generate_ca(CaKind::Rsa, &subject)?;
    let ca_ec = pki::generate_ca(CaKind::Ec, &subject)?;
    ctx.say("Requesting new server certificates and signing them with the new signer...")?;
    let names = server_names(&subject.host_name, &os);
    let ids = Identities {
        server_rsa: pki::issue_server(&ca_rsa, CaKind::Rsa, &names)?,
        server_ec: pki::issue_server(&ca_ec, CaKind::Ec, &names)?,
        ca_rsa,
        ca_ec,
    };
    ctx.say("Removing the old signer; storing the new signer and server certificates...")?;
    let hosts = ctx.store.cli_replace_identities(ctx.session, &ids)?;
    ctx.say(&format!("{hosts} registered hosts must register again."))?;
    restart_units(ctx, "the new certificate authority")?;
    Ok(format!(
        "the certificate authority was regenerated (RSA fingerprint {}, EC fingerprint {}); every protected host and the failover must register again",
        ids.ca_rsa.fingerprint()?,
        ids.ca_ec.fingerprint()?
    ))
}

fn suiteb_set(ctx: &mut Ctx<'_>, args: &Args) -> Outcome {
    let mode = SecurityMode::parse(args.value(0))?;
    let name = mode_name(mode);
    if ctx.store.preferences_unchecked()?.security_mode == mode {
        return Ok(format!("the security mode is already {name}"));
    }
    let switching = format!("Switching to {name} mode restarts the server software.");
    ctx.confirm(&[
        &switching,
        "All nodes of a high-availability pair must use the same mode.",
    ])?;
    ctx.store.cli_set_security_mode(ctx.session, mode)?;
    restart_units(ctx, &format!("the {name} security mode"))?;
    Ok(format!(
        "the security mode is {name}; the server software was restarted"
    ))
}

fn suiteb_show(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    let mode = ctx.store.preferences_unchecked()?.security_mode;
    ctx.say(&format!("Current mode is: {}", mode_name(mode)))?;
    Ok("security suiteb show".into())
}
