//! The Custos appliance core: the domain model of spec §4–§9, its field rules,
//! the SQLite store that keeps it, and the crypto that protects it at rest.
//!
//! Everything a daemon needs to decide is decided here, once: who may do what
//! (`access`), which values are valid (`model`, `password`), how secrets are
//! sealed (`crypto`), how certificates are made (`pki`) and what a licence
//! grants (`licence`). The daemons only
//! translate their wire formats to and from these types.

pub mod access;
pub mod crypto;
#[cfg(feature = "daemon")]
pub mod daemon;
mod error;
pub mod json_body;
pub mod licence;
pub mod local;
pub mod model;
pub mod os;
pub mod password;
#[cfg(any(test, feature = "test-harness"))]
pub mod pg_harness;
pub mod pgnode;
pub mod pki;
pub mod secret;
pub mod store;
pub mod wrapper;

pub use error::{Error, Result};
pub use store::Store;

/// The appliance version, as shown on the dashboard, in SNMP and in images.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
