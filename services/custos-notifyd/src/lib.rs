//! The appliance's one way of sending mail (§14): an SMTP transport built
//! from the settings in the store (plain, STARTTLS required, or TLS; the
//! system's roots plus an operator's own CA; authentication optional), the
//! text of a notice, and its delivery with lettre over rustls.
//!
//! `custos-notifyd` sends notices with it and `custos-keyd` sends
//! "Send test mail" with it, so a successful test mail shows that notices
//! will get through the same way.

use std::time::Duration;

use appliance::model::fmt_time;
use appliance::store::{Notice, NoticeType, SmtpConfig, SmtpSecurity};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// How long one SMTP command may take (connecting included).
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a whole delivery may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest subject made from a notice's summary.
const SUBJECT_MAX: usize = 150;

/// Why a mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The settings or an address cannot be used (fix the settings).
    #[error("{0}")]
    Settings(String),
    /// The server could not be reached or did not accept the mail.
    #[error("{message}")]
    Send {
        message: String,
        /// The server refused for good (a 5xx answer): retrying will not help.
        permanent: bool,
    },
}

impl MailError {
    pub fn permanent(&self) -> bool {
        matches!(
            self,
            MailError::Send {
                permanent: true,
                ..
            }
        )
    }
}

/// An error and its causes on one line (lettre's errors nest the server's
/// answer or the I/O error).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A transport to the configured SMTP server, with the sender address.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    server: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .finish()
    }
}

impl Mailer {
    /// Builds the transport (inside a tokio runtime: it keeps a small
    /// connection pool). `host_name` is this appliance's name, used in EHLO
    /// and as the sender's display name.
    pub fn new(cfg: &SmtpConfig, host_name: &str) -> Result<Mailer, MailError> {
        let address: Address = cfg
            .sender
            .parse()
            .map_err(|e| MailError::Settings(format!("sender {}: {e}", cfg.sender)))?;
        let from = Mailbox::new(Some(format!("Custos {host_name}")), address);
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.clone())
            .port(cfg.port)
            .timeout(Some(SMTP_TIMEOUT))
            .hello_name(ClientId::Domain(host_name.to_owned()));
        builder = match cfg.security {
            SmtpSecurity::None => builder.tls(Tls::None),
            SmtpSecurity::Starttls => builder.tls(Tls::Required(tls_parameters(cfg)?)),
            SmtpSecurity::Tls => builder.tls(Tls::Wrapper(tls_parameters(cfg)?)),
        };
        if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
            server: cfg.describe(),
        })
    }

    /// `host:port (security)`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Sends one plain-text mail to `to`.
    pub async fn send(&self, to: &[String], subject: &str, body: String) -> Result<(), MailError> {
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(one_line(subject))
            .header(ContentType::TEXT_PLAIN);
        for r in to {
            let address: Address = r
                .parse()
                .map_err(|e| MailError::Settings(format!("recipient {r}: {e}")))?;
            message = message.to(Mailbox::new(None, address));
        }
        let message = message
            .body(body)
            .map_err(|e| MailError::Settings(format!("the message cannot be built: {e}")))?;
        match tokio::time::timeout(SEND_TIMEOUT, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(MailError::Send {
                message: chain(&e),
                permanent: e.is_permanent(),
            }),
            Err(_) => Err(MailError::Send {
                message: format!(
                    "no answer from {} within {} seconds",
                    self.server,
                    SEND_TIMEOUT.as_secs()
                ),
                permanent: false,
            }),
        }
    }
}

fn tls_parameters(cfg: &SmtpConfig) -> Result<TlsParameters, MailError> {
    let mut tls = TlsParameters::builder(cfg.host.clone());
    if let Some(pem) = &cfg.ca_certificate {
        let ca = Certificate::from_pem(pem.as_bytes())
            .map_err(|e| MailError::Settings(format!("CA certificate: {}", chain(&e))))?;
        tls = tls.add_root_certificate(ca);
    }
    tls.build_rustls()
        .map_err(|e| MailError::Settings(format!("TLS settings: {}", chain(&e))))
}

/// Control characters (line breaks above all) have no place in a header.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The subject and body of a notice's mail.
pub fn notice_mail(n: &Notice, host_name: &str) -> (String, String) {
    let subject = if n.subject.trim().is_empty() {
        let s = format!("[Custos {host_name}] {}", n.summary);
        match s.char_indices().nth(SUBJECT_MAX) {
            Some((cut, _)) => format!("{}…", &s[..cut]),
            None => s,
        }
    } else {
        n.subject.clone()
    };
    let rule = match n.notice_type {
        NoticeType::Generic => format!(
            "{} messages at or above {}",
            n.notice_type.title(),
            n.threshold.as_str()
        ),
        other => other.title().to_owned(),
    };
    let scope = match &n.domain {
        Some(d) => format!("domain {d}"),
        None => "system-wide".to_owned(),
    };
    let body = format!(
        "{}\n\n{}\n-- \nCustos key manager {host_name}\nNotification group {} ({rule}, {scope}).\n",
        n.summary, n.body, n.group
    );
    (subject, body)
}

/// Sends "Send test mail" (§14) to `to` through `cfg`, on behalf of `login`.
pub async fn send_test(
    cfg: &SmtpConfig,
    to: &str,
    host_name: &str,
    login: &str,
) -> Result<(), MailError> {
    let mailer = Mailer::new(cfg, host_name)?;
    let body = format!(
        "This is a test mail from the Custos key manager {host_name}, sent by {login} at {}\n\
         through {}.\n\nEmail notifications (System → Email Notification) are sent the same way.\n",
        fmt_time(time::OffsetDateTime::now_utc()),
        mailer.server()
    );
    mailer
        .send(
            &[to.to_owned()],
            &format!("Custos {host_name}: test mail"),
            body,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use appliance::model::Severity;

    fn notice(subject: &str) -> Notice {
        Notice {
            id: 1,
            group: "ops".into(),
            recipients: vec!["ops@example.com".into()],
            subject: subject.into(),
            notice_type: NoticeType::Generic,
            threshold: Severity::Error,
            domain: None,
            summary: "ERROR: scheduled backup failed\r\nBcc: evil@example.com".into(),
            body: "Severity: ERROR\n".into(),
            attempts: 0,
            created_at: time::OffsetDateTime::now_utc(),
        }
    }

    #[test]
    fn a_notice_becomes_a_subject_and_a_body() {
        let (subject, body) = notice_mail(&notice(""), "custos.example.com");
        assert!(subject.starts_with("[Custos custos.example.com] ERROR: scheduled backup failed"));
        assert!(one_line(&subject).lines().count() == 1);
        assert!(
            body.contains(
                "Notification group ops (Generic messages at or above ERROR, system-wide)"
            )
        );
        let (subject, _) = notice_mail(&notice("Custos alarm"), "h");
        assert_eq!(subject, "Custos alarm");
        let mut long = notice("");
        long.summary = "x".repeat(500);
        assert_eq!(notice_mail(&long, "h").0.chars().count(), SUBJECT_MAX + 1);
    }

    #[tokio::test]
    async fn unusable_settings_are_refused_before_connecting() {
        let cfg = SmtpConfig {
            host: "127.0.0.1".into(),
            port: 25,
            security: SmtpSecurity::Starttls,
            username: None,
            password: None,
            sender: "not an address".into(),
            ca_certificate: None,
        };
        let e = Mailer::new(&cfg, "h").expect_err("bad sender");
        assert!(e.to_string().starts_with("sender "), "{e}");
        assert!(!e.permanent());
    }
}
