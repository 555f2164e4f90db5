//! §5 permissions: who may do what. Every store operation that acts for an
//! administrator calls one of these checks first, so the REST API, the web
//! console and the CLI cannot disagree.

use crate::model::{Role, UserType};
use crate::{Error, Result};

/// The administrator on whose behalf an operation runs, as loaded from the
/// store for this request (so a deleted or changed account takes effect at once).
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: i64,
    pub login: String,
    pub user_type: UserType,
    pub read_only: bool,
    pub must_change_password: bool,
    /// Where the request came from (an IP address, or `console`).
    pub source: String,
    /// Which edge: `api`, `web`, `cli`.
    pub via: &'static str,
}

/// Whether an operation reads or changes state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// An administrator's membership of one domain.
#[derive(Debug, Clone)]
pub struct Membership {
    pub roles: Vec<Role>,
    pub enabled: bool,
}

impl Actor {
    /// Every operation but the password change needs a usable session.
    fn active(&self, access: Access) -> Result<()> {
        if self.must_change_password {
            return Err(Error::PasswordChangeRequired);
        }
        if access == Access::Write && self.read_only {
            return Err(Error::Forbidden(
                "read-only administrators can change only their own password".into(),
            ));
        }
        Ok(())
    }

    /// Any signed-in administrator (view preferences, own account).
    pub fn require_signed_in(&self, access: Access) -> Result<()> {
        self.active(access)
    }

    /// System-level work (§5, System Administrator column).
    pub fn require_system(&self, access: Access) -> Result<()> {
        self.active(access)?;
        if self.user_type != UserType::System {
            return Err(Error::Forbidden(
                "only a System Administrator may do this".into(),
            ));
        }
        Ok(())
    }

    /// System or Domain Administrators (list administrators to pick from).
    pub fn require_system_or_domain_admin(&self, access: Access) -> Result<()> {
        self.active(access)?;
        if self.user_type == UserType::Security {
            return Err(Error::Forbidden(
                "only System and Domain Administrators may do this".into(),
            ));
        }
        Ok(())
    }

    /// Domain administration inside a domain the actor belongs to.
    pub fn require_domain_admin(&self, m: Option<&Membership>, access: Access) -> Result<()> {
        self.active(access)?;
        if self.user_type != UserType::Domain {
            return Err(Error::Forbidden(
                "only a Domain Administrator of this domain may do this".into(),
            ));
        }
        match m {
            Some(m) if m.enabled => Ok(()),
            Some(_) => Err(Error::Forbidden(
                "your membership of this domain is disabled".into(),
            )),
            None => Err(Error::Forbidden(
                "you are not an administrator of this domain".into(),
            )),
        }
    }

    /// Security work inside a domain: a Security Administrator holding `role`.
    pub fn require_role(&self, m: Option<&Membership>, role: Role, access: Access) -> Result<()> {
        self.active(access)?;
        if self.user_type != UserType::Security {
            return Err(Error::Forbidden(format!(
                "only a Security Administrator with the {} role may do this",
                role.as_str()
            )));
        }
        match m {
            Some(m) if m.enabled && m.roles.contains(&role) => Ok(()),
            Some(m) if !m.enabled => Err(Error::Forbidden(
                "your membership of this domain is disabled".into(),
            )),
            Some(_) => Err(Error::Forbidden(format!(
                "the {} role in this domain is required",
                role.as_str()
            ))),
            None => Err(Error::Forbidden(
                "you are not an administrator of this domain".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(t: UserType, ro: bool) -> Actor {
        Actor {
            id: 1,
            login: "x".into(),
            user_type: t,
            read_only: ro,
            must_change_password: false,
            source: "test".into(),
            via: "api",
        }
    }

    #[test]
    fn matrix() {
        let keys = Membership {
            roles: vec![Role::Key],
            enabled: true,
        };
        let sec = actor(UserType::Security, false);
        assert!(
            sec.require_role(Some(&keys), Role::Key, Access::Write)
                .is_ok()
        );
        assert!(
            sec.require_role(Some(&keys), Role::Host, Access::Read)
                .is_err()
        );
        assert!(sec.require_role(None, Role::Key, Access::Read).is_err());
        assert!(sec.require_system(Access::Read).is_err());
        let ro = actor(UserType::Security, true);
        assert!(
            ro.require_role(Some(&keys), Role::Key, Access::Read)
                .is_ok()
        );
        assert!(
            ro.require_role(Some(&keys), Role::Key, Access::Write)
                .is_err()
        );
        let sys = actor(UserType::System, false);
        assert!(
            sys.require_role(Some(&keys), Role::Key, Access::Read)
                .is_err()
        );
        let mut fresh = actor(UserType::System, false);
        fresh.must_change_password = true;
        assert!(matches!(
            fresh.require_system(Access::Read),
            Err(Error::PasswordChangeRequired)
        ));
    }
}
