//! Any text as a protected host's certificate signing request, under both
//! CAs: parsing and signing never panic, and whatever is signed is a
//! certificate for the registered host name, never the name the CSR asked for.
//!
//! Inputs are tried as given (PEM text) and as DER wrapped in PEM, so the
//! fuzzer reaches the DER parser without having to learn base64.

#![no_main]

use std::sync::OnceLock;

use appliance::pki::{self, CaKind, CaSubject, Identity};
use libfuzzer_sys::fuzz_target;

const HOST: &str = "rec1.example.com";

fn cas() -> &'static [(CaKind, Identity); 2] {
    static CAS: OnceLock<[(CaKind, Identity); 2]> = OnceLock::new();
    CAS.get_or_init(|| {
        let subject = CaSubject::default_for("custos.fuzz");
        [CaKind::Ec, CaKind::Rsa]
            .map(|kind| (kind, pki::generate_ca(kind, &subject).expect("a CA")))
    })
}

fn pem_of(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut pem = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE REQUEST-----\n");
    pem
}

fuzz_target!(|data: &[u8]| {
    let as_text = String::from_utf8_lossy(data).into_owned();
    for csr in [as_text, pem_of(data)] {
        for (kind, ca) in cas() {
            if let Ok(cert) = pki::sign_host_csr(ca, *kind, &csr, HOST) {
                let der = pki::pem_to_der(&cert).expect("a signed certificate is PEM");
                assert!(
                    der.windows(HOST.len()).any(|w| w == HOST.as_bytes()),
                    "the certificate does not name the registered host"
                );
            }
        }
    }
});
