//! Suite B (spec §9): after switching the mode and restarting, the RSA agent
//! ports are closed and every TLS port accepts only TLS 1.2
//! ECDHE-ECDSA-AES256-GCM-SHA384 and TLS 1.3 TLS_AES_256_GCM_SHA384 with a
//! P-384 certificate. Checked with OpenSSL's client and with rustls.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;

use rustls::crypto::aws_lc_rs;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tests::*;

/// `openssl s_client` with the given version and cipher options; returns
/// whether the handshake succeeded, and its output.
fn openssl(port: u16, opts: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .args(opts)
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client (cargo xtask test installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
    (ok, text)
}

/// A rustls handshake with exactly the given suites and groups.
fn rustls_handshake(
    port: u16,
    ca_pem: &str,
    suites: Vec<rustls::SupportedCipherSuite>,
    groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
) -> Result<(rustls::SupportedCipherSuite, Vec<u8>), String> {
    let mut provider = aws_lc_rs::default_provider();
    provider.cipher_suites = suites;
    provider.kx_groups = groups;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("127.0.0.1").expect("name"),
    )
    .expect("conn");
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    let suite = conn.negotiated_cipher_suite().expect("suite");
    let leaf = conn.peer_certificates().expect("certs")[0].to_vec();
    Ok((suite, leaf))
}

fn is_p384_leaf(der: &[u8]) -> bool {
    // id-ecPublicKey with the secp384r1 curve OID (1.3.132.0.34) in the SPKI.
    let secp384r1 = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    der.windows(secp384r1.len()).any(|w| w == secp384r1)
}

#[test]
fn suite_b_mode_accepts_only_the_suite_b_suites() {
    let mut app = Appliance::start();
    let s = recommended_setup(&app);
    let dir = tempfile::tempdir().expect("tempdir");
    register_host(
        &app,
        "enrol-ec",
        "rec1.example.com",
        SHARED_SECRET,
        dir.path(),
    )
    .ok();
    let (before, _) = fetch_key(&app, dir.path(), "recorder", None);
    let rsa_enrol = app.port("enrol");
    let rsa_keys = app.port("keys");

    // In compatible mode the web console uses RSA and more suites.
    let (ok, text) = openssl(
        app.port("web"),
        &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"],
    );
    assert!(
        ok,
        "compatible web console takes a standard RSA suite: {text}"
    );

    let v = s
        .sys
        .call(
            "PATCH",
            "/api/v1/preferences",
            Some(json!({"security_mode": "suite_b"})),
        )
        .ok();
    assert_eq!(v["restart_required"], true);
    app.restart();
    assert!(
        !app.urls.contains_key("enrol") && !app.urls.contains_key("keys"),
        "{:?}",
        app.urls
    );
    for p in [rsa_enrol, rsa_keys] {
        assert!(
            TcpStream::connect(("127.0.0.1", p)).is_err(),
            "RSA port {p} is still open in Suite B mode"
        );
    }
    let ec_ca = app.ca_pem("enrol-ec");

    for name in ["web", "enrol-ec", "keys-ec"] {
        let port = app.port(name);
        // The two allowed suites, through OpenSSL.
        let (ok, text) = openssl(
            port,
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"],
        );
        assert!(
            ok && text.contains("ECDHE-ECDSA-AES256-GCM-SHA384"),
            "{name}: TLS 1.2 Suite B suite refused:\n{text}"
        );
        let (ok, text) = openssl(
            port,
            &["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"],
        );
        assert!(
            ok && text.contains("TLS_AES_256_GCM_SHA384"),
            "{name}: TLS 1.3 Suite B suite refused:\n{text}"
        );
        // Anything else is refused.
        for opts in [
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"][..],
            &["-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"][..],
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"][..],
            &["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"][..],
            &["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"][..],
            &["-tls1_1"][..],
        ] {
            let (ok, text) = openssl(port, opts);
            assert!(
                !ok,
                "{name}: {opts:?} was accepted in Suite B mode:\n{text}"
            );
        }
        // rustls: the allowed suites with a P-384 certificate; other groups refused.
        for suite in [
            aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
            aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ] {
            let (got, leaf) = rustls_handshake(
                port,
                &ec_ca,
                vec![suite],
                vec![aws_lc_rs::kx_group::SECP384R1],
            )
            .unwrap_or_else(|e| panic!("{name}: {suite:?} refused: {e}"));
            assert_eq!(got.suite(), suite.suite());
            assert!(
                is_p384_leaf(&leaf),
                "{name}: the server certificate is not P-384"
            );
        }
        let r = rustls_handshake(
            port,
            &ec_ca,
            vec![aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384],
            vec![aws_lc_rs::kx_group::X25519],
        );
        assert!(
            r.is_err(),
            "{name}: X25519 key exchange accepted in Suite B mode"
        );
        let r = rustls_handshake(
            port,
            &ec_ca,
            vec![
                aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
                aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ],
            vec![aws_lc_rs::kx_group::SECP384R1],
        );
        assert!(
            r.is_err(),
            "{name}: AES-128 suites accepted in Suite B mode"
        );
    }

    // The host enrolled on the P-384 port still gets its key, unchanged.
    let (after, _) = fetch_key(&app, dir.path(), "recorder", None);
    assert_eq!(before, after);
    // And the admin API works over the Suite B console (the fixture's client
    // now trusts the EC CA).
    let sys = app.api().login("SystemAdministrator", SYS_PW);
    assert_eq!(sys.get("/api/v1/system").ok()["security_mode"], "suite_b");
}
