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
    let (status, _, took) = announce(
        app,
        &format!("POST {path}"),
        &bearer(Some(token)),
        "application/x-tar",
        Some(length),
        b"",
    );
    (status, took)
}

/// The header line of a bearer token, if any.
fn bearer(token: Option<&str>) -> String {
    token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"))
}

/// The header line of a console session cookie.
fn cookie(session: &str) -> String {
    format!("Cookie: __Host-custos_session={session}\r\n")
}

/// Sends the headers of `request` (`METHOD /path`, with the header lines
/// `credentials`) announcing `length` bytes and only `first` of them, then
/// waits for the answer while the client still owes the rest: the status
/// line, the whole answer as far as it came, and how long it took. Without
/// a length the body is chunked and `first` is all of it, encoded.
fn announce(
    app: &Appliance,
    request: &str,
    credentials: &str,
    content_type: &str,
    length: Option<u64>,
    first: &[u8],
) -> (String, String, Duration) {
    let framing = match length {
        Some(n) => format!("Content-Length: {n}"),
        None => "Transfer-Encoding: chunked".to_owned(),
    };
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
        "{request} HTTP/1.1\r\nHost: 127.0.0.1\r\n{credentials}Content-Type: {content_type}\r\n{framing}\r\n\r\n"
    )
    .expect("headers");
    tls.write_all(first).expect("the first bytes");
    tls.flush().expect("flush");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    // The status line, then the whole (small) answer: its headers' end and
    // the JSON body it announces.
    loop {
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let want = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= want {
                break;
            }
        }
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    (
        text.lines().next().unwrap_or_default().to_owned(),
        text,
        started.elapsed(),
    )
}

/// A read-only System Administrator `sysro` (password `Matrix!Pw1`),
/// signed in over the API.
fn read_only_sysadmin(app: &Appliance, s: &Setup) -> Api {
    s.admin
        .post(
            "/api/v1/administrators",
            json!({"login": "sysro", "password": "Tmp!Passw0rd", "user_type": "system", "read_only": true}),
        )
        .expect(201);
    app.api()
        .login_changing("sysro", "Tmp!Passw0rd", "Matrix!Pw1")
}

#[test]
fn a_restore_upload_is_refused_before_its_body_is_read() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let ro = read_only_sysadmin(&app, &s);
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

/// 50 MB announced, a few bytes sent: what a slow or hostile client does.
const FIFTY_MB: u64 = 50 * 1024 * 1024;

#[test]
fn a_licence_upload_is_refused_before_its_body_is_read() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let ro = read_only_sysadmin(&app, &s);
    let before = s.sys.get("/api/v1/licence").ok();
    let snapshot = store_snapshot(app.data_dir());
    let first = br#"{"licence": "-----BEGIN"#;
    // No session, a made-up one, a read-only System Administrator and a
    // Domain Administrator: refused at once, while the client still owes
    // 50 MB (the server would wait for them if it read the body first).
    let ro_token = ro.token.as_deref().expect("token");
    let dom_token = s.dom.token.as_deref().expect("token");
    for (who, token, code) in [
        ("no session", None, " 401 "),
        ("made-up session", Some("not-a-session"), " 401 "),
        ("read-only", Some(ro_token), " 403 "),
        ("domain", Some(dom_token), " 403 "),
    ] {
        let (status, answer, took) = announce(
            &app,
            "PUT /api/v1/licence",
            &bearer(token),
            "application/json",
            Some(FIFTY_MB),
            first,
        );
        assert!(status.contains(code), "{who}: {status}\n{answer}");
        assert!(took < Duration::from_secs(5), "{who}: {took:?}");
    }
    assert_eq!(
        s.sys.get("/api/v1/licence").ok(),
        before,
        "the licence changed"
    );
    assert_eq!(store_snapshot(app.data_dir()), snapshot, "nothing changed");
}

#[test]
fn an_oversize_licence_is_refused_naming_the_limit() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let before = s.sys.get("/api/v1/licence").ok();
    let limit = "65536 bytes";
    // Announced: 413 before the body, while the client owes 50 MB.
    let token = s.sys.token.as_deref().expect("token");
    let (status, answer, took) = announce(
        &app,
        "PUT /api/v1/licence",
        &bearer(Some(token)),
        "application/json",
        Some(FIFTY_MB),
        br#"{"licence": ""#,
    );
    assert!(status.contains(" 413 "), "{status}\n{answer}");
    assert!(answer.contains(limit), "{answer}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // Sent without a length (chunked): read only up to the limit, then
    // refused with the same answer, as JSON naming the body and the limit.
    let body = json!({ "licence": "A".repeat(70 * 1024) }).to_string();
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let (status, answer, _) = announce(
        &app,
        "PUT /api/v1/licence",
        &bearer(Some(token)),
        "application/json",
        None,
        chunked.as_bytes(),
    );
    assert!(status.contains(" 413 "), "{status}\n{answer}");
    let json = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let r: serde_json::Value = serde_json::from_str(json).expect("a JSON answer");
    assert_eq!(r["field"], "body", "{r}");
    let message = r["message"].as_str().unwrap_or_default();
    assert!(message.contains(limit), "{message}");
    assert!(message.contains("licence"), "{message}");
    // Just under the limit it is read, and judged as a licence (not one).
    let body = json!({ "licence": "A".repeat(60 * 1024) }).to_string();
    let r = s
        .sys
        .raw("PUT", "/api/v1/licence", "application/json", &body);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        s.sys.get("/api/v1/licence").ok(),
        before,
        "the licence changed"
    );
}

#[test]
fn the_console_licence_form_is_refused_before_its_body_is_read() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    read_only_sysadmin(&app, &s);
    let (ro, _) = console_sign_in(&app, "sysro", "Matrix!Pw1");
    let (sys, _) = console_sign_in(&app, "SystemAdministrator", SYS_PW);
    let before = s.sys.get("/api/v1/licence").ok();
    let snapshot = store_snapshot(app.data_dir());
    let form = "multipart/form-data; boundary=xyz";
    let first = b"--xyz\r\nContent-Disposition: form-data; name=\"licence_file\"\r\n\r\n";
    // No session: to the sign-in page; read-only: 403; both at once, while
    // the browser still owes 50 MB.
    for (who, credentials, code) in [
        ("no session", String::new(), " 303 "),
        ("read-only", cookie(&ro), " 403 "),
    ] {
        let (status, answer, took) = announce(
            &app,
            "POST /system/license",
            &credentials,
            form,
            Some(FIFTY_MB),
            first,
        );
        assert!(status.contains(code), "{who}: {status}\n{answer}");
        assert!(took < Duration::from_secs(5), "{who}: {took:?}");
    }
    // A System Administrator announcing 50 MB: 413 naming the limit.
    let (status, answer, took) = announce(
        &app,
        "POST /system/license",
        &cookie(&sys),
        form,
        Some(FIFTY_MB),
        first,
    );
    assert!(status.contains(" 413 "), "{status}\n{answer}");
    assert!(answer.contains("65536 bytes"), "{answer}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(
        s.sys.get("/api/v1/licence").ok(),
        before,
        "the licence changed"
    );
    assert_eq!(store_snapshot(app.data_dir()), snapshot, "nothing changed");
}
