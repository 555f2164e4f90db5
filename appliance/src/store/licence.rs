//! The installed licence (§10, System → License) and the limits it sets.
//!
//! The store keeps the file as it was installed and verifies its signature
//! again whenever it reads it, so a row written around this code, or a build
//! with another vendor key, does not grant anything. The limits are checked
//! inside the transactions that would break them: `register_host` (Key
//! agents) and `create_domain` (domains).

use crate::store::db::{OptionalExtension, Tx, params};
use serde::Serialize;

use super::{Store, audit_actor, now};
use crate::access::{Access, Actor};
use crate::licence::{self, LicenceTerms, NOT_FOUND, plural};
use crate::model::{Severity, fmt_time};
use crate::{Error, Result};

/// What System → License shows.
#[derive(Debug, Clone, Serialize)]
pub struct LicenceView {
    pub terms: LicenceTerms,
    pub installed_at: String,
    pub installed_by: String,
    /// Registered protected hosts (each holds one Key agent licence).
    pub agents_in_use: i64,
    pub domains_in_use: i64,
    pub key_agent_expired: bool,
    /// Signed with the development key that ships in the repository.
    pub development_key: bool,
}

/// The installed terms, if a licence is installed and its signature holds.
pub(super) fn installed_terms(tx: &Tx<'_>) -> Result<Option<LicenceTerms>> {
    Ok(installed(tx)?.map(|(terms, ..)| terms))
}

fn installed(tx: &Tx<'_>) -> Result<Option<(LicenceTerms, String, String)>> {
    let row: Option<(String, String, String)> = tx
        .query_row(
            "SELECT text, installed_at, installed_by FROM licence WHERE id = 1",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((text, at, by)) = row else {
        return Ok(None);
    };
    match licence::verify(&text) {
        Ok(terms) => Ok(Some((terms, at, by))),
        Err(e) => {
            // Fail closed: a licence this build cannot verify grants nothing.
            tracing::warn!(error = %e, "the stored licence does not verify; treating it as absent");
            Ok(None)
        }
    }
}

fn registered_hosts(tx: &Tx<'_>) -> Result<i64> {
    Ok(tx.query_row(
        "SELECT COUNT(*) FROM hosts WHERE cert_fingerprint IS NOT NULL",
        params![],
        |r| r.get(0),
    )?)
}

fn domains(tx: &Tx<'_>) -> Result<i64> {
    Ok(tx.query_row("SELECT COUNT(*) FROM domains", params![], |r| r.get(0))?)
}

fn view(tx: &Tx<'_>) -> Result<Option<LicenceView>> {
    let Some((terms, installed_at, installed_by)) = installed(tx)? else {
        return Ok(None);
    };
    Ok(Some(LicenceView {
        key_agent_expired: terms.key_agent.expired(licence::today()),
        terms,
        installed_at,
        installed_by,
        agents_in_use: registered_hosts(tx)?,
        domains_in_use: domains(tx)?,
        development_key: licence::is_development_key(),
    }))
}

/// Why the licence does not allow a Key agent registration, if it does not.
/// `new_agent`: the host is not registered yet, so it takes a licence.
pub(super) fn registration_refusal(tx: &Tx<'_>, new_agent: bool) -> Result<Option<String>> {
    let Some(terms) = installed_terms(tx)? else {
        return Ok(Some(format!(
            "no licence is installed on the appliance ({NOT_FOUND})"
        )));
    };
    let key = &terms.key_agent;
    if !key.installed {
        return Ok(Some("the licence does not include the Key agent".into()));
    }
    if key.expired(licence::today()) {
        return Ok(Some(format!(
            "the Key agent licence expired on {}",
            key.expires
        )));
    }
    let in_use = registered_hosts(tx)?;
    if new_agent && in_use >= i64::from(key.max_agents) {
        return Ok(Some(format!(
            "the licence allows {} and {} registered",
            plural(u64::from(key.max_agents), "Key agent", "Key agents"),
            if in_use == 1 {
                "1 is".to_owned()
            } else {
                format!("{in_use} are")
            }
        )));
    }
    Ok(None)
}

/// Refuses a new domain beyond the licence's limit.
pub(super) fn check_new_domain(tx: &Tx<'_>) -> Result<()> {
    let Some(terms) = installed_terms(tx)? else {
        return Err(Error::Licence(format!(
            "no licence is installed on the appliance ({NOT_FOUND}): domains cannot be added"
        )));
    };
    let allowed = terms.domains_allowed();
    let in_use = domains(tx)?;
    if in_use >= i64::from(allowed) {
        let limit = if terms.multiple_domains {
            plural(u64::from(allowed), "domain", "domains")
        } else {
            "1 domain (multiple domains are not licensed)".to_owned()
        };
        return Err(Error::Licence(format!(
            "the licence allows {limit} and {} exist{}",
            in_use,
            if in_use == 1 { "s" } else { "" }
        )));
    }
    Ok(())
}

impl Store {
    /// §10 upload (System → License): verifies the file, refuses a licence
    /// whose limits are below what is already in use, and replaces the
    /// installed one.
    pub fn install_licence(&self, actor: &Actor, text: &str) -> Result<LicenceView> {
        actor.require_system(Access::Write)?;
        let terms = licence::verify(text)?;
        self.write(|tx| {
            let hosts = registered_hosts(tx)?;
            if hosts > i64::from(terms.key_agent.max_agents) {
                return Err(Error::conflict(
                    "licence",
                    format!(
                        "this licence allows {} but {} registered; delete hosts first or install a licence for more agents",
                        plural(u64::from(terms.key_agent.max_agents), "Key agent", "Key agents"),
                        plural(hosts as u64, "host is", "hosts are"),
                    ),
                ));
            }
            let in_use = domains(tx)?;
            let allowed = terms.domains_allowed();
            if in_use > i64::from(allowed) {
                return Err(Error::conflict(
                    "licence",
                    format!(
                        "this licence allows {} but {} exist; delete domains first or install a licence for more domains",
                        plural(u64::from(allowed), "domain", "domains"),
                        plural(in_use as u64, "domain", "domains"),
                    ),
                ));
            }
            tx.execute(
                "INSERT INTO licence(id, text, installed_at, installed_by) VALUES (1, ?1, ?2, ?3)
                 ON CONFLICT(id) DO UPDATE SET text = excluded.text, installed_at = excluded.installed_at,
                   installed_by = excluded.installed_by",
                params![text.trim(), fmt_time(now()), actor.login],
            )?;
            audit_actor(
                tx,
                actor,
                Severity::Info,
                None,
                &format!(
                    "installed licence {} issued to {}: {}{}",
                    terms.licence_id,
                    terms.issued_to,
                    terms.summary(),
                    if licence::is_development_key() { " (development key)" } else { "" }
                ),
            )?;
            view(tx)?.ok_or(Error::Crypto("the licence just installed does not verify"))
        })
    }

    /// The installed licence, for any signed-in administrator.
    pub fn licence(&self, actor: &Actor) -> Result<Option<LicenceView>> {
        actor.require_signed_in(Access::Read)?;
        self.licence_unchecked()
    }

    /// The installed licence without an actor: the services gate on it.
    pub fn licence_unchecked(&self) -> Result<Option<LicenceView>> {
        self.read(view)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::licence::tests::{dev_signing_key, terms};
    use crate::model::{DomainKind, UserType};
    use crate::store::NewAdmin;
    use crate::store::NewDomain;
    use crate::store::test_support::{store, system_actor};

    pub fn licence_text(key_agents: u32, domains: u32, expires: &str) -> String {
        licence::issue(&dev_signing_key(), &terms(key_agents, domains, expires)).expect("issue")
    }

    /// Installs a generous licence, as a System Administrator.
    pub fn install_test_licence(s: &Store) {
        s.install_licence(&system_actor(s), &licence_text(100, 100, "2099-12-31"))
            .expect("install licence");
    }

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

    fn licence_error(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Err(Error::Licence(m)) => m,
            other => panic!("expected a licence refusal, got {other:?}"),
        }
    }

    #[test]
    fn no_licence_no_domains() {
        let (_d, s) = store();
        let sys = system_actor(&s);
        assert!(s.licence(&sys).expect("read").is_none());
        let m = licence_error(s.create_domain(&sys, domain("D")));
        assert!(m.contains("License not found"), "{m}");
    }

    #[test]
    fn install_then_the_domain_limit_holds() {
        let (_d, s) = store();
        let sys = system_actor(&s);
        let v = s
            .install_licence(&sys, &licence_text(5, 2, "2099-12-31"))
            .expect("install");
        assert_eq!((v.agents_in_use, v.domains_in_use), (0, 0));
        assert_eq!(v.installed_by, "admin");
        assert!(!v.key_agent_expired && v.development_key);
        s.create_domain(&sys, domain("A")).expect("first");
        s.create_domain(&sys, domain("B")).expect("second");
        let m = licence_error(s.create_domain(&sys, domain("C")));
        assert_eq!(m, "the licence allows 2 domains and 2 exist");
        // A licence for fewer domains than exist is refused and changes nothing.
        match s.install_licence(&sys, &licence_text(5, 1, "2099-12-31")) {
            Err(Error::Conflict { field, rule }) => {
                assert_eq!(field, "licence");
                assert!(
                    rule.contains("allows 1 domain but 2 domains exist"),
                    "{rule}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            s.licence_unchecked()
                .expect("read")
                .expect("installed")
                .terms
                .max_domains,
            2
        );
    }

    #[test]
    fn only_a_writing_system_administrator_installs() {
        let (_d, s) = store();
        let sys = system_actor(&s);
        for (login, t, ro) in [
            ("sec", UserType::Security, false),
            ("ro", UserType::System, true),
        ] {
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
                    read_only: ro,
                },
            )
            .expect("admin");
            let mut a = s.actor(login, "t", "api").expect("actor");
            a.must_change_password = false;
            let r = s.install_licence(&a, &licence_text(1, 1, "2099-12-31"));
            assert!(matches!(r, Err(Error::Forbidden(_))), "{r:?}");
            assert!(s.licence(&a).expect("read").is_none());
        }
    }

    /// A domain `D` whose Host-role Security Administrator set a shared secret.
    fn domain_with_secret(s: &Store) {
        use crate::model::{CreationMethod, Role};
        use crate::secret::SecretString;
        use crate::store::NewSecret;
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
        let mut d = domain("D");
        d.domain_administrator = Some("da".into());
        s.create_domain(&sys, d).expect("domain");
        let mut da = s.actor("da", "t", "api").expect("da");
        da.must_change_password = false;
        s.add_member(&da, "D", "sa", &[Role::Host]).expect("member");
        let mut sa = s.actor("sa", "t", "api").expect("sa");
        sa.must_change_password = false;
        s.set_secret(
            &sa,
            "D",
            NewSecret {
                creation_method: CreationMethod::Manual,
                shared_secret: Some(SecretString::from("Rec0rder-Secret!")),
                valid_until: None,
                require_hosts_first_added: false,
            },
        )
        .expect("secret");
    }

    fn register(s: &Store, host: &str) -> Result<(String, String)> {
        use crate::pki::CaKind;
        use crate::secret::SecretString;
        use crate::store::Registration;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
        let csr = rcgen::CertificateParams::new(vec![host.to_owned()])
            .expect("params")
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");
        let req = Registration {
            host_name: host.into(),
            domain: "D".into(),
            shared_secret: SecretString::from("Rec0rder-Secret!"),
            csr_pem: csr,
        };
        s.register_host(&req, CaKind::Ec, "test")
    }

    #[test]
    fn registrations_stay_within_the_key_agent_licence() {
        let (_d, s) = store();
        s.ensure_identities("custos-test", &["custos-test".into()])
            .expect("identities");
        let sys = system_actor(&s);
        s.install_licence(&sys, &licence_text(1, 1, "2099-12-31"))
            .expect("install");
        domain_with_secret(&s);
        register(&s, "rec1").expect("first host");
        let m = licence_error(register(&s, "rec2"));
        assert_eq!(
            m,
            "registration refused: the licence allows 1 Key agent and 1 is registered"
        );
        // Re-registering the registered host takes no second licence.
        s.write(|tx| {
            tx.execute("UPDATE hosts SET registration_allowed = 1", params![])?;
            Ok(())
        })
        .expect("allow again");
        register(&s, "rec1").expect("re-registration");
        assert_eq!(
            s.licence(&sys).expect("read").expect("some").agents_in_use,
            1
        );

        // An expired Key agent licence refuses every registration.
        s.install_licence(&sys, &licence_text(5, 1, "2020-01-01"))
            .expect("expired licence installs");
        assert!(
            s.licence(&sys)
                .expect("read")
                .expect("some")
                .key_agent_expired
        );
        let m = licence_error(register(&s, "rec3"));
        assert_eq!(
            m,
            "registration refused: the Key agent licence expired on 2020-01-01"
        );
        // A licence without the Key agent.
        let mut t = terms(0, 1, "2099-12-31");
        t.fs_agent.installed = true;
        t.fs_agent.max_agents = 3;
        assert!(matches!(
            s.install_licence(
                &sys,
                &licence::issue(&dev_signing_key(), &t).expect("issue")
            ),
            Err(Error::Conflict { .. })
        ));
        // No licence at all (a store from before licences).
        s.write(|tx| {
            tx.execute("DELETE FROM licence", params![])?;
            Ok(())
        })
        .expect("remove");
        let m = licence_error(register(&s, "rec3"));
        assert!(
            m.ends_with("no licence is installed on the appliance (License not found)"),
            "{m}"
        );
    }

    #[test]
    fn a_row_that_does_not_verify_grants_nothing() {
        let (_d, s) = store();
        install_test_licence(&s);
        s.write(|tx| {
            tx.execute(
                "UPDATE licence SET text = replace(text, 'e', 'f')",
                params![],
            )?;
            Ok(())
        })
        .expect("tamper");
        assert!(s.licence_unchecked().expect("read").is_none());
        let m = licence_error(s.create_domain(&system_actor(&s), domain("D")));
        assert!(m.contains("no licence"), "{m}");
    }
}
