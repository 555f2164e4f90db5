//! The appliance store: one SQLite database in WAL mode with full fsync,
//! versioned migrations, and a single connection behind a mutex, so there is
//! exactly one writer and every acknowledged write is on disk.
//!
//! Each public operation runs in one transaction: the permission check, the
//! field rules, the change and its audit entry commit together or not at all.

mod admins;
mod audit;
mod backup;
mod backup_schedule;
mod cli;
pub mod db;
mod domains;
mod email;
mod ha;
mod hosts;
mod keys;
mod licence;
mod moving;
mod prefs;
mod snmp;
mod system;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use db::{Conn, Mode, OptionalExtension, Tx, params};
use time::OffsetDateTime;

use crate::access::{Actor, Membership};
use crate::crypto::MasterKey;
use crate::model::{Severity, fmt_time, roles_from_string};
use crate::{Error, Result};

pub use admins::{AdminUpdate, AdminView, LoginOutcome, NewAdmin};
pub use audit::{
    ARCHIVE_DIR, AUDIT_MAX_ROWS_DEFAULT, AuditEntry, AuditPage, AuditQuery, DISK_RESERVE_DEFAULT,
    REFUSAL_WINDOW, RefusalKind,
};
pub use backup::{BackupInfo, RestoreReport, ShareState, WrapperStatus, backup_file_name};
pub use backup_schedule::{
    AutomaticBackup, AutomaticBackupUpdate, BACKUPD_LOGIN, BackupHistoryEntry, BackupRun,
    BackupSshKey, DEFAULT_SSH_PORT, Frequency, HostKeyCheck, RunKind, Schedule, ScpTarget,
    TargetHost, TimeOfDay, WEEKDAYS, parse_weekday, ssh_fingerprint_of_sha256, weekday_name,
    weekday_title,
};
pub use cli::{CLI_LOGIN, CliAccount, CliSession, PasswordProof};
pub use domains::{DomainView, MemberView, NewDomain};
pub use email::{
    EmailGroupUpdate, EmailGroupView, Milestone, NOTIFYD_VIA, NewEmailGroup, Notice, NoticeType,
    SMTP_NOT_SET, SecretUpdate, SmtpConfig, SmtpSecurity, SmtpUpdate, SmtpView,
    check_email_address, parse_threshold,
};
pub use ha::{
    HaNodeView, HaRole, HaStatus, HostFailover, JoinedPrimary, NodeCertificate, ReplicationLine,
    joined_primary, node_identity_in,
};
pub use hosts::{HostView, KeyRelease, NewSecret, Registration, SECRET_REFUSAL, SecretView};
pub use keys::{KeyVersionView, KeyView, NewKey, Rotated};
pub use licence::LicenceView;
pub use moving::MoveReport;
pub use prefs::{Preferences, PreferencesUpdate};
pub use snmp::{
    AclEntry, COMMUNITY_DEFAULT, ENTERPRISE_OID, SNMP_OBJECTS, SnmpAgentConfig, SnmpObject,
    SnmpSettings, SnmpUpdate,
};
pub use system::Identities;

/// The numbers of the field rules, for the API document (custos-keyd's
/// `openapi.rs`), so it states the rules the store applies.
pub mod limits {
    pub use super::audit::MAX_PAGE as AUDIT_PAGE_MAX;
    pub use super::backup_schedule::{HISTORY_MAX, TARGET_DIRECTORY_MAX, TARGET_USER_MAX};
    pub use super::email::{ADDRESS_MAX, FILTER_MAX, GROUP_NAME_MAX, MAX_RECIPIENTS, SUBJECT_MAX};
    pub use super::prefs::{LOCKOUT_MINUTES_MAX, MAX_FAILED_LOGINS_MAX, SESSION_TIMEOUT_MAX};
    pub use super::snmp::{ACL_MAX, COMMUNITY_MAX, SYS_TEXT_MAX};
}

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "custos.db";

/// The file in the data directory that names the store's engine: absent,
/// the SQLite database `custos.db` beside it; `postgresql <conninfo>` (one
/// line, libpq's key=value form), that PostgreSQL database. Every program
/// that opens the store (keyd, the CLI) reads it, so moving a store to
/// PostgreSQL moves all of them.
pub const BACKEND_FILE: &str = "store.backend";

/// Which engine holds the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    /// libpq connection parameters, e.g. `host=/run/postgresql dbname=custos`.
    Postgres(String),
}

impl Backend {
    /// The engine named in `dir`'s [`BACKEND_FILE`].
    pub fn of(dir: &Path) -> Result<Backend> {
        let path = dir.join(BACKEND_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Backend::parse(text.trim()).map_err(|rule| Error::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, rule),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Backend::Sqlite),
            Err(source) => Err(Error::Io { path, source }),
        }
    }

    fn parse(text: &str) -> std::result::Result<Backend, String> {
        match text.split_once(char::is_whitespace) {
            _ if text == "sqlite" => Ok(Backend::Sqlite),
            Some(("postgresql", conninfo)) if !conninfo.trim().is_empty() => {
                Ok(Backend::Postgres(conninfo.trim().to_owned()))
            }
            _ => Err("must be `sqlite` or `postgresql <connection parameters>`".into()),
        }
    }

    /// Names this engine in `dir` for every later opening, atomically.
    pub fn record(&self, dir: &Path) -> Result<()> {
        let text = match self {
            Backend::Sqlite => "sqlite\n".to_owned(),
            Backend::Postgres(c) => format!("postgresql {c}\n"),
        };
        write_atomic(&dir.join(BACKEND_FILE), text.as_bytes())
    }
}

/// The migrations, in order; the schema version is their count.
///
/// A PostgreSQL store starts at [`PG_BASELINE`]: the schema those
/// migrations build, in PostgreSQL's words (`pg_schema.sql`); every later
/// migration exists in both dialects, `PG_MIGRATIONS[i]` beside
/// `MIGRATIONS[PG_BASELINE + i]`.
const MIGRATIONS: &[&str] = &[
    include_str!("schema_v1.sql"),
    include_str!("schema_v2.sql"),
    include_str!("schema_v3.sql"),
    include_str!("schema_v4.sql"),
    include_str!("schema_v5.sql"),
    include_str!("schema_v6.sql"),
    include_str!("schema_v7.sql"),
    include_str!("schema_v8.sql"),
    include_str!("schema_v9.sql"),
    include_str!("schema_v10.sql"),
];

/// The schema version `pg_schema.sql` creates.
const PG_BASELINE: i64 = 8;
const PG_SCHEMA: &str = include_str!("pg_schema.sql");
const PG_MIGRATIONS: &[&str] = &[
    include_str!("pg_schema_v9.sql"),
    include_str!("pg_schema_v10.sql"),
];

pub struct Store {
    conn: Mutex<Conn>,
    backend: Mutex<Backend>,
    /// The primary of this failover, for its refusals (empty: unknown).
    primary: Mutex<String>,
    /// Set on a former primary that found another node made primary in its
    /// place (HA fencing): the new primary's name. Every write is refused.
    fenced: Mutex<Option<String>>,
    /// The key the store's secrets are sealed under: this node's own, or on
    /// a failover the group's (the primary's), which it received once.
    master: MasterKey,
    /// This node's own key: what is the node's and never replicates (its HA
    /// identity, the group's key itself) is sealed under it.
    machine: MasterKey,
    dir: PathBuf,
    release_audit: Mutex<std::collections::HashMap<(i64, i64, i64), OffsetDateTime>>,
    /// Repeated refusals being counted (audit.rs).
    refusals: audit::Refusals,
    /// Bytes the data partition keeps free: below, non-essential writes
    /// are skipped (audit.rs).
    disk_reserve: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, with its master key, on the
    /// engine `dir` names (see [`BACKEND_FILE`]).
    pub fn open(dir: &Path) -> Result<Store> {
        let backend = Backend::of(dir)?;
        Store::open_with(dir, backend)
    }

    /// Opens (or creates) the store in `dir` on `backend`. The data
    /// directory keeps the master key and the audit archive on either.
    pub fn open_with(dir: &Path, backend: Backend) -> Result<Store> {
        let io = |source| Error::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let machine = MasterKey::load_or_create(dir)?;
        // A failover's store is the group's: sealed under the group's key.
        let master = match &backend {
            Backend::Postgres(_) => ha::group_key(dir, &machine)?,
            Backend::Sqlite => None,
        };
        let master = match master {
            Some(key) => key,
            None => machine.adopt(machine.expose_for_failover().expose())?,
        };
        let conn = connect(dir, &backend)?;
        let store = Store {
            conn: Mutex::new(conn),
            backend: Mutex::new(backend),
            primary: Mutex::new(String::new()),
            fenced: Mutex::new(None),
            master,
            machine,
            dir: dir.to_path_buf(),
            release_audit: Mutex::new(Default::default()),
            refusals: Default::default(),
            disk_reserve: audit::DISK_RESERVE_DEFAULT.into(),
        };
        // A failover's store is the primary's, defaults and all.
        if !store.is_failover()? {
            store.ensure_defaults()?;
        }
        own_like_dir(dir)?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The engine this store is on.
    pub fn backend(&self) -> Backend {
        self.backend.lock().expect("backend mutex poisoned").clone()
    }

    /// How the master key is kept at rest (sealed to a TPM, or on disk).
    pub fn master_key_protection(&self) -> crate::crypto::KeyProtection {
        self.master.protection()
    }

    /// Runs `f` in one immediate transaction; commits when it returns Ok.
    fn write<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        if let Some(primary) = self.fenced_by() {
            return Err(Error::Failover { primary });
        }
        let mut conn = self.conn.lock().expect("store mutex poisoned");
        let done = (|| {
            let tx = conn.begin(Mode::Write)?;
            moving::refuse_if_moved(&tx)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })();
        match done {
            Err(Error::Store(e)) if e.is_read_only() => Err(Error::Failover {
                primary: self.primary_name(),
            }),
            other => other,
        }
    }

    /// Whether the store is a read-only replica (its PostgreSQL is a
    /// standby: this appliance is an HA failover).
    pub fn is_failover(&self) -> Result<bool> {
        let mut conn = self.conn.lock().expect("store mutex poisoned");
        if !conn.is_postgres() {
            return Ok(false);
        }
        Ok(conn.query_row("SELECT pg_is_in_recovery()", params![], |r| r.get(0))?)
    }

    /// Fences this store (HA): `primary` was made primary in this node's
    /// place, so this node takes no change from now on.
    pub fn fence(&self, primary: &str) {
        *self.fenced.lock().expect("fence mutex poisoned") = Some(primary.to_owned());
    }

    /// The node that superseded this one, when it is fenced.
    pub fn fenced_by(&self) -> Option<String> {
        self.fenced.lock().expect("fence mutex poisoned").clone()
    }

    /// The primary a failover's refusals name (set by the HA setup).
    pub fn set_primary_name(&self, name: &str) {
        *self.primary.lock().expect("primary mutex poisoned") = name.to_owned();
    }

    fn primary_name(&self) -> String {
        self.primary.lock().expect("primary mutex poisoned").clone()
    }

    /// Runs `f` in a read transaction (a consistent snapshot).
    fn read<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().expect("store mutex poisoned");
        let tx = conn.begin(Mode::Read)?;
        let out = f(&tx)?;
        tx.finish()?;
        Ok(out)
    }

    /// A second connection to the same database, for a long read (a backup)
    /// that must not hold the store's own connection.
    fn reader(&self) -> Result<Conn> {
        connect(&self.dir, &self.backend())
    }

    fn ensure_defaults(&self) -> Result<()> {
        self.write(|tx| {
            admins::ensure_builtin_admin(tx)?;
            cli::ensure_cli_account(tx)?;
            Ok(())
        })
    }
}

/// The key service runs as its own user while the admin CLI runs as root:
/// whichever opens the store first creates its files, so root hands them to
/// the data directory's owner (otherwise the service could not write its own
/// write-ahead log after the CLI had created it).
fn own_like_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let meta = std::fs::metadata(dir).map_err(io(dir))?;
    let (uid, gid) = (meta.uid(), meta.gid());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let path = e.path();
        let m = e.metadata().map_err(io(&path))?;
        if m.is_file() && (m.uid() != uid || m.gid() != gid) {
            // Only root may give files away; anyone else owns what it made.
            match give_away(&path, uid, gid) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
    }
    Ok(())
}

/// Changes the owner of `path` itself, never of what it points to: the data
/// directory belongs to the service's user, who could swap a file for a
/// symbolic link between the check and the change (root would then hand
/// any file of the system to that user).
fn give_away(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

/// A raw connection to the database of the store in `dir`, on the engine
/// `dir` names, its schema brought up to date: for tests that look at or
/// stage rows as the appliance's programs write them.
pub fn open_database(dir: &Path) -> Result<Conn> {
    connect(dir, &Backend::of(dir)?)
}

/// Replaces `path` with `data` so that a crash leaves the old or the new
/// file, never part of one: a private temporary file beside it, flushed,
/// renamed over it, the directory flushed.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

/// One connection to the store's database, its schema brought up to date.
fn connect(dir: &Path, backend: &Backend) -> Result<Conn> {
    match backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(dir.join(DB_FILE)).map_err(db::DbError::from)?;
            let setup = || -> rusqlite::Result<()> {
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", "FULL")?;
                conn.busy_timeout(std::time::Duration::from_secs(10))?;
                // Migrations run with foreign keys off (a table rebuild must
                // not cascade; the bundled SQLite turns them on by default)
                // and check them before each commit.
                conn.pragma_update(None, "foreign_keys", "OFF")
            };
            setup().map_err(db::DbError::from)?;
            let mut conn = Conn::Lite(conn);
            migrate(&mut conn)?;
            if let Conn::Lite(c) = &conn {
                c.pragma_update(None, "foreign_keys", "ON")
                    .map_err(db::DbError::from)?;
            }
            Ok(conn)
        }
        Backend::Postgres(conninfo) => {
            let mut conn = Conn::Pg(Box::new(db::PgConn::connect(conninfo)?));
            let standby: bool =
                conn.query_row("SELECT pg_is_in_recovery()", params![], |r| r.get(0))?;
            if standby {
                // A standby replays the primary's schema: this software
                // must be at the same version, and migrates nothing.
                let version: i64 =
                    conn.query_row("SELECT version FROM schema_version", params![], |r| {
                        r.get(0)
                    })?;
                let supported = MIGRATIONS.len() as i64;
                if version != supported {
                    return Err(Error::conflict(
                        "store",
                        format!(
                            "the primary's store is at schema version {version} and this software at {supported}: upgrade both to the same release"
                        ),
                    ));
                }
            } else {
                migrate(&mut conn)?;
            }
            Ok(conn)
        }
    }
}

/// Brings the schema up to date. Each step reads the version inside a
/// write-locked transaction, so daemons opening a fresh store at the same
/// moment migrate it once between them.
fn migrate(conn: &mut Conn) -> Result<()> {
    if conn.is_postgres() {
        return migrate_pg(conn);
    }
    let supported = MIGRATIONS.len() as i64;
    loop {
        let tx = conn.begin(Mode::Write)?;
        let version: i64 = tx.query_row("PRAGMA user_version", params![], |r| r.get(0))?;
        if version >= moving::MOVED {
            return Err(Error::conflict(
                "store",
                "this SQLite store moved to PostgreSQL; open the store its data directory's store.backend names",
            ));
        }
        if version > supported {
            return Err(Error::SchemaTooNew {
                found: version,
                supported,
            });
        }
        if version == supported {
            return Ok(());
        }
        tx.execute_batch(MIGRATIONS[version as usize])?;
        let broken: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", params![], |r| r.get(0))
            .optional()?;
        if let Some(table) = broken {
            return Err(Error::conflict(
                "store",
                format!(
                    "migration to version {} leaves broken references in {table}",
                    version + 1
                ),
            ));
        }
        tx.execute_batch(&format!("PRAGMA user_version = {}", version + 1))?;
        tx.commit()?;
        tracing::info!(version = version + 1, "store migrated");
    }
}

/// PostgreSQL's migrations: the baseline schema on an empty database, then
/// the later steps, each in one write-locked transaction (PostgreSQL's DDL
/// is transactional) that records its version in `schema_version`.
fn migrate_pg(conn: &mut Conn) -> Result<()> {
    let supported = MIGRATIONS.len() as i64;
    loop {
        let tx = conn.begin(Mode::Write)?;
        let exists: bool = tx.query_row(
            "SELECT to_regclass('schema_version') IS NOT NULL",
            params![],
            |r| r.get(0),
        )?;
        let version: i64 = if exists {
            tx.query_row("SELECT version FROM schema_version", params![], |r| {
                r.get(0)
            })?
        } else {
            0
        };
        if version > supported {
            return Err(Error::SchemaTooNew {
                found: version,
                supported,
            });
        }
        if version == supported {
            return Ok(());
        }
        let next = if version == 0 {
            tx.execute_batch(PG_SCHEMA)?;
            PG_BASELINE
        } else {
            let step = usize::try_from(version - PG_BASELINE).unwrap_or(usize::MAX);
            let sql = PG_MIGRATIONS.get(step).ok_or_else(|| {
                Error::conflict(
                    "store",
                    format!("no PostgreSQL migration from version {version}"),
                )
            })?;
            tx.execute_batch(sql)?;
            version + 1
        };
        tx.execute("UPDATE schema_version SET version = ?1", params![next])?;
        tx.commit()?;
        tracing::info!(version = next, engine = "postgresql", "store migrated");
    }
}

pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Writes one audit entry inside the caller's transaction.
pub(crate) fn audit(
    tx: &Tx<'_>,
    who: &str,
    source: &str,
    via: &str,
    severity: Severity,
    domain_id: Option<i64>,
    what: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO audit(at, who, source, via, severity, domain_id, what) VALUES (?1,?2,?3,?4,?5,?6,?7)",
        params![fmt_time(now()), who, source, via, severity.as_str(), domain_id, what],
    )?;
    Ok(())
}

pub(crate) fn audit_actor(
    tx: &Tx<'_>,
    actor: &Actor,
    severity: Severity,
    domain_id: Option<i64>,
    what: &str,
) -> Result<()> {
    audit(
        tx,
        &actor.login,
        &actor.source,
        actor.via,
        severity,
        domain_id,
        what,
    )
}

/// A domain's id by name, or NotFound.
pub(crate) fn domain_id(tx: &Tx<'_>, name: &str) -> Result<i64> {
    tx.query_row("SELECT id FROM domains WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()?
    .ok_or_else(|| Error::not_found("domain", name))
}

/// The actor's membership of a domain, if any.
pub(crate) fn membership(tx: &Tx<'_>, admin_id: i64, domain_id: i64) -> Result<Option<Membership>> {
    Ok(tx
        .query_row(
            "SELECT roles, enabled FROM domain_members WHERE admin_id = ?1 AND domain_id = ?2",
            params![admin_id, domain_id],
            |r| {
                Ok(Membership {
                    roles: roles_from_string(&r.get::<_, String>(0)?),
                    enabled: r.get(1)?,
                })
            },
        )
        .optional()?)
}

/// Looks a domain up for an actor, hiding its existence from administrators
/// who do not belong to it (they get "does not exist", not "forbidden").
pub(crate) fn domain_for(
    tx: &Tx<'_>,
    actor: &Actor,
    name: &str,
) -> Result<(i64, Option<Membership>)> {
    let id = domain_id(tx, name)?;
    let m = membership(tx, actor.id, id)?;
    if m.is_none() && actor.user_type != crate::model::UserType::System {
        return Err(Error::not_found("domain", name));
    }
    Ok((id, m))
}

impl Store {
    /// The actor's own membership of `domain` (roles, enabled), for a
    /// console that shows only the menus the actor may use. Domains the
    /// actor does not belong to are "not found", as everywhere else.
    pub fn my_membership(&self, actor: &Actor, domain: &str) -> Result<Option<Membership>> {
        actor.require_signed_in(crate::access::Access::Read)?;
        self.read(|tx| Ok(domain_for(tx, actor, domain)?.1))
    }

    /// Logins of every member of `domain` (dashboard: who else is signed in).
    pub fn member_logins(&self, actor: &Actor, domain: &str) -> Result<Vec<String>> {
        actor.require_signed_in(crate::access::Access::Read)?;
        self.read(|tx| {
            let (did, _) = domain_for(tx, actor, domain)?;
            Ok(tx
                .prepare_cached(
                    "SELECT a.login FROM domain_members m JOIN administrators a ON a.id = m.admin_id WHERE m.domain_id = ?1",
                )?
                .query_map([did], |r| r.get(0))?
                .collect::<db::DbResult<_>>()?)
        })
    }
}

pub(crate) fn opt_time(s: Option<String>) -> Result<Option<OffsetDateTime>> {
    s.map(|s| crate::model::parse_stored_time(&s)).transpose()
}

#[cfg(test)]
pub(crate) mod test_support {
    pub(crate) use super::backup::tests::material;
    pub(crate) use super::keys::tests::{key_admin, new_key};
    use super::*;
    use crate::model::UserType;

    /// A new, empty store on the engine the run asks for (see
    /// `pg_harness::wants_postgres`).
    pub fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open_with(dir.path(), backend()).expect("open");
        (dir, s)
    }

    /// A new, empty database on the engine the run asks for.
    pub fn backend() -> Backend {
        if crate::pg_harness::wants_postgres() {
            let server = crate::pg_harness::shared().expect("the test PostgreSQL server");
            Backend::Postgres(server.fresh_database().expect("a test database"))
        } else {
            Backend::Sqlite
        }
    }

    /// The bytes of every file the store's database keeps on disk (SQLite:
    /// the database and its write-ahead log; PostgreSQL: the database's
    /// own directory and the write-ahead log, after a checkpoint put every
    /// page on disk), for tests that look for a secret in clear.
    pub fn stored_bytes(s: &Store) -> Vec<Vec<u8>> {
        let mut files = vec![];
        match &s.backend() {
            Backend::Sqlite => {
                for name in [DB_FILE.to_owned(), format!("{DB_FILE}-wal")] {
                    files.push(s.dir().join(name));
                }
            }
            Backend::Postgres(_) => {
                let mut conn = s.conn.lock().expect("conn");
                let Conn::Pg(pg) = &mut *conn else {
                    unreachable!("a PostgreSQL store has a PostgreSQL connection")
                };
                let c = pg.client();
                c.batch_execute("CHECKPOINT").expect("checkpoint");
                let oid: u32 = c
                    .query_one(
                        "SELECT oid FROM pg_database WHERE datname = current_database()",
                        &[],
                    )
                    .expect("oid")
                    .get(0);
                let data = crate::pg_harness::shared().expect("server").data_dir();
                for dir in [data.join("base").join(oid.to_string()), data.join("pg_wal")] {
                    for e in std::fs::read_dir(&dir).expect("data directory").flatten() {
                        files.push(e.path());
                    }
                }
            }
        }
        files
            .iter()
            .filter(|p| p.is_file())
            .map(|p| std::fs::read(p).expect("a database file"))
            .collect()
    }

    /// Every row of every table, as text, in key order (a comparison of two
    /// stores, or of one before and after a change).
    pub fn rows_of_every_table(s: &Store) -> String {
        let mut out = String::new();
        s.read(|tx| {
            for (table, key) in super::moving::tables() {
                for r in
                    tx.query_all(&format!("SELECT * FROM {table} ORDER BY {key}"), params![])?
                {
                    out.push_str(&format!("{table}: {:?}\n", r.into_values()));
                }
            }
            Ok(())
        })
        .expect("rows");
        out
    }

    pub fn system_actor(s: &Store) -> Actor {
        let mut a = s.actor("admin", "test", "api").expect("actor");
        a.must_change_password = false;
        assert_eq!(a.user_type, UserType::System);
        a
    }
}

#[cfg(test)]
mod migration_tests {
    /// A migration added for SQLite has its PostgreSQL twin (and the
    /// baseline is not moved).
    #[test]
    fn every_migration_exists_on_both_engines() {
        assert_eq!(
            super::PG_BASELINE as usize + super::PG_MIGRATIONS.len(),
            super::MIGRATIONS.len()
        );
    }
}

#[cfg(test)]
mod own_tests {
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn giving_a_file_away_does_not_follow_a_symbolic_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("outside");
        std::fs::write(&target, "not the store's").expect("write");
        let link = dir.path().join("custos.db-wal");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let meta = std::fs::metadata(&target).expect("meta");
        let (me, my_gid) = (meta.uid(), meta.gid());
        // As root (the CLI) the owner really changes; as anyone else only
        // one's own ids are allowed, and the target must stay as it is.
        let (uid, gid) = if me == 0 { (4242, 4242) } else { (me, my_gid) };
        super::give_away(&link, uid, gid).expect("lchown");
        let t = std::fs::metadata(&target).expect("target");
        assert_eq!(t.uid(), me, "the link's target was given away");
        assert_eq!(
            std::fs::symlink_metadata(&link).expect("link").uid(),
            uid,
            "the link itself changes owner"
        );
    }
}

#[cfg(test)]
mod replication_tests {
    use super::test_support::{rows_of_every_table, system_actor};
    use super::*;
    use crate::model::DomainKind;
    use crate::pg_harness::PgServer;
    use crate::store::backup::tests::material;
    use crate::store::keys::tests::{key_admin, new_key};

    /// §11 on the engine: a store on a PostgreSQL primary, a failover's
    /// store on a hot standby made by a base backup and fed by streaming
    /// replication. The failover serves what the primary wrote within
    /// seconds, refuses every write naming the primary with nothing
    /// changed, and takes writes once promoted (`ha convert2primary`).
    #[test]
    fn a_standby_serves_the_primarys_keys_refuses_writes_and_takes_them_once_promoted() {
        let test = "store::replication_tests::a_standby_serves_the_primarys_keys_refuses_writes_and_takes_them_once_promoted";
        let primary = match PgServer::start(&[]) {
            Ok(s) => s,
            Err(why) => {
                crate::pg_harness::skip(test, &why);
                return;
            }
        };
        let conninfo = primary.fresh_database().expect("database");
        let dir_a = tempfile::tempdir().expect("tempdir");
        let a = Store::open_with(dir_a.path(), Backend::Postgres(conninfo.clone()))
            .expect("primary store");
        let sa = key_admin(&a);
        a.create_key(&sa, "D", new_key("recorder", false, None))
            .expect("key");

        let standby = PgServer::start_standby_of(&primary).expect("standby");
        // The group's master key travels to the failover once.
        let dir_b = tempfile::tempdir().expect("tempdir");
        std::fs::copy(
            dir_a.path().join(crate::crypto::MASTER_KEY_FILE),
            dir_b.path().join(crate::crypto::MASTER_KEY_FILE),
        )
        .expect("master key");
        let b = Store::open_with(
            dir_b.path(),
            Backend::Postgres(primary.conninfo_on(&standby, &conninfo)),
        )
        .expect("failover store");
        assert!(b.is_failover().expect("role"));
        assert!(!a.is_failover().expect("role"));
        assert_eq!(material(&b, "recorder", 1), material(&a, "recorder", 1));

        // A change on the primary streams over.
        a.rotate_key(&sa, "D", "recorder").expect("rotate");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let v2 = loop {
            let found = b.read(|tx| {
                Ok(
                    tx.query_row("SELECT COUNT(*) FROM key_versions", params![], |r| {
                        r.get::<_, i64>(0)
                    })?,
                )
            });
            if found.expect("read") == 2 {
                break material(&b, "recorder", 2);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "version 2 never reached the standby"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        assert_eq!(v2, material(&a, "recorder", 2));

        // Each side's view of the replication (`ha show`, the HA page).
        let on_a = a.ha_status_unchecked().expect("primary's status");
        assert!(
            on_a.replication.iter().any(|l| l.state == "streaming"),
            "{on_a:?}"
        );
        let on_b = b.ha_status_unchecked().expect("failover's status");
        assert!(matches!(on_b.role, HaRole::Failover { .. }), "{on_b:?}");
        assert!(on_b.last_synchronised.is_some(), "{on_b:?}");

        // Writes on the failover are refused, naming the primary, and
        // change nothing.
        b.set_primary_name("custos-a.example.com");
        let before = rows_of_every_table(&b);
        let sys_b = system_actor(&b);
        let e = b
            .create_domain(
                &sys_b,
                NewDomain {
                    name: "Refused".into(),
                    kind: DomainKind::Global,
                    organization: String::new(),
                    description: String::new(),
                    help_desk_information: None,
                    domain_administrator: None,
                },
            )
            .expect_err("a write on the failover");
        assert!(matches!(e, Error::Failover { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("make them on the primary custos-a.example.com"),
            "{e}"
        );
        let e = b
            .rotate_key(&key_actor(&b), "D", "recorder")
            .expect_err("rotation on the failover");
        assert!(matches!(e, Error::Failover { .. }), "{e:?}");
        assert_eq!(rows_of_every_table(&b), before);

        // Administrators sign in to read, against the primary's rows; a
        // wrong password is refused; neither is written anywhere.
        let good = crate::secret::SecretString::from("T3st!passw");
        let bad = crate::secret::SecretString::from("wrong");
        b.login("sa", &good, "10.0.0.9", "api")
            .expect("sign-in on the failover");
        assert!(matches!(
            b.login("sa", &bad, "10.0.0.9", "api"),
            Err(Error::BadCredentials)
        ));
        assert_eq!(rows_of_every_table(&b), before);

        // Promoted, it takes writes.
        let mut admin = postgres::Client::connect(&standby.conninfo("postgres"), postgres::NoTls)
            .expect("standby");
        admin
            .batch_execute("SELECT pg_promote(true, 60)")
            .expect("promote");
        assert!(!b.is_failover().expect("role"));
        let rotated = b
            .rotate_key(&key_actor(&b), "D", "recorder")
            .expect("rotation once promoted");
        assert_eq!(rotated.current_version, 3);
    }

    /// The Security Administrator `key_admin` made, on another store.
    fn key_actor(s: &Store) -> Actor {
        let mut a = s.actor("sa", "t", "api").expect("sa");
        a.must_change_password = false;
        a
    }
}

#[cfg(test)]
mod reconnect_tests {
    use super::*;

    /// A PostgreSQL restart closes the store's connection: the store
    /// connects again between transactions (the request that found it
    /// closed may fail; none after it does, and nothing runs twice).
    #[test]
    fn a_closed_postgresql_connection_is_opened_again() {
        let test = "store::reconnect_tests::a_closed_postgresql_connection_is_opened_again";
        let server = match crate::pg_harness::shared() {
            Ok(s) => s,
            Err(why) => {
                crate::pg_harness::skip(test, &why);
                return;
            }
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let conninfo = server.fresh_database().expect("database");
        let s = Store::open_with(dir.path(), Backend::Postgres(conninfo)).expect("store");
        let pid: i32 = s
            .read(|tx| Ok(tx.query_row("SELECT pg_backend_pid()", params![], |r| r.get(0))?))
            .expect("pid");
        let mut admin = postgres::Client::connect(&server.conninfo("postgres"), postgres::NoTls)
            .expect("admin");
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .expect("terminate");
        // The server ends the backend a moment later.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while admin
            .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
            .expect("activity")
            .is_some()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the backend never ended"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = s.preferences_unchecked();
        let sys = super::test_support::system_actor(&s);
        s.preferences(&sys).expect("the store works again");
        let again: i32 = s
            .read(|tx| Ok(tx.query_row("SELECT pg_backend_pid()", params![], |r| r.get(0))?))
            .expect("pid");
        assert_ne!(again, pid, "a new connection");
    }
}
