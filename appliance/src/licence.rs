//! §10 licence file: what a licence grants, and the signed text file that
//! carries it.
//!
//! The file is two armoured blocks of base64: the exact JSON bytes of the
//! terms, then an Ed25519 signature over those bytes.
//!
//! ```text
//! -----BEGIN CUSTOS LICENSE-----
//! eyJmb3JtYXQiOjEsImxpY2VuY2VfaWQiOiJERVYtMjAyNS0wMDAxIiwiaXNzdWVkX3Rv
//! …
//! -----END CUSTOS LICENSE-----
//! -----BEGIN CUSTOS LICENSE SIGNATURE-----
//! …
//! -----END CUSTOS LICENSE SIGNATURE-----
//! ```
//!
//! [`verify`] checks the signature against the vendor public key compiled
//! into this build before it parses a single byte of JSON, then checks every
//! field rule. The public key is `CUSTOS_LICENCE_PUBLIC_KEY` (64 hex digits)
//! at build time, or else the development key in `licence-dev.pub`; a
//! malformed value fails the build. The matching development signing key is
//! `xtask/licence-dev-signing.key`: only `cargo xtask licence` and the tests
//! read it, at run time; it is never compiled into the appliance.
//!
//! An agent type's licence is valid up to and including its `expires` date
//! (UTC) and expired from the day after.

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use time::Date;

use crate::model::check_text;
use crate::{Error, Result};

/// What the dashboard and the API say while no licence is installed (§2).
pub const NOT_FOUND: &str = "License not found";
/// The licence format this software reads and writes.
pub const FORMAT: u32 = 1;
/// Most agents of one type a licence may grant.
pub const MAX_AGENTS: u32 = 1_000_000;
/// Most domains a licence may grant.
pub const MAX_DOMAINS: u32 = 10_000;
/// A licence file is a few hundred bytes; anything far larger is not one.
const MAX_FILE_LEN: usize = 64 * 1024;
const ID_MAX: usize = 64;
const ISSUED_TO_MAX: usize = 256;
const LINE: usize = 64;

const BEGIN: &str = "-----BEGIN CUSTOS LICENSE-----";
const END: &str = "-----END CUSTOS LICENSE-----";
const BEGIN_SIGNATURE: &str = "-----BEGIN CUSTOS LICENSE SIGNATURE-----";
const END_SIGNATURE: &str = "-----END CUSTOS LICENSE SIGNATURE-----";

/// The message for every signature that does not verify.
const SIGNATURE_MISMATCH: &str =
    "the signature does not match: this file was not issued by the vendor or was changed";

/// What a licence grants for one agent type (FS or Key).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentTerms {
    pub installed: bool,
    /// 0 when not installed, else 1 to [`MAX_AGENTS`].
    pub max_agents: u32,
    /// Last day of validity, `YYYY-MM-DD` (UTC).
    pub expires: String,
}

/// The terms of a licence (§10), exactly as signed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LicenceTerms {
    /// Always [`FORMAT`].
    pub format: u32,
    pub licence_id: String,
    pub issued_to: String,
    /// `YYYY-MM-DD`.
    pub issued_at: String,
    pub key_agent: AgentTerms,
    pub fs_agent: AgentTerms,
    pub key_vault: bool,
    pub multiple_domains: bool,
    /// 1 unless `multiple_domains`.
    pub max_domains: u32,
}

/// The field names of one agent type, for errors.
struct AgentFields {
    title: &'static str,
    max_agents: &'static str,
    expires: &'static str,
}

const KEY_AGENT: AgentFields = AgentFields {
    title: "Key agent",
    max_agents: "licence.key_agent.max_agents",
    expires: "licence.key_agent.expires",
};
const FS_AGENT: AgentFields = AgentFields {
    title: "FS agent",
    max_agents: "licence.fs_agent.max_agents",
    expires: "licence.fs_agent.expires",
};

/// A date in the one form licences use, `YYYY-MM-DD`, and nothing else.
pub fn parse_date(field: &'static str, s: &str) -> Result<Date> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(s, &fmt)
        .ok()
        .filter(|d| d.format(&fmt).is_ok_and(|back| back == s))
        .ok_or_else(|| Error::invalid(field, "must be a date written YYYY-MM-DD"))
}

/// Today (UTC), the day licence expiry is measured against.
pub fn today() -> Date {
    time::OffsetDateTime::now_utc().date()
}

impl AgentTerms {
    fn check(&self, f: &AgentFields) -> Result<()> {
        match (self.installed, self.max_agents) {
            (false, 0) => {}
            (false, _) => {
                return Err(Error::invalid(
                    f.max_agents,
                    format!("must be 0 when the {} is not installed", f.title),
                ));
            }
            (true, n) if !(1..=MAX_AGENTS).contains(&n) => {
                return Err(Error::invalid(
                    f.max_agents,
                    format!(
                        "must be between 1 and {MAX_AGENTS} when the {} is installed",
                        f.title
                    ),
                ));
            }
            (true, _) => {}
        }
        parse_date(f.expires, &self.expires)?;
        Ok(())
    }

    /// The last day of validity.
    pub fn expires_on(&self) -> Result<Date> {
        parse_date("licence.expires", &self.expires)
    }

    /// Whether the licence of this agent type has expired on `today`.
    pub fn expired(&self, today: Date) -> bool {
        self.expires_on().map_or(true, |last| today > last)
    }
}

impl LicenceTerms {
    /// Every field rule; each error names its field (`licence.<field>`).
    pub fn check(&self) -> Result<()> {
        if self.format != FORMAT {
            return Err(Error::invalid(
                "licence.format",
                format!("must be {FORMAT} (the licence format this software reads)"),
            ));
        }
        let id_ok = (1..=ID_MAX).contains(&self.licence_id.len())
            && self
                .licence_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !id_ok {
            return Err(Error::invalid(
                "licence.licence_id",
                format!("must be 1 to {ID_MAX} letters, digits, '-', '_' or '.'"),
            ));
        }
        if self.issued_to.trim().is_empty() {
            return Err(Error::invalid("licence.issued_to", "must not be empty"));
        }
        check_text("licence.issued_to", &self.issued_to, ISSUED_TO_MAX)?;
        parse_date("licence.issued_at", &self.issued_at)?;
        self.key_agent.check(&KEY_AGENT)?;
        self.fs_agent.check(&FS_AGENT)?;
        if !(1..=MAX_DOMAINS).contains(&self.max_domains) {
            return Err(Error::invalid(
                "licence.max_domains",
                format!("must be between 1 and {MAX_DOMAINS}"),
            ));
        }
        if !self.multiple_domains && self.max_domains != 1 {
            return Err(Error::invalid(
                "licence.max_domains",
                "must be 1 when multiple domains are not licensed",
            ));
        }
        Ok(())
    }

    /// How many domains the appliance may hold under this licence.
    pub fn domains_allowed(&self) -> u32 {
        if self.multiple_domains {
            self.max_domains
        } else {
            1
        }
    }

    /// One line for the audit log and `cargo xtask licence`.
    pub fn summary(&self) -> String {
        let agent = |a: &AgentTerms| {
            if a.installed {
                format!("{} until {}", a.max_agents, a.expires)
            } else {
                "not installed".to_owned()
            }
        };
        format!(
            "Key agents {}, FS agents {}, {}, key vault {}",
            agent(&self.key_agent),
            agent(&self.fs_agent),
            plural(u64::from(self.domains_allowed()), "domain", "domains"),
            if self.key_vault { "yes" } else { "no" },
        )
    }
}

/// "1 domain", "2 domains".
pub(crate) fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Hex of 32 bytes, checked while compiling: a malformed key fails the build.
const fn public_key_from_hex(s: &str) -> [u8; 32] {
    let b = s.as_bytes();
    let mut out = [0u8; 32];
    let mut nibbles = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        i += 1;
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            _ => panic!("licence public key: not hexadecimal"),
        };
        if nibbles == 64 {
            panic!("licence public key: longer than 32 bytes");
        }
        out[nibbles / 2] |= if nibbles % 2 == 0 { v << 4 } else { v };
        nibbles += 1;
    }
    if nibbles != 64 {
        panic!("licence public key: must be 32 bytes (64 hex digits)");
    }
    out
}

const DEVELOPMENT_PUBLIC_KEY: [u8; 32] = public_key_from_hex(include_str!("licence-dev.pub"));
const VENDOR_PUBLIC_KEY: [u8; 32] = match option_env!("CUSTOS_LICENCE_PUBLIC_KEY") {
    Some(hex) => public_key_from_hex(hex),
    None => DEVELOPMENT_PUBLIC_KEY,
};

/// Whether this build verifies licences with the development key (anyone
/// with the repository can issue licences it accepts).
pub fn is_development_key() -> bool {
    VENDOR_PUBLIC_KEY == DEVELOPMENT_PUBLIC_KEY
}

/// The vendor public key this build verifies licences with, in hex.
pub fn public_key_hex() -> String {
    hex::encode(VENDOR_PUBLIC_KEY)
}

/// The PKCS#8 bytes inside a `-----BEGIN PRIVATE KEY-----` PEM file.
pub fn pkcs8_from_pem(pem: &str) -> Result<Vec<u8>> {
    let bad = || {
        Error::invalid(
            "signing_key",
            "must be a PEM file with one PRIVATE KEY block (PKCS#8)",
        )
    };
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN PRIVATE KEY-----")
        .and_then(|rest| rest.strip_suffix("-----END PRIVATE KEY-----"))
        .ok_or_else(bad)?;
    let b64: String = body.split_whitespace().collect();
    STANDARD.decode(b64).map_err(|_| bad())
}

/// Signs `terms` with an Ed25519 key (PKCS#8 v1 or v2) and returns the
/// licence file's text. Terms that break a field rule are not signed.
pub fn issue(signing_key_pkcs8: &[u8], terms: &LicenceTerms) -> Result<String> {
    terms.check()?;
    let key = Ed25519KeyPair::from_pkcs8(signing_key_pkcs8).map_err(|_| {
        Error::invalid(
            "signing_key",
            "is not an Ed25519 private key in PKCS#8 form",
        )
    })?;
    let payload =
        serde_json::to_vec(terms).map_err(|_| Error::Crypto("cannot encode licence terms"))?;
    let signature = key.sign(&payload);
    let mut out = String::new();
    armour(&mut out, BEGIN, &payload, END);
    armour(&mut out, BEGIN_SIGNATURE, signature.as_ref(), END_SIGNATURE);
    Ok(out)
}

fn armour(out: &mut String, begin: &str, bytes: &[u8], end: &str) {
    out.push_str(begin);
    out.push('\n');
    let b64 = STANDARD.encode(bytes);
    for line in b64.as_bytes().chunks(LINE) {
        // Base64 is ASCII, so every chunk is text.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(end);
    out.push('\n');
}

/// Verifies a licence file against the vendor key of this build and returns
/// its terms. The signature is checked before the terms are parsed.
pub fn verify(text: &str) -> Result<LicenceTerms> {
    verify_with(&VENDOR_PUBLIC_KEY, text)
}

fn invalid(rule: impl Into<String>) -> Error {
    Error::invalid("licence", rule)
}

pub(crate) fn verify_with(public_key: &[u8; 32], text: &str) -> Result<LicenceTerms> {
    if text.len() > MAX_FILE_LEN {
        return Err(invalid(format!(
            "this is not a Custos licence file: it is larger than {} KiB",
            MAX_FILE_LEN / 1024
        )));
    }
    let (payload, signature) = dearmour(text)?;
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&payload, &signature)
        .map_err(|_| invalid(SIGNATURE_MISMATCH))?;
    let terms: LicenceTerms = serde_json::from_slice(&payload).map_err(|e| {
        invalid(format!(
            "the signed terms cannot be read by this software ({e}); ask the vendor for a licence of format {FORMAT}"
        ))
    })?;
    terms.check()?;
    Ok(terms)
}

/// The payload and signature bytes of the two armoured blocks. Blank lines
/// and white space around lines (a file that went through e-mail) are
/// ignored; any other text is refused.
fn dearmour(text: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some(BEGIN) {
        return Err(invalid(format!(
            "this is not a Custos licence file: it must start with {BEGIN}"
        )));
    }
    let payload = block(&mut lines, END, "licence")?;
    if lines.next() != Some(BEGIN_SIGNATURE) {
        return Err(invalid(format!(
            "the licence file has no signature: {BEGIN_SIGNATURE} must follow {END}"
        )));
    }
    let signature = block(&mut lines, END_SIGNATURE, "signature")?;
    if lines.next().is_some() {
        return Err(invalid(format!(
            "the licence file has text after {END_SIGNATURE}"
        )));
    }
    if signature.len() != 64 {
        return Err(invalid(SIGNATURE_MISMATCH));
    }
    Ok((payload, signature))
}

/// The base64 lines up to `end`, decoded.
fn block<'a>(lines: &mut impl Iterator<Item = &'a str>, end: &str, what: &str) -> Result<Vec<u8>> {
    let mut b64 = String::new();
    loop {
        match lines.next() {
            None => {
                return Err(invalid(format!(
                    "the licence file is incomplete: {end} is missing"
                )));
            }
            Some(l) if l == end => break,
            Some(l) => b64.push_str(l),
        }
    }
    if b64.is_empty() {
        return Err(invalid(format!("the {what} block of the file is empty")));
    }
    STANDARD.decode(b64).map_err(|_| {
        invalid(format!(
            "the {what} block of the file is damaged: it is not base64"
        ))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::KeyPair;

    use super::*;

    pub fn terms(key_agents: u32, domains: u32, expires: &str) -> LicenceTerms {
        let agent = |n: u32| AgentTerms {
            installed: n > 0,
            max_agents: n,
            expires: expires.to_owned(),
        };
        LicenceTerms {
            format: FORMAT,
            licence_id: "TEST-0001".into(),
            issued_to: "Example Recording Ltd".into(),
            issued_at: "2025-01-02".into(),
            key_agent: agent(key_agents),
            fs_agent: agent(0),
            key_vault: false,
            multiple_domains: domains > 1,
            max_domains: domains,
        }
    }

    /// The development signing key, read at run time from the xtask folder
    /// (it is never compiled into the appliance).
    pub fn dev_signing_key() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../xtask/licence-dev-signing.key"
        );
        let pem = std::fs::read_to_string(path).expect("development signing key");
        pkcs8_from_pem(&pem).expect("PEM")
    }

    fn keypair() -> (Vec<u8>, [u8; 32]) {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("generate");
        let kp = Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("parse");
        let public: [u8; 32] = kp.public_key().as_ref().try_into().expect("32 bytes");
        (doc.as_ref().to_vec(), public)
    }

    fn rule(r: Result<LicenceTerms>) -> (&'static str, String) {
        match r {
            Err(Error::Invalid { field, rule }) => (field, rule),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn round_trip_and_armour() {
        let (sk, pk) = keypair();
        let t = terms(100, 10, "2030-12-31");
        let text = issue(&sk, &t).expect("issue");
        assert!(text.starts_with(BEGIN) && text.ends_with(&format!("{END_SIGNATURE}\n")));
        assert!(
            text.lines()
                .all(|l| l.len() <= LINE || l.starts_with("-----"))
        );
        assert_eq!(verify_with(&pk, &text).expect("verify"), t);
        // CRLF line ends and indentation from an e-mail are fine.
        let mangled = format!("\n  {}\n\n", text.replace('\n', "\r\n  "));
        assert_eq!(verify_with(&pk, &mangled).expect("verify"), t);
    }

    #[test]
    fn tampered_foreign_and_garbage_files_are_refused() {
        let (sk, pk) = keypair();
        let text = issue(&sk, &terms(1, 1, "2030-12-31")).expect("issue");
        // One byte of the payload changed (1 Key agent becomes 9), re-encoded.
        let lines: Vec<&str> = text.lines().collect();
        let end = lines.iter().position(|l| *l == END).expect("end");
        let mut payload = STANDARD.decode(lines[1..end].concat()).expect("b64");
        let json = String::from_utf8(payload.clone()).expect("utf-8");
        let at = json.find("\"max_agents\":1").expect("field") + "\"max_agents\":".len();
        payload[at] = b'9';
        let mut forged = String::new();
        armour(&mut forged, BEGIN, &payload, END);
        forged.push_str(&lines[end + 1..].join("\n"));
        let (field, why) = rule(verify_with(&pk, &forged));
        assert_eq!((field, why.as_str()), ("licence", SIGNATURE_MISMATCH));

        // Signed by another key.
        let (_, other) = keypair();
        assert_eq!(rule(verify_with(&other, &text)).1, SIGNATURE_MISMATCH);

        for (garbage, says) in [
            ("", "must start with"),
            ("hello", "must start with"),
            (&text.replace(END_SIGNATURE, "") as &str, "incomplete"),
            (
                &text[..text.find(BEGIN_SIGNATURE).expect("sig")],
                "no signature",
            ),
            (&format!("{text}more\n"), "text after"),
            (&text.replacen("eyJ", "eyJ*", 1), "not base64"),
            (&"x".repeat(MAX_FILE_LEN + 1), "larger than"),
        ] {
            let (field, why) = rule(verify_with(&pk, garbage));
            assert_eq!(field, "licence");
            assert!(why.contains(says), "{says}: {why}");
        }
    }

    #[test]
    fn signature_is_checked_before_the_json() {
        let (sk, pk) = keypair();
        // Unparseable JSON signed by the wrong key says "signature", not "JSON".
        let mut text = String::new();
        armour(&mut text, BEGIN, b"{not json", END);
        let kp = Ed25519KeyPair::from_pkcs8(&sk).expect("key");
        armour(
            &mut text,
            BEGIN_SIGNATURE,
            kp.sign(b"{something else").as_ref(),
            END_SIGNATURE,
        );
        assert_eq!(rule(verify_with(&pk, &text)).1, SIGNATURE_MISMATCH);
        // Correctly signed but unknown fields: refused by the parser.
        let mut text = String::new();
        let payload = br#"{"format":1,"surprise":true}"#;
        armour(&mut text, BEGIN, payload, END);
        armour(
            &mut text,
            BEGIN_SIGNATURE,
            kp.sign(payload).as_ref(),
            END_SIGNATURE,
        );
        assert!(rule(verify_with(&pk, &text)).1.contains("cannot be read"));
    }

    #[test]
    fn field_rules_name_their_field() {
        let (sk, _) = keypair();
        let field = |f: fn(&mut LicenceTerms)| {
            let mut t = terms(5, 2, "2030-01-01");
            f(&mut t);
            match issue(&sk, &t) {
                Err(Error::Invalid { field, .. }) => field,
                other => panic!("expected a refusal, got {other:?}"),
            }
        };
        assert_eq!(field(|t| t.format = 2), "licence.format");
        assert_eq!(
            field(|t| t.licence_id = String::new()),
            "licence.licence_id"
        );
        assert_eq!(field(|t| t.licence_id = "a b".into()), "licence.licence_id");
        assert_eq!(field(|t| t.issued_to = " ".into()), "licence.issued_to");
        assert_eq!(field(|t| t.issued_to = "a\nb".into()), "licence.issued_to");
        assert_eq!(
            field(|t| t.issued_to = "x".repeat(257)),
            "licence.issued_to"
        );
        assert_eq!(
            field(|t| t.issued_at = "2025-02-30".into()),
            "licence.issued_at"
        );
        assert_eq!(
            field(|t| t.issued_at = "2025-1-2".into()),
            "licence.issued_at"
        );
        assert_eq!(
            field(|t| t.key_agent.expires = "31/12/2030".into()),
            "licence.key_agent.expires"
        );
        assert_eq!(
            field(|t| t.key_agent.max_agents = 0),
            "licence.key_agent.max_agents"
        );
        assert_eq!(
            field(|t| t.key_agent.max_agents = MAX_AGENTS + 1),
            "licence.key_agent.max_agents"
        );
        assert_eq!(
            field(|t| t.fs_agent.max_agents = 3),
            "licence.fs_agent.max_agents"
        );
        assert_eq!(field(|t| t.max_domains = 0), "licence.max_domains");
        assert_eq!(field(|t| t.multiple_domains = false), "licence.max_domains");
    }

    #[test]
    fn expiry_is_inclusive() {
        let t = terms(1, 1, "2030-06-15");
        let day = |s| parse_date("d", s).expect("date");
        assert!(!t.key_agent.expired(day("2030-06-15")));
        assert!(t.key_agent.expired(day("2030-06-16")));
        assert_eq!(t.domains_allowed(), 1);
        assert_eq!(terms(1, 7, "2030-06-15").domains_allowed(), 7);
    }

    #[test]
    fn the_development_key_files_match() {
        let t = terms(3, 2, "2030-01-01");
        let text = issue(&dev_signing_key(), &t).expect("issue");
        assert_eq!(
            verify_with(&DEVELOPMENT_PUBLIC_KEY, &text).expect("verify"),
            t
        );
        if option_env!("CUSTOS_LICENCE_PUBLIC_KEY").is_none() {
            assert!(is_development_key());
            assert_eq!(verify(&text).expect("verify"), t);
        }
    }
}
