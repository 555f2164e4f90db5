//! Any text as an uploaded licence file: verifying never panics, and what
//! it accepts (only text signed with this build's vendor key, such as the
//! seed the development key signed) holds terms that pass their own rules.

#![no_main]

use appliance::licence;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(terms) = licence::verify(&text) {
        assert!(terms.check().is_ok(), "accepted terms break their rules");
    }
});
