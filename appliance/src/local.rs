//! The local socket between `custos-keyd` and the daemons that must not
//! hold the master key (`custos-snmpd`, `custos-notifyd`, `custos-backupd`):
//! the messages both sides share and the daemons' (blocking) client.
//!
//! The protocol is newline-delimited JSON, one request then one reply, each
//! line at most [`MAX_MESSAGE`] bytes. A connection starts with a
//! [`Hello`] naming the daemon's [`Role`]; keyd checks the peer's uid
//! (SO_PEERCRED) against the role and then serves only that role's
//! [`Request`]s. A request of another role ends the connection. The one
//! streamed answer is the backup: [`Reply::Chunk`] lines, then the
//! [`Reply::Ok`] trailer with the [`BackupInfo`].
//!
//! What crosses: the settings each daemon acts on, and in clear only the
//! two secrets a daemon needs to act (the SMTP password, the backup SSH
//! private key). The SNMP community string stays in keyd: the agent gets a
//! salted SHA-256 of it to compare requests against.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroize;

use crate::licence::LicenceTerms;
use crate::model::Severity;
use crate::secret::SecretString;
use crate::store::{
    AclEntry, AutomaticBackup, BackupInfo, BackupRun, BackupSshKey, Frequency, HostKeyCheck,
    LicenceView, Notice, NoticeType, RunKind, Schedule, ScpTarget, SmtpConfig, SmtpSecurity,
    TimeOfDay, parse_weekday, weekday_name,
};

/// The longest line either side sends or accepts (a backup chunk is
/// [`CHUNK`] bytes, about 4/3 of that in base64).
pub const MAX_MESSAGE: usize = 1024 * 1024;
/// Bytes of the backup per [`Reply::Chunk`].
pub const CHUNK: usize = 64 * 1024;
/// How long the client waits for a reply (or the next chunk).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest text of an audit entry a daemon asks keyd to write.
pub const MAX_EVENT_TEXT: usize = 4096;
/// The SNMP agent's per-source rate of UDP answers, named in its refusals.
pub const SNMP_RATE_PER_SEC: u32 = 50;

/// Who is asking: each daemon has one role and the operations it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Snmp,
    Notify,
    Backup,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Snmp, Role::Notify, Role::Backup];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Snmp => "snmp",
            Role::Notify => "notify",
            Role::Backup => "backup",
        }
    }

    /// The system user the daemon of this role runs as in the image.
    pub fn system_user(self) -> &'static str {
        match self {
            Role::Snmp => "custos-snmp",
            Role::Notify => "custos-notify",
            Role::Backup => "custos-backup",
        }
    }

    /// The daemon, as its audit entries name it.
    pub fn daemon(self) -> &'static str {
        match self {
            Role::Snmp => "custos-snmpd",
            Role::Notify => "custos-notifyd",
            Role::Backup => "custos-backupd",
        }
    }
}

/// The first line of a connection: `{"hello":"snmp"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub hello: Role,
}

/// Why the SNMP agent refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnmpReason {
    Community,
    Acl,
    /// Over the per-source rate of UDP answers.
    Rate,
}

/// The SNMP agent's one kind of audit entry: refused requests from one
/// source, the first at once, the next ones counted. keyd writes the text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnmpRefusal {
    First(SnmpReason),
    Since { community: u64, acl: u64, rate: u64 },
}

/// The address under which the agent counts sources beyond those it tracks.
pub const SNMP_OTHER_SOURCES: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

fn snmp_source_name(ip: IpAddr) -> String {
    if ip == SNMP_OTHER_SOURCES {
        "addresses beyond the tracked ones".to_owned()
    } else {
        ip.to_string()
    }
}

impl SnmpRefusal {
    /// The entry's text, as keyd writes it and the agent logs it.
    pub fn text(&self, source: IpAddr) -> String {
        let from = snmp_source_name(source);
        match self {
            SnmpRefusal::First(reason) => {
                let what = match reason {
                    SnmpReason::Community => "wrong community string",
                    SnmpReason::Acl => "the address is not in the access control list",
                    SnmpReason::Rate => {
                        "more than the rate limit of requests over UDP from this address"
                    }
                };
                format!(
                    "refused an SNMP request from {from}: {what} (not answered; further refusals from this address are logged at most once a minute)"
                )
            }
            SnmpRefusal::Since {
                community,
                acl,
                rate,
            } => {
                let mut parts = vec![];
                if *community > 0 {
                    parts.push(format!("{community} with a wrong community string"));
                }
                if *acl > 0 {
                    parts.push(format!("{acl} from outside the access control list"));
                }
                if *rate > 0 {
                    parts.push(format!(
                        "{rate} over the rate limit of {SNMP_RATE_PER_SEC} answers a second"
                    ));
                }
                format!(
                    "refused {} more SNMP requests from {from} since the last entry: {}",
                    community + acl + rate,
                    parts.join(", ")
                )
            }
        }
    }
}

/// The agent's settings without the community string itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnmpAgentView {
    pub enabled: bool,
    /// The community is still the default `public` (the agent stays closed).
    pub community_is_default: bool,
    pub community: CommunityCheck,
    pub acl: Vec<String>,
    pub sys_contact: String,
    pub sys_location: String,
    pub ca_fingerprint: Option<String>,
    /// The appliance's place in its HA group (`custosHaNodes`).
    #[serde(default)]
    pub ha: crate::store::HaRole,
}

/// SHA-256 of a salt (random per keyd start) and the community string:
/// enough to check a request's community, in constant time, without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommunityCheck {
    pub salt: String,
    pub digest: String,
}

impl CommunityCheck {
    pub fn new(salt: &[u8], community: &SecretString) -> CommunityCheck {
        CommunityCheck {
            salt: hex::encode(salt),
            digest: hex::encode(digest(salt, community.expose().as_bytes())),
        }
    }

    /// Whether `tried` is the community string.
    pub fn matches(&self, tried: &[u8]) -> bool {
        let (Ok(salt), Ok(want)) = (hex::decode(&self.salt), hex::decode(&self.digest)) else {
            return false;
        };
        crate::secret::ct_eq(&digest(&salt, tried), &want)
    }
}

fn digest(salt: &[u8], community: &[u8]) -> [u8; 32] {
    let mut input = Vec::with_capacity(salt.len() + community.len());
    input.extend_from_slice(salt);
    input.extend_from_slice(community);
    let d = crate::crypto::sha256(&input);
    input.zeroize();
    d
}

impl SnmpAgentView {
    /// The access list, each entry checked again.
    pub fn acl_entries(&self) -> crate::Result<Vec<AclEntry>> {
        self.acl.iter().map(|e| AclEntry::parse(e)).collect()
    }
}

/// A licence as the SNMP agent shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LicenceFacts {
    pub terms: LicenceTerms,
    pub agents_in_use: i64,
    pub domains_in_use: i64,
    pub key_agent_expired: bool,
}

impl From<&LicenceView> for LicenceFacts {
    fn from(v: &LicenceView) -> Self {
        LicenceFacts {
            terms: v.terms.clone(),
            agents_in_use: v.agents_in_use,
            domains_in_use: v.domains_in_use,
            key_agent_expired: v.key_agent_expired,
        }
    }
}

/// A notice to mail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireNotice {
    pub id: i64,
    pub group: String,
    pub recipients: Vec<String>,
    pub subject: String,
    pub notice_type: String,
    pub threshold: Severity,
    pub domain: Option<String>,
    pub summary: String,
    pub body: String,
    pub attempts: i64,
    /// Unix seconds.
    pub created_at: i64,
}

impl From<&Notice> for WireNotice {
    fn from(n: &Notice) -> Self {
        WireNotice {
            id: n.id,
            group: n.group.clone(),
            recipients: n.recipients.clone(),
            subject: n.subject.clone(),
            notice_type: n.notice_type.as_str().to_owned(),
            threshold: n.threshold,
            domain: n.domain.clone(),
            summary: n.summary.clone(),
            body: n.body.clone(),
            attempts: n.attempts,
            created_at: n.created_at.unix_timestamp(),
        }
    }
}

impl WireNotice {
    fn into_notice(self) -> Result<Notice> {
        Ok(Notice {
            id: self.id,
            group: self.group,
            recipients: self.recipients,
            subject: self.subject,
            notice_type: NoticeType::parse(&self.notice_type).map_err(protocol)?,
            threshold: self.threshold,
            domain: self.domain,
            summary: self.summary,
            body: self.body,
            attempts: self.attempts,
            created_at: from_unix(self.created_at)?,
        })
    }
}

/// The SMTP server with its password, which crosses in clear because the
/// notifier must present it to the server.
#[derive(Serialize, Deserialize)]
pub struct WireSmtp {
    pub host: String,
    pub port: u16,
    pub security: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub sender: String,
    pub ca_certificate: Option<String>,
}

impl Drop for WireSmtp {
    fn drop(&mut self) {
        self.password.zeroize();
    }
}

impl From<&SmtpConfig> for WireSmtp {
    fn from(c: &SmtpConfig) -> Self {
        WireSmtp {
            host: c.host.clone(),
            port: c.port,
            security: c.security.as_str().to_owned(),
            username: c.username.clone(),
            password: c.password.as_ref().map(|p| p.expose().to_owned()),
            sender: c.sender.clone(),
            ca_certificate: c.ca_certificate.clone(),
        }
    }
}

impl WireSmtp {
    fn into_config(mut self) -> Result<SmtpConfig> {
        Ok(SmtpConfig {
            host: std::mem::take(&mut self.host),
            port: self.port,
            security: SmtpSecurity::parse(&self.security).map_err(protocol)?,
            username: self.username.take(),
            password: self.password.take().map(SecretString::new),
            sender: std::mem::take(&mut self.sender),
            ca_certificate: self.ca_certificate.take(),
        })
    }
}

/// An SCP target, checked again by the receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireTarget {
    pub host: String,
    pub port: u16,
    pub directory: String,
    pub user: String,
}

impl From<&ScpTarget> for WireTarget {
    fn from(t: &ScpTarget) -> Self {
        WireTarget {
            host: t.host.as_str().to_owned(),
            port: t.port,
            directory: t.directory.clone(),
            user: t.user.clone(),
        }
    }
}

impl WireTarget {
    pub fn to_target(&self) -> crate::Result<ScpTarget> {
        ScpTarget::new(
            &self.host,
            Some(i64::from(self.port)),
            &self.directory,
            &self.user,
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireSchedule {
    pub frequency: String,
    pub time: String,
    pub weekday: Option<String>,
}

/// The automatic backup's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireAutomaticBackup {
    pub schedule: Option<WireSchedule>,
    pub target: Option<WireTarget>,
    pub host_key_fingerprint: Option<String>,
    pub host_key_pinned_at: Option<String>,
    pub now_requested_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<&AutomaticBackup> for WireAutomaticBackup {
    fn from(a: &AutomaticBackup) -> Self {
        WireAutomaticBackup {
            schedule: a.schedule.map(|s| WireSchedule {
                frequency: s.frequency.as_str().to_owned(),
                time: s.time.to_string(),
                weekday: s.weekday.map(|d| weekday_name(d).to_owned()),
            }),
            target: a.target.as_ref().map(WireTarget::from),
            host_key_fingerprint: a.host_key_fingerprint.clone(),
            host_key_pinned_at: a.host_key_pinned_at.clone(),
            now_requested_at: a.now_requested_at.clone(),
            updated_at: a.updated_at.clone(),
        }
    }
}

impl WireAutomaticBackup {
    fn into_settings(self) -> Result<AutomaticBackup> {
        let schedule = self
            .schedule
            .map(|s| {
                Schedule::new(
                    Frequency::parse("frequency", &s.frequency)?,
                    TimeOfDay::parse("time", &s.time)?,
                    s.weekday
                        .map(|d| parse_weekday("weekday", &d))
                        .transpose()?,
                )
            })
            .transpose()
            .map_err(protocol)?;
        Ok(AutomaticBackup {
            schedule,
            target: self
                .target
                .map(|t| t.to_target())
                .transpose()
                .map_err(protocol)?,
            host_key_fingerprint: self.host_key_fingerprint,
            host_key_pinned_at: self.host_key_pinned_at,
            now_requested_at: self.now_requested_at,
            updated_at: self.updated_at,
        })
    }
}

/// The appliance's SSH key pair; the private half crosses in clear because
/// libssh2 in the pusher signs with it.
#[derive(Serialize, Deserialize)]
pub struct WireSshKey {
    pub public_key: String,
    pub private_key_pem: String,
}

impl Drop for WireSshKey {
    fn drop(&mut self) {
        self.private_key_pem.zeroize();
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireHostKeyCheck {
    Learned,
    Matches,
    Changed { pinned: String },
    TargetChanged,
}

impl From<HostKeyCheck> for WireHostKeyCheck {
    fn from(c: HostKeyCheck) -> Self {
        match c {
            HostKeyCheck::Learned => WireHostKeyCheck::Learned,
            HostKeyCheck::Matches => WireHostKeyCheck::Matches,
            HostKeyCheck::Changed { pinned } => WireHostKeyCheck::Changed { pinned },
            HostKeyCheck::TargetChanged => WireHostKeyCheck::TargetChanged,
        }
    }
}

impl From<WireHostKeyCheck> for HostKeyCheck {
    fn from(c: WireHostKeyCheck) -> Self {
        match c {
            WireHostKeyCheck::Learned => HostKeyCheck::Learned,
            WireHostKeyCheck::Matches => HostKeyCheck::Matches,
            WireHostKeyCheck::Changed { pinned } => HostKeyCheck::Changed { pinned },
            WireHostKeyCheck::TargetChanged => HostKeyCheck::TargetChanged,
        }
    }
}

/// One push attempt for the history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireRun {
    pub kind: String,
    pub attempt: u32,
    pub attempts: u32,
    pub target: WireTarget,
    pub file_name: Option<String>,
    pub bytes: Option<u64>,
    pub error: Option<String>,
    pub retry_in_secs: Option<u64>,
}

impl From<&BackupRun> for WireRun {
    fn from(r: &BackupRun) -> Self {
        WireRun {
            kind: r.kind.as_str().to_owned(),
            attempt: r.attempt,
            attempts: r.attempts,
            target: WireTarget::from(&r.target),
            file_name: r.file_name.clone(),
            bytes: r.bytes,
            error: r.error.clone(),
            retry_in_secs: r.retry_in_secs,
        }
    }
}

impl WireRun {
    /// The run, its fields checked again (keyd's side).
    pub fn to_run(&self) -> crate::Result<BackupRun> {
        let kind = match self.kind.as_str() {
            "scheduled" => RunKind::Scheduled,
            "now" => RunKind::Now,
            _ => return Err(crate::Error::invalid("kind", "must be scheduled or now")),
        };
        Ok(BackupRun {
            kind,
            attempt: self.attempt,
            attempts: self.attempts,
            target: self.target.to_target()?,
            file_name: self.file_name.clone(),
            bytes: self.bytes,
            error: self.error.clone(),
            retry_in_secs: self.retry_in_secs,
        })
    }
}

/// Every operation, each of one role. Times are Unix seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    // custos-snmpd
    SnmpConfig,
    Licence,
    SnmpRefusal {
        source: IpAddr,
        refusal: SnmpRefusal,
    },
    // custos-notifyd
    NotifyQueueLog {
        now: i64,
        limit: i64,
    },
    NotifyQueueExpiries {
        now: i64,
    },
    NotifyDue {
        now: i64,
        limit: i64,
    },
    NotifySent {
        id: i64,
        now: i64,
    },
    NotifyRetry {
        id: i64,
        error: String,
        retry_at: i64,
    },
    NotifyAbandon {
        id: i64,
        error: String,
        now: i64,
    },
    NotifyLog {
        severity: Severity,
        what: String,
    },
    SmtpConfig,
    // custos-backupd
    AutomaticBackup,
    TakeBackupNowRequest,
    BackupSshKey {
        host_name: String,
    },
    CheckBackupHostKey {
        target: WireTarget,
        presented: String,
    },
    RecordBackupRun {
        run: WireRun,
    },
    WriteBackup {
        host_name: String,
    },
    HostName,
}

impl Request {
    /// The one role allowed to make this request.
    pub fn role(&self) -> Role {
        use Request::*;
        match self {
            SnmpConfig | Licence | SnmpRefusal { .. } => Role::Snmp,
            NotifyQueueLog { .. }
            | NotifyQueueExpiries { .. }
            | NotifyDue { .. }
            | NotifySent { .. }
            | NotifyRetry { .. }
            | NotifyAbandon { .. }
            | NotifyLog { .. }
            | SmtpConfig => Role::Notify,
            AutomaticBackup
            | TakeBackupNowRequest
            | BackupSshKey { .. }
            | CheckBackupHostKey { .. }
            | RecordBackupRun { .. }
            | WriteBackup { .. }
            | HostName => Role::Backup,
        }
    }

    /// The operation's name, for logs.
    pub fn name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("op").and_then(|o| o.as_str()).map(str::to_owned))
            .unwrap_or_default()
    }
}

/// keyd's answer to one line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    Ok(serde_json::Value),
    Error(WireError),
    /// Part of a streamed backup, base64.
    Chunk(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Invalid,
    Conflict,
    NotFound,
    /// Not allowed on this connection; keyd closes it.
    Refused,
    /// A fault in keyd; the detail is in keyd's log.
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct WireError {
    pub kind: ErrorKind,
    pub field: String,
    pub message: String,
}

impl WireError {
    pub fn refused(message: impl Into<String>) -> WireError {
        WireError {
            kind: ErrorKind::Refused,
            field: "request".into(),
            message: message.into(),
        }
    }
}

impl From<&crate::Error> for WireError {
    fn from(e: &crate::Error) -> Self {
        use crate::Error as E;
        let (kind, field, message) = match e {
            E::Invalid { field, rule } => (ErrorKind::Invalid, field.to_string(), rule.clone()),
            E::Conflict { field, rule } => (ErrorKind::Conflict, field.to_string(), rule.clone()),
            E::NotFound { what, name } => (
                ErrorKind::NotFound,
                what.to_string(),
                format!("'{name}' does not exist"),
            ),
            _ => (
                ErrorKind::Internal,
                "custos-keyd".to_owned(),
                "the key service failed; see its log".to_owned(),
            ),
        };
        WireError {
            kind,
            field,
            message,
        }
    }
}

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store's answer (a refusal or keyd's fault).
    #[error("{0}")]
    Store(WireError),
    /// keyd is not running or not reachable; the client retries later.
    #[error("custos-keyd is not reachable at {path}: {why}")]
    Unavailable { path: PathBuf, why: String },
    /// keyd refused this daemon (its uid or role) and closed the connection.
    #[error("custos-keyd refused the request: {0}")]
    Refused(String),
    #[error("local socket protocol: {0}")]
    Protocol(String),
    /// Writing a streamed backup to its destination failed.
    #[error("{0}")]
    Io(#[source] std::io::Error),
}

impl Error {
    /// keyd is down (already logged by the client, once).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn protocol(e: impl std::fmt::Display) -> Error {
    Error::Protocol(e.to_string())
}

fn from_unix(secs: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(protocol)
}

/// A time as requests carry it.
pub fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

/// Reads one line of at most [`MAX_MESSAGE`] bytes into `buf` (cleared
/// first, without the newline). `Ok(false)`: the peer closed before a byte.
pub fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    buf.zeroize();
    buf.clear();
    let n = r.take(MAX_MESSAGE as u64 + 1).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(false);
    }
    if buf.last() != Some(&b'\n') {
        let why = if buf.len() > MAX_MESSAGE {
            "a message is longer than the limit"
        } else {
            "the connection closed in the middle of a message"
        };
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
    }
    buf.pop();
    Ok(true)
}

/// One JSON line.
pub fn encode_line(v: &impl Serialize) -> Vec<u8> {
    let mut line = serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec());
    line.push(b'\n');
    line
}

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// It answered a request already (so an EOF now means keyd closed an
    /// idle connection, and the request may be sent again on a new one).
    used: bool,
}

#[derive(Default)]
struct State {
    conn: Option<Conn>,
    /// keyd was unreachable: the next try waits until then.
    retry_at: Option<Instant>,
    backoff: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A daemon's connection to keyd, made on first use and again after it
/// broke. While keyd is unreachable, calls fail at once with
/// [`Error::Unavailable`] and a new connection is tried after a back-off
/// (250 ms doubling to 5 s); the client logs the outage once and its end.
pub struct Client {
    path: PathBuf,
    role: Role,
    state: Mutex<State>,
}

enum Failure {
    /// Before keyd could have acted on the request: it may be sent again.
    Unsent(std::io::Error),
    Broken(std::io::Error),
    Other(Error),
}

impl Client {
    pub fn new(path: &Path, role: Role) -> Client {
        Client {
            path: path.to_path_buf(),
            role,
            state: Mutex::new(State::default()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn unavailable(&self, why: impl std::fmt::Display) -> Error {
        Error::Unavailable {
            path: self.path.clone(),
            why: why.to_string(),
        }
    }

    fn connect(&self) -> Result<Conn> {
        let stream = UnixStream::connect(&self.path).map_err(|e| self.unavailable(e))?;
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| self.unavailable(e))?;
        stream
            .set_write_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| self.unavailable(e))?;
        let writer = stream.try_clone().map_err(|e| self.unavailable(e))?;
        let mut conn = Conn {
            reader: BufReader::new(stream),
            writer,
            used: false,
        };
        conn.writer
            .write_all(&encode_line(&Hello { hello: self.role }))
            .map_err(|e| self.unavailable(e))?;
        let mut buf = vec![];
        match read_line(&mut conn.reader, &mut buf) {
            Ok(true) => {}
            Ok(false) => return Err(self.unavailable("keyd closed the connection")),
            Err(e) => return Err(self.unavailable(e)),
        }
        match serde_json::from_slice::<Reply>(&buf).map_err(protocol)? {
            Reply::Ok(_) => Ok(conn),
            Reply::Error(e) => Err(Error::Refused(e.message)),
            Reply::Chunk(_) => Err(protocol("a chunk instead of the answer to hello")),
        }
    }

    /// Sends `req` and hands each reply line to `on_reply` until it returns
    /// a result, on a connection made when needed.
    fn exchange<T>(
        &self,
        req: &Request,
        mut on_reply: impl FnMut(Reply) -> Result<Option<T>>,
    ) -> Result<T> {
        let mut state = self.state.lock().expect("local client mutex poisoned");
        let line = encode_line(req);
        for first_try in [true, false] {
            if state.conn.is_none() {
                if let Some(at) = state.retry_at
                    && Instant::now() < at
                {
                    return Err(self.unavailable("still unreachable; retrying with back-off"));
                }
                match self.connect() {
                    Ok(c) => {
                        if state.retry_at.take().is_some() {
                            tracing::info!(socket = %self.path.display(), "custos-keyd is reachable again");
                        }
                        state.backoff = Duration::ZERO;
                        state.conn = Some(c);
                    }
                    Err(e) => {
                        if state.retry_at.is_none() {
                            tracing::warn!(socket = %self.path.display(), "{e}; retrying with back-off");
                        }
                        state.backoff = (state.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                        state.retry_at = Some(Instant::now() + state.backoff);
                        return Err(e);
                    }
                }
            }
            let Some(conn) = state.conn.as_mut() else {
                continue;
            };
            let reused = conn.used;
            match Self::round_trip(conn, &line, &mut on_reply) {
                Ok(v) => {
                    conn.used = true;
                    return Ok(v);
                }
                Err(f) => {
                    state.conn = None;
                    match f {
                        Failure::Unsent(e) if reused && first_try => {
                            tracing::debug!(error = %e, "the connection to custos-keyd was closed; reconnecting");
                            continue;
                        }
                        Failure::Unsent(e) | Failure::Broken(e) => {
                            return Err(self.unavailable(e));
                        }
                        Failure::Other(e) => return Err(e),
                    }
                }
            }
        }
        Err(self.unavailable("the connection broke twice"))
    }

    fn round_trip<T>(
        conn: &mut Conn,
        line: &[u8],
        on_reply: &mut impl FnMut(Reply) -> Result<Option<T>>,
    ) -> Result<T, Failure> {
        conn.writer.write_all(line).map_err(Failure::Unsent)?;
        let mut buf = vec![];
        let mut first = true;
        loop {
            match read_line(&mut conn.reader, &mut buf) {
                Ok(true) => {}
                Ok(false) if first => {
                    return Err(Failure::Unsent(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "keyd closed the connection",
                    )));
                }
                Ok(false) => {
                    return Err(Failure::Broken(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "keyd closed the connection in the middle of an answer",
                    )));
                }
                Err(e) => return Err(Failure::Broken(e)),
            }
            first = false;
            let reply: Reply = serde_json::from_slice(&buf).map_err(|e| {
                Failure::Broken(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            })?;
            buf.zeroize();
            if let Reply::Error(e) = &reply
                && e.kind == ErrorKind::Refused
            {
                return Err(Failure::Other(Error::Refused(e.message.clone())));
            }
            match on_reply(reply) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => return Err(Failure::Other(e)),
            }
        }
    }

    /// One request, one typed answer.
    pub fn call<T: DeserializeOwned>(&self, req: &Request) -> Result<T> {
        self.exchange(req, |reply| match reply {
            Reply::Ok(v) => serde_json::from_value(v).map(Some).map_err(protocol),
            Reply::Error(e) => Err(Error::Store(e)),
            Reply::Chunk(_) => Err(protocol("an unexpected chunk")),
        })
    }

    // custos-snmpd

    pub fn snmp_agent_config(&self) -> Result<SnmpAgentView> {
        self.call(&Request::SnmpConfig)
    }

    pub fn licence(&self) -> Result<Option<LicenceFacts>> {
        self.call(&Request::Licence)
    }

    pub fn snmp_refusal(&self, source: IpAddr, refusal: SnmpRefusal) -> Result<()> {
        self.call(&Request::SnmpRefusal { source, refusal })
    }

    // custos-notifyd

    pub fn notify_queue_log(&self, now: OffsetDateTime, limit: i64) -> Result<usize> {
        self.call(&Request::NotifyQueueLog {
            now: unix(now),
            limit,
        })
    }

    pub fn notify_queue_expiries(&self, now: OffsetDateTime) -> Result<usize> {
        self.call(&Request::NotifyQueueExpiries { now: unix(now) })
    }

    pub fn notify_due(&self, now: OffsetDateTime, limit: i64) -> Result<Vec<Notice>> {
        let wire: Vec<WireNotice> = self.call(&Request::NotifyDue {
            now: unix(now),
            limit,
        })?;
        wire.into_iter().map(WireNotice::into_notice).collect()
    }

    pub fn notify_sent(&self, id: i64, now: OffsetDateTime) -> Result<()> {
        self.call(&Request::NotifySent { id, now: unix(now) })
    }

    pub fn notify_retry(&self, id: i64, error: &str, retry_at: OffsetDateTime) -> Result<()> {
        self.call(&Request::NotifyRetry {
            id,
            error: error.to_owned(),
            retry_at: unix(retry_at),
        })
    }

    pub fn notify_abandon(&self, id: i64, error: &str, now: OffsetDateTime) -> Result<()> {
        self.call(&Request::NotifyAbandon {
            id,
            error: error.to_owned(),
            now: unix(now),
        })
    }

    pub fn notify_log(&self, severity: Severity, what: &str) -> Result<()> {
        self.call(&Request::NotifyLog {
            severity,
            what: what.to_owned(),
        })
    }

    pub fn smtp_config(&self) -> Result<Option<SmtpConfig>> {
        let wire: Option<WireSmtp> = self.call(&Request::SmtpConfig)?;
        wire.map(WireSmtp::into_config).transpose()
    }

    // custos-backupd

    pub fn automatic_backup(&self) -> Result<AutomaticBackup> {
        let wire: WireAutomaticBackup = self.call(&Request::AutomaticBackup)?;
        wire.into_settings()
    }

    pub fn take_backup_now_request(&self) -> Result<Option<String>> {
        self.call(&Request::TakeBackupNowRequest)
    }

    pub fn backup_ssh_key(&self, host_name: &str) -> Result<BackupSshKey> {
        let mut wire: WireSshKey = self.call(&Request::BackupSshKey {
            host_name: host_name.to_owned(),
        })?;
        Ok(BackupSshKey {
            public_key: std::mem::take(&mut wire.public_key),
            private_key_pem: SecretString::new(std::mem::take(&mut wire.private_key_pem)),
        })
    }

    pub fn check_backup_host_key(
        &self,
        target: &ScpTarget,
        presented: &str,
    ) -> Result<HostKeyCheck> {
        let wire: WireHostKeyCheck = self.call(&Request::CheckBackupHostKey {
            target: WireTarget::from(target),
            presented: presented.to_owned(),
        })?;
        Ok(wire.into())
    }

    pub fn record_backup_run(&self, run: &BackupRun) -> Result<()> {
        self.call(&Request::RecordBackupRun {
            run: WireRun::from(run),
        })
    }

    /// The host name the CLI set (`setinfo hostname`), if any.
    pub fn host_name(&self) -> Result<Option<String>> {
        self.call(&Request::HostName)
    }

    /// The encrypted backup, streamed into `out`.
    pub fn write_backup(&self, host_name: &str, out: &mut dyn Write) -> Result<BackupInfo> {
        let req = Request::WriteBackup {
            host_name: host_name.to_owned(),
        };
        let mut written = 0u64;
        self.exchange(&req, |reply| match reply {
            Reply::Chunk(b64) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(protocol)?;
                out.write_all(&bytes).map_err(Error::Io)?;
                written += bytes.len() as u64;
                Ok(None)
            }
            Reply::Ok(v) => {
                let info: BackupInfo = serde_json::from_value(v).map_err(protocol)?;
                if info.bytes != written {
                    return Err(protocol(format!(
                        "the backup has {} bytes, {written} arrived",
                        info.bytes
                    )));
                }
                Ok(Some(info))
            }
            Reply::Error(e) => Err(Error::Store(e)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_belong_to_one_role_and_read_back() {
        let r = Request::NotifyLog {
            severity: Severity::Warn,
            what: "x".into(),
        };
        assert_eq!(r.role(), Role::Notify);
        assert_eq!(r.name(), "notify_log");
        let line = encode_line(&r);
        let back: Request = serde_json::from_slice(&line[..line.len() - 1]).expect("parses");
        assert_eq!(back.role(), Role::Notify);
        assert!(
            serde_json::from_str::<Request>(r#"{"op":"notify_sent","id":1,"now":0,"x":1}"#)
                .is_err()
        );
        assert!(
            serde_json::from_str::<Request>(r#"{"op":"notify_sent","id":"1","now":0}"#).is_err()
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"release_key"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&Hello { hello: Role::Snmp }).expect("json"),
            r#"{"hello":"snmp"}"#
        );
    }

    #[test]
    fn the_community_check_matches_only_the_community() {
        let c = CommunityCheck::new(b"salt", &SecretString::new("s3cret"));
        assert!(c.matches(b"s3cret"));
        assert!(!c.matches(b"s3cre"));
        assert!(!c.matches(b"public"));
        assert!(!c.digest.contains("s3cret"));
    }

    #[test]
    fn lines_are_capped() {
        let mut buf = vec![];
        let long = vec![b'a'; MAX_MESSAGE + 10];
        assert!(read_line(&mut &long[..], &mut buf).is_err());
        let ok = b"{}\n{}\n";
        let mut r = &ok[..];
        assert!(read_line(&mut r, &mut buf).expect("line"));
        assert_eq!(buf, b"{}");
        assert!(read_line(&mut r, &mut buf).expect("line"));
        assert!(!read_line(&mut r, &mut buf).expect("eof"));
    }

    #[test]
    fn refusal_texts() {
        let ip: IpAddr = "10.0.0.5".parse().expect("ip");
        let first = SnmpRefusal::First(SnmpReason::Community).text(ip);
        assert!(first.contains("wrong community string") && first.contains("10.0.0.5"));
        let later = SnmpRefusal::Since {
            community: 4,
            acl: 1,
            rate: 0,
        }
        .text(SNMP_OTHER_SOURCES);
        assert!(
            later.contains("refused 5 more")
                && later.contains("4 with a wrong community string")
                && later.contains("addresses beyond the tracked ones"),
            "{later}"
        );
    }
}
