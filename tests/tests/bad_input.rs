//! Bad input gets a clear 4xx naming the field and the rule, and leaves the
//! store unchanged — compared row by row, not assumed.

use serde_json::{Value, json};
use tests::*;

/// Calls `f`, expects `status` (and `field`, when given), and checks that no
/// row of the store changed.
fn refused(app: &Appliance, status: u16, field: Option<&str>, f: impl FnOnce() -> Resp) -> Value {
    let before = app.snapshot();
    let r = f();
    assert_eq!(r.status, status, "body: {}", r.body);
    let msg = r.body["message"].as_str().unwrap_or_default();
    assert!(!msg.is_empty(), "a refusal says what was wrong: {}", r.body);
    if let Some(field) = field {
        assert_eq!(r.body["field"], field, "body: {}", r.body);
        assert!(msg.contains(field), "the message names the field: {msg}");
    }
    assert_eq!(
        before,
        app.snapshot(),
        "the store changed after a refused request: {}",
        r.body
    );
    r.body
}

#[test]
fn admin_api_refuses_bad_input_and_changes_nothing() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let d = format!("/api/v1/domains/{DOMAIN}");

    let v = refused(&app, 400, Some("name"), || {
        s.sys
            .post("/api/v1/domains", json!({"name": "D".repeat(65)}))
    });
    assert!(v["message"].as_str().expect("msg").contains("at most 64"));
    let v = refused(&app, 400, Some("description"), || {
        s.sys.post(
            "/api/v1/domains",
            json!({"name": "Fine", "description": "x".repeat(257)}),
        )
    });
    assert!(v["message"].as_str().expect("msg").contains("at most 256"));
    refused(&app, 400, Some("description"), || {
        s.admin.post(
            "/api/v1/administrators",
            json!({"login": "fine", "password": "G00d!pass", "description": "x".repeat(257)}),
        )
    });
    refused(&app, 409, Some("name"), || {
        s.sys.post("/api/v1/domains", json!({"name": DOMAIN}))
    });
    refused(&app, 409, Some("login"), || {
        s.admin.post(
            "/api/v1/administrators",
            json!({"login": "SecurityAdministrator", "password": "G00d!pass"}),
        )
    });
    refused(&app, 409, Some("name"), || {
        s.sec
            .post(&format!("{d}/keys"), json!({"name": "recorder"}))
    });
    for weak in [
        "short1!",
        "alllowercase1!",
        "NoDigitsHere!",
        "NoSpecial123",
        "weakling",
    ] {
        refused(&app, 400, Some("password"), || {
            s.admin.post(
                "/api/v1/administrators",
                json!({"login": "weakling", "password": weak}),
            )
        });
    }
    refused(&app, 400, Some("password"), || {
        s.admin.post(
            "/api/v1/administrators",
            json!({"login": "Same.Login1", "password": "Same.Login1"}),
        )
    });
    refused(&app, 400, Some("confirm_password"), || {
        s.admin.post(
            "/api/v1/administrators",
            json!({"login": "x1", "password": "G00d!pass", "confirm_password": "G00d!pasS"}),
        )
    });
    let v = refused(&app, 400, Some("shared_secret"), || {
        s.sec.call(
            "PUT",
            &format!("{d}/registration-secret"),
            Some(json!({"creation_method": "manual", "shared_secret": "Reccorder-Secret!"})),
        )
    });
    assert!(v["message"].as_str().expect("msg").contains("repeating"));
    refused(&app, 400, Some("shared_secret"), || {
        s.sec.call(
            "PUT",
            &format!("{d}/registration-secret"),
            Some(json!({"creation_method": "manual", "shared_secret": "nouppercase-1"})),
        )
    });
    refused(&app, 400, Some("valid_until"), || {
        s.sec.call(
            "PUT",
            &format!("{d}/registration-secret"),
            Some(json!({"shared_secret": SHARED_SECRET, "valid_until": "2001-01-01"})),
        )
    });
    // Key fields of §7.
    refused(&app, 400, Some("name"), || {
        s.sec
            .post(&format!("{d}/keys"), json!({"name": "k".repeat(65)}))
    });
    refused(&app, 400, Some("key_refresh_period"), || {
        s.sec.post(
            &format!("{d}/keys"),
            json!({"name": "k1", "key_refresh_period": 0}),
        )
    });
    refused(&app, 400, Some("key_refresh_period"), || {
        s.sec.post(
            &format!("{d}/keys"),
            json!({"name": "k1", "key_refresh_period": 44641}),
        )
    });
    refused(&app, 400, Some("algorithm"), || {
        s.sec.post(
            &format!("{d}/keys"),
            json!({"name": "k1", "algorithm": "DES"}),
        )
    });
    refused(&app, 400, Some("expiration_date"), || {
        s.sec.post(
            &format!("{d}/keys"),
            json!({"name": "k1", "expiration_date": "31/12/2030"}),
        )
    });
    refused(&app, 400, Some("expiration_date"), || {
        s.sec.post(
            &format!("{d}/keys"),
            json!({"name": "k1", "expiration_date": "2001-01-01"}),
        )
    });
    refused(&app, 400, Some("key_version_life_span"), || {
        s.sec.post(
            &format!("{d}/keys"),
            json!({"name": "k1", "automatic_key_rotation": true}),
        )
    });
    refused(&app, 400, Some("key_material"), || {
        s.sec.post(
            &format!("{d}/keys"),
            json!({"name": "k1", "key_creation_method": "manual", "key_material": "AAAA"}),
        )
    });
    refused(&app, 400, Some("key_material"), || {
        s.sec.post(
            &format!("{d}/keys"),
            json!({"name": "k1", "key_creation_method": "manual"}),
        )
    });
    refused(&app, 400, Some("host_name"), || {
        s.sec
            .post(&format!("{d}/hosts"), json!({"host_name": "bad host"}))
    });
    refused(&app, 400, Some("session_timeout"), || {
        s.sys.call(
            "PATCH",
            "/api/v1/preferences",
            Some(json!({"session_timeout": 0})),
        )
    });
    refused(&app, 400, Some("roles"), || {
        s.dom.post(
            &format!("{d}/administrators"),
            json!({"login": "SystemAdministrator", "roles": ["superuser"]}),
        )
    });
    // Malformed bodies.
    let v = refused(&app, 400, Some("body"), || {
        s.sys
            .raw("POST", "/api/v1/domains", "application/json", "{\"name\": ")
    });
    assert!(v["message"].as_str().expect("msg").contains("JSON"));
    let v = refused(&app, 400, Some("descripton"), || {
        s.sys.post(
            "/api/v1/domains",
            json!({"name": "Typo", "descripton": "x"}),
        )
    });
    assert!(v["message"].as_str().expect("msg").contains("descripton"));
    let v = refused(&app, 400, Some("key_refresh_period"), || {
        s.sec.post(
            &format!("{d}/keys"),
            json!({"name": "k1", "key_refresh_period": "five"}),
        )
    });
    assert!(
        v["message"]
            .as_str()
            .expect("msg")
            .contains("key_refresh_period")
    );
    refused(&app, 415, Some("body"), || {
        s.sys.raw("POST", "/api/v1/domains", "text/plain", "name=x")
    });
    // Deleting what does not exist, or what must stay.
    refused(&app, 404, None, || {
        s.sec.call("DELETE", &format!("{d}/keys/nonexistent"), None)
    });
    refused(&app, 400, Some("login"), || {
        s.admin.call("DELETE", "/api/v1/administrators/admin", None)
    });
    refused(&app, 409, Some("name"), || {
        s.sys
            .call("DELETE", &format!("/api/v1/domains/{DOMAIN}"), None)
    });
}

#[test]
fn agents_with_bad_credentials_get_clear_refusals_and_change_nothing() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let dir = tempfile::tempdir().expect("tempdir");

    // Wrong shared secret.
    let before = app.snapshot();
    let out = register_host(
        &app,
        "enrol",
        "rec1.example.com",
        "Wr0ng-Secret!",
        dir.path(),
    );
    assert_eq!(out.status, 1, "{out:?}");
    let refusal = "registration refused: the domain or the shared secret is wrong";
    assert!(out.stderr.contains(refusal), "{}", out.stderr);
    assert_eq!(before, app.snapshot());

    // Unknown domain: the same answer.
    let server = format!("127.0.0.1:{}", app.port("enrol"));
    let fingerprint = app.ca_fingerprint("enrol");
    let out = app.agent_with_input(
        &[
            "register",
            "--server",
            &server,
            "--domain",
            "NoSuchDomain",
            "--ca-fingerprint",
            &fingerprint,
            "--secret-file",
            "-",
            "--dir",
            dir.path().to_str().expect("dir"),
            "--host-name",
            "rec1.example.com",
        ],
        SHARED_SECRET,
    );
    assert_eq!(out.status, 1);
    assert!(out.stderr.contains(refusal), "{}", out.stderr);
    assert_eq!(before, app.snapshot());

    // A garbage CSR, sent by hand.
    let c = reqwest::blocking::Client::builder()
        .tls_certs_only([
            reqwest::Certificate::from_pem(app.ca_pem("enrol").as_bytes()).expect("pem"),
        ])
        .build()
        .expect("client");
    let r = c
        .post(format!("{}/agent/v1/register", app.url("enrol")))
        .json(&json!({"host_name": "rec9", "domain": DOMAIN, "shared_secret": SHARED_SECRET, "csr": "not a csr"}))
        .send()
        .expect("send");
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().expect("json");
    assert_eq!(v["field"], "csr");
    assert_eq!(before, app.snapshot());

    // A registered host asks for another domain's key: it does not exist for it.
    register_host(&app, "enrol", "rec1.example.com", SHARED_SECRET, dir.path()).ok();
    s.admin
        .post(
            "/api/v1/administrators",
            json!({"login": "OtherDA", "password": "Oth3r!Pass", "user_type": "domain"}),
        )
        .expect(201);
    s.sys
        .post(
            "/api/v1/domains",
            json!({"name": "OtherDomain", "domain_administrator": "OtherDA"}),
        )
        .expect(201);
    let other = app
        .api()
        .login_changing("OtherDA", "Oth3r!Pass", "Oth3r!Pass2");
    other
        .post(
            "/api/v1/domains/OtherDomain/administrators",
            json!({"login": "SecurityAdministrator", "roles": ["key"]}),
        )
        .expect(201);
    s.sec
        .post(
            "/api/v1/domains/OtherDomain/keys",
            json!({"name": "secret-of-other"}),
        )
        .expect(201);
    let before = app.snapshot();
    let out = app.agent(&[
        "get-key",
        "secret-of-other",
        "--reveal",
        "--dir",
        dir.path().to_str().expect("dir"),
    ]);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        out.stderr.contains("does not exist") && !out.stdout.contains("key:"),
        "{out:?}"
    );
    // A version that does not exist.
    let out = app.agent(&[
        "get-key",
        "recorder",
        "--version",
        "9",
        "--dir",
        dir.path().to_str().expect("dir"),
    ]);
    assert_eq!(out.status, 1);
    assert!(out.stderr.contains("version 9"), "{}", out.stderr);
    assert_eq!(before, app.snapshot());

    // A client with no certificate gets a 403 that says why.
    let r = c
        .get(format!("{}/agent/v1/keys/recorder", app.url("keys")))
        .send()
        .expect("send");
    assert_eq!(r.status().as_u16(), 403);
    let v: Value = r.json().expect("json");
    assert!(
        v["message"]
            .as_str()
            .expect("msg")
            .contains("client certificate"),
        "{v}"
    );

    // Registering the same host again is refused until an administrator allows it.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let out = register_host(
        &app,
        "enrol",
        "rec1.example.com",
        SHARED_SECRET,
        dir2.path(),
    );
    assert_eq!(out.status, 1);
    assert!(out.stderr.contains("already registered"), "{}", out.stderr);
    s.sec
        .call(
            "PATCH",
            &format!("/api/v1/domains/{DOMAIN}/hosts/rec1.example.com"),
            Some(json!({"registration_allowed": true})),
        )
        .ok();
    register_host(
        &app,
        "enrol",
        "rec1.example.com",
        SHARED_SECRET,
        dir2.path(),
    )
    .ok();
    // The old certificate is no longer the host's.
    let out = app.agent(&[
        "get-key",
        "recorder",
        "--dir",
        dir.path().to_str().expect("dir"),
    ]);
    assert_eq!(out.status, 1);

    // An expired shared secret.
    s.sec
        .post(
            &format!("/api/v1/domains/{DOMAIN}/registration-secret/expire"),
            json!({}),
        )
        .ok();
    let before = app.snapshot();
    let dir3 = tempfile::tempdir().expect("tempdir");
    let out = register_host(
        &app,
        "enrol",
        "rec3.example.com",
        SHARED_SECRET,
        dir3.path(),
    );
    assert_eq!(out.status, 1);
    assert!(out.stderr.contains("expired"), "{}", out.stderr);
    assert_eq!(before, app.snapshot());

    // Hosts must be added first when the secret says so.
    s.sec
        .call(
            "PUT",
            &format!("/api/v1/domains/{DOMAIN}/registration-secret"),
            Some(json!({"shared_secret": SHARED_SECRET, "require_hosts_first_added": true})),
        )
        .ok();
    let out = register_host(
        &app,
        "enrol",
        "rec4.example.com",
        SHARED_SECRET,
        dir3.path(),
    );
    assert_eq!(out.status, 1);
    assert!(
        out.stderr.contains("added by an administrator"),
        "{}",
        out.stderr
    );
    s.sec
        .post(
            &format!("/api/v1/domains/{DOMAIN}/hosts"),
            json!({"host_name": "rec4.example.com"}),
        )
        .expect(201);
    register_host(
        &app,
        "enrol",
        "rec4.example.com",
        SHARED_SECRET,
        dir3.path(),
    )
    .ok();

    // Failed attempts are in the audit log as warnings.
    let log = s.sys.get("/api/v1/audit?severity=WARN&limit=1000").ok();
    assert!(
        log["entries"]
            .to_string()
            .contains("registration refused: wrong shared secret")
    );
}

#[test]
fn repeated_failed_logins_lock_the_account() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let anon = app.api();
    for _ in 0..5 {
        anon.post(
            "/api/v1/login",
            json!({"login": "SecurityAdministrator", "password": "Wrong!pass1"}),
        )
        .expect(401);
    }
    // Locked: the right password gets the answer of a wrong one (no
    // account enumeration through the lock).
    let v = anon
        .post(
            "/api/v1/login",
            json!({"login": "SecurityAdministrator", "password": SEC_PW}),
        )
        .expect(401);
    assert_eq!(v["error"], "bad_credentials");
    // A System Administrator unlocks it.
    s.sys
        .call(
            "PATCH",
            "/api/v1/administrators/SecurityAdministrator",
            Some(json!({"unlock": true})),
        )
        .ok();
    anon.login("SecurityAdministrator", SEC_PW);
    let log = s.sys.get("/api/v1/audit?text=locked").ok();
    assert!(log["total"].as_i64().expect("total") >= 1);
}
