//! §12 automatic backup: the schedule, the SCP target with its pinned host
//! key, the appliance's own SSH key for pushing, "Backup Now", and the
//! history of pushes.
//!
//! Every field rule of these settings is here, each naming its field. The
//! time is kept as 24-hour `HH:MM` in UTC and the weekday as an English day
//! name, so what is stored never depends on a browser's language or on the
//! appliance's time zone; the console shows it also as 12-hour with AM/PM.
//!
//! System Administrators read and change the settings (§5; read-only ones
//! only read them); the admin CLI does the same as `cliadmin`. The push
//! itself is `custos-backupd`'s: it is no administrator, so it uses the
//! `*_unchecked` operations, and its audit entries name it (`custos-backupd`,
//! edge `backupd`).
//!
//! Decisions where the spec is silent:
//!
//! * The target's host key is pinned on first contact, before the appliance
//!   authenticates. Changing the target's host or port forgets the pinned
//!   key (it belonged to another machine); changing only the directory or
//!   the user keeps it. `forget_host_key` unpins it after a deliberate
//!   change on the target.
//! * "Remove Schedule and Settings" clears the schedule, the target and its
//!   pinned key; the appliance's SSH key stays, so the target's
//!   `authorized_keys` entry stays valid.
//! * The SSH key is ECDSA P-256, made once when it is first needed (the
//!   public key is asked for, or the pusher starts) and never in a backup.

use std::fmt;
use std::net::IpAddr;

use crate::store::db::{OptionalExtension, Tx, params};
use base64::Engine;
use time::{Duration, OffsetDateTime, Weekday};

use super::{CliSession, Store, audit, audit_actor, now};
use crate::access::{Access, Actor};
use crate::model::{Severity, check_host_name, fmt_time};
use crate::os::shown;
use crate::secret::SecretString;
use crate::{Error, Result};

/// Who the pusher is in the audit log, and its edge.
pub const BACKUPD_LOGIN: &str = "custos-backupd";
const BACKUPD_VIA: &str = "backupd";
const BACKUPD_SOURCE: &str = "appliance";
/// The default SSH port of a target.
pub const DEFAULT_SSH_PORT: u16 = 22;
/// History rows kept; older ones are dropped as new ones arrive.
const HISTORY_KEPT: i64 = 1000;
pub const TARGET_DIRECTORY_MAX: usize = 1024;
pub const TARGET_USER_MAX: usize = 32;
const KEY_CONTEXT: &str = "backup_ssh_key:private_key_sealed:1";

// ---------------------------------------------------------------------------
// Field rules.

/// Daily or Weekly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frequency {
    Daily,
    Weekly,
}

impl Frequency {
    pub fn as_str(self) -> &'static str {
        match self {
            Frequency::Daily => "daily",
            Frequency::Weekly => "weekly",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Frequency::Daily => "Daily",
            Frequency::Weekly => "Weekly",
        }
    }

    pub fn parse(field: &'static str, s: &str) -> Result<Frequency> {
        match s.to_ascii_lowercase().as_str() {
            "daily" => Ok(Frequency::Daily),
            "weekly" => Ok(Frequency::Weekly),
            _ => Err(Error::invalid(field, "must be daily or weekly")),
        }
    }
}

/// A time of day, stored and sent as 24-hour `HH:MM` (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeOfDay {
    hour: u8,
    minute: u8,
}

impl TimeOfDay {
    pub fn new(field: &'static str, hour: i64, minute: i64) -> Result<TimeOfDay> {
        if !(0..=23).contains(&hour) {
            return Err(Error::invalid(field, "the hour must be 00 to 23"));
        }
        if !(0..=59).contains(&minute) {
            return Err(Error::invalid(field, "the minute must be 00 to 59"));
        }
        Ok(TimeOfDay {
            hour: hour as u8,
            minute: minute as u8,
        })
    }

    /// `HH:MM` on the 24-hour clock (`H:MM` is accepted too).
    pub fn parse(field: &'static str, s: &str) -> Result<TimeOfDay> {
        let bad = || {
            Error::invalid(
                field,
                format!(
                    "'{}' is not a 24-hour time HH:MM (00:00 to 23:59, e.g. 02:30 or 14:30)",
                    shown(s)
                ),
            )
        };
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        let digits = |p: &str, max_len: usize| {
            !p.is_empty() && p.len() <= max_len && p.chars().all(|c| c.is_ascii_digit())
        };
        if !digits(h, 2) || !digits(m, 2) || m.len() != 2 {
            return Err(bad());
        }
        let (h, m) = (
            h.parse::<i64>().map_err(|_| bad())?,
            m.parse::<i64>().map_err(|_| bad())?,
        );
        if h > 23 || m > 59 {
            return Err(bad());
        }
        TimeOfDay::new(field, h, m)
    }

    /// The console's form: hour 1–12, minute 0–59 and AM or PM.
    pub fn from_12h(
        field: &'static str,
        hour: &str,
        minute: &str,
        meridiem: &str,
    ) -> Result<TimeOfDay> {
        let h: i64 = hour
            .trim()
            .parse()
            .ok()
            .filter(|h| (1..=12).contains(h))
            .ok_or_else(|| Error::invalid(field, "choose an hour from 1 to 12"))?;
        let m: i64 = minute
            .trim()
            .parse()
            .ok()
            .filter(|m| (0..=59).contains(m))
            .ok_or_else(|| Error::invalid(field, "choose a minute from 00 to 59"))?;
        let h24 = match meridiem.trim().to_ascii_uppercase().as_str() {
            "AM" => h % 12,
            "PM" => h % 12 + 12,
            _ => return Err(Error::invalid(field, "choose AM or PM")),
        };
        TimeOfDay::new(field, h24, m)
    }

    pub fn hour(self) -> u8 {
        self.hour
    }

    pub fn minute(self) -> u8 {
        self.minute
    }

    /// `14:30`.
    pub fn as_24h(self) -> String {
        format!("{:02}:{:02}", self.hour, self.minute)
    }

    /// (hour 1–12, "AM" or "PM").
    pub fn hour_12(self) -> (u8, &'static str) {
        let meridiem = if self.hour < 12 { "AM" } else { "PM" };
        let h = match self.hour % 12 {
            0 => 12,
            h => h,
        };
        (h, meridiem)
    }

    /// `2:30 PM`.
    pub fn as_12h(self) -> String {
        let (h, m) = self.hour_12();
        format!("{h}:{:02} {m}", self.minute)
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_24h())
    }
}

/// Monday first, as the console lists them.
pub const WEEKDAYS: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

/// The stored name: `monday` … `sunday`.
pub fn weekday_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Monday => "monday",
        Weekday::Tuesday => "tuesday",
        Weekday::Wednesday => "wednesday",
        Weekday::Thursday => "thursday",
        Weekday::Friday => "friday",
        Weekday::Saturday => "saturday",
        Weekday::Sunday => "sunday",
    }
}

/// `Monday` … `Sunday`.
pub fn weekday_title(d: Weekday) -> &'static str {
    match d {
        Weekday::Monday => "Monday",
        Weekday::Tuesday => "Tuesday",
        Weekday::Wednesday => "Wednesday",
        Weekday::Thursday => "Thursday",
        Weekday::Friday => "Friday",
        Weekday::Saturday => "Saturday",
        Weekday::Sunday => "Sunday",
    }
}

/// An English day name, in full or its first three letters, any case.
pub fn parse_weekday(field: &'static str, s: &str) -> Result<Weekday> {
    let l = s.trim().to_ascii_lowercase();
    WEEKDAYS
        .into_iter()
        .find(|d| {
            let name = weekday_name(*d);
            l == name || (l.len() == 3 && name.starts_with(&l))
        })
        .ok_or_else(|| {
            Error::invalid(
                field,
                format!(
                    "'{}' is not a day of the week (monday, tuesday, wednesday, thursday, friday, saturday or sunday)",
                    shown(s)
                ),
            )
        })
}

/// When automatic backups run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub frequency: Frequency,
    /// UTC.
    pub time: TimeOfDay,
    /// Weekly schedules only.
    pub weekday: Option<Weekday>,
}

impl Schedule {
    /// A weekly schedule needs its weekday; a daily one has none.
    pub fn new(
        frequency: Frequency,
        time: TimeOfDay,
        weekday: Option<Weekday>,
    ) -> Result<Schedule> {
        match (frequency, weekday) {
            (Frequency::Weekly, None) => Err(Error::invalid(
                "weekday",
                "a weekly backup needs its day of the week",
            )),
            (Frequency::Daily, Some(_)) => Err(Error::invalid(
                "weekday",
                "a daily backup runs every day: leave the day of the week out",
            )),
            _ => Ok(Schedule {
                frequency,
                time,
                weekday,
            }),
        }
    }

    /// The first run strictly after `now` (UTC).
    pub fn next_after(&self, now: OffsetDateTime) -> OffsetDateTime {
        let now = now.to_offset(time::UtcOffset::UTC);
        let at = time::Time::from_hms(self.time.hour, self.time.minute, 0)
            .expect("a TimeOfDay is a valid time");
        let mut next = now.date().with_time(at).assume_utc();
        if next <= now {
            next += Duration::days(1);
        }
        if let Some(day) = self.weekday {
            while next.weekday() != day {
                next += Duration::days(1);
            }
        }
        next
    }

    /// `daily at 02:30 UTC (2:30 AM)`, `weekly on Monday at 14:00 UTC (2:00 PM)`.
    pub fn describe(&self) -> String {
        let at = format!("at {} UTC ({})", self.time.as_24h(), self.time.as_12h());
        match self.weekday {
            Some(d) => format!("weekly on {} {at}", weekday_title(d)),
            None => format!("daily {at}"),
        }
    }
}

/// The target's address: an IPv4 or IPv6 address or a host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHost(String);

impl TargetHost {
    pub fn parse(field: &'static str, s: &str) -> Result<TargetHost> {
        if s.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        let bracketed = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
        if let Some(ip) = bracketed.or(Some(s)).and_then(|a| a.parse::<IpAddr>().ok()) {
            if bracketed.is_some() && ip.is_ipv4() {
                return Err(Error::invalid(
                    field,
                    "only an IPv6 address is written in brackets",
                ));
            }
            let unusable = match ip {
                IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
                IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
            };
            if unusable {
                return Err(Error::invalid(
                    field,
                    format!("{ip} is not the address of one host"),
                ));
            }
            return Ok(TargetHost(ip.to_string()));
        }
        if bracketed.is_some() {
            return Err(Error::invalid(
                field,
                format!("'{}' is not an IPv6 address", shown(s)),
            ));
        }
        check_host_name(field, s).map_err(|_| {
            Error::invalid(
                field,
                format!("'{}' is neither an IP address nor a host name", shown(s)),
            )
        })?;
        if s.rsplit('.')
            .next()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(Error::invalid(
                field,
                format!("'{}' is not a valid IP address", shown(s)),
            ));
        }
        Ok(TargetHost(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn is_ipv6(&self) -> bool {
        self.0.contains(':')
    }
}

impl fmt::Display for TargetHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ipv6() {
            write!(f, "[{}]", self.0)
        } else {
            f.write_str(&self.0)
        }
    }
}

/// A TCP port, 1–65535.
pub fn check_target_port(field: &'static str, port: i64) -> Result<u16> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| Error::invalid(field, "must be a port number from 1 to 65535"))
}

/// An absolute directory on the target, without quotes, backslashes, `$`,
/// backticks, control characters or `..`; a trailing `/` is dropped.
pub fn check_target_directory(field: &'static str, s: &str) -> Result<String> {
    if s.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if s.chars().count() > TARGET_DIRECTORY_MAX {
        return Err(Error::invalid(
            field,
            format!("must be at most {TARGET_DIRECTORY_MAX} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            "must be one line without control characters",
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| matches!(c, '\'' | '"' | '`' | '\\' | '$'))
    {
        return Err(Error::invalid(
            field,
            format!("must not contain {c} (quotes, backslashes, backticks and $ are refused)"),
        ));
    }
    if !s.starts_with('/') {
        return Err(Error::invalid(
            field,
            "must be an absolute path starting with / (e.g. /srv/backups/custos)",
        ));
    }
    if s.split('/').any(|part| part == "..") {
        return Err(Error::invalid(field, "must not contain '..'"));
    }
    let trimmed = s.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/" } else { trimmed }.to_owned())
}

/// A user name on the target: letters, digits, `.`, `_`, `-`, starting with
/// a letter, digit or `_`, at most 32 characters.
pub fn check_target_user(field: &'static str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if s.chars().count() > TARGET_USER_MAX {
        return Err(Error::invalid(
            field,
            format!("must be at most {TARGET_USER_MAX} characters"),
        ));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(Error::invalid(
            field,
            "may contain only letters, digits, '.', '_' and '-'",
        ));
    }
    if !s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(Error::invalid(
            field,
            "must start with a letter, a digit or '_'",
        ));
    }
    Ok(())
}

/// Where backups are pushed: `scp` to `user@host:directory` on `port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScpTarget {
    pub host: TargetHost,
    pub port: u16,
    pub directory: String,
    pub user: String,
}

impl ScpTarget {
    /// Checks every field; `port` defaults to 22.
    pub fn new(host: &str, port: Option<i64>, directory: &str, user: &str) -> Result<ScpTarget> {
        let host = TargetHost::parse("target_host", host)?;
        let port = match port {
            Some(p) => check_target_port("target_port", p)?,
            None => DEFAULT_SSH_PORT,
        };
        let directory = check_target_directory("target_directory", directory)?;
        check_target_user("target_user", user)?;
        Ok(ScpTarget {
            host,
            port,
            directory,
            user: user.to_owned(),
        })
    }

    /// The path of `file_name` in the target directory.
    pub fn remote_path(&self, file_name: &str) -> String {
        if self.directory == "/" {
            format!("/{file_name}")
        } else {
            format!("{}/{file_name}", self.directory)
        }
    }

    fn same_machine(&self, other: &ScpTarget) -> bool {
        self.host == other.host && self.port == other.port
    }
}

/// `user@host:directory`, with the port when it is not 22.
impl fmt::Display for ScpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.directory)?;
        if self.port != DEFAULT_SSH_PORT {
            write!(f, " (port {})", self.port)?;
        }
        Ok(())
    }
}

/// An SSH host key's fingerprint as `ssh-keygen -l` prints it:
/// `SHA256:` and the unpadded base64 of the SHA-256 of the key blob.
pub fn ssh_fingerprint_of_sha256(digest: &[u8]) -> String {
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

// ---------------------------------------------------------------------------
// The settings, their changes and the history.

/// The automatic backup's settings as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutomaticBackup {
    pub schedule: Option<Schedule>,
    pub target: Option<ScpTarget>,
    /// Pinned on first contact (`SHA256:…`).
    pub host_key_fingerprint: Option<String>,
    pub host_key_pinned_at: Option<String>,
    /// A pending "Backup Now".
    pub now_requested_at: Option<String>,
    pub updated_at: Option<String>,
}

impl AutomaticBackup {
    /// The next scheduled push after `now`: only with a schedule and a target.
    pub fn next_run(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        match (&self.schedule, &self.target) {
            (Some(s), Some(_)) => Some(s.next_after(now)),
            _ => None,
        }
    }
}

/// A change of the settings: a part given replaces that part.
#[derive(Debug, Clone, Default)]
pub struct AutomaticBackupUpdate {
    pub schedule: Option<Schedule>,
    pub target: Option<ScpTarget>,
    /// Unpin the target's host key (after a deliberate change on the target);
    /// the next push learns it again.
    pub forget_host_key: bool,
}

/// What started a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Scheduled,
    Now,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Scheduled => "scheduled",
            RunKind::Now => "now",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            RunKind::Scheduled => "Scheduled",
            RunKind::Now => "Backup Now",
        }
    }

    fn parse(s: &str) -> Result<RunKind> {
        match s {
            "scheduled" => Ok(RunKind::Scheduled),
            "now" => Ok(RunKind::Now),
            _ => Err(Error::Crypto("a stored backup history row is malformed")),
        }
    }
}

/// One push attempt, as the pusher reports it.
#[derive(Debug, Clone)]
pub struct BackupRun {
    pub kind: RunKind,
    /// 1 for the first attempt, then one more per retry.
    pub attempt: u32,
    /// How many attempts a push gets at most.
    pub attempts: u32,
    pub target: ScpTarget,
    pub file_name: Option<String>,
    pub bytes: Option<u64>,
    /// `None` on success, else what went wrong.
    pub error: Option<String>,
    /// Seconds until the next attempt, when one follows.
    pub retry_in_secs: Option<u64>,
}

/// One row of the history, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupHistoryEntry {
    pub at: String,
    pub kind: RunKind,
    pub attempt: u32,
    /// `user@host:directory`.
    pub target: String,
    pub file_name: Option<String>,
    pub bytes: Option<u64>,
    pub success: bool,
    pub error: Option<String>,
    pub retry_in_secs: Option<u64>,
}

/// The pinned-key check the pusher makes before it authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// First contact: the key is pinned now.
    Learned,
    /// The pinned key.
    Matches,
    /// Another key than the pinned one: refuse.
    Changed { pinned: String },
    /// The settings changed while connecting (target removed or moved):
    /// abandon this push.
    TargetChanged,
}

/// The appliance's SSH key pair for pushing.
pub struct BackupSshKey {
    /// `ecdsa-sha2-nistp256 AAAA… custos@host`, for `authorized_keys`.
    pub public_key: String,
    /// PKCS#8 PEM, for libssh2.
    pub private_key_pem: SecretString,
}

impl fmt::Debug for BackupSshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupSshKey")
            .field("public_key", &self.public_key)
            .field("private_key_pem", &"<redacted>")
            .finish()
    }
}

/// A new ECDSA P-256 key: the OpenSSH public line and the PKCS#8 PEM.
fn generate_ssh_key(comment: &str) -> Result<(String, SecretString)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let point = key.public_key_raw();
    let mut blob = Vec::with_capacity(19 + 8 + 65 + 12);
    for part in [b"ecdsa-sha2-nistp256".as_slice(), b"nistp256", point] {
        blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
        blob.extend_from_slice(part);
    }
    let public = format!(
        "ecdsa-sha2-nistp256 {} {comment}",
        base64::engine::general_purpose::STANDARD.encode(&blob)
    );
    Ok((public, SecretString::new(key.serialize_pem())))
}

/// The SSH fingerprint of an OpenSSH public key line.
pub fn public_key_fingerprint(public_key: &str) -> Option<String> {
    let b64 = public_key.split_whitespace().nth(1)?;
    let blob = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(ssh_fingerprint_of_sha256(&crate::crypto::sha256(&blob)))
}

const COLUMNS: &str = "frequency, time_utc, weekday, target_host, target_port, target_directory, target_user, \
     host_key_fingerprint, host_key_pinned_at, now_requested_at, updated_at";

fn load(tx: &Tx<'_>) -> Result<AutomaticBackup> {
    type Row = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let row: Row = tx.query_row(
        &format!("SELECT {COLUMNS} FROM backup_automatic WHERE id = 1"),
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
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
            ))
        },
    )?;
    let (
        frequency,
        time_utc,
        weekday,
        host,
        port,
        directory,
        user,
        fp,
        pinned_at,
        now_at,
        updated_at,
    ) = row;
    let malformed = |_| Error::Crypto("the stored automatic backup settings are malformed");
    let schedule = match (frequency, time_utc) {
        (Some(f), Some(t)) => Some(
            Schedule::new(
                Frequency::parse("frequency", &f).map_err(malformed)?,
                TimeOfDay::parse("time", &t).map_err(malformed)?,
                weekday
                    .map(|w| parse_weekday("weekday", &w))
                    .transpose()
                    .map_err(malformed)?,
            )
            .map_err(malformed)?,
        ),
        _ => None,
    };
    let target = match (host, directory, user) {
        (Some(h), Some(d), Some(u)) => Some(ScpTarget::new(&h, port, &d, &u).map_err(malformed)?),
        _ => None,
    };
    Ok(AutomaticBackup {
        schedule,
        target,
        host_key_fingerprint: fp,
        host_key_pinned_at: pinned_at,
        now_requested_at: now_at,
        updated_at,
    })
}

fn save_schedule(tx: &Tx<'_>, s: Option<&Schedule>) -> Result<()> {
    tx.execute(
        "UPDATE backup_automatic SET frequency = ?1, time_utc = ?2, weekday = ?3, updated_at = ?4 WHERE id = 1",
        params![
            s.map(|s| s.frequency.as_str()),
            s.map(|s| s.time.as_24h()),
            s.and_then(|s| s.weekday).map(weekday_name),
            fmt_time(now())
        ],
    )?;
    Ok(())
}

fn save_target(tx: &Tx<'_>, t: Option<&ScpTarget>) -> Result<()> {
    tx.execute(
        "UPDATE backup_automatic SET target_host = ?1, target_port = ?2, target_directory = ?3, target_user = ?4, updated_at = ?5 WHERE id = 1",
        params![
            t.map(|t| t.host.as_str()),
            t.map(|t| t.port),
            t.map(|t| t.directory.as_str()),
            t.map(|t| t.user.as_str()),
            fmt_time(now())
        ],
    )?;
    Ok(())
}

fn unpin(tx: &Tx<'_>) -> Result<()> {
    tx.execute(
        "UPDATE backup_automatic SET host_key_fingerprint = NULL, host_key_pinned_at = NULL WHERE id = 1",
        params![],
    )?;
    Ok(())
}

/// Applies `up` inside the caller's transaction; returns what changed, for
/// the audit entry (empty when nothing did).
fn apply_update(tx: &Tx<'_>, up: &AutomaticBackupUpdate) -> Result<Vec<String>> {
    let before = load(tx)?;
    let mut changed = vec![];
    if let Some(s) = &up.schedule
        && before.schedule.as_ref() != Some(s)
    {
        save_schedule(tx, Some(s))?;
        changed.push(format!("schedule {}", s.describe()));
    }
    let mut unpinned = false;
    if let Some(t) = &up.target
        && before.target.as_ref() != Some(t)
    {
        save_target(tx, Some(t))?;
        changed.push(format!("SCP target {t}"));
        let moved = before.target.as_ref().is_none_or(|b| !b.same_machine(t));
        if moved && let Some(fp) = &before.host_key_fingerprint {
            unpin(tx)?;
            unpinned = true;
            changed.push(format!(
                "the pinned host key {fp} of the previous target is forgotten (another host or port)"
            ));
        }
    }
    if up.forget_host_key && !unpinned {
        match &before.host_key_fingerprint {
            Some(fp) => {
                unpin(tx)?;
                changed.push(format!(
                    "forgot the pinned host key {fp}; the next push learns the target's key again"
                ));
            }
            None => {
                return Err(Error::conflict(
                    "forget_host_key",
                    "no host key is pinned yet; it is learned on the first push",
                ));
            }
        }
    }
    Ok(changed)
}

fn history_row(
    r: &crate::store::db::Row,
) -> crate::store::db::DbResult<(BackupHistoryRaw, Option<String>)> {
    Ok((
        BackupHistoryRaw {
            at: r.get(0)?,
            kind: r.get(1)?,
            attempt: r.get(2)?,
            target: r.get(3)?,
            file_name: r.get(4)?,
            bytes: r.get(5)?,
            result: r.get(6)?,
            retry_in_secs: r.get(8)?,
        },
        r.get(7)?,
    ))
}

struct BackupHistoryRaw {
    at: String,
    kind: String,
    attempt: i64,
    target: String,
    file_name: Option<String>,
    bytes: Option<i64>,
    result: String,
    retry_in_secs: Option<i64>,
}

fn load_history(tx: &Tx<'_>, limit: i64) -> Result<Vec<BackupHistoryEntry>> {
    let mut stmt = tx.prepare_cached(
        "SELECT at, kind, attempt, target, file_name, bytes, result, error, retry_in_secs
         FROM backup_history ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], history_row)?;
    let mut out = vec![];
    for row in rows {
        let (raw, error) = row?;
        out.push(BackupHistoryEntry {
            at: raw.at,
            kind: RunKind::parse(&raw.kind)?,
            attempt: u32::try_from(raw.attempt).unwrap_or(0),
            target: raw.target,
            file_name: raw.file_name,
            bytes: raw.bytes.and_then(|b| u64::try_from(b).ok()),
            success: raw.result == "success",
            error,
            retry_in_secs: raw.retry_in_secs.and_then(|s| u64::try_from(s).ok()),
        });
    }
    Ok(out)
}

fn backupd_audit(tx: &Tx<'_>, severity: Severity, what: &str) -> Result<()> {
    audit(
        tx,
        BACKUPD_LOGIN,
        BACKUPD_SOURCE,
        BACKUPD_VIA,
        severity,
        None,
        what,
    )
}

/// History rows a caller may ask for at once.
pub const HISTORY_MAX: i64 = 1000;

fn check_limit(limit: i64) -> Result<i64> {
    if !(1..=HISTORY_MAX).contains(&limit) {
        return Err(Error::invalid(
            "limit",
            format!("must be between 1 and {HISTORY_MAX}"),
        ));
    }
    Ok(limit)
}

impl Store {
    // --- System Administrators (REST API, console) ----------------------

    /// The settings (§12 Automatic).
    pub fn automatic_backup(&self, actor: &Actor) -> Result<AutomaticBackup> {
        actor.require_system(Access::Read)?;
        self.read(load)
    }

    /// Changes the schedule, the target or the pinned host key, audited in
    /// the same transaction. Nothing is written when nothing changes.
    pub fn set_automatic_backup(
        &self,
        actor: &Actor,
        up: AutomaticBackupUpdate,
    ) -> Result<AutomaticBackup> {
        actor.require_system(Access::Write)?;
        self.write(|tx| {
            let changed = apply_update(tx, &up)?;
            if !changed.is_empty() {
                audit_actor(
                    tx,
                    actor,
                    Severity::Info,
                    None,
                    &format!("changed the automatic backup: {}", changed.join("; ")),
                )?;
            }
            load(tx)
        })
    }

    /// "Remove Schedule and Settings": the schedule, the target, its pinned
    /// host key and a pending Backup Now. The SSH key and the history stay.
    pub fn remove_automatic_backup(&self, actor: &Actor) -> Result<AutomaticBackup> {
        actor.require_system(Access::Write)?;
        self.write(|tx| {
            let before = load(tx)?;
            if before.schedule.is_none() && before.target.is_none() {
                return Ok(before);
            }
            tx.execute(
                "UPDATE backup_automatic SET frequency = NULL, time_utc = NULL, weekday = NULL,
                   target_host = NULL, target_port = NULL, target_directory = NULL, target_user = NULL,
                   host_key_fingerprint = NULL, host_key_pinned_at = NULL,
                   now_requested_at = NULL, now_requested_by = NULL, updated_at = ?1 WHERE id = 1",
                [fmt_time(now())],
            )?;
            audit_actor(
                tx,
                actor,
                Severity::Info,
                None,
                "removed the automatic backup schedule and settings",
            )?;
            load(tx)
        })
    }

    /// "Backup Now": asks `custos-backupd` to push at once. Needs a target.
    pub fn request_backup_now(&self, actor: &Actor) -> Result<AutomaticBackup> {
        actor.require_system(Access::Write)?;
        self.write(|tx| {
            let before = load(tx)?;
            let Some(target) = &before.target else {
                return Err(Error::conflict(
                    "target",
                    "set the SCP target (host, directory, user) before Backup Now",
                ));
            };
            tx.execute(
                "UPDATE backup_automatic SET now_requested_at = ?1, now_requested_by = ?2 WHERE id = 1",
                params![fmt_time(now()), actor.login],
            )?;
            audit_actor(
                tx,
                actor,
                Severity::Info,
                None,
                &format!("requested Backup Now to {target}"),
            )?;
            load(tx)
        })
    }

    /// The latest `limit` pushes, newest first.
    pub fn backup_history(&self, actor: &Actor, limit: i64) -> Result<Vec<BackupHistoryEntry>> {
        actor.require_system(Access::Read)?;
        let limit = check_limit(limit)?;
        self.read(|tx| load_history(tx, limit))
    }

    /// The appliance's SSH public key (`authorized_keys` line), made on
    /// first use with the comment `custos@<host_name>`.
    pub fn backup_ssh_public_key(&self, actor: &Actor, host_name: &str) -> Result<String> {
        actor.require_system(Access::Read)?;
        Ok(self.backup_ssh_key_unchecked(host_name)?.public_key)
    }

    // --- the admin CLI (as cliadmin) -------------------------------------

    pub fn cli_automatic_backup(&self, session: &CliSession) -> Result<AutomaticBackup> {
        self.automatic_backup(&session.actor())
    }

    /// `backup schedule daily|weekly …`
    pub fn cli_set_backup_schedule(
        &self,
        session: &CliSession,
        schedule: Schedule,
    ) -> Result<AutomaticBackup> {
        self.set_automatic_backup(
            &session.actor(),
            AutomaticBackupUpdate {
                schedule: Some(schedule),
                ..Default::default()
            },
        )
    }

    /// `backup target HOST DIRECTORY USER [PORT]`
    pub fn cli_set_backup_target(
        &self,
        session: &CliSession,
        target: ScpTarget,
    ) -> Result<AutomaticBackup> {
        self.set_automatic_backup(
            &session.actor(),
            AutomaticBackupUpdate {
                target: Some(target),
                ..Default::default()
            },
        )
    }

    /// `backup hostkey forget`
    pub fn cli_forget_backup_host_key(&self, session: &CliSession) -> Result<AutomaticBackup> {
        self.set_automatic_backup(
            &session.actor(),
            AutomaticBackupUpdate {
                forget_host_key: true,
                ..Default::default()
            },
        )
    }

    /// `backup remove`
    pub fn cli_remove_automatic_backup(&self, session: &CliSession) -> Result<AutomaticBackup> {
        self.remove_automatic_backup(&session.actor())
    }

    /// `backup now`
    pub fn cli_request_backup_now(&self, session: &CliSession) -> Result<AutomaticBackup> {
        self.request_backup_now(&session.actor())
    }

    /// `backup history`
    pub fn cli_backup_history(
        &self,
        session: &CliSession,
        limit: i64,
    ) -> Result<Vec<BackupHistoryEntry>> {
        self.backup_history(&session.actor(), limit)
    }

    /// `backup pubkey`
    pub fn cli_backup_ssh_public_key(
        &self,
        session: &CliSession,
        host_name: &str,
    ) -> Result<String> {
        self.backup_ssh_public_key(&session.actor(), host_name)
    }

    // --- custos-backupd (no administrator) --------------------------------

    /// The settings, for the pusher.
    pub fn automatic_backup_unchecked(&self) -> Result<AutomaticBackup> {
        self.read(load)
    }

    /// The SSH key pair, made (and audited) the first time it is needed.
    /// Two processes making it at once keep the first one stored.
    pub fn backup_ssh_key_unchecked(&self, host_name: &str) -> Result<BackupSshKey> {
        if let Some(k) = self.stored_ssh_key()? {
            return Ok(k);
        }
        let (public, private) = generate_ssh_key(&format!("custos@{host_name}"))?;
        let sealed = self.master.seal(KEY_CONTEXT, private.expose().as_bytes())?;
        let fp = public_key_fingerprint(&public).unwrap_or_default();
        self.write(|tx| {
            let inserted = tx.execute(
                "INSERT INTO backup_ssh_key(id, public_key, private_key_sealed, created_at) VALUES (1, ?1, ?2, ?3)
                 ON CONFLICT(id) DO NOTHING",
                params![public, sealed, fmt_time(now())],
            )?;
            if inserted == 1 {
                audit(
                    tx,
                    "system",
                    BACKUPD_SOURCE,
                    "system",
                    Severity::Info,
                    None,
                    &format!("generated the appliance's SSH key for automatic backups (ECDSA P-256, {fp})"),
                )?;
            }
            Ok(())
        })?;
        self.stored_ssh_key()?.ok_or(Error::Crypto(
            "the SSH key for automatic backups was not stored",
        ))
    }

    fn stored_ssh_key(&self) -> Result<Option<BackupSshKey>> {
        let row: Option<(String, Vec<u8>)> = self.read(|tx| {
            Ok(tx
                .query_row(
                    "SELECT public_key, private_key_sealed FROM backup_ssh_key WHERE id = 1",
                    params![],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?)
        })?;
        row.map(|(public_key, sealed)| {
            let plain = self.master.open(KEY_CONTEXT, &sealed)?;
            let pem = std::str::from_utf8(plain.expose())
                .map_err(|_| Error::Crypto("the stored SSH key is not PEM"))?;
            Ok(BackupSshKey {
                public_key,
                private_key_pem: SecretString::new(pem),
            })
        })
        .transpose()
    }

    /// Takes a pending "Backup Now" (clears it); returns when it was asked.
    pub fn take_backup_now_request_unchecked(&self) -> Result<Option<String>> {
        let pending: Option<String> = self.read(|tx| {
            Ok(tx.query_row(
                "SELECT now_requested_at FROM backup_automatic WHERE id = 1",
                params![],
                |r| r.get(0),
            )?)
        })?;
        if pending.is_none() {
            return Ok(None);
        }
        self.write(|tx| {
            let at: Option<String> = tx.query_row(
                "SELECT now_requested_at FROM backup_automatic WHERE id = 1",
                params![],
                |r| r.get(0),
            )?;
            tx.execute(
                "UPDATE backup_automatic SET now_requested_at = NULL, now_requested_by = NULL WHERE id = 1",
                params![],
            )?;
            Ok(at)
        })
    }

    /// Compares the host key `presented` by `target` with the pinned one,
    /// pinning it on first contact (audited). Called before authenticating.
    pub fn check_backup_host_key_unchecked(
        &self,
        target: &ScpTarget,
        presented: &str,
    ) -> Result<HostKeyCheck> {
        self.write(|tx| {
            let current = load(tx)?;
            match &current.target {
                Some(t) if t.same_machine(target) => {}
                _ => return Ok(HostKeyCheck::TargetChanged),
            }
            match current.host_key_fingerprint {
                Some(pinned) if pinned == presented => Ok(HostKeyCheck::Matches),
                Some(pinned) => Ok(HostKeyCheck::Changed { pinned }),
                None => {
                    tx.execute(
                        "UPDATE backup_automatic SET host_key_fingerprint = ?1, host_key_pinned_at = ?2 WHERE id = 1",
                        params![presented, fmt_time(now())],
                    )?;
                    backupd_audit(
                        tx,
                        Severity::Info,
                        &format!(
                            "learned the host key of the backup target {}:{} on first contact and pinned it: {presented}",
                            target.host, target.port
                        ),
                    )?;
                    Ok(HostKeyCheck::Learned)
                }
            }
        })
    }

    /// Records one push attempt in the history, with its audit entry: INFO
    /// for a success, ERROR for a failure (§12: which also makes an email).
    pub fn record_backup_run_unchecked(&self, run: &BackupRun) -> Result<()> {
        let target = run.target.to_string();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO backup_history(at, kind, attempt, target, file_name, bytes, result, error, retry_in_secs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    fmt_time(now()),
                    run.kind.as_str(),
                    run.attempt,
                    target,
                    run.file_name,
                    run.bytes.and_then(|b| i64::try_from(b).ok()),
                    if run.error.is_none() { "success" } else { "failed" },
                    run.error,
                    run.retry_in_secs.and_then(|s| i64::try_from(s).ok()),
                ],
            )?;
            tx.execute(
                "DELETE FROM backup_history WHERE id <= (SELECT MAX(id) FROM backup_history) - ?1",
                [HISTORY_KEPT],
            )?;
            match &run.error {
                None => backupd_audit(
                    tx,
                    Severity::Info,
                    &format!(
                        "backup pushed to {target}: {} ({} bytes)",
                        run.file_name.as_deref().unwrap_or("?"),
                        run.bytes.unwrap_or(0)
                    ),
                ),
                Some(e) => {
                    let next = match run.retry_in_secs {
                        Some(s) => format!(
                            " (attempt {} of {}; next attempt in {s} s)",
                            run.attempt, run.attempts
                        ),
                        None if run.attempt > 1 => {
                            format!(" (attempt {} of {}; giving up)", run.attempt, run.attempts)
                        }
                        None => String::new(),
                    };
                    backupd_audit(
                        tx,
                        Severity::Error,
                        &format!("backup push to {target} failed: {e}{next}"),
                    )
                }
            }
        })
    }

    /// An entry of the pusher's own (start, stop, faults outside a push).
    pub fn backupd_log_unchecked(&self, severity: Severity, what: &str) -> Result<()> {
        self.write(|tx| backupd_audit(tx, severity, what))
    }

    /// The history for the pusher's own use (tests, status).
    pub fn backup_history_unchecked(&self, limit: i64) -> Result<Vec<BackupHistoryEntry>> {
        let limit = check_limit(limit)?;
        self.read(|tx| load_history(tx, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::cli::test_session;
    use crate::store::test_support::{store, system_actor};
    use crate::store::{AuditQuery, NewAdmin};

    fn field_of(e: Error) -> &'static str {
        match e {
            Error::Invalid { field, .. } | Error::Conflict { field, .. } => field,
            other => panic!("not a field error: {other}"),
        }
    }

    fn at(s: &str) -> OffsetDateTime {
        crate::model::parse_datetime("t", s).expect("time")
    }

    #[test]
    fn times_are_24_hour_utc_and_shown_as_12_hour() {
        let t = TimeOfDay::parse("time", "14:05").expect("ok");
        assert_eq!((t.as_24h(), t.as_12h()), ("14:05".into(), "2:05 PM".into()));
        assert_eq!(
            TimeOfDay::parse("time", "0:00").expect("ok").as_12h(),
            "12:00 AM"
        );
        assert_eq!(
            TimeOfDay::parse("time", "12:30").expect("ok").as_12h(),
            "12:30 PM"
        );
        for bad in [
            "24:00", "12:60", "1230", "12:3", "ab:cd", "", " 1:00", "12:00 PM", "-1:00",
        ] {
            assert_eq!(
                field_of(TimeOfDay::parse("time", bad).expect_err(bad)),
                "time"
            );
        }
        let f = |h, m, p| TimeOfDay::from_12h("time", h, m, p).map(|t| t.as_24h());
        assert_eq!(f("12", "0", "AM").expect("midnight"), "00:00");
        assert_eq!(f("12", "15", "PM").expect("noon"), "12:15");
        assert_eq!(f("11", "59", "pm").expect("late"), "23:59");
        assert_eq!(f("1", "05", "AM").expect("early"), "01:05");
        assert!(f("0", "0", "AM").is_err() && f("13", "0", "PM").is_err());
        assert!(f("1", "60", "AM").is_err() && f("1", "0", "XM").is_err());
    }

    #[test]
    fn weekdays_are_english_names() {
        assert_eq!(
            parse_weekday("weekday", "Monday").expect("ok"),
            Weekday::Monday
        );
        assert_eq!(
            parse_weekday("weekday", "sun").expect("ok"),
            Weekday::Sunday
        );
        assert_eq!(
            parse_weekday("weekday", "FRIDAY").expect("ok"),
            Weekday::Friday
        );
        for bad in ["lundi", "0", "mo", "", "mondays"] {
            assert_eq!(
                field_of(parse_weekday("weekday", bad).expect_err(bad)),
                "weekday"
            );
        }
        let t = TimeOfDay::parse("time", "02:00").expect("t");
        assert_eq!(
            field_of(Schedule::new(Frequency::Weekly, t, None).expect_err("weekday")),
            "weekday"
        );
        assert!(Schedule::new(Frequency::Daily, t, Some(Weekday::Monday)).is_err());
        assert_eq!(
            field_of(Frequency::parse("frequency", "hourly").expect_err("f")),
            "frequency"
        );
    }

    #[test]
    fn the_next_run_is_computed_in_utc() {
        let t = |s| TimeOfDay::parse("time", s).expect("t");
        let daily = Schedule::new(Frequency::Daily, t("02:30"), None).expect("daily");
        assert_eq!(
            daily.next_after(at("2026-03-04T01:00:00Z")),
            at("2026-03-04T02:30:00Z")
        );
        assert_eq!(
            daily.next_after(at("2026-03-04T02:30:00Z")),
            at("2026-03-05T02:30:00Z")
        );
        assert_eq!(
            daily.next_after(at("2026-12-31T23:59:59Z")),
            at("2027-01-01T02:30:00Z")
        );
        // Another offset is the same instant.
        let local = at("2026-03-04T01:00:00Z").to_offset(time::macros::offset!(-08:00));
        assert_eq!(daily.next_after(local), at("2026-03-04T02:30:00Z"));
        // 2026-03-04 is a Wednesday.
        let weekly =
            Schedule::new(Frequency::Weekly, t("14:00"), Some(Weekday::Monday)).expect("weekly");
        assert_eq!(
            weekly.next_after(at("2026-03-04T10:00:00Z")),
            at("2026-03-09T14:00:00Z")
        );
        assert_eq!(
            weekly.next_after(at("2026-03-09T13:59:00Z")),
            at("2026-03-09T14:00:00Z")
        );
        assert_eq!(
            weekly.next_after(at("2026-03-09T14:00:00Z")),
            at("2026-03-16T14:00:00Z")
        );
        let wed =
            Schedule::new(Frequency::Weekly, t("00:00"), Some(Weekday::Wednesday)).expect("w");
        assert_eq!(
            wed.next_after(at("2026-03-04T10:00:00Z")),
            at("2026-03-11T00:00:00Z")
        );
        assert_eq!(weekly.describe(), "weekly on Monday at 14:00 UTC (2:00 PM)");
    }

    #[test]
    fn target_rules_name_their_field() {
        let ok =
            ScpTarget::new("backup.example.com", None, "/srv/backups/", "custos-bk").expect("ok");
        assert_eq!((ok.port, ok.directory.as_str()), (22, "/srv/backups"));
        assert_eq!(ok.to_string(), "custos-bk@backup.example.com:/srv/backups");
        assert_eq!(ok.remote_path("f.tar"), "/srv/backups/f.tar");
        let v6 = ScpTarget::new("[2001:db8::5]", Some(2222), "/", "root").expect("v6");
        assert_eq!(v6.host.as_str(), "2001:db8::5");
        assert_eq!(v6.to_string(), "root@[2001:db8::5]:/ (port 2222)");
        assert_eq!(v6.remote_path("f.tar"), "/f.tar");
        assert!(ScpTarget::new("10.0.0.5", Some(22), "/b", "u").is_ok());
        assert!(ScpTarget::new("127.0.0.1", Some(22), "/b", "u").is_ok());
        for (host, port, dir, user, field) in [
            ("", None, "/b", "u", "target_host"),
            ("bad host", None, "/b", "u", "target_host"),
            ("0.0.0.0", None, "/b", "u", "target_host"),
            ("224.0.0.1", None, "/b", "u", "target_host"),
            ("[10.0.0.1]", None, "/b", "u", "target_host"),
            ("1.2.3", None, "/b", "u", "target_host"),
            ("h\"x", None, "/b", "u", "target_host"),
            ("h", Some(0), "/b", "u", "target_port"),
            ("h", Some(65536), "/b", "u", "target_port"),
            ("h", None, "", "u", "target_directory"),
            ("h", None, "backups", "u", "target_directory"),
            ("h", None, "/a'b", "u", "target_directory"),
            ("h", None, "/a\"b", "u", "target_directory"),
            ("h", None, "/a\nb", "u", "target_directory"),
            ("h", None, "/a/$(reboot)", "u", "target_directory"),
            ("h", None, "/a/../etc", "u", "target_directory"),
            ("h", None, "/b", "", "target_user"),
            ("h", None, "/b", "-x", "target_user"),
            ("h", None, "/b", "a b", "target_user"),
            ("h", None, "/b", "a@b", "target_user"),
        ] {
            let e = ScpTarget::new(host, port, dir, user).expect_err(host);
            assert_eq!(field_of(e), field, "{host:?} {port:?} {dir:?} {user:?}");
        }
        assert!(ScpTarget::new("h", None, &format!("/{}", "d".repeat(1024)), "u").is_err());
        assert!(ScpTarget::new("h", None, "/b", &"u".repeat(33)).is_err());
    }

    #[test]
    fn settings_are_for_system_administrators_and_audited() {
        let (_d, s) = store();
        let admin = system_actor(&s);
        let sched = Schedule::new(
            Frequency::Weekly,
            TimeOfDay::parse("time", "03:15").expect("t"),
            Some(Weekday::Sunday),
        )
        .expect("schedule");
        let target = ScpTarget::new("backup.example.com", None, "/srv/b", "custos").expect("t");
        let view = s
            .set_automatic_backup(
                &admin,
                AutomaticBackupUpdate {
                    schedule: Some(sched),
                    target: Some(target.clone()),
                    forget_host_key: false,
                },
            )
            .expect("set");
        assert_eq!(
            (view.schedule, view.target.clone()),
            (Some(sched), Some(target.clone()))
        );
        assert!(view.next_run(now()).is_some());

        // A read-only System Administrator and a Security Administrator.
        for (login, t, ro) in [
            ("sysro", crate::model::UserType::System, true),
            ("secadm", crate::model::UserType::Security, false),
        ] {
            s.create_admin(
                &admin,
                NewAdmin {
                    login: login.into(),
                    description: String::new(),
                    rsa_user_id: None,
                    password: SecretString::new("Pass!w0rd-x"),
                    confirm_password: None,
                    user_type: t,
                    restrict_to_domain: None,
                    read_only: ro,
                },
            )
            .expect("admin");
        }
        let mut sysro = s.actor("sysro", "test", "api").expect("actor");
        sysro.must_change_password = false;
        let mut sec = s.actor("secadm", "test", "api").expect("actor");
        sec.must_change_password = false;
        assert_eq!(s.automatic_backup(&sysro).expect("read"), view);
        assert!(matches!(
            s.request_backup_now(&sysro),
            Err(Error::Forbidden(_))
        ));
        assert!(matches!(
            s.remove_automatic_backup(&sysro),
            Err(Error::Forbidden(_))
        ));
        assert!(matches!(s.automatic_backup(&sec), Err(Error::Forbidden(_))));
        assert!(matches!(
            s.backup_ssh_public_key(&sec, "h"),
            Err(Error::Forbidden(_))
        ));

        // Backup Now sets the flag once; the pusher takes it.
        s.request_backup_now(&admin).expect("now");
        assert!(
            s.take_backup_now_request_unchecked()
                .expect("take")
                .is_some()
        );
        assert!(
            s.take_backup_now_request_unchecked()
                .expect("take")
                .is_none()
        );

        // Pinning: first contact learns, then only that key matches.
        assert_eq!(
            s.check_backup_host_key_unchecked(&target, "SHA256:one")
                .expect("pin"),
            HostKeyCheck::Learned
        );
        assert_eq!(
            s.check_backup_host_key_unchecked(&target, "SHA256:one")
                .expect("pin"),
            HostKeyCheck::Matches
        );
        assert_eq!(
            s.check_backup_host_key_unchecked(&target, "SHA256:two")
                .expect("pin"),
            HostKeyCheck::Changed {
                pinned: "SHA256:one".into()
            }
        );
        let other = ScpTarget::new("other.example.com", None, "/srv/b", "custos").expect("t");
        assert_eq!(
            s.check_backup_host_key_unchecked(&other, "SHA256:two")
                .expect("pin"),
            HostKeyCheck::TargetChanged
        );
        // Another directory keeps the pin; another host forgets it.
        let moved_dir = ScpTarget::new("backup.example.com", None, "/srv/c", "custos").expect("t");
        let v = s
            .set_automatic_backup(
                &admin,
                AutomaticBackupUpdate {
                    target: Some(moved_dir),
                    ..Default::default()
                },
            )
            .expect("dir");
        assert_eq!(v.host_key_fingerprint.as_deref(), Some("SHA256:one"));
        let v = s
            .set_automatic_backup(
                &admin,
                AutomaticBackupUpdate {
                    target: Some(other),
                    ..Default::default()
                },
            )
            .expect("host");
        assert_eq!(v.host_key_fingerprint, None);
        let e = s
            .set_automatic_backup(
                &admin,
                AutomaticBackupUpdate {
                    forget_host_key: true,
                    ..Default::default()
                },
            )
            .expect_err("nothing pinned");
        assert_eq!(field_of(e), "forget_host_key");

        // The history and its audit entries.
        let run = |error: Option<&str>, attempt, retry| BackupRun {
            kind: RunKind::Now,
            attempt,
            attempts: 3,
            target: target.clone(),
            file_name: error
                .is_none()
                .then(|| "backup_config_h_2026_01_01_0000.tar".to_owned()),
            bytes: error.is_none().then_some(1234),
            error: error.map(str::to_owned),
            retry_in_secs: retry,
        };
        s.record_backup_run_unchecked(&run(Some("connection refused"), 1, Some(60)))
            .expect("run");
        s.record_backup_run_unchecked(&run(None, 2, None))
            .expect("run");
        let h = s.backup_history(&sysro, 10).expect("history");
        assert_eq!(h.len(), 2);
        assert!(h[0].success && h[0].bytes == Some(1234) && h[0].attempt == 2);
        assert!(!h[1].success && h[1].retry_in_secs == Some(60));
        assert_eq!(
            field_of(s.backup_history(&admin, 0).expect_err("limit")),
            "limit"
        );

        // Remove clears schedule and target but keeps the SSH key.
        let key = s
            .backup_ssh_public_key(&admin, "custos.example.com")
            .expect("key");
        assert!(
            key.starts_with("ecdsa-sha2-nistp256 AAAA")
                && key.ends_with(" custos@custos.example.com"),
            "{key}"
        );
        let v = s.remove_automatic_backup(&admin).expect("remove");
        assert_eq!(v.schedule, None);
        assert_eq!(v.target, None);
        assert_eq!(
            s.backup_ssh_public_key(&sysro, "other").expect("same key"),
            key
        );
        assert!(matches!(
            s.request_backup_now(&admin),
            Err(Error::Conflict {
                field: "target",
                ..
            })
        ));

        let log = s.audit_log(&admin, &AuditQuery::default()).expect("log");
        let has = |who: &str, sev: Severity, start: &str| {
            log.entries
                .iter()
                .any(|e| e.who == who && e.severity == sev && e.what.starts_with(start))
        };
        assert!(has(
            "admin",
            Severity::Info,
            "changed the automatic backup: schedule weekly on Sunday at 03:15 UTC (3:15 AM); SCP target custos@backup.example.com:/srv/b"
        ));
        assert!(has(
            "admin",
            Severity::Info,
            "requested Backup Now to custos@backup.example.com:/srv/b"
        ));
        assert!(has(
            "admin",
            Severity::Info,
            "removed the automatic backup schedule and settings"
        ));
        assert!(has(
            BACKUPD_LOGIN,
            Severity::Info,
            "learned the host key of the backup target backup.example.com:22"
        ));
        assert!(has(
            BACKUPD_LOGIN,
            Severity::Error,
            "backup push to custos@backup.example.com:/srv/b failed: connection refused (attempt 1 of 3; next attempt in 60 s)"
        ));
        assert!(has(
            BACKUPD_LOGIN,
            Severity::Info,
            "backup pushed to custos@backup.example.com:/srv/b: backup_config_h_2026_01_01_0000.tar (1234 bytes)"
        ));
        assert!(has(
            "system",
            Severity::Info,
            "generated the appliance's SSH key for automatic backups"
        ));
        assert!(log.entries.iter().all(|e| !e.what.contains("PRIVATE KEY")));
    }

    #[test]
    fn the_private_key_is_sealed_and_the_cli_audits_as_cliadmin() {
        let (_dir, s) = store();
        let session = test_session();
        let key = s
            .backup_ssh_key_unchecked("custos.example.com")
            .expect("key");
        assert!(
            key.private_key_pem
                .expose()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        for bytes in crate::store::test_support::stored_bytes(&s) {
            assert!(
                !bytes.windows(11).any(|w| w == b"PRIVATE KEY"),
                "private key in clear on disk"
            );
        }
        let sched = Schedule::new(
            Frequency::Daily,
            TimeOfDay::parse("time", "23:45").expect("t"),
            None,
        )
        .expect("s");
        s.cli_set_backup_schedule(&session, sched)
            .expect("schedule");
        assert!(matches!(
            s.cli_request_backup_now(&session),
            Err(Error::Conflict { .. })
        ));
        s.cli_set_backup_target(
            &session,
            ScpTarget::new("10.1.2.3", Some(2022), "/b", "bk").expect("t"),
        )
        .expect("target");
        s.cli_request_backup_now(&session).expect("now");
        assert!(
            s.cli_automatic_backup(&session)
                .expect("view")
                .now_requested_at
                .is_some()
        );
        assert_eq!(
            s.cli_backup_ssh_public_key(&session, "x").expect("pub"),
            key.public_key
        );
        let log = s
            .audit_log(&system_actor(&s), &AuditQuery::default())
            .expect("log");
        assert!(log.entries.iter().any(|e| e.who == crate::store::CLI_LOGIN
            && e.via == "cli"
            && e.what == "changed the automatic backup: schedule daily at 23:45 UTC (11:45 PM)"));
        assert!(log.entries.iter().any(|e| e.who == crate::store::CLI_LOGIN
            && e.what == "changed the automatic backup: SCP target bk@10.1.2.3:/b (port 2022)"));
    }
}
