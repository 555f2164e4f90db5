//! The licence of spec §10: until one is installed only the dashboard and
//! System are usable; only a vendor-signed, unchanged file installs, and only
//! by a System Administrator; its limits refuse extra hosts and domains with
//! a clear message, and a refused request changes no row of the store.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tests::*;

const REQUIRED: &str =
    "License not found: install a licence first (System → License, PUT /api/v1/licence)";
const MISMATCH: &str =
    "the signature does not match: this file was not issued by the vendor or was changed";

/// The licence file with one byte of its signed payload changed (the
/// signature block kept as it was).
fn tampered(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .iter()
        .position(|l| *l == "-----END CUSTOS LICENSE-----")
        .expect("payload block");
    let mut payload = STANDARD.decode(lines[1..end].concat()).expect("base64");
    let at = String::from_utf8_lossy(&payload)
        .find("\"max_agents\":1")
        .expect("the Key agent limit")
        + "\"max_agents\":".len();
    payload[at] = b'9';
    let b64 = STANDARD.encode(&payload);
    let body: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "{}\n{}\n{}\n",
        lines[0],
        body.join("\n"),
        lines[end..].join("\n")
    )
}

/// Calls `f`, expects `status` and the error `code`, and checks that no row of
/// the store changed; returns the message.
fn refused(app: &Appliance, status: u16, code: &str, f: impl FnOnce() -> Resp) -> String {
    let before = app.snapshot();
    let r = f();
    assert_eq!(r.status, status, "body: {}", r.body);
    assert_eq!(r.body["error"], code, "body: {}", r.body);
    assert_eq!(
        before,
        app.snapshot(),
        "a refused request changed the store"
    );
    r.body["message"].as_str().expect("message").to_owned()
}

#[test]
fn without_a_licence_only_the_dashboard_and_system_are_usable() {
    let app = Appliance::start();
    let anon = app.api();
    let admin = anon.login_changing("admin", "admin123", ADMIN_PW);

    let v = admin.get("/api/v1/licence").ok();
    assert_eq!(
        v,
        json!({"installed": false, "status": "License not found"})
    );
    for (method, path, body) in [
        ("GET", "/api/v1/administrators", None),
        (
            "POST",
            "/api/v1/administrators",
            Some(json!({"login": "someone", "password": "G00d!pass"})),
        ),
        ("GET", "/api/v1/domains", None),
        ("POST", "/api/v1/domains", Some(json!({"name": DOMAIN}))),
        ("GET", "/api/v1/domains/RecorderDomain/keys", None),
        ("GET", "/api/v1/audit", None),
    ] {
        let m = refused(&app, 403, "licence_required", || {
            admin.call(method, path, body)
        });
        assert_eq!(m, REQUIRED, "{method} {path}");
    }
    // Signing in comes first: nobody learns more than "sign in".
    assert_eq!(
        anon.get("/api/v1/domains").expect(401)["error"],
        "unauthenticated"
    );
    // System stays usable.
    admin.get("/api/v1/system").ok();
    admin.get("/api/v1/preferences").ok();
    admin
        .call(
            "PATCH",
            "/api/v1/preferences",
            Some(json!({"session_timeout": 20})),
        )
        .ok();

    // Files that are not a vendor's unchanged licence are refused and change nothing.
    let good = dev_licence(1, 1, "2099-12-31");
    let m = refused(&app, 400, "invalid", || {
        install_licence(&admin, &tampered(&good))
    });
    assert_eq!(m, format!("licence: {MISMATCH}"));
    let other =
        aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .expect("another key");
    let foreign = sign_licence(
        other.as_ref(),
        licence_terms(1, 1, "2099-12-31").to_string().as_bytes(),
    );
    let m = refused(&app, 400, "invalid", || install_licence(&admin, &foreign));
    assert_eq!(m, format!("licence: {MISMATCH}"));
    for (garbage, says) in [
        ("garbage", "this is not a Custos licence file"),
        (
            &good[..good
                .find("-----BEGIN CUSTOS LICENSE SIGNATURE")
                .expect("sig")] as &str,
            "has no signature",
        ),
        (
            &good.replace("-----END CUSTOS LICENSE SIGNATURE-----", ""),
            "incomplete",
        ),
    ] {
        let m = refused(&app, 400, "invalid", || install_licence(&admin, garbage));
        assert!(m.starts_with("licence: ") && m.contains(says), "{m}");
    }
    let v = refused(&app, 400, "invalid", || {
        admin.call("PUT", "/api/v1/licence", Some(json!({"text": good})))
    });
    assert!(v.contains("licence"), "{v}");
    assert_eq!(admin.get("/api/v1/licence").ok()["installed"], false);

    // The vendor's file installs, and the rest of the console opens.
    let v = install_licence(&admin, &good).ok();
    assert_eq!(v["installed"], true);
    assert_eq!(v["status"], "Licensed");
    assert_eq!(v["terms"], licence_terms(1, 1, "2099-12-31"));
    assert_eq!(v["installed_by"], "admin");
    assert_eq!(v["development_key"], true);
    assert_eq!(
        (v["agents_in_use"].as_i64(), v["domains_in_use"].as_i64()),
        (Some(0), Some(0))
    );
    admin.get("/api/v1/domains").ok();
    let log = admin.get("/api/v1/audit?text=installed%20licence").ok();
    assert!(
        log["entries"][0]["what"].as_str().is_some_and(
            |w| w.starts_with("installed licence TEST-1-1-20991231 issued to Custos tests")
        ),
        "{log}"
    );

    // Only a System Administrator who may write installs one.
    for (login, t, ro) in [("sec", "security", false), ("sysro", "system", true)] {
        admin
            .post(
                "/api/v1/administrators",
                json!({"login": login, "password": "Tmp!Passw0rd", "user_type": t, "read_only": ro}),
            )
            .expect(201);
        let who = anon.login_changing(login, "Tmp!Passw0rd", "Matrix!Pw1");
        assert_eq!(who.get("/api/v1/licence").ok()["installed"], true);
        let m = refused(&app, 403, "forbidden", || {
            install_licence(&who, &generous_licence())
        });
        assert!(!m.is_empty());
    }
}

#[test]
fn limits_refuse_extra_hosts_and_domains_with_a_clear_message() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    // One Key agent, one domain (RecorderDomain exists).
    let v = install_licence(&s.admin, &dev_licence(1, 1, "2099-12-31")).ok();
    assert_eq!(v["domains_in_use"], 1);

    let host1 = tempfile::tempdir().expect("tempdir");
    register_host(
        &app,
        "enrol",
        "rec1.example.com",
        SHARED_SECRET,
        host1.path(),
    )
    .ok();
    assert_eq!(s.sec.get("/api/v1/licence").ok()["agents_in_use"], 1);

    // A second host is refused, and the agent prints why.
    let host2 = tempfile::tempdir().expect("tempdir");
    let before = app.snapshot();
    let out = register_host(
        &app,
        "enrol",
        "rec2.example.com",
        SHARED_SECRET,
        host2.path(),
    );
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("registration refused: the licence allows 1 Key agent and 1 is registered"),
        "{}",
        out.stderr
    );
    assert_eq!(before, app.snapshot());

    // The registered host re-registers without a second licence.
    s.sec
        .call(
            "PATCH",
            &format!("/api/v1/domains/{DOMAIN}/hosts/rec1.example.com"),
            Some(json!({"registration_allowed": true})),
        )
        .ok();
    let host1b = tempfile::tempdir().expect("tempdir");
    register_host(
        &app,
        "enrol",
        "rec1.example.com",
        SHARED_SECRET,
        host1b.path(),
    )
    .ok();
    assert_eq!(s.admin.get("/api/v1/licence").ok()["agents_in_use"], 1);

    // A licence below what is in use does not install.
    let m = refused(&app, 409, "conflict", || {
        install_licence(&s.admin, &dev_licence(0, 1, "2099-12-31"))
    });
    assert!(
        m.contains("this licence allows 0 Key agents but 1 host is registered"),
        "{m}"
    );

    // The domain limit.
    let m = refused(&app, 403, "licence", || {
        s.sys.post("/api/v1/domains", json!({"name": "Second"}))
    });
    assert_eq!(
        m,
        "the licence allows 1 domain (multiple domains are not licensed) and 1 exists"
    );
    install_licence(&s.admin, &dev_licence(5, 2, "2099-12-31")).ok();
    s.sys
        .post("/api/v1/domains", json!({"name": "Second"}))
        .expect(201);
    let m = refused(&app, 403, "licence", || {
        s.sys.post("/api/v1/domains", json!({"name": "Third"}))
    });
    assert_eq!(m, "the licence allows 2 domains and 2 exist");
    let m = refused(&app, 409, "conflict", || {
        install_licence(&s.admin, &dev_licence(5, 1, "2099-12-31"))
    });
    assert!(m.contains("allows 1 domain but 2 domains exist"), "{m}");

    // An expired Key agent licence refuses registrations; hosts already
    // registered keep their keys (recordings must still play back).
    let v = install_licence(&s.admin, &dev_licence(5, 2, "2020-01-01")).ok();
    assert_eq!(v["key_agent_expired"], true);
    assert_eq!(v["status"], "Key agent licence expired on 2020-01-01");
    let host3 = tempfile::tempdir().expect("tempdir");
    let before = app.snapshot();
    let out = register_host(
        &app,
        "enrol",
        "rec3.example.com",
        SHARED_SECRET,
        host3.path(),
    );
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("registration refused: the Key agent licence expired on 2020-01-01"),
        "{}",
        out.stderr
    );
    assert_eq!(before, app.snapshot());
    let (key, version) = fetch_key(&app, host1b.path(), "recorder", None);
    assert_eq!((key.len(), version), (64, 1));

    // The refusals are in the audit log as warnings.
    let log: Value = s.sys.get("/api/v1/audit?severity=WARN&limit=1000").ok();
    let text = log["entries"].to_string();
    assert!(
        text.contains("registration refused: the licence allows 1 Key agent"),
        "{text}"
    );
    assert!(
        text.contains("registration refused: the Key agent licence expired"),
        "{text}"
    );
}
