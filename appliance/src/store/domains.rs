//! Domains and their administrators (§4 Domains, Administrators → Domain).

use crate::store::db::{OptionalExtension, Tx, params};
use serde::Serialize;

use super::admins::admin_id;
use super::{Store, audit_actor, domain_for, domain_id, now};
use crate::access::{Access, Actor};
use crate::model::{
    DomainKind, HELP_DESK_DEFAULT, Role, Severity, UserType, check_description, check_domain_name,
    check_text, fmt_time, roles_from_string, roles_to_string,
};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize)]
pub struct DomainView {
    pub name: String,
    pub kind: DomainKind,
    pub organization: String,
    pub description: String,
    pub help_desk_information: String,
    pub domain_administrators: Vec<String>,
    pub created_at: String,
}

#[derive(Debug)]
pub struct NewDomain {
    pub name: String,
    pub kind: DomainKind,
    pub organization: String,
    pub description: String,
    pub help_desk_information: Option<String>,
    /// The first Domain Administrator (Assign Admin tab), optional at creation.
    pub domain_administrator: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub login: String,
    pub user_type: UserType,
    pub roles: Vec<Role>,
    pub enabled: bool,
}

fn domain_view(tx: &Tx<'_>, id: i64) -> Result<DomainView> {
    let (name, kind, organization, description, help, created_at): (String, String, String, String, String, String) =
        tx.query_row(
            "SELECT name, kind, organization, description, help_desk_information, created_at FROM domains WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )?;
    let domain_administrators = tx
        .prepare_cached(
            "SELECT a.login FROM domain_members m JOIN administrators a ON a.id = m.admin_id
             WHERE m.domain_id = ?1 AND a.user_type = 'domain' ORDER BY a.login",
        )?
        .query_map([id], |r| r.get(0))?
        .collect::<crate::store::db::DbResult<_>>()?;
    Ok(DomainView {
        name,
        kind: DomainKind::parse(&kind)?,
        organization,
        description,
        help_desk_information: help,
        domain_administrators,
        created_at,
    })
}

/// Adds `admin` to domain `did`, enforcing the global/restricted rule and a
/// Domain Administrator's "Restrict to Domain".
fn add_member_row(tx: &Tx<'_>, did: i64, login: &str, roles: &[Role]) -> Result<UserType> {
    let (aid, t, restrict): (i64, String, Option<i64>) = tx
        .query_row(
            "SELECT id, user_type, restrict_to_domain FROM administrators WHERE login = ?1",
            [login],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?
        .ok_or_else(|| Error::invalid("login", "names no existing administrator"))?;
    let user_type = UserType::parse(&t)?;
    if user_type == UserType::System {
        return Err(Error::invalid(
            "login",
            "System Administrators do not belong to domains",
        ));
    }
    if user_type != UserType::Security && !roles.is_empty() {
        return Err(Error::invalid(
            "roles",
            "roles are given to Security Administrators only",
        ));
    }
    if restrict.is_some_and(|r| r != did) {
        return Err(Error::invalid(
            "login",
            "this administrator is restricted to another domain",
        ));
    }
    let already: bool = tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM domain_members WHERE domain_id = ?1 AND admin_id = ?2)",
        params![did, aid],
        |r| r.get(0),
    )?;
    if already {
        return Err(Error::conflict(
            "login",
            "is already an administrator of this domain",
        ));
    }
    let kind: String = tx.query_row("SELECT kind FROM domains WHERE id = ?1", [did], |r| {
        r.get(0)
    })?;
    let elsewhere: Option<(String, String)> = tx
        .query_row(
            "SELECT d.name, d.kind FROM domain_members m JOIN domains d ON d.id = m.domain_id
             WHERE m.admin_id = ?1 ORDER BY d.kind = 'restricted' DESC LIMIT 1",
            [aid],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((other, other_kind)) = elsewhere {
        if other_kind == "restricted" {
            return Err(Error::invalid(
                "login",
                format!("belongs to the restricted domain {other} and cannot join another"),
            ));
        }
        if kind == "restricted" {
            return Err(Error::invalid(
                "login",
                format!(
                    "already belongs to domain {other}; a restricted domain's administrators belong to it only"
                ),
            ));
        }
    }
    tx.execute(
        "INSERT INTO domain_members(domain_id, admin_id, roles, enabled) VALUES (?1, ?2, ?3, 1)",
        params![did, aid, roles_to_string(roles)],
    )?;
    Ok(user_type)
}

fn has_domain_admin(tx: &Tx<'_>, did: i64) -> Result<bool> {
    Ok(tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM domain_members m JOIN administrators a ON a.id = m.admin_id
         WHERE m.domain_id = ?1 AND a.user_type = 'domain')",
        [did],
        |r| r.get(0),
    )?)
}

impl Store {
    pub fn list_domains(&self, actor: &Actor) -> Result<Vec<DomainView>> {
        actor.require_signed_in(Access::Read)?;
        self.read(|tx| {
            let sql = if actor.user_type == UserType::System {
                "SELECT id FROM domains WHERE CAST(?1 AS BIGINT) IS NOT NULL ORDER BY name"
            } else {
                "SELECT d.id FROM domains d JOIN domain_members m ON m.domain_id = d.id WHERE m.admin_id = ?1 ORDER BY d.name"
            };
            let ids: Vec<i64> = tx
                .prepare(sql)?
                .query_map([actor.id], |r| r.get(0))?
                .collect::<crate::store::db::DbResult<_>>()?;
            ids.into_iter().map(|id| domain_view(tx, id)).collect()
        })
    }

    pub fn get_domain(&self, actor: &Actor, name: &str) -> Result<DomainView> {
        actor.require_signed_in(Access::Read)?;
        self.read(|tx| domain_view(tx, domain_for(tx, actor, name)?.0))
    }

    pub fn create_domain(&self, actor: &Actor, new: NewDomain) -> Result<DomainView> {
        actor.require_system(Access::Write)?;
        check_domain_name(&new.name)?;
        check_text(
            "organization",
            &new.organization,
            crate::model::ORGANIZATION_MAX,
        )?;
        check_description(&new.description)?;
        let help = new
            .help_desk_information
            .unwrap_or_else(|| HELP_DESK_DEFAULT.to_owned());
        check_text("help_desk_information", &help, crate::model::HELP_DESK_MAX)?;
        self.write(|tx| {
            if tx.query_row("SELECT EXISTS(SELECT 1 FROM domains WHERE name = ?1)", [&new.name], |r| r.get::<_, bool>(0))? {
                return Err(Error::conflict("name", "a domain with this name already exists"));
            }
            super::licence::check_new_domain(tx)?;
            let did: i64 = tx.query_row(
                "INSERT INTO domains(name, kind, organization, description, help_desk_information, created_at) VALUES (?1,?2,?3,?4,?5,?6) RETURNING id",
                params![new.name, new.kind.as_str(), new.organization, new.description, help, fmt_time(now())],
                |r| r.get(0),
            )?;
            audit_actor(tx, actor, Severity::Info, Some(did), &format!("added {} domain {}", new.kind.as_str(), new.name))?;
            if let Some(da) = &new.domain_administrator {
                let t = add_member_row(tx, did, da, &[]).map_err(|e| match e {
                    Error::Invalid { rule, .. } => Error::invalid("domain_administrator", rule),
                    other => other,
                })?;
                if t != UserType::Domain {
                    return Err(Error::invalid("domain_administrator", "must be a Domain Administrator"));
                }
                audit_actor(tx, actor, Severity::Info, Some(did), &format!("assigned {da} as Domain Administrator of {}", new.name))?;
            }
            domain_view(tx, did)
        })
    }

    /// Deletes a domain. Refused while it holds keys or hosts: recordings
    /// encrypted under its keys would become unreadable.
    pub fn delete_domain(&self, actor: &Actor, name: &str) -> Result<()> {
        actor.require_system(Access::Write)?;
        self.write(|tx| {
            let did = domain_id(tx, name)?;
            let keys: i64 = tx.query_row("SELECT COUNT(*) FROM agent_keys WHERE domain_id = ?1", [did], |r| r.get(0))?;
            let hosts: i64 = tx.query_row("SELECT COUNT(*) FROM hosts WHERE domain_id = ?1", [did], |r| r.get(0))?;
            if keys > 0 || hosts > 0 {
                return Err(Error::conflict("name", format!("domain {name} still holds {keys} key(s) and {hosts} host(s); delete them first")));
            }
            tx.execute("DELETE FROM domains WHERE id = ?1", [did])?;
            audit_actor(tx, actor, Severity::Info, Some(did), &format!("deleted domain {name}"))
        })
    }

    pub fn list_members(&self, actor: &Actor, domain: &str) -> Result<Vec<MemberView>> {
        self.read(|tx| {
            let (did, m) = domain_for(tx, actor, domain)?;
            if actor.user_type == UserType::System {
                actor.require_system(Access::Read)?;
            } else {
                actor.require_domain_admin(m.as_ref(), Access::Read)?;
            }
            let mut stmt = tx.prepare(
                "SELECT a.login, a.user_type, m.roles, m.enabled FROM domain_members m
                 JOIN administrators a ON a.id = m.admin_id WHERE m.domain_id = ?1 ORDER BY a.login",
            )?;
            let rows = stmt.query_map([did], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, bool>(3)?))
            })?;
            rows.map(|r| {
                let (login, t, roles, enabled) = r?;
                Ok(MemberView { login, user_type: UserType::parse(&t)?, roles: roles_from_string(&roles), enabled })
            })
            .collect()
        })
    }

    /// Adds an administrator to a domain. A Domain Administrator of the
    /// domain adds Domain or Security Administrators (the latter with roles);
    /// a System Administrator only assigns the first Domain Administrator.
    pub fn add_member(
        &self,
        actor: &Actor,
        domain: &str,
        login: &str,
        roles: &[Role],
    ) -> Result<MemberView> {
        self.write(|tx| {
            let (did, m) = domain_for(tx, actor, domain)?;
            if actor.user_type == UserType::System {
                actor.require_system(Access::Write)?;
                if has_domain_admin(tx, did)? {
                    return Err(Error::Forbidden(
                        "the domain has its Domain Administrator; further administrators are added by them".into(),
                    ));
                }
                let t = tx
                    .query_row("SELECT user_type FROM administrators WHERE login = ?1", [login], |r| r.get::<_, String>(0))
                    .optional()?;
                if t.as_deref() != Some("domain") {
                    return Err(Error::invalid("login", "the first administrator of a domain must be a Domain Administrator"));
                }
            } else {
                actor.require_domain_admin(m.as_ref(), Access::Write)?;
            }
            let t = add_member_row(tx, did, login, roles)?;
            let roles_text = if roles.is_empty() { String::new() } else { format!(" with roles {}", roles_to_string(roles)) };
            audit_actor(tx, actor, Severity::Info, Some(did), &format!("added {login} to domain {domain}{roles_text}"))?;
            Ok(MemberView { login: login.to_owned(), user_type: t, roles: { let mut r = roles.to_vec(); r.sort(); r.dedup(); r }, enabled: true })
        })
    }

    pub fn update_member(
        &self,
        actor: &Actor,
        domain: &str,
        login: &str,
        roles: Option<&[Role]>,
        enabled: Option<bool>,
    ) -> Result<MemberView> {
        self.write(|tx| {
            let (did, m) = domain_for(tx, actor, domain)?;
            actor.require_domain_admin(m.as_ref(), Access::Write)?;
            let aid = admin_id(tx, login)?;
            let t: String = tx
                .query_row(
                    "SELECT a.user_type FROM domain_members m JOIN administrators a ON a.id = m.admin_id WHERE m.domain_id = ?1 AND m.admin_id = ?2",
                    params![did, aid],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| Error::not_found("domain administrator", login))?;
            let user_type = UserType::parse(&t)?;
            if let Some(roles) = roles {
                if user_type != UserType::Security && !roles.is_empty() {
                    return Err(Error::invalid("roles", "roles are given to Security Administrators only"));
                }
                tx.execute("UPDATE domain_members SET roles = ?3 WHERE domain_id = ?1 AND admin_id = ?2", params![did, aid, roles_to_string(roles)])?;
                audit_actor(tx, actor, Severity::Info, Some(did), &format!("set roles of {login} in {domain} to [{}]", roles_to_string(roles)))?;
            }
            if let Some(en) = enabled {
                if !en && aid == actor.id {
                    return Err(Error::invalid("enabled", "you cannot disable your own membership"));
                }
                tx.execute("UPDATE domain_members SET enabled = ?3 WHERE domain_id = ?1 AND admin_id = ?2", params![did, aid, en])?;
                audit_actor(tx, actor, Severity::Info, Some(did), &format!("{} {login} in {domain}", if en { "enabled" } else { "disabled" }))?;
            }
            let (roles, enabled): (String, bool) = tx.query_row(
                "SELECT roles, enabled FROM domain_members WHERE domain_id = ?1 AND admin_id = ?2",
                params![did, aid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(MemberView { login: login.to_owned(), user_type, roles: roles_from_string(&roles), enabled })
        })
    }

    pub fn remove_member(&self, actor: &Actor, domain: &str, login: &str) -> Result<()> {
        self.write(|tx| {
            let (did, m) = domain_for(tx, actor, domain)?;
            actor.require_domain_admin(m.as_ref(), Access::Write)?;
            let aid = admin_id(tx, login)?;
            let t: String = tx
                .query_row(
                    "SELECT a.user_type FROM domain_members m JOIN administrators a ON a.id = m.admin_id WHERE m.domain_id = ?1 AND m.admin_id = ?2",
                    params![did, aid],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| Error::not_found("domain administrator", login))?;
            if t == "domain" {
                let others: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM domain_members m JOIN administrators a ON a.id = m.admin_id
                     WHERE m.domain_id = ?1 AND a.user_type = 'domain' AND m.admin_id != ?2",
                    params![did, aid],
                    |r| r.get(0),
                )?;
                if others == 0 {
                    return Err(Error::conflict("login", "is the domain's only Domain Administrator"));
                }
            }
            tx.execute("DELETE FROM domain_members WHERE domain_id = ?1 AND admin_id = ?2", params![did, aid])?;
            audit_actor(tx, actor, Severity::Info, Some(did), &format!("removed {login} from domain {domain}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{DB_FILE, MIGRATIONS, Store};
    use crate::store::db::params;
    use rusqlite::Connection;

    /// Migration 8 on a populated version-7 store: rows, ids and references
    /// kept, and the next ids above every id used, including a deleted
    /// domain's that only the audit log still names.
    #[test]
    fn migration_8_keeps_rows_and_never_reuses_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
            for m in &MIGRATIONS[..7] {
                conn.execute_batch(m).expect("migration");
            }
            conn.execute_batch(
                "PRAGMA user_version = 7;
                 INSERT INTO domains(id, name, kind, help_desk_information, created_at)
                     VALUES (3, 'D', 'global', '', 't');
                 INSERT INTO agent_keys(id, domain_id, name, template, algorithm, key_type, unique_to_host,
                     creation_method, automatic_rotation, created_at)
                     VALUES (5, 3, 'k', 'x', 'AES256', 'stored_on_server', 0, 'generate', 0, 't');
                 INSERT INTO key_versions(key_id, version, material_sealed, created_at) VALUES (5, 1, x'00', 't');
                 INSERT INTO hosts(id, domain_id, host_name, created_at) VALUES (7, 3, 'h', 't');
                 INSERT INTO audit(at, who, source, via, severity, domain_id, what)
                     VALUES ('t', 'x', 'x', 'api', 'INFO', 9, 'deleted domain Old');
                 INSERT INTO wrapper_key(id, key_sealed, key_id, origin, created_at) VALUES (1, x'00', 'k', 'created', 't');
                 INSERT INTO wrapper_shares(login, number, share_sealed, created_at) VALUES ('c', 1, x'00', 't');",
            )
            .expect("rows");
        }
        let s = Store::open(dir.path()).expect("migrates");
        s.read(|tx| {
            let kv: i64 = tx.query_row(
                "SELECT COUNT(*) FROM key_versions WHERE key_id = 5",
                params![],
                |r| r.get(0),
            )?;
            assert_eq!(kv, 1, "a key's versions survive the rebuild");
            let share: Option<Vec<u8>> =
                tx.query_row("SELECT share_sealed FROM wrapper_shares", params![], |r| {
                    r.get(0)
                })?;
            assert!(share.is_some());
            Ok(())
        })
        .expect("read");
        s.write(|tx| {
            tx.execute_batch(
                "INSERT INTO domains(name, kind, help_desk_information, created_at) VALUES ('E', 'global', '', 't');
                 INSERT INTO agent_keys(domain_id, name, template, algorithm, key_type, unique_to_host,
                     creation_method, automatic_rotation, created_at)
                     VALUES (3, 'k2', 'x', 'AES256', 'stored_on_server', 0, 'generate', 0, 't');
                 INSERT INTO hosts(domain_id, host_name, created_at) VALUES (3, 'h2', 't');",
            )?;
            let ids: (i64, i64, i64) = tx.query_row(
                "SELECT (SELECT id FROM domains WHERE name = 'E'), (SELECT id FROM agent_keys WHERE name = 'k2'),
                        (SELECT id FROM hosts WHERE host_name = 'h2')",
                params![],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            assert_eq!(ids, (10, 6, 8));
            // Foreign keys are on again and still cascade.
            tx.execute("DELETE FROM domains WHERE id = 3", params![])?;
            let left: i64 = tx.query_row("SELECT COUNT(*) FROM key_versions", params![], |r| r.get(0))?;
            assert_eq!(left, 0);
            Ok(())
        })
        .expect("write");
    }
}
