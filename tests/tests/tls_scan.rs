//! testssl.sh (Debian's `testssl`) against every TLS port of the real key
//! service, in both security modes (spec §9, issue 12's attack tests): no
//! protocol below TLS 1.2 anywhere; the Suite B ports (the EC agent ports
//! always, the console too in Suite B mode) offer exactly
//! ECDHE-ECDSA-AES256-GCM-SHA384 and TLS_AES_256_GCM_SHA384; the other ports
//! only forward-secret AEAD suites. Skipped, and counted so, when `testssl`
//! is missing (`cargo xtask test` installs it).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use tests::*;

const SUITE_B: [&str; 2] = [
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_AES_256_GCM_SHA384",
];

/// What a compatible port may offer: ECDHE key exchange and AEAD ciphers.
const COMPATIBLE: [&str; 9] = [
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// One port as testssl saw it.
#[derive(Debug)]
struct Scan {
    name: String,
    /// Protocol id (`SSLv2` … `TLS1_3`) → whether it is offered.
    protocols: Vec<(String, bool)>,
    /// The offered suites by their IANA names.
    suites: BTreeSet<String>,
}

fn testssl_present() -> bool {
    Command::new("testssl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `testssl -p -E` (protocols, then every cipher of each protocol)
/// against 127.0.0.1:`port` and reads its JSON findings.
fn scan(name: &str, port: u16, out_dir: &Path) -> Scan {
    let json_path = out_dir.join(format!("{name}.json"));
    let out = Command::new("testssl")
        .args([
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "--connect-timeout",
            "10",
            "--openssl-timeout",
            "10",
            "-p",
            "-E",
            "--jsonfile",
        ])
        .arg(&json_path)
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output()
        .expect("running testssl");
    let text = std::fs::read_to_string(&json_path).unwrap_or_else(|e| {
        panic!(
            "{name}: testssl wrote no JSON ({e}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let findings: Vec<Value> = serde_json::from_str(&text).expect("testssl's JSON");
    let mut scan = Scan {
        name: name.to_owned(),
        protocols: Vec::new(),
        suites: BTreeSet::new(),
    };
    for f in &findings {
        let id = f["id"].as_str().unwrap_or_default();
        let finding = f["finding"].as_str().unwrap_or_default();
        assert_ne!(
            id, "scanProblem",
            "{name}: testssl could not scan: {finding}"
        );
        if ["SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3"].contains(&id) {
            let offered = !finding.starts_with("not offered");
            scan.protocols.push((id.to_owned(), offered));
        } else if id.starts_with("cipher-tls") || id.starts_with("cipher-ssl") {
            // "TLS 1.2   xc030   ECDHE-RSA-AES256-GCM-SHA384  ECDH 253  AESGCM  256  TLS_ECDHE_RSA_…"
            let iana = finding.split_whitespace().last().unwrap_or_default();
            scan.suites.insert(iana.to_owned());
        }
    }
    assert_eq!(
        scan.protocols.len(),
        6,
        "{name}: testssl reported {:?}\n{text}",
        scan.protocols
    );
    scan
}

/// Scans every named port at once (one testssl each).
fn scan_all(app: &Appliance, names: &[&str]) -> Vec<Scan> {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<(String, u16)> = names.iter().map(|n| (n.to_string(), app.port(n))).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = ports
            .iter()
            .map(|(n, p)| {
                let dir = out_dir.path();
                s.spawn(move || scan(n, *p, dir))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("scan thread"))
            .collect()
    })
}

fn assert_modern_protocols(scan: &Scan) {
    for (id, offered) in &scan.protocols {
        match id.as_str() {
            "TLS1_2" => assert!(offered, "{}: TLS 1.2 not offered", scan.name),
            "TLS1_3" => {}
            old => assert!(!offered, "{}: {old} is offered", scan.name),
        }
    }
}

fn assert_suite_b(scan: &Scan) {
    assert_modern_protocols(scan);
    let expected: BTreeSet<String> = SUITE_B.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        scan.suites, expected,
        "{}: a Suite B port offers other suites",
        scan.name
    );
}

fn assert_compatible(scan: &Scan) {
    assert_modern_protocols(scan);
    assert!(!scan.suites.is_empty(), "{}: no suite found", scan.name);
    for suite in &scan.suites {
        assert!(
            COMPATIBLE.contains(&suite.as_str()),
            "{}: {suite} is offered (not ECDHE with an AEAD cipher)",
            scan.name
        );
    }
}

#[test]
fn testssl_finds_only_modern_tls_and_suite_b_where_required() {
    if !testssl_present() {
        skip(
            "tls_scan::testssl_finds_only_modern_tls_and_suite_b_where_required",
            "testssl is not installed (apt-get install testssl.sh; cargo xtask test does)",
        );
        return;
    }
    let mut app = Appliance::start();

    // Compatible mode: every port is bound; the EC agent ports are Suite B.
    let scans = scan_all(&app, &["web", "enrol", "keys", "enrol-ec", "keys-ec"]);
    for s in &scans {
        match s.name.as_str() {
            "enrol-ec" | "keys-ec" => assert_suite_b(s),
            _ => assert_compatible(s),
        }
    }

    // Suite B mode: the RSA agent ports are closed, everything else is Suite B.
    let admin = app.api().login_changing("admin", "admin123", ADMIN_PW);
    let v = admin
        .call(
            "PATCH",
            "/api/v1/preferences",
            Some(json!({"security_mode": "suite_b"})),
        )
        .ok();
    assert_eq!(v["restart_required"], true);
    app.restart();
    let scans = scan_all(&app, &["web", "enrol-ec", "keys-ec"]);
    for s in &scans {
        assert_suite_b(s);
    }
}
