//! Any bytes as the JSON body a protected host sends to register
//! (`POST /agent/v1/register` on the enrolment ports, §8), read with the
//! key service's own reader (`appliance::json_body::from_slice`) and checked
//! with the rules the store applies before it looks at the secret: never a
//! panic, a refusal always names a field, and what is accepted has a host
//! name that passes its rule.
//!
//! The CSR inside is the `csr` target's; the key fetch (`GET
//! /agent/v1/keys/{name}`) has no body.

#![no_main]

use appliance::json_body::{self, BodyError};
use appliance::store::Registration;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match json_body::from_slice::<Registration>(data) {
        Ok(reg) => {
            if reg.check().is_ok() {
                assert!(!reg.host_name.is_empty());
                assert!(!reg.host_name.contains(['\n', '"', ' ']));
            }
        }
        Err(BodyError { field, message }) => {
            assert!(!field.is_empty(), "a refusal names no field");
            assert!(
                message.starts_with(&field),
                "{message} does not name {field}"
            );
        }
    }
});
