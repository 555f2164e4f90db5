//! The domain model of spec §4–§9 and every field rule, checked here once.
//!
//! Each `check_*` function names the field it checks in its error, so an edge
//! (REST, web form, CLI) reports the field and the rule without knowing them.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Error, Result};

/// §5: the three administrator types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserType {
    System,
    Domain,
    Security,
}

impl UserType {
    pub fn as_str(self) -> &'static str {
        match self {
            UserType::System => "system",
            UserType::Domain => "domain",
            UserType::Security => "security",
        }
    }
    pub fn parse(s: &str) -> Result<UserType> {
        match s {
            "system" => Ok(UserType::System),
            "domain" => Ok(UserType::Domain),
            "security" => Ok(UserType::Security),
            _ => Err(Error::invalid(
                "user_type",
                "must be one of system, domain, security",
            )),
        }
    }
    pub fn title(self) -> &'static str {
        match self {
            UserType::System => "System Administrator",
            UserType::Domain => "Domain Administrator",
            UserType::Security => "Security Administrator",
        }
    }
}

/// §5: roles a Security Administrator holds inside a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Audit,
    Key,
    Policy,
    Host,
    ChallengeResponse,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Audit,
        Role::Key,
        Role::Policy,
        Role::Host,
        Role::ChallengeResponse,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Audit => "audit",
            Role::Key => "key",
            Role::Policy => "policy",
            Role::Host => "host",
            Role::ChallengeResponse => "challenge_response",
        }
    }
    pub fn parse(s: &str) -> Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "roles",
                    "each role must be one of audit, key, policy, host, challenge_response",
                )
            })
    }
}

/// Encodes a role set for the store: a sorted comma list.
pub fn roles_to_string(roles: &[Role]) -> String {
    let mut r = roles.to_vec();
    r.sort();
    r.dedup();
    r.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
}

pub fn roles_from_string(s: &str) -> Vec<Role> {
    s.split(',').filter_map(|r| Role::parse(r).ok()).collect()
}

/// §4: a global domain's administrators may belong to several domains; a
/// restricted domain's administrators belong to that one only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainKind {
    Global,
    Restricted,
}

impl DomainKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainKind::Global => "global",
            DomainKind::Restricted => "restricted",
        }
    }
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "global" => Ok(DomainKind::Global),
            "restricted" => Ok(DomainKind::Restricted),
            _ => Err(Error::invalid("kind", "must be global or restricted")),
        }
    }
}

/// §7 Algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    #[serde(rename = "AES256")]
    Aes256,
    #[serde(rename = "AES128")]
    Aes128,
    #[serde(rename = "ARIA256")]
    Aria256,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Aes256 => "AES256",
            Algorithm::Aes128 => "AES128",
            Algorithm::Aria256 => "ARIA256",
        }
    }
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "AES256" => Ok(Algorithm::Aes256),
            "AES128" => Ok(Algorithm::Aes128),
            "ARIA256" => Ok(Algorithm::Aria256),
            _ => Err(Error::invalid(
                "algorithm",
                "must be one of AES256, AES128, ARIA256",
            )),
        }
    }
    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Algorithm::Aes256 | Algorithm::Aria256 => 32,
            Algorithm::Aes128 => 16,
        }
    }
}

/// §7 Key Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    StoredOnServer,
    CachedOnHost,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::StoredOnServer => "stored_on_server",
            KeyType::CachedOnHost => "cached_on_host",
        }
    }
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "stored_on_server" => Ok(KeyType::StoredOnServer),
            "cached_on_host" => Ok(KeyType::CachedOnHost),
            _ => Err(Error::invalid(
                "key_type",
                "must be stored_on_server or cached_on_host",
            )),
        }
    }
}

/// §7 Key Creation Method and §8 secret creation method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreationMethod {
    Generate,
    Manual,
}

impl CreationMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            CreationMethod::Generate => "generate",
            CreationMethod::Manual => "manual",
        }
    }
    pub fn parse(field: &'static str, s: &str) -> Result<Self> {
        match s {
            "generate" => Ok(CreationMethod::Generate),
            "manual" => Ok(CreationMethod::Manual),
            _ => Err(Error::invalid(field, "must be generate or manual")),
        }
    }
}

/// §9 security mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityMode {
    Compatible,
    SuiteB,
}

impl SecurityMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityMode::Compatible => "compatible",
            SecurityMode::SuiteB => "suite_b",
        }
    }
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "compatible" => Ok(SecurityMode::Compatible),
            "suite_b" | "suiteb" => Ok(SecurityMode::SuiteB),
            _ => Err(Error::invalid(
                "security_mode",
                "must be compatible or suite_b",
            )),
        }
    }
}

/// §16 severities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Info,
    Warn,
    Error,
    Fatal,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warn => "WARN",
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "INFO" => Ok(Severity::Info),
            "WARN" => Ok(Severity::Warn),
            "ERROR" => Ok(Severity::Error),
            "FATAL" => Ok(Severity::Fatal),
            _ => Err(Error::invalid(
                "severity",
                "must be one of INFO, WARN, ERROR, FATAL",
            )),
        }
    }
}

// ---------------------------------------------------------------------------
// Field rules.

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// A name used as an identifier: 1..=max characters of letters, digits,
/// `.`, `_`, `-` (and `@` where `allow_at`), starting with a letter or digit.
pub(crate) fn check_identifier(
    field: &'static str,
    s: &str,
    max: usize,
    allow_at: bool,
) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if s.chars().count() > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    let ok_char = |c: char| {
        c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' || (allow_at && c == '@')
    };
    if !s.chars().all(ok_char) {
        let extra = if allow_at { ", '@'" } else { "" };
        return Err(Error::invalid(
            field,
            format!("may contain only letters, digits, '.', '_', '-'{extra}"),
        ));
    }
    if !s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return Err(Error::invalid(field, "must start with a letter or digit"));
    }
    Ok(())
}

/// Free text on one line, at most `max` characters.
pub fn check_text(field: &'static str, s: &str, max: usize) -> Result<()> {
    if s.chars().count() > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if has_control(s) {
        return Err(Error::invalid(
            field,
            "must be one line without control characters",
        ));
    }
    Ok(())
}

pub const LOGIN_MAX: usize = 64;
pub const DESCRIPTION_MAX: usize = 256;
pub const DOMAIN_NAME_MAX: usize = 64;
pub const KEY_NAME_MAX: usize = 64;
pub const HOST_NAME_MAX: usize = 253;
pub const ORGANIZATION_MAX: usize = 256;
pub const HELP_DESK_MAX: usize = 256;
pub const TEMPLATE_MAX: usize = 64;
pub const RSA_USER_ID_MAX: usize = 64;
pub const SHARED_SECRET_MIN: usize = 8;
pub const SHARED_SECRET_MAX: usize = 64;

pub fn check_login(s: &str) -> Result<()> {
    check_identifier("login", s, LOGIN_MAX, true)
}

pub fn check_description(s: &str) -> Result<()> {
    check_text("description", s, DESCRIPTION_MAX)
}

pub fn check_domain_name(s: &str) -> Result<()> {
    check_identifier("name", s, DOMAIN_NAME_MAX, false)
}

pub fn check_key_name(s: &str) -> Result<()> {
    check_identifier("name", s, KEY_NAME_MAX, false)
}

/// A protected host's name: an RFC 1123 host name or FQDN.
pub fn check_host_name(field: &'static str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if s.len() > HOST_NAME_MAX {
        return Err(Error::invalid(
            field,
            format!("must be at most {HOST_NAME_MAX} characters"),
        ));
    }
    for label in s.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(Error::invalid(
                field,
                "must be a host name: dot-separated labels of 1-63 letters, digits or '-', not starting or ending with '-'",
            ));
        }
    }
    Ok(())
}

pub const REFRESH_MIN: i64 = 1;
pub const REFRESH_MAX: i64 = 44640;
pub const REFRESH_DEFAULT: i64 = 10080;
pub const LIFE_SPAN_MAX_DAYS: i64 = 3650;
pub const TEMPLATE_DEFAULT: &str = "Default_SQL_Symmetric_Key_Template";
pub const HELP_DESK_DEFAULT: &str =
    "Please contact a Security Server administrator for a response.";

pub fn check_refresh_period(field: &'static str, v: i64) -> Result<()> {
    if !(REFRESH_MIN..=REFRESH_MAX).contains(&v) {
        return Err(Error::invalid(
            field,
            format!("must be between {REFRESH_MIN} and {REFRESH_MAX} minutes"),
        ));
    }
    Ok(())
}

pub fn check_life_span(v: i64) -> Result<()> {
    if !(1..=LIFE_SPAN_MAX_DAYS).contains(&v) {
        return Err(Error::invalid(
            "key_version_life_span",
            format!("must be between 1 and {LIFE_SPAN_MAX_DAYS} days"),
        ));
    }
    Ok(())
}

/// §8: a manually chosen registration shared secret.
pub fn check_shared_secret(s: &str) -> Result<()> {
    const FIELD: &str = "shared_secret";
    let n = s.chars().count();
    if n < SHARED_SECRET_MIN {
        return Err(Error::invalid(
            FIELD,
            format!("must be at least {SHARED_SECRET_MIN} characters"),
        ));
    }
    if n > SHARED_SECRET_MAX {
        return Err(Error::invalid(
            FIELD,
            format!("must be at most {SHARED_SECRET_MAX} characters"),
        ));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::invalid(
            FIELD,
            "must not contain spaces or control characters",
        ));
    }
    let chars: Vec<char> = s.chars().collect();
    if chars.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::invalid(
            FIELD,
            "must not contain repeating characters (the same character twice in a row)",
        ));
    }
    if !s.chars().any(|c| c.is_uppercase()) {
        return Err(Error::invalid(
            FIELD,
            "must contain at least one upper-case letter",
        ));
    }
    if !s.chars().any(|c| c.is_lowercase()) {
        return Err(Error::invalid(
            FIELD,
            "must contain at least one lower-case letter",
        ));
    }
    if !s.chars().any(is_special) {
        return Err(Error::invalid(
            FIELD,
            "must contain at least one special character",
        ));
    }
    Ok(())
}

pub fn is_special(c: char) -> bool {
    !c.is_alphanumeric() && !c.is_whitespace() && !c.is_control()
}

/// Accepts RFC 3339 (`2027-01-31T12:00:00Z`) or a plain date (`2027-01-31`,
/// meaning midnight UTC).
pub fn parse_datetime(field: &'static str, s: &str) -> Result<OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &fmt)
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| {
            Error::invalid(
                field,
                "must be a date (YYYY-MM-DD) or an RFC 3339 time (YYYY-MM-DDTHH:MM:SSZ)",
            )
        })
}

/// The one textual form of a time in the store and on the wire (RFC 3339, UTC).
pub fn fmt_time(t: OffsetDateTime) -> String {
    use time::format_description::well_known::Rfc3339;
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .expect("a UTC time always formats as RFC 3339")
}

pub fn parse_stored_time(s: &str) -> Result<OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| Error::Crypto("stored time is malformed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: Error) -> &'static str {
        match e {
            Error::Invalid { field, .. } => field,
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn domain_name_rules() {
        assert!(check_domain_name("RecorderDomain").is_ok());
        assert_eq!(
            field_of(check_domain_name(&"a".repeat(65)).expect_err("must be refused")),
            "name"
        );
        assert!(check_domain_name(&"a".repeat(64)).is_ok());
        assert!(check_domain_name("with space").is_err());
        assert!(check_domain_name("").is_err());
    }

    #[test]
    fn description_rules() {
        assert!(check_description(&"d".repeat(256)).is_ok());
        let e = check_description(&"d".repeat(257)).expect_err("must be refused");
        assert_eq!(e.to_string(), "description: must be at most 256 characters");
        assert!(check_description("two\nlines").is_err());
    }

    #[test]
    fn shared_secret_rules() {
        assert!(check_shared_secret("Rec0rd-Secret!").is_ok());
        let e = check_shared_secret("Reccord-Secret!").expect_err("must be refused");
        assert!(e.to_string().contains("repeating"), "{e}");
        assert!(check_shared_secret("nouppercase!").is_err());
        assert!(check_shared_secret("NOLOWERCASE!").is_err());
        assert!(check_shared_secret("NoSpecials1").is_err());
        assert!(check_shared_secret("Sh0rt!").is_err());
    }

    #[test]
    fn host_names() {
        assert!(check_host_name("host_name", "rec1.example.com").is_ok());
        assert!(check_host_name("host_name", "-bad").is_err());
        assert!(check_host_name("host_name", "a..b").is_err());
        assert!(check_host_name("host_name", "has space").is_err());
    }

    #[test]
    fn dates() {
        assert!(parse_datetime("expiration_date", "2030-01-02").is_ok());
        assert!(parse_datetime("expiration_date", "2030-01-02T03:04:05Z").is_ok());
        assert!(parse_datetime("expiration_date", "02/01/2030").is_err());
    }
}
