//! Agent keys, their versions and rotation (§7).

use crate::store::db::{OptionalExtension, Tx, params};
use serde::Serialize;
use time::{Duration, OffsetDateTime};

use super::{Store, audit, audit_actor, domain_for, now, opt_time};
use crate::access::{Access, Actor};
use crate::crypto::random_secret;
use crate::model::{
    Algorithm, CreationMethod, KeyType, Role, Severity, TEMPLATE_DEFAULT, check_description,
    check_key_name, check_life_span, check_refresh_period, check_text, fmt_time,
};
use crate::secret::SecretBytes;
use crate::{Error, Result};

#[derive(Debug)]
pub struct NewKey {
    pub name: String,
    pub description: String,
    pub template: Option<String>,
    pub expiration_date: Option<OffsetDateTime>,
    pub algorithm: Algorithm,
    pub key_type: KeyType,
    pub unique_to_host: bool,
    pub key_creation_method: CreationMethod,
    /// Manual Input: the imported material.
    pub key_material: Option<SecretBytes>,
    /// `None`: the global Key Refresh Period of the preferences applies.
    pub key_refresh_period: Option<i64>,
    pub automatic_key_rotation: bool,
    pub key_version_life_span: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyVersionView {
    pub version: i64,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub expired: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    pub domain: String,
    pub name: String,
    pub description: String,
    pub template: String,
    pub algorithm: Algorithm,
    pub key_type: KeyType,
    pub unique_to_host: bool,
    pub key_creation_method: CreationMethod,
    /// The key's own period, if it has one.
    pub key_refresh_period: Option<i64>,
    /// The period hosts are told (the key's, or the global preference).
    pub effective_key_refresh_period: i64,
    pub automatic_key_rotation: bool,
    pub key_version_life_span: Option<i64>,
    pub expiration_date: Option<String>,
    pub current_version: i64,
    pub versions: Vec<KeyVersionView>,
    pub created_at: String,
}

/// One key version created by the rotation scheduler.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub domain: String,
    pub name: String,
    pub version: i64,
}

pub(super) fn version_context(key_id: i64, version: i64) -> String {
    format!("key_versions:{key_id}:{version}")
}

pub(super) fn key_id(tx: &Tx<'_>, did: i64, name: &str) -> Result<i64> {
    tx.query_row(
        "SELECT id FROM agent_keys WHERE domain_id = ?1 AND name = ?2",
        params![did, name],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| Error::not_found("key", name))
}

pub(super) fn current_version(tx: &Tx<'_>, kid: i64) -> Result<i64> {
    Ok(tx.query_row(
        "SELECT MAX(version) FROM key_versions WHERE key_id = ?1",
        [kid],
        |r| r.get(0),
    )?)
}

fn key_view(tx: &Tx<'_>, kid: i64, global_refresh: i64) -> Result<KeyView> {
    let t = now();
    let mut view = tx.query_row(
        "SELECT d.name, k.name, k.description, k.template, k.algorithm, k.key_type, k.unique_to_host, k.creation_method,
                k.refresh_period, k.automatic_rotation, k.life_span_days, k.expiration_date, k.created_at
         FROM agent_keys k JOIN domains d ON d.id = k.domain_id WHERE k.id = ?1",
        [kid],
        |r| {
            Ok((
                r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?,
                r.get::<_, String>(4)?, r.get::<_, String>(5)?, r.get::<_, bool>(6)?, r.get::<_, String>(7)?,
                r.get::<_, Option<i64>>(8)?, r.get::<_, bool>(9)?, r.get::<_, Option<i64>>(10)?,
                r.get::<_, Option<String>>(11)?, r.get::<_, String>(12)?,
            ))
        },
    )
    .map(|(domain, name, description, template, alg, kt, uth, cm, rp, ar, ls, exp, created_at)| -> Result<KeyView> {
        Ok(KeyView {
            domain,
            name,
            description,
            template,
            algorithm: Algorithm::parse(&alg)?,
            key_type: KeyType::parse(&kt)?,
            unique_to_host: uth,
            key_creation_method: CreationMethod::parse("key_creation_method", &cm)?,
            key_refresh_period: rp,
            effective_key_refresh_period: rp.unwrap_or(global_refresh),
            automatic_key_rotation: ar,
            key_version_life_span: ls,
            expiration_date: exp,
            current_version: 0,
            versions: vec![],
            created_at,
        })
    })??;
    let mut stmt = tx.prepare_cached("SELECT version, created_at, expires_at FROM key_versions WHERE key_id = ?1 ORDER BY version")?;
    let rows = stmt.query_map([kid], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })?;
    for row in rows {
        let (version, created_at, expires_at) = row?;
        let expired = opt_time(expires_at.clone())?.is_some_and(|e| e <= t);
        view.versions.push(KeyVersionView {
            version,
            created_at,
            expires_at,
            expired,
        });
    }
    view.current_version = view.versions.last().map(|v| v.version).unwrap_or(0);
    Ok(view)
}

impl Store {
    /// Inserts version `version` of key `kid` with fresh (or given) material.
    fn insert_version(
        &self,
        tx: &Tx<'_>,
        kid: i64,
        version: i64,
        alg: Algorithm,
        material: Option<&SecretBytes>,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<()> {
        let generated;
        let material = match material {
            Some(m) => m,
            None => {
                generated = random_secret(alg.key_len());
                &generated
            }
        };
        let sealed = self
            .master
            .seal(&version_context(kid, version), material.expose())?;
        tx.execute(
            "INSERT INTO key_versions(key_id, version, material_sealed, created_at, expires_at) VALUES (?1,?2,?3,?4,?5)",
            params![kid, version, sealed, fmt_time(now()), expires_at.map(fmt_time)],
        )?;
        Ok(())
    }

    pub fn list_keys(&self, actor: &Actor, domain: &str) -> Result<Vec<KeyView>> {
        let global = self.preferences_unchecked()?.key_refresh_period;
        self.read(|tx| {
            let (did, m) = domain_for(tx, actor, domain)?;
            actor.require_role(m.as_ref(), Role::Key, Access::Read)?;
            let ids: Vec<i64> = tx
                .prepare("SELECT id FROM agent_keys WHERE domain_id = ?1 ORDER BY name")?
                .query_map([did], |r| r.get(0))?
                .collect::<crate::store::db::DbResult<_>>()?;
            ids.into_iter().map(|id| key_view(tx, id, global)).collect()
        })
    }

    pub fn get_key(&self, actor: &Actor, domain: &str, name: &str) -> Result<KeyView> {
        let global = self.preferences_unchecked()?.key_refresh_period;
        self.read(|tx| {
            let (did, m) = domain_for(tx, actor, domain)?;
            actor.require_role(m.as_ref(), Role::Key, Access::Read)?;
            key_view(tx, key_id(tx, did, name)?, global)
        })
    }

    pub fn create_key(&self, actor: &Actor, domain: &str, new: NewKey) -> Result<KeyView> {
        check_key_name(&new.name)?;
        check_description(&new.description)?;
        let template = new
            .template
            .clone()
            .unwrap_or_else(|| TEMPLATE_DEFAULT.to_owned());
        if template.is_empty() {
            return Err(Error::invalid("template", "is required"));
        }
        check_text("template", &template, crate::model::TEMPLATE_MAX)?;
        if let Some(p) = new.key_refresh_period {
            check_refresh_period("key_refresh_period", p)?;
        }
        if let Some(l) = new.key_version_life_span {
            check_life_span(l)?;
        }
        if new.automatic_key_rotation && new.key_version_life_span.is_none() {
            return Err(Error::invalid(
                "key_version_life_span",
                "is required when automatic_key_rotation is on",
            ));
        }
        let t = now();
        if let Some(e) = new.expiration_date
            && e <= t
        {
            return Err(Error::invalid("expiration_date", "must be in the future"));
        }
        match (new.key_creation_method, &new.key_material) {
            (CreationMethod::Manual, None) => {
                return Err(Error::invalid(
                    "key_material",
                    "is required for manual input",
                ));
            }
            (CreationMethod::Manual, Some(m)) if m.len() != new.algorithm.key_len() => {
                return Err(Error::invalid(
                    "key_material",
                    format!(
                        "must be exactly {} bytes for {}",
                        new.algorithm.key_len(),
                        new.algorithm.as_str()
                    ),
                ));
            }
            (CreationMethod::Generate, Some(_)) => {
                return Err(Error::invalid(
                    "key_material",
                    "is only given for manual input",
                ));
            }
            _ => {}
        }
        let first_expiry = new.expiration_date.or_else(|| {
            new.automatic_key_rotation
                .then(|| new.key_version_life_span.map(|d| t + Duration::days(d)))
                .flatten()
        });
        let global = self.preferences_unchecked()?.key_refresh_period;
        self.write(|tx| {
            let (did, m) = domain_for(tx, actor, domain)?;
            actor.require_role(m.as_ref(), Role::Key, Access::Write)?;
            let exists: bool = tx.query_row("SELECT EXISTS(SELECT 1 FROM agent_keys WHERE domain_id = ?1 AND name = ?2)", params![did, new.name], |r| r.get(0))?;
            if exists {
                return Err(Error::conflict("name", "a key with this name already exists in the domain"));
            }
            let kid: i64 = tx.query_row(
                "INSERT INTO agent_keys(domain_id, name, description, template, algorithm, key_type, unique_to_host, creation_method,
                  refresh_period, automatic_rotation, life_span_days, expiration_date, created_at)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13) RETURNING id",
                params![did, new.name, new.description, template, new.algorithm.as_str(), new.key_type.as_str(), new.unique_to_host,
                    new.key_creation_method.as_str(), new.key_refresh_period, new.automatic_key_rotation, new.key_version_life_span,
                    new.expiration_date.map(fmt_time), fmt_time(t)],
                |r| r.get(0),
            )?;
            self.insert_version(tx, kid, 1, new.algorithm, new.key_material.as_ref(), first_expiry)?;
            audit_actor(tx, actor, Severity::Info, Some(did), &format!(
                "added {} key {} in domain {domain} ({})", new.algorithm.as_str(), new.name,
                if new.key_creation_method == CreationMethod::Manual { "imported" } else { "generated" }))?;
            key_view(tx, kid, global)
        })
    }

    pub fn delete_key(&self, actor: &Actor, domain: &str, name: &str) -> Result<()> {
        self.write(|tx| {
            let (did, m) = domain_for(tx, actor, domain)?;
            actor.require_role(m.as_ref(), Role::Key, Access::Write)?;
            let kid = key_id(tx, did, name)?;
            let versions = current_version(tx, kid)?;
            tx.execute("DELETE FROM agent_keys WHERE id = ?1", [kid])?;
            audit_actor(
                tx,
                actor,
                Severity::Warn,
                Some(did),
                &format!("deleted key {name} in domain {domain} with {versions} version(s)"),
            )
        })
    }

    /// A forced rotation: a new current version; older ones stay readable.
    pub fn rotate_key(&self, actor: &Actor, domain: &str, name: &str) -> Result<KeyView> {
        let global = self.preferences_unchecked()?.key_refresh_period;
        self.write(|tx| {
            let (did, m) = domain_for(tx, actor, domain)?;
            actor.require_role(m.as_ref(), Role::Key, Access::Write)?;
            let kid = key_id(tx, did, name)?;
            let (alg, auto, life): (String, bool, Option<i64>) = tx.query_row(
                "SELECT algorithm, automatic_rotation, life_span_days FROM agent_keys WHERE id = ?1", [kid],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            let next = current_version(tx, kid)? + 1;
            let expires = life.filter(|_| auto).map(|d| now() + Duration::days(d));
            self.insert_version(tx, kid, next, Algorithm::parse(&alg)?, None, expires)?;
            audit_actor(tx, actor, Severity::Info, Some(did), &format!("rotated key {name} in domain {domain} to version {next}"))?;
            key_view(tx, kid, global)
        })
    }

    /// The rotation scheduler's step (§7): every key with automatic rotation
    /// whose current version has expired at `at` gets a new version, which
    /// expires one life span after the previous expiry (skipping periods the
    /// appliance was down for, so versions are not created in a burst).
    pub fn rotate_due(&self, at: OffsetDateTime) -> Result<Vec<Rotated>> {
        self.write(|tx| {
            let mut due = vec![];
            {
                let mut stmt = tx.prepare(
                    "SELECT k.id, d.id, d.name, k.name, k.algorithm, k.life_span_days, v.version, v.expires_at
                     FROM agent_keys k JOIN domains d ON d.id = k.domain_id
                     JOIN key_versions v ON v.key_id = k.id AND v.version = (SELECT MAX(version) FROM key_versions WHERE key_id = k.id)
                     WHERE k.automatic_rotation = 1 AND k.life_span_days IS NOT NULL AND v.expires_at IS NOT NULL AND v.expires_at <= ?1",
                )?;
                let rows = stmt.query_map([fmt_time(at)], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?, r.get::<_, i64>(5)?, r.get::<_, i64>(6)?, r.get::<_, String>(7)?))
                })?;
                for row in rows {
                    due.push(row?);
                }
            }
            let mut out = vec![];
            for (kid, did, domain, name, alg, life, version, expires) in due {
                let mut next_expiry = crate::model::parse_stored_time(&expires)?;
                while next_expiry <= at {
                    next_expiry += Duration::days(life);
                }
                let next = version + 1;
                self.insert_version(tx, kid, next, Algorithm::parse(&alg)?, None, Some(next_expiry))?;
                audit(tx, "system", "appliance", "scheduler", Severity::Info, Some(did),
                    &format!("rotated key {name} in domain {domain} to version {next} (automatic rotation)"))?;
                out.push(Rotated { domain, name, version: next });
            }
            Ok(out)
        })
    }

    /// Opens the material of one key version.
    pub(super) fn open_version(
        &self,
        tx: &Tx<'_>,
        kid: i64,
        version: i64,
    ) -> Result<Option<(SecretBytes, String, Option<String>)>> {
        let row: Option<(Vec<u8>, String, Option<String>)> = tx
            .query_row(
                "SELECT material_sealed, created_at, expires_at FROM key_versions WHERE key_id = ?1 AND version = ?2",
                params![kid, version],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        row.map(|(sealed, c, e)| {
            Ok((
                self.master.open(&version_context(kid, version), &sealed)?,
                c,
                e,
            ))
        })
        .transpose()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{DomainKind, UserType};
    use crate::store::test_support::*;
    use crate::store::{NewAdmin, NewDomain};

    /// A domain with a Security Administrator holding the Key role.
    pub(crate) fn key_admin(s: &Store) -> Actor {
        let sys = system_actor(s);
        for (login, t) in [("da", UserType::Domain), ("sa", UserType::Security)] {
            s.create_admin(
                &sys,
                NewAdmin {
                    login: login.into(),
                    description: String::new(),
                    rsa_user_id: None,
                    password: "T3st!passw".into(),
                    confirm_password: None,
                    user_type: t,
                    restrict_to_domain: None,
                    read_only: false,
                },
            )
            .expect("admin");
        }
        crate::store::licence::tests::install_test_licence(s);
        s.create_domain(
            &sys,
            NewDomain {
                name: "D".into(),
                kind: DomainKind::Global,
                organization: String::new(),
                description: String::new(),
                help_desk_information: None,
                domain_administrator: Some("da".into()),
            },
        )
        .expect("domain");
        let mut da = s.actor("da", "t", "api").expect("da");
        da.must_change_password = false;
        s.add_member(&da, "D", "sa", &[Role::Key]).expect("member");
        let mut sa = s.actor("sa", "t", "api").expect("sa");
        sa.must_change_password = false;
        sa
    }

    pub(crate) fn new_key(name: &str, auto: bool, life: Option<i64>) -> NewKey {
        NewKey {
            name: name.into(),
            description: String::new(),
            template: None,
            expiration_date: None,
            algorithm: Algorithm::Aes256,
            key_type: KeyType::StoredOnServer,
            unique_to_host: false,
            key_creation_method: CreationMethod::Generate,
            key_material: None,
            key_refresh_period: None,
            automatic_key_rotation: auto,
            key_version_life_span: life,
        }
    }

    #[test]
    fn scheduler_rotates_at_expiry_then_every_life_span() {
        let (_d, s) = store();
        let sa = key_admin(&s);
        let k = s
            .create_key(&sa, "D", new_key("recorder", true, Some(7)))
            .expect("key");
        s.create_key(&sa, "D", new_key("manual", false, None))
            .expect("key");
        let first_expiry =
            crate::model::parse_stored_time(k.versions[0].expires_at.as_deref().expect("expiry"))
                .expect("time");
        let t0 = now();

        // Nothing is due before the first version expires.
        assert!(
            s.rotate_due(t0 + Duration::days(6))
                .expect("run")
                .is_empty()
        );
        // At expiry a new version is made, expiring one life span later.
        let r = s
            .rotate_due(t0 + Duration::days(7) + Duration::minutes(1))
            .expect("run");
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].name.as_str(), r[0].version), ("recorder", 2));
        let k = s.get_key(&sa, "D", "recorder").expect("key");
        assert_eq!(k.current_version, 2);
        let v2_expiry =
            crate::model::parse_stored_time(k.versions[1].expires_at.as_deref().expect("expiry"))
                .expect("time");
        assert_eq!(v2_expiry, first_expiry + Duration::days(7));
        // Running again at the same time does nothing more.
        assert!(
            s.rotate_due(t0 + Duration::days(7) + Duration::minutes(1))
                .expect("run")
                .is_empty()
        );
        // After a long outage: one new version, aligned to the schedule.
        let r = s.rotate_due(t0 + Duration::days(40)).expect("run");
        assert_eq!(r.len(), 1);
        let k = s.get_key(&sa, "D", "recorder").expect("key");
        let v3_expiry =
            crate::model::parse_stored_time(k.versions[2].expires_at.as_deref().expect("expiry"))
                .expect("time");
        assert_eq!(v3_expiry, first_expiry + Duration::days(35));
        // Keys without automatic rotation are left alone; every version stays readable.
        assert_eq!(
            s.get_key(&sa, "D", "manual").expect("key").current_version,
            1
        );
        s.read(|tx| {
            let kid = key_id(tx, 1, "recorder")?;
            for v in 1..=3 {
                assert_eq!(s.open_version(tx, kid, v)?.expect("version").0.len(), 32);
            }
            Ok(())
        })
        .expect("read");
    }

    #[test]
    fn manual_material_is_kept_exactly_and_sealed() {
        let (_dir, s) = store();
        let sa = key_admin(&s);
        let mut k = new_key("imported", false, None);
        k.key_creation_method = CreationMethod::Manual;
        k.key_material = Some(SecretBytes::new(vec![0x5a; 32]));
        s.create_key(&sa, "D", k).expect("key");
        s.read(|tx| {
            let kid = key_id(tx, 1, "imported")?;
            assert_eq!(
                s.open_version(tx, kid, 1)?.expect("v1").0.expose(),
                &[0x5a; 32]
            );
            Ok(())
        })
        .expect("read");
        // The material is not in the database's files in clear.
        for bytes in crate::store::test_support::stored_bytes(&s) {
            assert!(
                !bytes.windows(32).any(|w| w == [0x5a; 32]),
                "key material found in clear on disk"
            );
        }
    }
}
