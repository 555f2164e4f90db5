//! Email notifications (§14): the SMTP server, the notification groups and
//! the outbox of notices that `custos-notifyd` delivers.
//!
//! Administrators change the settings and the groups here: System
//! Administrators only (§5 lists email among their work and nobody
//! else's), each change audited in its own transaction. `custos-notifyd`
//! works without an actor through the `notify_*` operations: it turns audit
//! entries and expiry dates into notices, each one row of the outbox that is
//! unique by its key, so a notice is queued once and sent once whatever
//! restarts happen. Entries that `custos-notifyd` writes itself (`via` =
//! [`NOTIFYD_VIA`]) never become notices, so a delivery failure cannot mail
//! about itself.

use crate::store::db::{OptionalExtension, Tx, params};
use serde::Serialize;
use time::{Duration, OffsetDateTime};

use super::{Store, audit, audit_actor, domain_id, now};
use crate::access::{Access, Actor};
use crate::model::{
    Severity, check_host_name, check_identifier, check_text, fmt_time, parse_stored_time,
};
use crate::secret::SecretString;
use crate::{Error, Result};

/// The `via` of the audit entries `custos-notifyd` writes; they are never
/// the subject of a notice.
pub const NOTIFYD_VIA: &str = "notifyd";
/// What the console and the API say until the SMTP server is set (§14).
pub const SMTP_NOT_SET: &str = "SMTP server not set";

pub const GROUP_NAME_MAX: usize = 64;
pub const MAX_RECIPIENTS: usize = 50;
pub const ADDRESS_MAX: usize = 254;
pub const SUBJECT_MAX: usize = 200;
pub const FILTER_MAX: usize = 256;
const USERNAME_MAX: usize = 256;
const PASSWORD_MAX: usize = 256;
const CA_CERTIFICATE_MAX: usize = 32 * 1024;
/// How long after a key or certificate expired its "7 days after" notice
/// may still be sent (a group made later, or a long outage, does not mail
/// about everything that expired in the past).
pub const AFTER_EXPIRY_WINDOW_DAYS: i64 = 30;

const PASSWORD_CONTEXT: &str = "email_smtp:password_sealed:1";

// ---------------------------------------------------------------------------
// Types and field rules.

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain SMTP (a trusted relay on the local network).
    None,
    /// Plain connection upgraded with STARTTLS, which is required.
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

impl SmtpSecurity {
    pub const ALL: [SmtpSecurity; 3] = [
        SmtpSecurity::None,
        SmtpSecurity::Starttls,
        SmtpSecurity::Tls,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpSecurity::None => "none",
            SmtpSecurity::Starttls => "starttls",
            SmtpSecurity::Tls => "tls",
        }
    }
    pub fn parse(s: &str) -> Result<Self> {
        SmtpSecurity::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| Error::invalid("security", "must be one of none, starttls, tls"))
    }
    pub fn title(self) -> &'static str {
        match self {
            SmtpSecurity::None => "None (plain SMTP)",
            SmtpSecurity::Starttls => "STARTTLS (required)",
            SmtpSecurity::Tls => "TLS (SMTPS)",
        }
    }
    /// The usual port of each kind.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::None => 25,
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
        }
    }
}

/// §14 notification types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeType {
    /// A log message at or above the threshold that matches the filter.
    Generic,
    /// 90, 60 and 15 days before a key version expires and 7 days after.
    KeyExpiration,
    /// The same schedule for stored and the appliance's own certificates.
    CertificateExpiration,
}

impl NoticeType {
    pub const ALL: [NoticeType; 3] = [
        NoticeType::Generic,
        NoticeType::KeyExpiration,
        NoticeType::CertificateExpiration,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeType::Generic => "generic",
            NoticeType::KeyExpiration => "key_expiration",
            NoticeType::CertificateExpiration => "certificate_expiration",
        }
    }
    pub fn parse(s: &str) -> Result<Self> {
        NoticeType::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "type",
                    "must be one of generic, key_expiration, certificate_expiration",
                )
            })
    }
    pub fn title(self) -> &'static str {
        match self {
            NoticeType::Generic => "Generic",
            NoticeType::KeyExpiration => "Key Expiration",
            NoticeType::CertificateExpiration => "Certificate Expiration",
        }
    }
}

/// §14 Threshold: ERROR (ERROR and FATAL messages) or FATAL (FATAL only).
pub fn parse_threshold(s: &str) -> Result<Severity> {
    match s.to_ascii_uppercase().as_str() {
        "ERROR" => Ok(Severity::Error),
        "FATAL" => Ok(Severity::Fatal),
        _ => Err(Error::invalid(
            "threshold",
            "must be ERROR (ERROR and FATAL messages) or FATAL (FATAL messages only)",
        )),
    }
}

fn check_threshold(s: Severity) -> Result<()> {
    parse_threshold(s.as_str()).map(|_| ())
}

/// Characters RFC 5322 allows in an unquoted local part besides letters and
/// digits.
const ATEXT: &str = "!#$%&'*+-/=?^_`{|}~";

/// An email address as the appliance sends to: `local@domain`, the local
/// part a dot-atom (no quoting, no comments), the domain a host name. Names
/// nothing but the address, so it is safe in a mail header.
pub fn check_email_address(field: &'static str, s: &str) -> Result<()> {
    let refuse = |why: &str| Err(Error::invalid(field, format!("\"{s}\" {why}")));
    if s.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(
            field,
            "must not contain control characters or line breaks",
        ));
    }
    if s.len() > ADDRESS_MAX {
        return refuse(&format!("is longer than {ADDRESS_MAX} characters"));
    }
    let Some((local, domain)) = s.rsplit_once('@') else {
        return refuse("is not an email address (name@example.com)");
    };
    let atom_ok = |c: char| c.is_ascii_alphanumeric() || ATEXT.contains(c);
    if local.is_empty()
        || local.len() > 64
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
        || !local.chars().all(|c| c == '.' || atom_ok(c))
    {
        return refuse(
            "is not an email address: the part before @ must be 1 to 64 letters, digits, dots or !#$%&'*+-/=?^_`{|}~",
        );
    }
    if check_host_name(field, domain).is_err() {
        return refuse("is not an email address: the part after @ must be a domain name");
    }
    Ok(())
}

/// §14 Email Address List: comma separated (empty entries ignored,
/// duplicates dropped), 1 to [`MAX_RECIPIENTS`] addresses.
pub fn parse_recipients(s: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = vec![];
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        check_email_address("recipients", part)?;
        if !out.iter().any(|a| a.eq_ignore_ascii_case(part)) {
            out.push(part.to_owned());
        }
    }
    if out.is_empty() {
        return Err(Error::invalid(
            "recipients",
            "at least one email address is required (separate several with commas)",
        ));
    }
    if out.len() > MAX_RECIPIENTS {
        return Err(Error::invalid(
            "recipients",
            format!("at most {MAX_RECIPIENTS} addresses"),
        ));
    }
    Ok(out)
}

pub fn check_group_name(s: &str) -> Result<()> {
    check_identifier("name", s, GROUP_NAME_MAX, false)
}

/// The SMTP server: a host name or an IP address.
pub fn check_smtp_host(s: &str) -> Result<()> {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if s.is_empty() {
        return Err(Error::invalid("host", "is required"));
    }
    check_host_name("host", s).map_err(|_| {
        Error::invalid(
            "host",
            "must be a host name (e.g. smtp.example.com) or an IP address",
        )
    })
}

pub fn check_smtp_port(p: i64) -> Result<u16> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| Error::invalid("port", "must be between 1 and 65535"))
}

/// An extra trusted root for the SMTP server: one PEM certificate.
pub fn check_ca_certificate(pem: &str) -> Result<()> {
    let refuse = || {
        Error::invalid(
            "ca_certificate",
            "must be one PEM certificate (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)",
        )
    };
    if pem.len() > CA_CERTIFICATE_MAX {
        return Err(Error::invalid(
            "ca_certificate",
            format!("must be at most {} KiB", CA_CERTIFICATE_MAX / 1024),
        ));
    }
    let der = crate::pki::pem_to_der(pem).map_err(|_| refuse())?;
    crate::pki::validity_of(&der).map_err(|_| refuse())?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The SMTP server.

/// The SMTP server as administrators see it: never the password.
#[derive(Debug, Clone, Serialize)]
pub struct SmtpView {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    /// Whether a password is stored (it is never shown).
    pub password_set: bool,
    pub sender: String,
    pub ca_certificate: Option<String>,
    pub updated_at: String,
}

/// A change of a secret setting.
#[derive(Debug, Clone, Default)]
pub enum SecretUpdate {
    /// Keep what is stored.
    #[default]
    Keep,
    /// Forget it.
    Clear,
    Set(SecretString),
}

/// The SMTP settings as submitted (the whole form; the password may be kept).
#[derive(Debug, Clone)]
pub struct SmtpUpdate {
    pub host: String,
    /// `None`: the usual port of `security`.
    pub port: Option<i64>,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: SecretUpdate,
    /// The From address of every notice.
    pub sender: String,
    pub ca_certificate: Option<String>,
}

/// The SMTP server with its password opened, for the code that sends mail.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub sender: String,
    pub ca_certificate: Option<String>,
}

impl SmtpConfig {
    /// `host:port (security)`, for messages.
    pub fn describe(&self) -> String {
        format!("{}:{} ({})", self.host, self.port, self.security.title())
    }
}

type SmtpRow = (
    String,
    i64,
    String,
    Option<String>,
    Option<Vec<u8>>,
    String,
    Option<String>,
    String,
);

fn smtp_row(tx: &Tx<'_>) -> Result<Option<SmtpRow>> {
    Ok(tx
        .query_row(
            "SELECT host, port, security, username, password_sealed, sender, ca_certificate, updated_at FROM email_smtp WHERE id = 1",
            params![],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            },
        )
        .optional()?)
}

fn smtp_view(row: SmtpRow) -> Result<SmtpView> {
    let (host, port, security, username, sealed, sender, ca_certificate, updated_at) = row;
    Ok(SmtpView {
        host,
        port: u16::try_from(port).map_err(|_| Error::Crypto("stored SMTP port is malformed"))?,
        security: SmtpSecurity::parse(&security)?,
        username,
        password_set: sealed.is_some(),
        sender,
        ca_certificate,
        updated_at,
    })
}

// ---------------------------------------------------------------------------
// Notification groups.

#[derive(Debug, Clone)]
pub struct NewEmailGroup {
    pub name: String,
    /// Comma separated addresses.
    pub recipients: String,
    /// Empty: a subject naming the appliance and the notice.
    pub subject: String,
    pub notice_type: NoticeType,
    /// ERROR or FATAL; used by Generic groups.
    pub threshold: Severity,
    /// Empty: every message.
    pub message_contains: String,
    pub enabled: bool,
    /// `None`: system-wide.
    pub domain: Option<String>,
}

/// A change of a group; `None` keeps the field. `domain: Some(None)` makes
/// the group system-wide.
#[derive(Debug, Clone, Default)]
pub struct EmailGroupUpdate {
    pub recipients: Option<String>,
    pub subject: Option<String>,
    pub notice_type: Option<NoticeType>,
    pub threshold: Option<Severity>,
    pub message_contains: Option<String>,
    pub enabled: Option<bool>,
    pub domain: Option<Option<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmailGroupView {
    pub name: String,
    /// The addresses, comma separated.
    pub recipients: String,
    pub subject: String,
    #[serde(rename = "type")]
    pub notice_type: NoticeType,
    pub threshold: Severity,
    pub message_contains: String,
    pub enabled: bool,
    /// `None`: system-wide.
    pub domain: Option<String>,
    /// Notices delivered.
    pub sent: i64,
    /// Notices waiting for delivery (or a retry).
    pub pending: i64,
    /// Notices given up on.
    pub failed: i64,
    /// The last delivery error of a notice still waiting, if any.
    pub last_error: Option<String>,
    pub created_at: String,
}

const GROUP_SELECT: &str = "SELECT g.name, g.recipients, g.subject, g.kind, g.threshold, g.message_contains, g.enabled, d.name, g.created_at,
        (SELECT COUNT(*) FROM email_outbox o WHERE o.group_id = g.id AND o.sent_at IS NOT NULL),
        (SELECT COUNT(*) FROM email_outbox o WHERE o.group_id = g.id AND o.sent_at IS NULL AND o.abandoned_at IS NULL),
        (SELECT COUNT(*) FROM email_outbox o WHERE o.group_id = g.id AND o.abandoned_at IS NOT NULL),
        (SELECT o.last_error FROM email_outbox o WHERE o.group_id = g.id AND o.sent_at IS NULL AND o.abandoned_at IS NULL
            AND o.last_error IS NOT NULL ORDER BY o.id DESC LIMIT 1)
    FROM email_groups g LEFT JOIN domains d ON d.id = g.domain_id";

fn group_views(tx: &Tx<'_>, name: Option<&str>) -> Result<Vec<EmailGroupView>> {
    let sql = match name {
        Some(_) => format!("{GROUP_SELECT} WHERE g.name = ?1"),
        None => format!("{GROUP_SELECT} WHERE CAST(?1 AS TEXT) IS NULL ORDER BY g.name"),
    };
    let mut stmt = tx.prepare_cached(&sql)?;
    let rows = stmt.query_map([name], |r| {
        Ok((
            (
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, bool>(6)?,
            ),
            (
                r.get::<_, Option<String>>(7)?,
                r.get::<_, String>(8)?,
                r.get::<_, i64>(9)?,
                r.get::<_, i64>(10)?,
                r.get::<_, i64>(11)?,
                r.get::<_, Option<String>>(12)?,
            ),
        ))
    })?;
    rows.map(|row| {
        let (
            (name, recipients, subject, kind, threshold, message_contains, enabled),
            (domain, created_at, sent, pending, failed, last_error),
        ) = row?;
        Ok(EmailGroupView {
            name,
            recipients,
            subject,
            notice_type: NoticeType::parse(&kind)?,
            threshold: Severity::parse(&threshold)?,
            message_contains,
            enabled,
            domain,
            sent,
            pending,
            failed,
            last_error,
            created_at,
        })
    })
    .collect()
}

fn group_view(tx: &Tx<'_>, name: &str) -> Result<EmailGroupView> {
    group_views(tx, Some(name))?
        .pop()
        .ok_or_else(|| Error::not_found("notification group", name))
}

/// A domain named in a form or body: refused as a field when it does not exist.
fn domain_field(tx: &Tx<'_>, name: &str) -> Result<i64> {
    domain_id(tx, name).map_err(|e| match e {
        Error::NotFound { .. } => Error::invalid("domain", format!("no domain is named {name}")),
        other => other,
    })
}

fn scope(domain: Option<&str>) -> String {
    match domain {
        Some(d) => format!("domain {d}"),
        None => "system-wide".to_owned(),
    }
}

// ---------------------------------------------------------------------------
// Notices.

/// One notice ready to be mailed, with its group's addressing.
#[derive(Debug, Clone)]
pub struct Notice {
    pub id: i64,
    pub group: String,
    pub recipients: Vec<String>,
    /// The group's subject (may be empty: the sender makes one).
    pub subject: String,
    pub notice_type: NoticeType,
    pub threshold: Severity,
    pub domain: Option<String>,
    /// One line: what happened.
    pub summary: String,
    /// The details, a few `Label: value` lines.
    pub body: String,
    pub attempts: i64,
    pub created_at: OffsetDateTime,
}

/// The moments of the expiry schedule (§14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    Days90,
    Days60,
    Days15,
    After7,
}

impl Milestone {
    fn key(self) -> &'static str {
        match self {
            Milestone::Days90 => "d90",
            Milestone::Days60 => "d60",
            Milestone::Days15 => "d15",
            Milestone::After7 => "a7",
        }
    }
    pub fn title(self) -> &'static str {
        match self {
            Milestone::Days90 => "90 days before expiry",
            Milestone::Days60 => "60 days before expiry",
            Milestone::Days15 => "15 days before expiry",
            Milestone::After7 => "7 days after expiry",
        }
    }
    /// The notice due at `now` for something that expires at `expiry`: the
    /// latest moment of the schedule that has been reached, while the next
    /// one has not (a late notice says what is true now; an earlier moment
    /// that was missed is not mailed as well), and the one after expiry only
    /// within [`AFTER_EXPIRY_WINDOW_DAYS`] of it.
    pub fn due(expiry: OffsetDateTime, now: OffsetDateTime) -> Option<Milestone> {
        let left = expiry - now;
        if left > Duration::days(90) {
            None
        } else if left > Duration::days(60) {
            Some(Milestone::Days90)
        } else if left > Duration::days(15) {
            Some(Milestone::Days60)
        } else if left > Duration::ZERO {
            Some(Milestone::Days15)
        } else if -left >= Duration::days(7) && -left < Duration::days(AFTER_EXPIRY_WINDOW_DAYS) {
            Some(Milestone::After7)
        } else {
            None
        }
    }
}

/// "in 15 days" / "7 days ago" for an expiry seen from `now`.
fn days_phrase(expiry: OffsetDateTime, now: OffsetDateTime) -> String {
    let secs = (expiry - now).whole_seconds();
    let day = 86_400;
    let plural = |n: i64| if n == 1 { "day" } else { "days" };
    if secs > 0 {
        let n = (secs + day - 1) / day;
        format!("in {n} {}", plural(n))
    } else {
        let n = -secs / day;
        format!("{n} {} ago", plural(n))
    }
}

/// A group as the queueing code needs it.
#[derive(Debug)]
struct Rule {
    id: i64,
    kind: NoticeType,
    domain_id: Option<i64>,
    threshold: Severity,
    /// Lower case; empty: everything.
    contains: String,
}

impl Rule {
    fn in_scope(&self, domain: Option<i64>) -> bool {
        self.domain_id.is_none() || self.domain_id == domain
    }
    fn matches(&self, text: &str) -> bool {
        self.contains.is_empty() || text.to_lowercase().contains(&self.contains)
    }
}

fn enabled_rules(tx: &Tx<'_>) -> Result<Vec<Rule>> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, kind, domain_id, threshold, message_contains FROM email_groups WHERE enabled = 1 ORDER BY id",
    )?;
    let rows = stmt.query_map(crate::store::db::params![], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<i64>>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    rows.map(|row| {
        let (id, kind, domain_id, threshold, contains) = row?;
        Ok(Rule {
            id,
            kind: NoticeType::parse(&kind)?,
            domain_id,
            threshold: Severity::parse(&threshold)?,
            contains: contains.to_lowercase(),
        })
    })
    .collect()
}

/// A notice before it is queued.
struct Pending {
    key: String,
    domain_id: Option<i64>,
    /// Appliance certificates are for system-wide groups only.
    system_only: bool,
    summary: String,
    body: String,
}

fn enqueue(tx: &Tx<'_>, rule: &Rule, p: &Pending, now: OffsetDateTime) -> Result<usize> {
    Ok(tx.execute(
        "INSERT INTO email_outbox(group_id, notice, summary, body, created_at, next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT DO NOTHING",
        params![rule.id, p.key, p.summary, p.body, fmt_time(now)],
    )?)
}

fn progress(tx: &Tx<'_>, name: &str) -> Result<Option<String>> {
    Ok(tx
        .query_row(
            "SELECT value FROM email_progress WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()?)
}

fn set_progress(tx: &Tx<'_>, name: &str, value: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO email_progress(name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        params![name, value],
    )?;
    Ok(())
}

/// What the appliance calls its own certificates in a notice.
fn identity_title(name: &str) -> String {
    match name {
        "ca_rsa" => "the appliance's RSA certificate authority".into(),
        "ca_ec" => "the appliance's EC P-384 certificate authority".into(),
        "server_rsa" => "the appliance's RSA web server certificate".into(),
        "server_ec" => "the appliance's EC P-384 web server certificate".into(),
        other => format!("the appliance's certificate {other}"),
    }
}

/// Subject, expiry and fingerprint of a PEM certificate.
fn certificate_facts(pem: &str) -> Result<(String, OffsetDateTime, String)> {
    let der = crate::pki::pem_to_der(pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| Error::Certificate(format!("cannot parse certificate: {e}")))?;
    Ok((
        cert.subject().to_string(),
        cert.validity().not_after.to_datetime(),
        crate::crypto::fingerprint(&der),
    ))
}

impl Store {
    // --- SMTP server -----------------------------------------------------------

    /// The SMTP server, or `None` while it is not set.
    pub fn smtp_settings(&self, actor: &Actor) -> Result<Option<SmtpView>> {
        actor.require_system(Access::Read)?;
        self.read(|tx| smtp_row(tx)?.map(smtp_view).transpose())
    }

    /// Sets the SMTP server (§14). A user name needs a password (given now
    /// or kept from before); the password is sealed and never shown again.
    pub fn set_smtp_settings(&self, actor: &Actor, up: SmtpUpdate) -> Result<SmtpView> {
        actor.require_system(Access::Write)?;
        let host = up.host.trim().to_owned();
        check_smtp_host(&host)?;
        let port = match up.port {
            Some(p) => check_smtp_port(p)?,
            None => up.security.default_port(),
        };
        let username = up
            .username
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty());
        if let Some(u) = &username {
            check_text("username", u, USERNAME_MAX)?;
        }
        if let SecretUpdate::Set(p) = &up.password {
            let p = p.expose();
            if p.is_empty() {
                return Err(Error::invalid("password", "must not be empty"));
            }
            if p.chars().count() > PASSWORD_MAX {
                return Err(Error::invalid(
                    "password",
                    format!("must be at most {PASSWORD_MAX} characters"),
                ));
            }
            if p.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "password",
                    "must not contain control characters",
                ));
            }
            if username.is_none() {
                return Err(Error::invalid(
                    "username",
                    "is required when a password is given",
                ));
            }
        }
        let sender = up.sender.trim().to_owned();
        check_email_address("sender", &sender)?;
        let ca_certificate = up
            .ca_certificate
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty());
        if let Some(c) = &ca_certificate {
            if up.security == SmtpSecurity::None {
                return Err(Error::invalid(
                    "ca_certificate",
                    "is only used with STARTTLS or TLS",
                ));
            }
            check_ca_certificate(c)?;
        }
        let new_sealed = match &up.password {
            SecretUpdate::Set(p) => {
                Some(self.master.seal(PASSWORD_CONTEXT, p.expose().as_bytes())?)
            }
            SecretUpdate::Keep | SecretUpdate::Clear => None,
        };
        self.write(|tx| {
            let before = smtp_row(tx)?;
            let old_sealed = before.as_ref().and_then(|r| r.4.clone());
            let sealed = match &up.password {
                SecretUpdate::Set(_) => new_sealed.clone(),
                SecretUpdate::Keep => old_sealed,
                SecretUpdate::Clear => None,
            };
            if username.is_some() && sealed.is_none() {
                return Err(Error::invalid(
                    "password",
                    "is required with a user name",
                ));
            }
            let sealed = sealed.filter(|_| username.is_some());
            tx.execute(
                "INSERT INTO email_smtp(id, host, port, security, username, password_sealed, sender, ca_certificate, updated_at)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(id) DO UPDATE SET host = excluded.host, port = excluded.port, security = excluded.security,
                    username = excluded.username, password_sealed = excluded.password_sealed, sender = excluded.sender,
                    ca_certificate = excluded.ca_certificate, updated_at = excluded.updated_at",
                params![host, port, up.security.as_str(), username, sealed, sender, ca_certificate, fmt_time(now())],
            )?;
            let auth = match (&username, &up.password) {
                (None, _) => "no authentication".to_owned(),
                (Some(u), SecretUpdate::Set(_)) => format!("authentication as {u} (password changed)"),
                (Some(u), _) => format!("authentication as {u}"),
            };
            audit_actor(
                tx,
                actor,
                Severity::Info,
                None,
                &format!(
                    "set the SMTP server {host}:{port} ({}, {auth}, sender {sender}{})",
                    up.security.title(),
                    if ca_certificate.is_some() { ", own CA certificate" } else { "" }
                ),
            )?;
            smtp_row(tx)?
                .map(smtp_view)
                .transpose()?
                .ok_or_else(|| Error::Crypto("SMTP settings vanished"))
        })
    }

    /// The SMTP server with its password, for `custos-notifyd`.
    pub fn smtp_config_unchecked(&self) -> Result<Option<SmtpConfig>> {
        let row = self.read(smtp_row)?;
        row.map(
            |(host, port, security, username, sealed, sender, ca_certificate, _)| {
                let password = sealed
                    .map(|s| {
                        let bytes = self.master.open(PASSWORD_CONTEXT, &s)?;
                        String::from_utf8(bytes.expose().to_vec())
                            .map(SecretString::new)
                            .map_err(|_| Error::Crypto("stored SMTP password is not UTF-8"))
                    })
                    .transpose()?;
                Ok(SmtpConfig {
                    host,
                    port: u16::try_from(port)
                        .map_err(|_| Error::Crypto("stored SMTP port is malformed"))?,
                    security: SmtpSecurity::parse(&security)?,
                    username,
                    password,
                    sender,
                    ca_certificate,
                })
            },
        )
        .transpose()
    }

    /// Send test mail (§14): may this administrator send one to `to`, and
    /// through which server. Sending is the caller's (a daemon's edge);
    /// it records the outcome with [`Store::log_test_mail`].
    pub fn test_mail_config(&self, actor: &Actor, to: &str) -> Result<SmtpConfig> {
        actor.require_system(Access::Write)?;
        check_email_address("to", to.trim())?;
        self.smtp_config_unchecked()?.ok_or_else(|| {
            Error::conflict("smtp", format!("{SMTP_NOT_SET}: set the SMTP server first"))
        })
    }

    /// Records a test mail and its outcome.
    pub fn log_test_mail(
        &self,
        actor: &Actor,
        to: &str,
        server: &str,
        failure: Option<&str>,
    ) -> Result<()> {
        let (severity, what) = match failure {
            None => (
                Severity::Info,
                format!("sent a test mail to {to} through {server}"),
            ),
            Some(e) => (
                Severity::Warn,
                format!("test mail to {to} through {server} failed: {e}"),
            ),
        };
        self.write(|tx| audit_actor(tx, actor, severity, None, &what))
    }

    // --- groups ----------------------------------------------------------------

    pub fn list_email_groups(&self, actor: &Actor) -> Result<Vec<EmailGroupView>> {
        actor.require_system(Access::Read)?;
        self.read(|tx| group_views(tx, None))
    }

    pub fn get_email_group(&self, actor: &Actor, name: &str) -> Result<EmailGroupView> {
        actor.require_system(Access::Read)?;
        self.read(|tx| group_view(tx, name))
    }

    pub fn create_email_group(&self, actor: &Actor, new: NewEmailGroup) -> Result<EmailGroupView> {
        actor.require_system(Access::Write)?;
        check_group_name(&new.name)?;
        let recipients = parse_recipients(&new.recipients)?.join(", ");
        let subject = new.subject.trim().to_owned();
        check_text("subject", &subject, SUBJECT_MAX)?;
        check_threshold(new.threshold)?;
        check_text("message_contains", &new.message_contains, FILTER_MAX)?;
        let domain = new
            .domain
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty());
        self.write(|tx| {
            let did = domain.as_deref().map(|d| domain_field(tx, d)).transpose()?;
            let exists: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM email_groups WHERE name = ?1)",
                [&new.name],
                |r| r.get(0),
            )?;
            if exists {
                return Err(Error::conflict(
                    "name",
                    "a notification group with this name already exists",
                ));
            }
            tx.execute(
                "INSERT INTO email_groups(name, domain_id, recipients, subject, kind, threshold, message_contains, enabled, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![new.name, did, recipients, subject, new.notice_type.as_str(), new.threshold.as_str(),
                    new.message_contains, new.enabled, fmt_time(now())],
            )?;
            audit_actor(
                tx,
                actor,
                Severity::Info,
                did,
                &format!(
                    "added email notification group {} ({}, {}, threshold {}, to {recipients}{})",
                    new.name,
                    new.notice_type.title(),
                    scope(domain.as_deref()),
                    new.threshold.as_str(),
                    if new.enabled { "" } else { ", disabled" }
                ),
            )?;
            group_view(tx, &new.name)
        })
    }

    /// Changes a group. Disabling it drops the notices still waiting, so
    /// enabling it again does not send stale ones.
    pub fn update_email_group(
        &self,
        actor: &Actor,
        name: &str,
        up: EmailGroupUpdate,
    ) -> Result<EmailGroupView> {
        actor.require_system(Access::Write)?;
        let recipients = up
            .recipients
            .as_deref()
            .map(|r| parse_recipients(r).map(|r| r.join(", ")))
            .transpose()?;
        let subject = up.subject.as_deref().map(|s| s.trim().to_owned());
        if let Some(s) = &subject {
            check_text("subject", s, SUBJECT_MAX)?;
        }
        if let Some(t) = up.threshold {
            check_threshold(t)?;
        }
        if let Some(f) = &up.message_contains {
            check_text("message_contains", f, FILTER_MAX)?;
        }
        let domain = up
            .domain
            .map(|d| d.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty()));
        self.write(|tx| {
            let (gid, old_domain): (i64, Option<i64>) = tx
                .query_row(
                    "SELECT id, domain_id FROM email_groups WHERE name = ?1",
                    [name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
                .ok_or_else(|| Error::not_found("notification group", name))?;
            let before = group_view(tx, name)?;
            let mut changed = vec![];
            if let Some(r) = &recipients
                && *r != before.recipients
            {
                tx.execute("UPDATE email_groups SET recipients = ?2 WHERE id = ?1", params![gid, r])?;
                changed.push(format!("recipients {r}"));
            }
            if let Some(s) = &subject
                && *s != before.subject
            {
                tx.execute("UPDATE email_groups SET subject = ?2 WHERE id = ?1", params![gid, s])?;
                changed.push(format!("subject \"{s}\""));
            }
            if let Some(t) = up.notice_type
                && t != before.notice_type
            {
                tx.execute("UPDATE email_groups SET kind = ?2 WHERE id = ?1", params![gid, t.as_str()])?;
                changed.push(format!("type {}", t.title()));
            }
            if let Some(t) = up.threshold
                && t != before.threshold
            {
                tx.execute("UPDATE email_groups SET threshold = ?2 WHERE id = ?1", params![gid, t.as_str()])?;
                changed.push(format!("threshold {}", t.as_str()));
            }
            if let Some(f) = &up.message_contains
                && *f != before.message_contains
            {
                tx.execute("UPDATE email_groups SET message_contains = ?2 WHERE id = ?1", params![gid, f])?;
                changed.push(format!("message filter \"{f}\""));
            }
            let mut did = old_domain;
            if let Some(d) = &domain
                && *d != before.domain
            {
                did = d.as_deref().map(|d| domain_field(tx, d)).transpose()?;
                tx.execute("UPDATE email_groups SET domain_id = ?2 WHERE id = ?1", params![gid, did])?;
                changed.push(scope(d.as_deref()));
            }
            if let Some(e) = up.enabled
                && e != before.enabled
            {
                tx.execute("UPDATE email_groups SET enabled = ?2 WHERE id = ?1", params![gid, e])?;
                if e {
                    changed.push("enabled".to_owned());
                } else {
                    let dropped = tx.execute(
                        "DELETE FROM email_outbox WHERE group_id = ?1 AND sent_at IS NULL AND abandoned_at IS NULL",
                        [gid],
                    )?;
                    changed.push(if dropped > 0 {
                        format!("disabled ({dropped} waiting notices dropped)")
                    } else {
                        "disabled".to_owned()
                    });
                }
            }
            if !changed.is_empty() {
                audit_actor(
                    tx,
                    actor,
                    Severity::Info,
                    did,
                    &format!("changed email notification group {name}: {}", changed.join(", ")),
                )?;
            }
            group_view(tx, name)
        })
    }

    /// Deletes a group and its outbox (sent and waiting notices).
    pub fn delete_email_group(&self, actor: &Actor, name: &str) -> Result<()> {
        actor.require_system(Access::Write)?;
        self.write(|tx| {
            let (gid, did): (i64, Option<i64>) = tx
                .query_row(
                    "SELECT id, domain_id FROM email_groups WHERE name = ?1",
                    [name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
                .ok_or_else(|| Error::not_found("notification group", name))?;
            let pending: i64 = tx.query_row(
                "SELECT COUNT(*) FROM email_outbox WHERE group_id = ?1 AND sent_at IS NULL AND abandoned_at IS NULL",
                [gid],
                |r| r.get(0),
            )?;
            tx.execute("DELETE FROM email_groups WHERE id = ?1", [gid])?;
            let dropped = if pending > 0 {
                format!(" ({pending} waiting notices dropped)")
            } else {
                String::new()
            };
            audit_actor(
                tx,
                actor,
                Severity::Warn,
                did,
                &format!("deleted email notification group {name}{dropped}"),
            )
        })
    }

    // --- custos-notifyd ---------------------------------------------------------

    /// Queues a Generic notice for every audit entry written since the last
    /// call that an enabled Generic group wants (at or above its threshold,
    /// in its scope, matching its filter), and moves the cursor past them,
    /// all in one transaction; at most `limit` entries per call. The first
    /// call starts at the end of the log: history is not mailed. Returns
    /// how many entries were read.
    pub fn notify_queue_log(&self, now: OffsetDateTime, limit: i64) -> Result<usize> {
        self.write(|tx| {
            let last: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) FROM audit", params![], |r| r.get(0))?;
            let cursor = match progress(tx, "audit_cursor")? {
                None => {
                    set_progress(tx, "audit_cursor", &last.to_string())?;
                    return Ok(0);
                }
                // A log that went backwards (a restore) starts over at its end.
                Some(c) => match c.parse::<i64>() {
                    Ok(c) if c <= last => c,
                    _ => {
                        set_progress(tx, "audit_cursor", &last.to_string())?;
                        return Ok(0);
                    }
                },
            };
            let rules: Vec<Rule> = enabled_rules(tx)?
                .into_iter()
                .filter(|r| r.kind == NoticeType::Generic)
                .collect();
            let mut stmt = tx.prepare_cached(
                "SELECT a.id, a.at, a.who, a.source, a.via, a.severity, a.domain_id, d.name, a.what
                 FROM audit a LEFT JOIN domains d ON d.id = a.domain_id WHERE a.id > ?1 ORDER BY a.id LIMIT ?2",
            )?;
            let entries = stmt
                .query_map(params![cursor, limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<i64>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                        r.get::<_, String>(8)?,
                    ))
                })?
                .collect::<crate::store::db::DbResult<Vec<_>>>()?;
            let mut read = 0;
            let mut new_cursor = cursor;
            for (id, at, who, source, via, severity, did, domain, what) in entries {
                read += 1;
                new_cursor = id;
                if via == NOTIFYD_VIA {
                    continue;
                }
                let severity = Severity::parse(&severity)?;
                let mut pending: Option<Pending> = None;
                for rule in &rules {
                    if severity < rule.threshold || !rule.in_scope(did) || !rule.matches(&what) {
                        continue;
                    }
                    let p = pending.get_or_insert_with(|| Pending {
                        key: format!("audit:{id}"),
                        domain_id: did,
                        system_only: false,
                        summary: format!("{}: {what}", severity.as_str()),
                        body: format!(
                            "Severity: {}\nTime:     {at}\nWho:      {who} from {source} ({via})\n{}Message:  {what}\n",
                            severity.as_str(),
                            domain.as_deref().map(|d| format!("Domain:   {d}\n")).unwrap_or_default()
                        ),
                    });
                    enqueue(tx, rule, p, now)?;
                }
            }
            if new_cursor != cursor {
                set_progress(tx, "audit_cursor", &new_cursor.to_string())?;
            }
            Ok(read)
        })
    }

    /// Queues the Key Expiration and Certificate Expiration notices due at
    /// `now` (see [`Milestone::due`]) for every enabled group of those
    /// types. A notice already queued is not queued again. Returns how many
    /// were queued.
    pub fn notify_queue_expiries(&self, now: OffsetDateTime) -> Result<usize> {
        let (rules, keys, identities, hosts) = self.read(|tx| {
            let rules = enabled_rules(tx)?;
            let keys = tx
                .prepare(
                    "SELECT v.key_id, v.version, v.created_at, v.expires_at, k.name, k.domain_id, d.name, k.automatic_rotation,
                            (SELECT MAX(version) FROM key_versions WHERE key_id = k.id)
                     FROM key_versions v JOIN agent_keys k ON k.id = v.key_id JOIN domains d ON d.id = k.domain_id
                     WHERE v.expires_at IS NOT NULL ORDER BY d.name, k.name, v.version",
                )?
                .query_map(crate::store::db::params![], |r| {
                    Ok((
                        (r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?),
                        (r.get::<_, String>(4)?, r.get::<_, i64>(5)?, r.get::<_, String>(6)?, r.get::<_, bool>(7)?, r.get::<_, i64>(8)?),
                    ))
                })?
                .collect::<crate::store::db::DbResult<Vec<_>>>()?;
            let identities = tx
                .prepare("SELECT name, cert_pem FROM system_identities ORDER BY name")?
                .query_map(crate::store::db::params![], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                .collect::<crate::store::db::DbResult<Vec<_>>>()?;
            let hosts = tx
                .prepare(
                    "SELECT h.host_name, h.domain_id, d.name, h.certificate FROM hosts h JOIN domains d ON d.id = h.domain_id
                     WHERE h.certificate IS NOT NULL ORDER BY d.name, h.host_name",
                )?
                .query_map(crate::store::db::params![], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
                })?
                .collect::<crate::store::db::DbResult<Vec<_>>>()?;
            Ok((rules, keys, identities, hosts))
        })?;

        let mut notices: Vec<(NoticeType, Pending)> = vec![];
        if rules.iter().any(|r| r.kind == NoticeType::KeyExpiration) {
            for ((kid, version, created, expires), (name, did, domain, auto, current)) in keys {
                let expiry = parse_stored_time(&expires)?;
                let Some(m) = Milestone::due(expiry, now) else {
                    continue;
                };
                let when = days_phrase(expiry, now);
                let verb = if expiry > now { "expires" } else { "expired" };
                let which = if version == current {
                    "the current version"
                } else {
                    "an older version"
                };
                let rotation = if auto {
                    "on: a new version is made when the current one expires"
                } else {
                    "off"
                };
                notices.push((
                    NoticeType::KeyExpiration,
                    Pending {
                        key: format!("key:{kid}:{version}:{created}:{}", m.key()),
                        domain_id: Some(did),
                        system_only: false,
                        summary: format!("key {name} version {version} in domain {domain} {verb} {when}, on {expires}"),
                        body: format!(
                            "Key:      {name}, version {version} ({which})\nDomain:   {domain}\nExpires:  {expires} ({when})\nAutomatic rotation: {rotation}\nNotice:   {}\n",
                            m.title()
                        ),
                    },
                ));
            }
        }
        if rules
            .iter()
            .any(|r| r.kind == NoticeType::CertificateExpiration)
        {
            let certs = identities
                .into_iter()
                .map(|(name, pem)| (identity_title(&name), None, None, pem))
                .chain(hosts.into_iter().map(|(host, did, domain, pem)| {
                    (
                        format!("the certificate of host {host} in domain {domain}"),
                        Some(did),
                        Some(domain),
                        pem,
                    )
                }));
            for (title, did, domain, pem) in certs {
                let (subject, expiry, fp) = match certificate_facts(&pem) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(certificate = %title, error = %e, "a stored certificate cannot be read; no expiry notices for it");
                        continue;
                    }
                };
                let Some(m) = Milestone::due(expiry, now) else {
                    continue;
                };
                let when = days_phrase(expiry, now);
                let verb = if expiry > now { "expires" } else { "expired" };
                let expires = fmt_time(expiry);
                notices.push((
                    NoticeType::CertificateExpiration,
                    Pending {
                        key: format!("cert:{fp}:{}", m.key()),
                        domain_id: did,
                        system_only: did.is_none(),
                        summary: format!("{title} {verb} {when}, on {expires}"),
                        body: format!(
                            "Certificate: {title}\n{}Subject:     {subject}\nFingerprint: SHA-256 {fp}\nExpires:     {expires} ({when})\nNotice:      {}\n",
                            domain.map(|d| format!("Domain:      {d}\n")).unwrap_or_default(),
                            m.title()
                        ),
                    },
                ));
            }
        }
        self.write(|tx| {
            let mut queued = 0;
            for (kind, p) in &notices {
                for rule in rules.iter().filter(|r| r.kind == *kind) {
                    if p.system_only && rule.domain_id.is_some() {
                        continue;
                    }
                    if rule.in_scope(p.domain_id) && rule.matches(&p.summary) {
                        queued += enqueue(tx, rule, p, now)?;
                    }
                }
            }
            set_progress(tx, "expiry_scan", &fmt_time(now))?;
            Ok(queued)
        })
    }

    /// When `custos-notifyd` last looked for expiring keys and certificates
    /// (by its clock).
    pub fn notify_expiry_scanned_at(&self) -> Result<Option<OffsetDateTime>> {
        self.read(|tx| progress(tx, "expiry_scan"))?
            .map(|s| parse_stored_time(&s))
            .transpose()
    }

    /// Notices of enabled groups waiting for delivery at `now`, oldest first.
    pub fn notify_due(&self, now: OffsetDateTime, limit: i64) -> Result<Vec<Notice>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT o.id, g.name, g.recipients, g.subject, g.kind, g.threshold, d.name, o.summary, o.body, o.attempts, o.created_at
                 FROM email_outbox o JOIN email_groups g ON g.id = o.group_id LEFT JOIN domains d ON d.id = g.domain_id
                 WHERE o.sent_at IS NULL AND o.abandoned_at IS NULL AND g.enabled = 1 AND o.next_attempt_at <= ?1
                 ORDER BY o.next_attempt_at, o.id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![fmt_time(now), limit], |r| {
                Ok((
                    (r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?),
                    (r.get::<_, String>(4)?, r.get::<_, String>(5)?, r.get::<_, Option<String>>(6)?),
                    (r.get::<_, String>(7)?, r.get::<_, String>(8)?, r.get::<_, i64>(9)?, r.get::<_, String>(10)?),
                ))
            })?;
            rows.map(|row| {
                let ((id, group, recipients, subject), (kind, threshold, domain), (summary, body, attempts, created)) = row?;
                Ok(Notice {
                    id,
                    group,
                    recipients: recipients.split(',').map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()).collect(),
                    subject,
                    notice_type: NoticeType::parse(&kind)?,
                    threshold: Severity::parse(&threshold)?,
                    domain,
                    summary,
                    body,
                    attempts,
                    created_at: parse_stored_time(&created)?,
                })
            })
            .collect()
        })
    }

    /// A notice was accepted by the SMTP server.
    pub fn notify_sent(&self, id: i64, now: OffsetDateTime) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE email_outbox SET sent_at = ?2, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
                params![id, fmt_time(now)],
            )?;
            Ok(())
        })
    }

    /// A delivery failed; the notice is tried again at `retry_at`.
    pub fn notify_retry(&self, id: i64, error: &str, retry_at: OffsetDateTime) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE email_outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3 WHERE id = ?1",
                params![id, error, fmt_time(retry_at)],
            )?;
            Ok(())
        })
    }

    /// A delivery failed for good (refused by the server, or retried too
    /// long); the notice is kept as given up.
    pub fn notify_abandon(&self, id: i64, error: &str, now: OffsetDateTime) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE email_outbox SET attempts = attempts + 1, last_error = ?2, abandoned_at = ?3 WHERE id = ?1",
                params![id, error, fmt_time(now)],
            )?;
            Ok(())
        })
    }

    /// An audit entry of `custos-notifyd` (never itself the subject of a notice).
    pub fn notify_log(&self, severity: Severity, what: &str) -> Result<()> {
        self.write(|tx| {
            audit(
                tx,
                "notifyd",
                "appliance",
                NOTIFYD_VIA,
                severity,
                None,
                what,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Algorithm, CreationMethod, DomainKind, KeyType, Role, UserType};
    use crate::store::test_support::*;
    use crate::store::{NewAdmin, NewDomain, NewKey};

    fn field_of<T: std::fmt::Debug>(r: Result<T>) -> &'static str {
        match r {
            Err(Error::Invalid { field, .. }) | Err(Error::Conflict { field, .. }) => field,
            other => panic!("not a field error: {other:?}"),
        }
    }

    fn smtp(host: &str) -> SmtpUpdate {
        SmtpUpdate {
            host: host.into(),
            port: Some(2525),
            security: SmtpSecurity::None,
            username: None,
            password: SecretUpdate::Keep,
            sender: "custos@example.com".into(),
            ca_certificate: None,
        }
    }

    fn group(name: &str, kind: NoticeType) -> NewEmailGroup {
        NewEmailGroup {
            name: name.into(),
            recipients: format!("{name}@example.com"),
            subject: String::new(),
            notice_type: kind,
            threshold: Severity::Error,
            message_contains: String::new(),
            enabled: true,
            domain: None,
        }
    }

    /// A licensed store with domain D, its Domain Administrator and a
    /// Security Administrator holding the Key role there.
    fn with_domain(s: &Store) -> (Actor, Actor) {
        let sys = system_actor(s);
        for (login, t) in [("da", UserType::Domain), ("sa", UserType::Security)] {
            s.create_admin(
                &sys,
                NewAdmin {
                    login: login.into(),
                    description: String::new(),
                    rsa_user_id: None,
                    password: "T3st!passw".into(),
                    confirm_password: None,
                    user_type: t,
                    restrict_to_domain: None,
                    read_only: false,
                },
            )
            .expect("admin");
        }
        crate::store::licence::tests::install_test_licence(s);
        s.create_domain(
            &sys,
            NewDomain {
                name: "D".into(),
                kind: DomainKind::Global,
                organization: String::new(),
                description: String::new(),
                help_desk_information: None,
                domain_administrator: Some("da".into()),
            },
        )
        .expect("domain");
        let mut da = s.actor("da", "t", "api").expect("da");
        da.must_change_password = false;
        s.add_member(&da, "D", "sa", &[Role::Key]).expect("member");
        let mut sa = s.actor("sa", "t", "api").expect("sa");
        sa.must_change_password = false;
        (da, sa)
    }

    fn outbox(s: &Store) -> Vec<(String, String)> {
        s.read(|tx| {
            Ok(tx
                .prepare("SELECT g.name, o.notice FROM email_outbox o JOIN email_groups g ON g.id = o.group_id ORDER BY o.id")?
                .query_map(crate::store::db::params![], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<crate::store::db::DbResult<_>>()?)
        })
        .expect("outbox")
    }

    fn event(s: &Store, severity: Severity, domain: Option<i64>, via: &str, what: &str) {
        s.write(|tx| audit(tx, "test", "here", via, severity, domain, what))
            .expect("audit");
    }

    #[test]
    fn field_rules_name_their_field() {
        assert!(check_email_address("to", "ops.team+custos@mail.example.com").is_ok());
        for bad in [
            "",
            "no-at",
            "a@",
            "@b.c",
            "a..b@c.d",
            ".a@b.c",
            "a b@c.d",
            "a@b_c.d",
            "a@b.c\r\nBcc: x@y.z",
            "\"q\"@b.c",
        ] {
            assert_eq!(field_of(check_email_address("to", bad)), "to", "{bad:?}");
        }
        assert_eq!(
            parse_recipients(" a@x.org, b@y.org,,A@X.org ").expect("list"),
            ["a@x.org", "b@y.org"]
        );
        assert_eq!(field_of(parse_recipients(" , ")), "recipients");
        let e = parse_recipients("a@x.org, nope").expect_err("refused");
        assert!(e.to_string().contains("\"nope\""), "{e}");
        let many = (0..51)
            .map(|i| format!("u{i}@x.org"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(field_of(parse_recipients(&many)), "recipients");
        assert_eq!(field_of(check_group_name("has space")), "name");
        assert_eq!(field_of(check_smtp_host("bad host")), "host");
        assert!(check_smtp_host("192.0.2.10").is_ok() && check_smtp_host("::1").is_ok());
        assert_eq!(field_of(check_smtp_port(0)), "port");
        assert_eq!(field_of(check_smtp_port(70000)), "port");
        assert_eq!(field_of(parse_threshold("WARN")), "threshold");
        assert_eq!(parse_threshold("fatal").expect("fatal"), Severity::Fatal);
        assert_eq!(field_of(NoticeType::parse("weekly")), "type");
        assert_eq!(field_of(SmtpSecurity::parse("ssl")), "security");
        assert_eq!(
            field_of(check_ca_certificate("not a certificate")),
            "ca_certificate"
        );
    }

    #[test]
    fn smtp_settings_keep_the_password_sealed_and_unseen() {
        let (dir, s) = store();
        let sys = system_actor(&s);
        assert!(s.smtp_settings(&sys).expect("read").is_none());
        assert_eq!(
            field_of(s.test_mail_config(&sys, "ops@example.com")),
            "smtp"
        );

        let mut up = smtp("smtp.example.com");
        up.username = Some("custos".into());
        assert_eq!(field_of(s.set_smtp_settings(&sys, up.clone())), "password");
        up.password = SecretUpdate::Set(SecretString::new("Sm7p-Pa55word-XYZ"));
        let v = s.set_smtp_settings(&sys, up.clone()).expect("set");
        assert!(v.password_set);
        assert_eq!((v.host.as_str(), v.port), ("smtp.example.com", 2525));
        let json = serde_json::to_string(&v).expect("json");
        assert!(!json.contains("Sm7p"), "{json}");

        // Kept when not given again; opened for the daemon only.
        up.password = SecretUpdate::Keep;
        up.port = None;
        up.security = SmtpSecurity::Starttls;
        let v = s.set_smtp_settings(&sys, up.clone()).expect("set");
        assert_eq!(v.port, 587);
        let cfg = s.smtp_config_unchecked().expect("cfg").expect("set");
        assert_eq!(
            cfg.password.as_ref().map(|p| p.expose()),
            Some("Sm7p-Pa55word-XYZ")
        );
        assert!(!format!("{cfg:?}").contains("Sm7p"));

        // Without a user name no password is kept.
        up.username = None;
        up.password = SecretUpdate::Clear;
        assert!(!s.set_smtp_settings(&sys, up).expect("set").password_set);

        // The audit log names the server, never the password.
        let log = s.audit_log(&sys, &Default::default()).expect("log");
        assert!(
            log.entries
                .iter()
                .any(|e| e.what.contains("set the SMTP server smtp.example.com:587"))
        );
        assert!(log.entries.iter().all(|e| !e.what.contains("Sm7p")));
        drop(s);
        for f in [
            crate::store::DB_FILE.to_owned(),
            format!("{}-wal", crate::store::DB_FILE),
        ] {
            let bytes = std::fs::read(dir.path().join(f)).unwrap_or_default();
            assert!(
                !bytes.windows(9).any(|w| w == b"Sm7p-Pa55"),
                "password in clear on disk"
            );
        }
    }

    #[test]
    fn only_system_administrators_manage_email() {
        let (_d, s) = store();
        let (da, sa) = with_domain(&s);
        let sys = system_actor(&s);
        for a in [&da, &sa] {
            assert!(matches!(s.smtp_settings(a), Err(Error::Forbidden(_))));
            assert!(matches!(s.list_email_groups(a), Err(Error::Forbidden(_))));
            assert!(matches!(
                s.create_email_group(a, group("g", NoticeType::Generic)),
                Err(Error::Forbidden(_))
            ));
        }
        let mut ro = sys.clone();
        ro.read_only = true;
        assert!(s.list_email_groups(&ro).is_ok());
        assert!(matches!(
            s.set_smtp_settings(&ro, smtp("smtp.example.com")),
            Err(Error::Forbidden(_))
        ));
        assert!(matches!(
            s.test_mail_config(&ro, "a@b.example"),
            Err(Error::Forbidden(_))
        ));
    }

    #[test]
    fn groups_are_created_changed_and_deleted_with_their_rules() {
        let (_d, s) = store();
        with_domain(&s);
        let sys = system_actor(&s);
        let mut g = group("ops", NoticeType::Generic);
        g.recipients = "a@example.com, b@example.com".into();
        g.domain = Some("D".into());
        let v = s.create_email_group(&sys, g.clone()).expect("create");
        assert_eq!(
            (v.domain.as_deref(), v.recipients.as_str()),
            (Some("D"), "a@example.com, b@example.com")
        );
        assert_eq!(field_of(s.create_email_group(&sys, g.clone())), "name");
        g.name = "other".into();
        g.domain = Some("Nowhere".into());
        assert_eq!(field_of(s.create_email_group(&sys, g.clone())), "domain");
        g.domain = None;
        g.threshold = Severity::Warn;
        assert_eq!(field_of(s.create_email_group(&sys, g.clone())), "threshold");

        let v = s
            .update_email_group(
                &sys,
                "ops",
                EmailGroupUpdate {
                    threshold: Some(Severity::Fatal),
                    domain: Some(None),
                    enabled: Some(false),
                    ..Default::default()
                },
            )
            .expect("update");
        assert_eq!(
            (v.threshold, v.domain, v.enabled),
            (Severity::Fatal, None, false)
        );
        assert_eq!(
            field_of(s.update_email_group(
                &sys,
                "ops",
                EmailGroupUpdate {
                    recipients: Some("x".into()),
                    ..Default::default()
                }
            )),
            "recipients"
        );
        assert!(matches!(
            s.update_email_group(&sys, "missing", EmailGroupUpdate::default()),
            Err(Error::NotFound { .. })
        ));
        s.delete_email_group(&sys, "ops").expect("delete");
        assert!(s.list_email_groups(&sys).expect("list").is_empty());
        let log = s.audit_log(&sys, &Default::default()).expect("log");
        for what in [
            "added email notification group ops",
            "changed email notification group ops: threshold FATAL, system-wide, disabled",
            "deleted email notification group ops",
        ] {
            assert!(
                log.entries.iter().any(|e| e.what.starts_with(what)),
                "no entry {what}"
            );
        }
    }

    #[test]
    fn log_entries_reach_the_groups_that_want_them_once() {
        let (_d, s) = store();
        with_domain(&s);
        let sys = system_actor(&s);
        let t = now();
        // The first call starts at the end of the log.
        event(&s, Severity::Fatal, None, "test", "before notifyd ever ran");
        assert_eq!(s.notify_queue_log(t, 100).expect("queue"), 0);

        let mut fatal = group("fatal", NoticeType::Generic);
        fatal.threshold = Severity::Fatal;
        let mut backup = group("backup", NoticeType::Generic);
        backup.message_contains = "BACKUP".into();
        let mut domain = group("domain", NoticeType::Generic);
        domain.domain = Some("D".into());
        let mut off = group("off", NoticeType::Generic);
        off.enabled = false;
        for g in [
            group("errors", NoticeType::Generic),
            fatal,
            backup,
            domain,
            off,
            group("keys", NoticeType::KeyExpiration),
        ] {
            s.create_email_group(&sys, g).expect("group");
        }
        let before = s
            .read(|tx| {
                Ok(tx.query_row("SELECT MAX(id) FROM audit", params![], |r| {
                    r.get::<_, i64>(0)
                })?)
            })
            .expect("max");
        event(
            &s,
            Severity::Error,
            None,
            "backupd",
            "scheduled backup failed: connection refused",
        );
        event(&s, Severity::Fatal, None, "keyd", "store is damaged");
        event(
            &s,
            Severity::Error,
            Some(1),
            "keyd",
            "host rec1 sent garbage",
        );
        event(&s, Severity::Warn, None, "keyd", "a backup warning only");
        event(
            &s,
            Severity::Error,
            None,
            NOTIFYD_VIA,
            "could not deliver a backup notice",
        );
        let read = s.notify_queue_log(t, 100).expect("queue");
        assert_eq!(read, 5 + 6, "the group changes are read too");
        let id = |n: i64| format!("audit:{}", before + n);
        let mut got = outbox(&s);
        got.sort();
        let mut want = vec![
            ("errors".to_owned(), id(1)),
            ("errors".to_owned(), id(2)),
            ("errors".to_owned(), id(3)),
            ("fatal".to_owned(), id(2)),
            ("backup".to_owned(), id(1)),
            ("domain".to_owned(), id(3)),
        ];
        want.sort();
        assert_eq!(got, want);
        // Nothing is queued twice.
        assert_eq!(s.notify_queue_log(t, 100).expect("again"), 0);
        assert_eq!(outbox(&s).len(), 6);

        let due = s.notify_due(t, 100).expect("due");
        let n = due
            .iter()
            .find(|n| n.group == "domain")
            .expect("domain notice");
        assert_eq!(n.recipients, ["domain@example.com"]);
        assert!(
            n.summary.starts_with("ERROR: host rec1") && n.body.contains("Domain:   D"),
            "{n:?}"
        );
    }

    #[test]
    fn the_schedule_has_four_moments() {
        let e = now() + Duration::days(200);
        let at = |days_before: f64| e - Duration::seconds_f64(days_before * 86_400.0);
        assert_eq!(Milestone::due(e, at(91.0)), None);
        assert_eq!(Milestone::due(e, at(90.0)), Some(Milestone::Days90));
        assert_eq!(Milestone::due(e, at(60.5)), Some(Milestone::Days90));
        assert_eq!(Milestone::due(e, at(60.0)), Some(Milestone::Days60));
        assert_eq!(Milestone::due(e, at(15.0)), Some(Milestone::Days15));
        assert_eq!(Milestone::due(e, at(0.01)), Some(Milestone::Days15));
        assert_eq!(Milestone::due(e, at(0.0)), None);
        assert_eq!(Milestone::due(e, at(-6.9)), None);
        assert_eq!(Milestone::due(e, at(-7.0)), Some(Milestone::After7));
        assert_eq!(Milestone::due(e, at(-29.9)), Some(Milestone::After7));
        assert_eq!(Milestone::due(e, at(-30.0)), None);
        assert_eq!(days_phrase(e, at(14.2)), "in 15 days");
        assert_eq!(days_phrase(e, at(-7.5)), "7 days ago");
    }

    #[test]
    fn key_and_certificate_expiry_notices_are_queued_once_per_moment() {
        let (_d, s) = store();
        let (_da, sa) = with_domain(&s);
        let sys = system_actor(&s);
        s.ensure_identities("custos-test", &["custos-test".into()])
            .expect("identities");
        let t0 = now();
        s.create_key(
            &sa,
            "D",
            NewKey {
                name: "quarterly".into(),
                description: String::new(),
                template: None,
                expiration_date: Some(t0 + Duration::days(100)),
                algorithm: Algorithm::Aes256,
                key_type: KeyType::StoredOnServer,
                unique_to_host: false,
                key_creation_method: CreationMethod::Generate,
                key_material: None,
                key_refresh_period: None,
                automatic_key_rotation: false,
                key_version_life_span: None,
            },
        )
        .expect("key");
        let mut keys = group("keys", NoticeType::KeyExpiration);
        keys.domain = Some("D".into());
        let mut other = group("other-keys", NoticeType::KeyExpiration);
        other.message_contains = "no such key".into();
        let mut certs = group("certs", NoticeType::CertificateExpiration);
        certs.message_contains = "web server".into();
        let mut domain_certs = group("domain-certs", NoticeType::CertificateExpiration);
        domain_certs.domain = Some("D".into());
        for g in [keys, other, certs, domain_certs] {
            s.create_email_group(&sys, g).expect("group");
        }
        let mut seen = vec![];
        for (day, new) in [
            (0, 0),
            (11, 1),
            (12, 0),
            (41, 1),
            (86, 1),
            (87, 0),
            (101, 0),
            (108, 1),
            (140, 0),
        ] {
            let n = s
                .notify_queue_expiries(t0 + Duration::days(day))
                .expect("scan");
            assert_eq!(n, new, "day {day}");
            assert_eq!(
                s.notify_expiry_scanned_at().expect("scan time"),
                Some(t0 + Duration::days(day)).map(|t| t.replace_nanosecond(0).expect("ns"))
            );
        }
        for (g, notice) in outbox(&s) {
            assert_eq!(g, "keys");
            seen.push(notice.rsplit(':').next().expect("milestone").to_owned());
        }
        assert_eq!(seen, ["d90", "d60", "d15", "a7"]);

        // The server certificates (825 days) reach the system-wide group with
        // the matching filter; the domain's group gets no appliance certificate.
        assert_eq!(
            s.notify_queue_expiries(t0 + Duration::days(740))
                .expect("scan"),
            2
        );
        let certs: Vec<_> = outbox(&s)
            .into_iter()
            .filter(|(g, _)| g != "keys")
            .collect();
        assert_eq!(certs.len(), 2);
        assert!(
            certs
                .iter()
                .all(|(g, n)| g == "certs" && n.starts_with("cert:") && n.ends_with(":d90"))
        );
        let due = s.notify_due(t0 + Duration::days(740), 100).expect("due");
        assert!(due.iter().any(|n| {
            n.summary
                .starts_with("the appliance's RSA web server certificate expires in")
        }));
    }

    #[test]
    fn deliveries_are_recorded_and_disabling_drops_waiting_notices() {
        let (_d, s) = store();
        let sys = system_actor(&s);
        s.create_email_group(&sys, group("errors", NoticeType::Generic))
            .expect("group");
        let t = now();
        s.notify_queue_log(t, 100).expect("start");
        for i in 0..3 {
            event(&s, Severity::Error, None, "test", &format!("failure {i}"));
        }
        s.notify_queue_log(t, 100).expect("queue");
        let due = s.notify_due(t, 100).expect("due");
        assert_eq!(due.len(), 3);
        s.notify_sent(due[0].id, t).expect("sent");
        s.notify_retry(due[1].id, "connection refused", t + Duration::minutes(1))
            .expect("retry");
        s.notify_abandon(due[2].id, "550 no such user", t)
            .expect("abandon");
        assert!(s.notify_due(t, 100).expect("due").is_empty());
        let again = s.notify_due(t + Duration::minutes(1), 100).expect("due");
        assert_eq!((again.len(), again[0].attempts), (1, 1));
        let v = s.get_email_group(&sys, "errors").expect("group");
        assert_eq!(
            (v.sent, v.pending, v.failed, v.last_error.as_deref()),
            (1, 1, 1, Some("connection refused"))
        );
        s.update_email_group(
            &sys,
            "errors",
            EmailGroupUpdate {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .expect("disable");
        let v = s.get_email_group(&sys, "errors").expect("group");
        assert_eq!((v.sent, v.pending, v.failed), (1, 0, 1));
        // The daemon's own entries never become notices.
        s.update_email_group(
            &sys,
            "errors",
            EmailGroupUpdate {
                enabled: Some(true),
                ..Default::default()
            },
        )
        .expect("enable");
        s.notify_queue_log(t, 100).expect("skip the changes");
        s.notify_log(Severity::Fatal, "gave up 1 notice")
            .expect("log");
        assert_eq!(s.notify_queue_log(t, 100).expect("queue"), 1);
        assert!(
            s.notify_due(t + Duration::hours(1), 100)
                .expect("due")
                .is_empty(),
            "the waiting notice was dropped and nothing new is due"
        );
    }
}
