//! Spec §5's recommended setup through the REST API, then a protected host
//! registers with `custos-agent` and fetches the key; a forced rotation
//! gives version 2 while version 1 is still served.

use serde_json::json;
use tests::*;

#[test]
fn recommended_setup_then_host_fetches_and_rotation_keeps_old_versions() {
    let app = Appliance::start();
    let anon = app.api();

    // First login: nothing but the password change is allowed.
    let fresh = anon.login("admin", "admin123");
    let v = fresh.get("/api/v1/domains").expect(403);
    assert_eq!(v["error"], "password_change_required");
    // The default password must be replaced by a strong one.
    let v = fresh
        .post(
            "/api/v1/password",
            json!({"old": "admin123", "new": "weak"}),
        )
        .expect(400);
    assert_eq!(v["field"], "new");

    let s = recommended_setup(&app);
    let key = s
        .sec
        .get(&format!("/api/v1/domains/{DOMAIN}/keys/recorder"))
        .ok();
    assert_eq!(key["algorithm"], "AES256");
    assert_eq!(key["key_type"], "stored_on_server");
    assert_eq!(key["automatic_key_rotation"], true);
    assert_eq!(key["key_version_life_span"], 7);
    assert_eq!(key["key_refresh_period"], 5);
    assert_eq!(key["template"], "Default_SQL_Symmetric_Key_Template");
    assert_eq!(key["current_version"], 1);
    assert!(
        key.get("key").is_none() && !key.to_string().contains("material"),
        "metadata only: {key}"
    );

    // The domain lists its administrators with their roles.
    let members = s
        .dom
        .get(&format!("/api/v1/domains/{DOMAIN}/administrators"))
        .ok();
    let sec = members
        .as_array()
        .expect("list")
        .iter()
        .find(|m| m["login"] == "SecurityAdministrator")
        .expect("member");
    assert_eq!(
        sec["roles"],
        json!(["audit", "key", "policy", "host", "challenge_response"])
    );

    // The shared secret is shown only on request.
    let v = s
        .sec
        .get(&format!("/api/v1/domains/{DOMAIN}/registration-secret"))
        .ok();
    assert!(v.get("shared_secret").is_none());
    let v = s
        .sec
        .get(&format!(
            "/api/v1/domains/{DOMAIN}/registration-secret?show=yes"
        ))
        .ok();
    assert_eq!(v["shared_secret"], SHARED_SECRET);

    // A host registers and fetches the key.
    let host_dir = tempfile::tempdir().expect("tempdir");
    let out = register_host(
        &app,
        "enrol",
        "rec1.example.com",
        SHARED_SECRET,
        host_dir.path(),
    );
    out.ok();
    let info = s.admin.get("/api/v1/system").ok();
    let rsa_fp = info["rsa_ca_fingerprint"].as_str().expect("fingerprint");
    assert!(
        out.stdout.contains(rsa_fp),
        "the agent shows the CA fingerprint to compare: {}",
        out.stdout
    );
    let (v1, n) = fetch_key(&app, host_dir.path(), "recorder", None);
    assert_eq!(n, 1);
    assert_eq!(v1.len(), 64, "AES-256 key as hex: {v1}");

    // The host appears with its certificate and last contact.
    let hosts = s.sec.get(&format!("/api/v1/domains/{DOMAIN}/hosts")).ok();
    let h = &hosts[0];
    assert_eq!(h["host_name"], "rec1.example.com");
    assert_eq!(h["registered"], true);
    assert!(h["last_contact"].is_string());

    // Forced rotation: version 2 is current, version 1 still served unchanged.
    let key = s
        .sec
        .post(
            &format!("/api/v1/domains/{DOMAIN}/keys/recorder/rotate"),
            json!({}),
        )
        .ok();
    assert_eq!(key["current_version"], 2);
    let (v2, n) = fetch_key(&app, host_dir.path(), "recorder", None);
    assert_eq!(n, 2);
    assert_ne!(v1, v2);
    let (again, n) = fetch_key(&app, host_dir.path(), "recorder", Some(1));
    assert_eq!((again.as_str(), n), (v1.as_str(), 1));

    // Without --reveal the agent prints metadata but not the key.
    let out = app.agent(&[
        "get-key",
        "recorder",
        "--dir",
        host_dir.path().to_str().expect("dir"),
    ]);
    out.ok();
    assert!(
        !out.stdout.contains(&v2) && out.stdout.contains("refresh period: 5"),
        "{}",
        out.stdout
    );
    let status = app.agent(&["status", "--dir", host_dir.path().to_str().expect("dir")]);
    status.ok();
    assert!(
        status.stdout.contains("reachable") && status.stdout.contains(DOMAIN),
        "{}",
        status.stdout
    );

    // Everything above is in the audit log with its author.
    let log = s.sys.get("/api/v1/audit?limit=1000").ok();
    let text = log["entries"].to_string();
    for needle in [
        "added administrator SecurityAdministrator",
        "added global domain RecorderDomain",
        "registered host rec1.example.com",
        "rotated key recorder",
        "released key recorder version 1",
    ] {
        assert!(text.contains(needle), "audit log lacks '{needle}'");
    }
    // Key material and the secret never reach the log.
    assert!(!text.contains(&v1) && !text.contains(SHARED_SECRET));

    // State survives a restart; the same bytes are served.
    let mut app = app;
    app.restart();
    let (after, _) = fetch_key(&app, host_dir.path(), "recorder", Some(1));
    assert_eq!(after, v1);
}

#[test]
fn suite_b_enrolment_port_issues_p384_certificates() {
    let app = Appliance::start();
    let _s = recommended_setup(&app);
    let dir = tempfile::tempdir().expect("tempdir");
    register_host(
        &app,
        "enrol-ec",
        "rec2.example.com",
        SHARED_SECRET,
        dir.path(),
    )
    .ok();
    let (k, v) = fetch_key(&app, dir.path(), "recorder", None);
    assert_eq!((k.len(), v), (64, 1));
    let pem = std::fs::read_to_string(dir.path().join("ca.crt")).expect("ca.crt");
    assert_eq!(pem, app.ca_pem("enrol-ec"));
}
