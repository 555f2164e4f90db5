//! The audit log (§4 Log and Reports, §16): who, when, what, from where, how severe.

use crate::store::db::{Value, params};
use serde::Serialize;

use super::{Store, audit_actor};
use crate::access::{Access, Actor};
use crate::model::{Role, Severity, UserType, roles_from_string};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub who: String,
    pub source: String,
    pub via: String,
    pub severity: Severity,
    pub domain: Option<String>,
    pub what: String,
}

#[derive(Debug, Default, Clone)]
pub struct AuditQuery {
    /// At or above this severity.
    pub severity: Option<Severity>,
    pub source: Option<String>,
    pub text: Option<String>,
    pub domain: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    pub total: i64,
    pub entries: Vec<AuditEntry>,
}

pub const MAX_PAGE: i64 = 1000;

impl Store {
    /// Entries the actor may see: all for System Administrators; for Domain
    /// Administrators their domains'; for Security Administrators the domains
    /// where they hold the Audit role.
    pub fn audit_log(&self, actor: &Actor, q: &AuditQuery) -> Result<AuditPage> {
        actor.require_signed_in(Access::Read)?;
        let limit = q.limit.unwrap_or(100);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::invalid(
                "limit",
                format!("must be between 1 and {MAX_PAGE}"),
            ));
        }
        let offset = q.offset.unwrap_or(0);
        if offset < 0 {
            return Err(Error::invalid("offset", "must not be negative"));
        }
        self.read(|tx| {
            let mut clauses: Vec<String> = vec![];
            let mut args: Vec<Value> = vec![];
            if actor.user_type != UserType::System {
                let mut stmt = tx.prepare("SELECT domain_id, roles, enabled FROM domain_members WHERE admin_id = ?1")?;
                let visible: Vec<i64> = stmt
                    .query_map([actor.id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, bool>(2)?)))?
                    .filter_map(|r| r.ok())
                    .filter(|(_, roles, enabled)| {
                        *enabled && (actor.user_type == UserType::Domain || roles_from_string(roles).contains(&Role::Audit))
                    })
                    .map(|(d, _, _)| d)
                    .collect();
                if visible.is_empty() {
                    return Err(Error::Forbidden(match actor.user_type {
                        UserType::Security => "viewing logs needs the audit role in a domain".into(),
                        _ => "you administer no domain whose log you could view".into(),
                    }));
                }
                let list = visible.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",");
                clauses.push(format!("a.domain_id IN ({list})"));
            }
            if let Some(s) = q.severity {
                let allowed: Vec<&str> = [Severity::Info, Severity::Warn, Severity::Error, Severity::Fatal]
                    .into_iter().filter(|x| *x >= s).map(|x| x.as_str()).collect();
                clauses.push(format!("a.severity IN ({})", allowed.iter().map(|x| format!("'{x}'")).collect::<Vec<_>>().join(",")));
            }
            if let Some(src) = &q.source {
                clauses.push("(a.source = ? OR a.via = ?)".into());
                args.push(Value::Text(src.clone()));
                args.push(Value::Text(src.clone()));
            }
            if let Some(t) = &q.text {
                clauses.push("(instr(lower(a.what), lower(?)) > 0 OR instr(lower(a.who), lower(?)) > 0)".into());
                args.push(Value::Text(t.clone()));
                args.push(Value::Text(t.clone()));
            }
            if let Some(d) = &q.domain {
                clauses.push("d.name = ?".into());
                args.push(Value::Text(d.clone()));
            }
            let filter = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
            let from = "FROM audit a LEFT JOIN domains d ON d.id = a.domain_id";
            let total: i64 = tx.query_row(&format!("SELECT COUNT(*) {from} {filter}"), crate::store::db::params_from_iter(args.iter()), |r| r.get(0))?;
            let mut page_args = args.clone();
            page_args.push(Value::Int(limit));
            page_args.push(Value::Int(offset));
            let mut stmt = tx.prepare(&format!(
                "SELECT a.id, a.at, a.who, a.source, a.via, a.severity, d.name, a.what {from} {filter} ORDER BY a.id DESC LIMIT ? OFFSET ?"))?;
            let entries = stmt
                .query_map(crate::store::db::params_from_iter(page_args.iter()), |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?, r.get::<_, String>(5)?, r.get::<_, Option<String>>(6)?, r.get::<_, String>(7)?))
                })?
                .map(|r| {
                    let (id, at, who, source, via, sev, domain, what) = r?;
                    Ok(AuditEntry { id, at, who, source, via, severity: Severity::parse(&sev)?, domain, what })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(AuditPage { total, entries })
        })
    }

    /// Records an event of a daemon (not an administrator's change).
    pub fn log_event(
        &self,
        who: &str,
        source: &str,
        via: &str,
        severity: Severity,
        what: &str,
    ) -> Result<()> {
        self.write(|tx| super::audit(tx, who, source, via, severity, None, what))
    }

    /// Records that an administrator did something outside the store
    /// (signed out, exported a report).
    pub fn log_action(&self, actor: &Actor, severity: Severity, what: &str) -> Result<()> {
        self.write(|tx| audit_actor(tx, actor, severity, None, what))
    }
}

// ---------------------------------------------------------------------------
// Repeated refusals (issue 12, item 6): a flood of failed sign-ins or
// registrations from one address writes a handful of rows, not one each.

/// Free bytes the data partition keeps by default: below, refusals are
/// only counted and the archive waits (64 MiB).
pub const DISK_RESERVE_DEFAULT: u64 = 64 * 1024 * 1024;

impl Store {
    /// Sets the disk reserve (key service flag `--disk-reserve-mb`).
    pub fn set_disk_reserve(&self, bytes: u64) {
        self.disk_reserve
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// The disk reserve in bytes.
    pub fn disk_reserve(&self) -> u64 {
        self.disk_reserve.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Free bytes for unprivileged writers on the data partition, if known.
    pub fn disk_available(&self) -> Option<u64> {
        let st = nix::sys::statvfs::statvfs(self.dir()).ok()?;
        Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
    }

    /// Whether the data partition is under its reserve (unknown: no).
    pub fn disk_short(&self) -> bool {
        let reserve = self.disk_reserve.load(std::sync::atomic::Ordering::Relaxed);
        self.disk_available().is_some_and(|free| free < reserve)
    }
}

/// What kind of refusal an entry records; refusals of one kind from one
/// source address are aggregated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    SignIn,
    Registration,
    /// A peer refused on keyd's local socket (issue 12, item 10).
    LocalSocket,
}

impl RefusalKind {
    fn plural(self) -> &'static str {
        match self {
            RefusalKind::SignIn => "failed sign-ins",
            RefusalKind::Registration => "failed registrations",
            RefusalKind::LocalSocket => "refused local socket connections",
        }
    }
}

/// How long refusals after the first one written are only counted.
pub const REFUSAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// Sources tracked one by one; beyond, refusals of a kind are counted
/// together under "other addresses".
const REFUSAL_SOURCES: usize = 1024;
const OTHER_SOURCES: &str = "other addresses";

#[derive(Debug)]
struct Window {
    started: std::time::Instant,
    /// Refusals counted (not written) since `started`.
    more: u64,
    who: String,
    via: String,
    domain_id: Option<i64>,
}

/// The open windows, in memory (bounded by [`REFUSAL_SOURCES`] per kind).
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    windows: std::sync::Mutex<std::collections::HashMap<WindowKey, Window>>,
    /// Milliseconds of a window; 0: [`REFUSAL_WINDOW`].
    window_ms: std::sync::atomic::AtomicU64,
}

impl Refusals {
    fn window(&self) -> std::time::Duration {
        match self.window_ms.load(std::sync::atomic::Ordering::Relaxed) {
            0 => REFUSAL_WINDOW,
            ms => std::time::Duration::from_millis(ms),
        }
    }
}

/// Kind, source address, and the reason for registrations (their reasons
/// are a fixed few, each worth its own entry; a sign-in's text changes
/// with every attempt).
type WindowKey = (RefusalKind, String, String);

/// A summary to write: source, who, via, domain, text.
type Summary = (String, String, String, Option<i64>, String);

fn summary(kind: RefusalKind, source: &str, reason: &str, more: u64, w: &Window) -> String {
    let secs = w.started.elapsed().as_secs().max(1);
    let why = if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    };
    format!(
        "{more} more {}{why} from {source} in the last {secs} s",
        kind.plural()
    )
}

impl Store {
    /// Sets the aggregation window (key service flag `--refusal-window`).
    pub fn set_refusal_window(&self, window: std::time::Duration) {
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        self.refusals
            .window_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records a refusal (a failed sign-in or registration) inside the
    /// caller's transaction: the first one of its kind from `source` is
    /// written; the following ones within [`REFUSAL_WINDOW`] are counted
    /// in memory and written as one summary entry ("N more failed sign-ins
    /// from 10.1.2.3 in the last 60 s") when the window closes
    /// ([`Store::flush_refusals`]) or the next refusal after it arrives.
    /// When the data partition is short of space the refusal is only
    /// counted.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn log_refusal(
        &self,
        tx: &crate::store::db::Tx<'_>,
        kind: RefusalKind,
        who: &str,
        source: &str,
        via: &str,
        domain_id: Option<i64>,
        what: &str,
    ) -> Result<()> {
        let now = std::time::Instant::now();
        let window = self.refusals.window();
        let mut map = self
            .refusals
            .windows
            .lock()
            .expect("refusals mutex poisoned");
        let reason = match kind {
            RefusalKind::SignIn => String::new(),
            RefusalKind::Registration | RefusalKind::LocalSocket => what.to_owned(),
        };
        let mut key = (kind, source.to_owned(), reason.clone());
        if !map.contains_key(&key) && map.len() >= REFUSAL_SOURCES {
            key = (kind, OTHER_SOURCES.to_owned(), reason);
        }
        let low_disk = self.disk_short();
        match map.get_mut(&key) {
            Some(w) if now.duration_since(w.started) < window || low_disk => {
                w.more += 1;
                Ok(())
            }
            Some(w) => {
                // The window is over: its summary, then this one anew.
                if w.more > 0 {
                    let text = summary(kind, &key.1, &key.2, w.more, w);
                    super::audit(
                        tx,
                        &w.who,
                        source,
                        &w.via,
                        Severity::Warn,
                        w.domain_id,
                        &text,
                    )?;
                }
                *w = Window {
                    started: now,
                    more: 0,
                    who: who.to_owned(),
                    via: via.to_owned(),
                    domain_id,
                };
                super::audit(tx, who, source, via, Severity::Warn, domain_id, what)
            }
            None => {
                map.insert(
                    key,
                    Window {
                        started: now,
                        more: u64::from(low_disk),
                        who: who.to_owned(),
                        via: via.to_owned(),
                        domain_id,
                    },
                );
                if low_disk {
                    return Ok(());
                }
                super::audit(tx, who, source, via, Severity::Warn, domain_id, what)
            }
        }
    }

    /// Records a peer refused on keyd's local socket (`source`: its uid),
    /// aggregated like the other refusals: the first of a reason is
    /// written, the next ones within the window are counted.
    pub fn log_local_refusal(&self, source: &str, what: &str) -> Result<()> {
        self.write(|tx| {
            self.log_refusal(
                tx,
                RefusalKind::LocalSocket,
                "custos-keyd",
                source,
                "local",
                None,
                what,
            )
        })
    }

    /// Writes the summaries of the windows that are over (all of them
    /// with `all`, at shutdown) and forgets quiet sources. Run by the key
    /// service's periodic task. Under the disk reserve the counts wait.
    pub fn flush_refusals(&self, all: bool) -> Result<usize> {
        if self.disk_short() {
            return Ok(0);
        }
        let now = std::time::Instant::now();
        let window = self.refusals.window();
        let due: Vec<Summary> = {
            let mut map = self
                .refusals
                .windows
                .lock()
                .expect("refusals mutex poisoned");
            let mut out = vec![];
            map.retain(|(kind, source, reason), w| {
                if !all && now.duration_since(w.started) < window {
                    return true;
                }
                if w.more > 0 {
                    out.push((
                        source.clone(),
                        w.who.clone(),
                        w.via.clone(),
                        w.domain_id,
                        summary(*kind, source, reason, w.more, w),
                    ));
                }
                false
            });
            out
        };
        let n = due.len();
        if n > 0 {
            self.write(|tx| {
                for (source, who, via, domain_id, text) in &due {
                    super::audit(tx, who, source, via, Severity::Warn, *domain_id, text)?;
                }
                Ok(())
            })?;
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// Retention (issue 12, item 6): the table keeps at most a number of rows;
// older ones go to gzip archives in DATA/audit/ first, then are deleted.

/// Rows the audit table keeps by default (keyd `--audit-max-rows`).
pub const AUDIT_MAX_ROWS_DEFAULT: i64 = 1_000_000;
/// Rows moved into one archive file at most.
const ARCHIVE_BATCH: i64 = 100_000;
/// Archive files kept; the oldest beyond are removed.
pub const ARCHIVE_FILES: usize = 20;
/// The folder of the archives inside the data directory.
pub const ARCHIVE_DIR: &str = "audit";

#[derive(Serialize)]
struct ArchivedRow {
    id: i64,
    at: String,
    who: String,
    source: String,
    via: String,
    severity: String,
    domain_id: Option<i64>,
    what: String,
}

impl Store {
    /// Moves the rows beyond the newest `max_rows` into a new archive file
    /// (`DATA/audit/audit-<first id>-<last id>.jsonl.gz`, every field of
    /// each row as one JSON line, in order), synced to disk before those
    /// rows are deleted, so nothing is lost without being archived; keeps
    /// the newest [`ARCHIVE_FILES`] archives. Skipped under the disk
    /// reserve. The number of rows archived.
    pub fn archive_audit(&self, max_rows: i64) -> Result<usize> {
        use std::io::Write;
        if self.disk_short() {
            return Ok(0);
        }
        let rows: Vec<ArchivedRow> = self.read(|tx| {
            let count: i64 = tx.query_row("SELECT COUNT(*) FROM audit", params![], |r| r.get(0))?;
            let excess = (count - max_rows.max(0)).clamp(0, ARCHIVE_BATCH);
            if excess == 0 {
                return Ok(vec![]);
            }
            let mut stmt = tx.prepare(
                "SELECT id, at, who, source, via, severity, domain_id, what FROM audit ORDER BY id LIMIT ?1",
            )?;
            let rows = stmt
                .query_map([excess], |r| {
                    Ok(ArchivedRow {
                        id: r.get(0)?,
                        at: r.get(1)?,
                        who: r.get(2)?,
                        source: r.get(3)?,
                        via: r.get(4)?,
                        severity: r.get(5)?,
                        domain_id: r.get(6)?,
                        what: r.get(7)?,
                    })
                })?
                .collect::<crate::store::db::DbResult<Vec<_>>>()?;
            Ok(rows)
        })?;
        let (Some(first), Some(last)) = (rows.first().map(|r| r.id), rows.last().map(|r| r.id))
        else {
            return Ok(0);
        };
        let dir = self.dir().join(ARCHIVE_DIR);
        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let name = format!("audit-{first:012}-{last:012}.jsonl.gz");
        let path = dir.join(&name);
        let tmp = dir.join(format!(".{name}.tmp"));
        {
            let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            let mut gz = flate2::write::GzEncoder::new(
                std::io::BufWriter::new(file),
                flate2::Compression::default(),
            );
            for row in &rows {
                let line =
                    serde_json::to_string(row).map_err(|_| Error::Crypto("audit archive row"))?;
                gz.write_all(line.as_bytes()).map_err(io(&tmp))?;
                gz.write_all(b"\n").map_err(io(&tmp))?;
            }
            let file = gz
                .finish()
                .map_err(io(&tmp))?
                .into_inner()
                .map_err(|e| io(&tmp)(e.into_error()))?;
            file.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&dir))?;
        // Archived and on disk: now the rows may go.
        self.write(|tx| {
            tx.execute(
                "DELETE FROM audit WHERE id BETWEEN ?1 AND ?2",
                crate::store::db::params![first, last],
            )?;
            Ok(())
        })?;
        let mut archives: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl.gz"))
            })
            .collect();
        archives.sort();
        let excess = archives.len().saturating_sub(ARCHIVE_FILES);
        for old in &archives[..excess] {
            std::fs::remove_file(old).map_err(io(old))?;
            tracing::info!(file = %old.display(), "removed an old audit archive");
        }
        Ok(rows.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::store;

    fn rows(s: &Store, text: &str) -> Vec<String> {
        s.read(|tx| {
            Ok(tx
                .prepare("SELECT what FROM audit WHERE instr(what, ?1) > 0 ORDER BY id")?
                .query_map([text], |r| r.get(0))?
                .collect::<crate::store::db::DbResult<Vec<String>>>()?)
        })
        .expect("rows")
    }

    fn refuse(s: &Store, kind: RefusalKind, source: &str) {
        s.write(|tx| {
            s.log_refusal(
                tx,
                kind,
                "nobody",
                source,
                "api",
                None,
                "failed login: test",
            )
        })
        .expect("refusal");
    }

    #[test]
    fn a_flood_of_refusals_is_one_entry_and_one_summary() {
        let (_d, s) = store();
        for _ in 0..500 {
            refuse(&s, RefusalKind::SignIn, "10.1.2.3");
        }
        refuse(&s, RefusalKind::SignIn, "10.1.2.4");
        refuse(&s, RefusalKind::Registration, "10.1.2.3");
        assert_eq!(rows(&s, "failed login: test").len(), 3);
        // The window is still open: nothing to write yet.
        assert_eq!(s.flush_refusals(false).expect("flush"), 0);
        s.set_refusal_window(std::time::Duration::from_millis(1));
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(s.flush_refusals(false).expect("flush"), 1);
        let summary = rows(&s, "more failed");
        assert_eq!(summary.len(), 1, "{summary:?}");
        assert!(
            summary[0].starts_with("499 more failed sign-ins from 10.1.2.3 in the last"),
            "{}",
            summary[0]
        );
        // A new window starts with a written entry again.
        refuse(&s, RefusalKind::SignIn, "10.1.2.3");
        assert_eq!(rows(&s, "failed login: test").len(), 4);
    }

    #[test]
    fn under_the_disk_reserve_refusals_are_only_counted() {
        let (_d, s) = store();
        s.set_disk_reserve(u64::MAX);
        assert!(s.disk_short());
        for _ in 0..10 {
            refuse(&s, RefusalKind::Registration, "10.9.9.9");
        }
        assert!(rows(&s, "failed login: test").is_empty());
        assert_eq!(s.flush_refusals(true).expect("flush"), 0, "waits for room");
        s.set_disk_reserve(0);
        assert_eq!(s.flush_refusals(true).expect("flush"), 1);
        let summary = rows(&s, "more failed registrations");
        assert!(
            summary[0]
                .starts_with("10 more failed registrations (failed login: test) from 10.9.9.9"),
            "{summary:?}"
        );
    }

    #[test]
    fn the_tracked_sources_are_bounded() {
        let (_d, s) = store();
        for i in 0..(REFUSAL_SOURCES + 50) {
            refuse(
                &s,
                RefusalKind::SignIn,
                &format!("10.0.{}.{}", i / 256, i % 256),
            );
        }
        let n = s.refusals.windows.lock().expect("lock").len();
        assert!(n <= REFUSAL_SOURCES + 1, "{n}");
    }

    #[test]
    fn retention_archives_then_deletes() {
        use std::io::Read;
        let (d, s) = store();
        for i in 0..30 {
            s.log_event(
                "test",
                "10.0.0.1",
                "api",
                Severity::Info,
                &format!("event {i}"),
            )
            .expect("event");
        }
        let ids = |s: &Store| -> Vec<i64> {
            s.read(|tx| {
                Ok(tx
                    .prepare("SELECT id FROM audit ORDER BY id")?
                    .query_map(crate::store::db::params![], |r| r.get(0))?
                    .collect::<crate::store::db::DbResult<Vec<i64>>>()?)
            })
            .expect("ids")
        };
        let all = ids(&s);
        let moved = s.archive_audit(10).expect("archive");
        assert_eq!(moved, all.len() - 10);
        let kept = ids(&s);
        assert_eq!(kept, all[all.len() - 10..]);
        let dir = d.path().join(ARCHIVE_DIR);
        let files: Vec<_> = std::fs::read_dir(&dir).expect("dir").flatten().collect();
        assert_eq!(files.len(), 1);
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(files[0].path()).expect("open"))
            .read_to_string(&mut text)
            .expect("gunzip");
        let archived: Vec<i64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("json")["id"]
                    .as_i64()
                    .expect("id")
            })
            .collect();
        assert_eq!(archived, all[..all.len() - 10]);
        assert!(text.contains("\"what\":\"event 0\"") && text.contains("\"severity\":\"INFO\""));
        assert_eq!(
            s.archive_audit(10).expect("again"),
            0,
            "nothing beyond the limit"
        );
    }
}
