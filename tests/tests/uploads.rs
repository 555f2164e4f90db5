//! Issue 12, item 9: an upload is refused before its body is read when the
//! caller may not make it or when it cannot fit on the data partition: the
//! answer comes while the client is still to send the body, and nothing
//! changes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::crypto::aws_lc_rs;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tests::*;

/// Sends only the headers of a POST announcing `length` bytes, then waits
/// for the answer without sending any body: the status line and how long
/// it took.
fn headers_only(app: &Appliance, path: &str, token: &str, length: u64) -> (String, Duration) {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(app.ca_pem("enrol").as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("127.0.0.1").expect("name"),
    )
    .expect("conn");
    let tcp = TcpStream::connect(("127.0.0.1", app.port("web"))).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let started = Instant::now();
    write!(
        tls,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/x-tar\r\nContent-Length: {length}\r\n\r\n"
    )
    .expect("headers");
    tls.flush().expect("flush");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(2).any(|w| w == b"\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    (
        text.lines().next().unwrap_or_default().to_owned(),
        started.elapsed(),
    )
}

#[test]
fn a_restore_upload_is_refused_before_its_body_is_read() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    s.admin
        .post(
            "/api/v1/administrators",
            json!({"login": "sysro", "password": "Tmp!Passw0rd", "user_type": "system", "read_only": true}),
        )
        .expect(201);
    let ro = app
        .api()
        .login_changing("sysro", "Tmp!Passw0rd", "Matrix!Pw1");
    let before = store_snapshot(app.data_dir());
    let path = "/api/v1/backups/restore";
    // A read-only System Administrator and a Domain Administrator: 403 at
    // once, while the client still owes a gigabyte.
    for (who, api) in [("read-only", &ro), ("domain", &s.dom)] {
        let token = api.token.as_deref().expect("token");
        let (status, took) = headers_only(&app, path, token, 1 << 30);
        assert!(status.contains(" 403 "), "{who}: {status}");
        assert!(took < Duration::from_secs(10), "{who}: {took:?}");
    }
    // A System Administrator announcing more than the data partition (and
    // the 8 GiB limit) can take: 413 before the body.
    let token = s.sys.token.as_deref().expect("token");
    let (status, _) = headers_only(&app, path, token, 1 << 50);
    assert!(status.contains(" 413 "), "{status}");
    assert_eq!(store_snapshot(app.data_dir()), before, "nothing changed");
}
