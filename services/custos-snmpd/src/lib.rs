//! `custos-snmpd`, the SNMP agent of spec §13: SNMP v1 and v2c, GET,
//! GETNEXT and GETBULK, on UDP and TCP ports 161 and 7025, read-only.
//!
//! The library is the protocol without sockets or the appliance, tested and
//! fuzzed on its own (its only dependencies are rasn's): `wire` (BER
//! messages in and out, with size limits), `mib` (the objects in OID order)
//! and `agent` (the answers). The daemon in `main.rs`, built with the
//! default `daemon` feature, adds the settings from the store, the live
//! values (`facts.rs`), the access list, the community check and the
//! listeners.

pub mod agent;
pub mod mib;
pub mod wire;
