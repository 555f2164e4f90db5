use std::path::PathBuf;

/// Everything the appliance core can refuse or fail at.
///
/// The first group are answers to the caller (4xx at an HTTP edge): each names
/// the field or object and the rule. The second group are faults of the
/// appliance itself; their detail goes to the log, never to the caller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {rule}")]
    Invalid { field: &'static str, rule: String },
    #[error("{what} '{name}' does not exist")]
    NotFound { what: &'static str, name: String },
    #[error("{field}: {rule}")]
    Conflict { field: &'static str, rule: String },
    #[error("permission denied: {0}")]
    Forbidden(String),
    #[error(
        "login or password is wrong, or the account is locked for a while after repeated failures"
    )]
    BadCredentials,
    #[error("the account is locked after repeated failed logins; try again later")]
    Locked,
    #[error("the password must be changed before anything else")]
    PasswordChangeRequired,
    /// §10: the installed licence does not allow this (none installed, the
    /// agent type not licensed or expired, a limit reached). The message
    /// says which, with the limit.
    #[error("{0}")]
    Licence(String),
    /// §11: this appliance is a failover; its store is a read-only replica
    /// of the primary's, and every change is made on the primary.
    #[error(
        "this appliance is a failover of {primary} and takes no changes; make them on the primary{}",
        if primary.is_empty() { String::new() } else { format!(" {primary}") }
    )]
    Failover { primary: String },

    #[error("store: {0}")]
    Store(#[from] crate::store::db::DbError),
    #[error("crypto: {0}")]
    Crypto(&'static str),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store schema version {found} is newer than this software ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
}

impl Error {
    pub fn invalid(field: &'static str, rule: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            rule: rule.into(),
        }
    }

    pub fn conflict(field: &'static str, rule: impl Into<String>) -> Self {
        Error::Conflict {
            field,
            rule: rule.into(),
        }
    }

    pub fn not_found(what: &'static str, name: impl Into<String>) -> Self {
        Error::NotFound {
            what,
            name: name.into(),
        }
    }
}

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Error::Certificate(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
