//! The audit log (§4 Log and Reports, §16): who, when, what, from where, how severe.

use rusqlite::types::Value;
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
            let total: i64 = tx.query_row(&format!("SELECT COUNT(*) {from} {filter}"), rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;
            let mut page_args = args.clone();
            page_args.push(Value::Integer(limit));
            page_args.push(Value::Integer(offset));
            let mut stmt = tx.prepare(&format!(
                "SELECT a.id, a.at, a.who, a.source, a.via, a.severity, d.name, a.what {from} {filter} ORDER BY a.id DESC LIMIT ? OFFSET ?"))?;
            let entries = stmt
                .query_map(rusqlite::params_from_iter(page_args.iter()), |r| {
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
