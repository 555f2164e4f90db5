//! Moving a running store from SQLite into PostgreSQL (§11: when the first
//! failover is added, the primary's store moves into its local PostgreSQL,
//! which replicates it), without losing an acknowledged write.
//!
//! While the rows are copied the SQLite database is held in an immediate
//! (write-locked) transaction and this process's connection is held too, so
//! no write lands on either side. The copy commits on PostgreSQL and is
//! counted table by table; then `store.backend` names PostgreSQL, and the
//! SQLite database is marked moved in the same transaction that held it
//! ([`MOVED`] as its schema version). A crash before `store.backend` is
//! replaced leaves the SQLite store in charge (the copy is ignored and a
//! new move refuses the non-empty database); after, PostgreSQL is, with
//! every row. A program that still holds the SQLite database open (the CLI
//! in another session) finds the mark at its next write and is refused
//! rather than writing where nobody reads.

use super::db::{Mode, Tx, params};
use super::{Backend, MIGRATIONS, Store, connect};
use crate::{Error, Result};

/// SQLite's `user_version` once its store moved to PostgreSQL.
pub(super) const MOVED: i64 = 1_000_000;

/// Every table of the store, parents first, with the key its rows are
/// copied in order of.
const TABLES: &[(&str, &str)] = &[
    ("domains", "id"),
    ("administrators", "id"),
    ("domain_members", "domain_id, admin_id"),
    ("agent_keys", "id"),
    ("key_versions", "key_id, version"),
    ("registration_secrets", "domain_id"),
    ("hosts", "id"),
    ("preferences", "name"),
    ("system_identities", "name"),
    ("audit", "id"),
    ("cli_account", "login"),
    ("os_settings", "name"),
    ("licence", "id"),
    ("snmp_settings", "id"),
    ("snmp_acl", "id"),
    ("email_smtp", "id"),
    ("email_groups", "id"),
    ("email_outbox", "id"),
    ("email_progress", "name"),
    ("wrapper_key", "id"),
    ("wrapper_shares", "login"),
    ("backup_automatic", "id"),
    ("backup_ssh_key", "id"),
    ("backup_history", "id"),
    ("ha_nodes", "id"),
];

/// Every table of the store with its key.
#[cfg(test)]
pub(super) fn tables() -> &'static [(&'static str, &'static str)] {
    TABLES
}

/// The tables whose ids come from an identity sequence on PostgreSQL.
const IDENTITIES: &[&str] = &[
    "domains",
    "administrators",
    "agent_keys",
    "hosts",
    "audit",
    "snmp_acl",
    "email_groups",
    "email_outbox",
    "backup_history",
    "ha_nodes",
];

/// Refuses a write on a SQLite store that moved to PostgreSQL.
pub(super) fn refuse_if_moved(tx: &Tx<'_>) -> Result<()> {
    if tx.is_postgres() {
        return Ok(());
    }
    let version: i64 = tx.query_row("PRAGMA user_version", params![], |r| r.get(0))?;
    if version >= MOVED {
        return Err(Error::conflict(
            "store",
            "this store moved to PostgreSQL (store.backend); start the program again to use it",
        ));
    }
    Ok(())
}

/// What a move copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveReport {
    /// Rows copied, per table, in [`TABLES`] order.
    pub rows: Vec<(String, u64)>,
}

impl Store {
    /// Moves this store from SQLite into the empty PostgreSQL database
    /// `conninfo` names, and goes on against it. Refused, with nothing
    /// changed, when the store is not on SQLite or the database is not
    /// empty.
    pub fn move_to_postgres(&self, conninfo: &str) -> Result<MoveReport> {
        let target = Backend::Postgres(conninfo.to_owned());
        let mut conn = self.conn.lock().expect("store mutex poisoned");
        if conn.is_postgres() {
            return Err(Error::conflict(
                "store",
                "the store is on PostgreSQL already",
            ));
        }
        let mut pg = connect(&self.dir, &target)?;
        let report = {
            let from = conn.begin(Mode::Write)?;
            refuse_if_moved(&from)?;
            let to = pg.begin(Mode::Write)?;
            let report = copy(&from, &to)?;
            to.commit()?;
            target.record(&self.dir)?;
            from.execute_batch(&format!(
                "PRAGMA user_version = {}",
                MOVED + MIGRATIONS.len() as i64
            ))?;
            from.commit()?;
            report
        };
        let old = std::mem::replace(&mut *conn, pg);
        drop(old);
        *self.backend.lock().expect("backend mutex poisoned") = target;
        drop(conn);
        tracing::info!(tables = report.rows.len(), "store moved to PostgreSQL");
        Ok(report)
    }
}

/// Copies every row, checks the counts, and sets the identity sequences so
/// no id is handed out twice (SQLite's AUTOINCREMENT high-water marks
/// included: a deleted domain's id stays used).
fn copy(from: &Tx<'_>, to: &Tx<'_>) -> Result<MoveReport> {
    let holds: bool = to.query_row(
        "SELECT EXISTS(SELECT 1 FROM administrators) OR EXISTS(SELECT 1 FROM audit)",
        params![],
        |r| r.get(0),
    )?;
    if holds {
        return Err(Error::conflict(
            "store",
            "the PostgreSQL database already holds a store; the move needs an empty one",
        ));
    }
    to.defer_foreign_keys(true)?;
    // The schema's own default rows give way to the store's.
    for (table, _) in TABLES {
        to.execute(&format!("DELETE FROM {table}"), params![])?;
    }
    let mut rows = Vec::with_capacity(TABLES.len());
    for (table, key) in TABLES {
        let select = format!("SELECT * FROM {table} ORDER BY {key}");
        let cols = from.column_names(&select)?;
        let insert = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            cols.join(", "),
            (1..=cols.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut n = 0u64;
        from.for_each(&select, params![], |r| -> Result<()> {
            to.execute(&insert, r.into_values())?;
            n += 1;
            Ok(())
        })?;
        let copied: i64 =
            to.query_row(&format!("SELECT COUNT(*) FROM {table}"), params![], |r| {
                r.get(0)
            })?;
        if u64::try_from(copied).ok() != Some(n) {
            return Err(Error::conflict(
                "store",
                format!("{table}: {n} rows read but {copied} written; nothing was moved"),
            ));
        }
        rows.push(((*table).to_owned(), n));
    }
    for table in IDENTITIES {
        let floor: Option<i64> = from
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = ?1",
                [*table],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                super::db::DbError::NoRows => Ok(None),
                other => Err(other),
            })?;
        to.advance_identity(table, floor.unwrap_or(0))?;
    }
    to.defer_foreign_keys(false)?;
    Ok(MoveReport { rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DomainKind;
    use crate::store::NewDomain;
    use crate::store::backup::tests::material;
    use crate::store::keys::tests::{key_admin, new_key};
    use crate::store::test_support::system_actor;

    fn domain(name: &str) -> NewDomain {
        NewDomain {
            name: name.into(),
            kind: DomainKind::Global,
            organization: String::new(),
            description: String::new(),
            help_desk_information: None,
            domain_administrator: None,
        }
    }

    fn domain_id(s: &Store, name: &str) -> i64 {
        s.read(|tx| super::super::domain_id(tx, name))
            .expect("domain id")
    }

    /// The move of §11's first failover: every row over, the same keys
    /// served, writes going on against PostgreSQL, ids never handed out
    /// twice, and a second program still holding the SQLite store refused
    /// rather than writing where nobody reads.
    #[test]
    fn a_sqlite_store_moves_into_postgresql_with_every_row() {
        let server = match crate::pg_harness::shared() {
            Ok(s) => s,
            Err(why) => {
                crate::pg_harness::skip(
                    "store::moving::a_sqlite_store_moves_into_postgresql_with_every_row",
                    &why,
                );
                return;
            }
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Store::open_with(dir.path(), Backend::Sqlite).expect("sqlite store");
        let sa = key_admin(&a);
        a.create_key(&sa, "D", new_key("recorder", false, None))
            .expect("key");
        a.rotate_key(&sa, "D", "recorder").expect("rotate");
        let sys = system_actor(&a);
        a.create_domain(&sys, domain("Gone")).expect("domain");
        let gone = domain_id(&a, "Gone");
        a.delete_domain(&sys, "Gone").expect("delete");
        let other = Store::open(dir.path()).expect("a second program on the SQLite store");
        let before = crate::store::test_support::rows_of_every_table(&a);

        let conninfo = server.fresh_database().expect("database");
        let report = a.move_to_postgres(&conninfo).expect("move");
        assert!(
            report
                .rows
                .iter()
                .any(|(t, n)| t == "key_versions" && *n == 2),
            "{report:?}"
        );
        assert_eq!(a.backend(), Backend::Postgres(conninfo.clone()));
        assert_eq!(Backend::of(dir.path()).expect("store.backend"), a.backend());
        assert_eq!(crate::store::test_support::rows_of_every_table(&a), before);
        let v1 = material(&a, "recorder", 1);

        // Writes go on, against PostgreSQL.
        a.rotate_key(&sa, "D", "recorder")
            .expect("rotate after the move");
        a.create_domain(&sys, domain("After"))
            .expect("domain after the move");
        assert!(
            domain_id(&a, "After") > gone,
            "a deleted domain's id is not handed out again"
        );

        // The program that still held the SQLite store is refused, and the
        // SQLite file is left as it was at the move.
        let e = other
            .create_domain(&system_actor(&other), domain("Lost"))
            .expect_err("a write on the moved SQLite store");
        assert!(e.to_string().contains("moved to PostgreSQL"), "{e}");
        let e = Store::open_with(dir.path(), Backend::Sqlite).expect_err("reopening SQLite");
        assert!(e.to_string().contains("moved to PostgreSQL"), "{e}");
        drop(other);

        // Every program that opens the store now opens PostgreSQL's.
        let again = Store::open(dir.path()).expect("reopen");
        assert_eq!(again.backend(), Backend::Postgres(conninfo.clone()));
        assert_eq!(material(&again, "recorder", 1), v1);
        assert_eq!(material(&again, "recorder", 3).len(), v1.len());

        // Moving again, or onto a database that holds a store, is refused
        // and changes nothing.
        let e = a.move_to_postgres(&conninfo).expect_err("again");
        assert!(e.to_string().contains("on PostgreSQL already"), "{e}");
        let dir2 = tempfile::tempdir().expect("tempdir");
        let c = Store::open_with(dir2.path(), Backend::Sqlite).expect("another sqlite store");
        let e = c
            .move_to_postgres(&conninfo)
            .expect_err("a database with a store");
        assert!(e.to_string().contains("already holds a store"), "{e}");
        assert_eq!(c.backend(), Backend::Sqlite);
        key_admin(&c); // a licence, a domain and administrators: c still writes to SQLite
        assert_eq!(domain_id(&c, "D"), 1);
        assert_eq!(
            Backend::of(dir2.path()).expect("no store.backend"),
            Backend::Sqlite
        );
    }
}
