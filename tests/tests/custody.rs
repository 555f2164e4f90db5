//! Issue 12, key custody: no single System Administrator can obtain a
//! decrypted backup. Three System Administrators (A, B, C, none of them
//! `admin`) hold the wrapper key 2 of 3; B and C collect their shares. A,
//! alone, then tries every path to the key: a 1-of-1 export, a new export
//! to themselves or to an administrator they create, a new key, a key of
//! their own imported in its place, resetting B's password to sign in as B,
//! showing a collected share, and a downloaded backup restored on a fresh
//! appliance with A's share alone. Each is refused and changes nothing;
//! the legitimate paths (two custodians' shares restore the backup, a
//! quorum exports again) work.

use serde_json::{Value, json};
use tests::{ADMIN_PW, Api, Appliance, DOMAIN, recommended_setup};

const TMP_PW: &str = "Tmp!Cust0dy";

fn new_system_admin(admin: &Api, anon: &Api, login: &str, pw: &str) -> Api {
    admin
        .post(
            "/api/v1/administrators",
            json!({"login": login, "password": TMP_PW, "confirm_password": TMP_PW, "user_type": "system"}),
        )
        .expect(201);
    anon.login_changing(login, TMP_PW, pw)
}

fn share_of(api: &Api) -> String {
    api.get("/api/v1/wrapper-key/share").ok()["share"]
        .as_str()
        .expect("share")
        .to_owned()
}

fn message(v: &Value) -> String {
    v["message"].as_str().unwrap_or_default().to_owned()
}

fn audit(api: &Api, text: &str) -> Vec<Value> {
    api.get(&format!(
        "/api/v1/audit?text={}",
        text.replace(' ', "%20").replace(',', "%2C")
    ))
    .ok()["entries"]
        .as_array()
        .expect("entries")
        .clone()
}

#[test]
fn no_single_administrator_obtains_a_decrypted_backup() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let anon = app.api();
    let a = new_system_admin(&s.admin, &anon, "CustodianA", "Cust0dianA!pw");
    let b = new_system_admin(&s.admin, &anon, "CustodianB", "Cust0dianB!pw");
    let c = new_system_admin(&s.admin, &anon, "CustodianC", "Cust0dianC!pw");

    // --- the installation ceremony: no quorum needed yet -------------------
    a.post("/api/v1/wrapper-key", json!({})).expect(201);
    let e = a
        .post(
            "/api/v1/wrapper-key/export",
            json!({"minimum_custodians": 1, "total_custodians": 1, "custodians": ["CustodianA"]}),
        )
        .expect(400);
    assert_eq!(e["field"], "minimum_custodians", "{e}");
    assert!(
        message(&e).contains(
            "at least 2 custodians are needed so that no single administrator holds the wrapper key"
        ),
        "{e}"
    );
    let e = a
        .post(
            "/api/v1/wrapper-key/export",
            json!({"minimum_custodians": 2, "total_custodians": 2, "custodians": ["CustodianA", "CustodianA"]}),
        )
        .expect(400);
    assert_eq!(e["field"], "custodians", "{e}");
    let status = a
        .post(
            "/api/v1/wrapper-key/export",
            json!({"minimum_custodians": 2, "total_custodians": 3, "custodians": ["CustodianA", "CustodianB", "CustodianC"]}),
        )
        .ok();
    let key_id = status["key_id"].as_str().expect("key id").to_owned();
    assert_eq!(status["quorum_required"], true);

    // B and C collect their shares: seen once, then the appliance forgets them.
    let e = c
        .post("/api/v1/wrapper-key/share/stored", json!({}))
        .expect(409);
    assert!(message(&e).contains("show your wrapper-key share"), "{e}");
    let share_b = share_of(&b);
    let share_c = share_of(&c);
    b.post("/api/v1/wrapper-key/share/stored", json!({})).ok();
    c.post("/api/v1/wrapper-key/share/stored", json!({})).ok();
    let status = a.get("/api/v1/wrapper-key").ok();
    assert_eq!(status["collected"], json!(["CustodianB", "CustodianC"]));
    assert_eq!(
        audit(&a, "deleted its copy").len(),
        2,
        "each collection is audited"
    );
    // A shows their own share but keeps it here.
    let share_a = share_of(&a);
    assert!(share_a.starts_with(&format!("custos-share-1.{key_id}.2.")));

    // --- A alone ------------------------------------------------------------
    // 1 of 1 to themselves.
    let e = a
        .post(
            "/api/v1/wrapper-key/export",
            json!({"minimum_custodians": 1, "total_custodians": 1, "custodians": ["CustodianA"]}),
        )
        .expect(400);
    assert_eq!(e["field"], "minimum_custodians", "{e}");
    // Again to A and an accomplice A creates (whose password A knows).
    let accomplice = new_system_admin(&a, &anon, "Accomplice", "Acc0mplice!pw");
    let before_exports = app.snapshot();
    let to_accomplice = json!(["CustodianA", "Accomplice"]);
    for quorum in [json!([]), json!([share_a]), json!([share_a, share_a])] {
        let e = a
            .post(
                "/api/v1/wrapper-key/export",
                json!({"minimum_custodians": 2, "total_custodians": 2, "custodians": to_accomplice, "shares": quorum}),
            )
            .expect(400);
        assert_eq!(e["field"], "shares", "{quorum}: {e}");
    }
    // A replaces the key with a new one (which A would then export at will).
    for quorum in [json!([]), json!([share_a])] {
        let e = a
            .post(
                "/api/v1/wrapper-key",
                json!({"replace": true, "shares": quorum}),
            )
            .expect(400);
        assert_eq!(e["field"], "shares", "{e}");
    }
    assert_eq!(app.snapshot(), before_exports, "refusals change nothing");

    // A brings a key of their own, made on another appliance where A holds
    // every share, and imports it in place of the current one.
    let other = Appliance::start();
    let other_admin = other.api().login_changing("admin", "admin123", ADMIN_PW);
    tests::install_licence(&other_admin, &tests::generous_licence()).ok();
    let o1 = new_system_admin(&other_admin, &other.api(), "Own1", "Own0ne!pw1");
    let o2 = new_system_admin(&other_admin, &other.api(), "Own2", "Own0ne!pw2");
    other_admin
        .post("/api/v1/wrapper-key", json!({}))
        .expect(201);
    other_admin
        .post(
            "/api/v1/wrapper-key/export",
            json!({"minimum_custodians": 2, "total_custodians": 2, "custodians": ["Own1", "Own2"]}),
        )
        .ok();
    let own_key = json!([share_of(&o1), share_of(&o2)]);
    for quorum in [json!([]), json!([share_a])] {
        let e = a
            .post(
                "/api/v1/wrapper-key/import",
                json!({"shares": own_key, "current_shares": quorum}),
            )
            .expect(400);
        assert_eq!(e["field"], "current_shares", "{e}");
    }
    assert_eq!(app.snapshot(), before_exports, "refusals change nothing");
    drop(other);

    // A resets B's password and signs in as B: B's share is not here.
    a.call(
        "PATCH",
        "/api/v1/administrators/CustodianB",
        Some(json!({"password": "Reset!B0nly"})),
    )
    .ok();
    let as_b = anon.login_changing("CustodianB", "Reset!B0nly", "Tak3n!Over");
    let e = as_b.get("/api/v1/wrapper-key/share").expect(409);
    assert!(message(&e).contains("no longer holds a copy"), "{e}");
    // C's collected share is gone for C too.
    assert_eq!(c.get("/api/v1/wrapper-key/share").status, 409);
    let status = a.get("/api/v1/wrapper-key").ok();
    assert_eq!(
        status["custodians"],
        json!(["CustodianA", "CustodianB", "CustodianC"]),
        "a collected share is not withdrawn by a reset: it is not here"
    );

    // A downloads a backup: allowed, and a WARN entry names A.
    let (code, _, file) = a.bytes("POST", "/api/v1/backups", Vec::new());
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&file));
    let downloads = audit(&s.admin, "CustodianA downloaded backup");
    assert_eq!(downloads.len(), 1, "{downloads:?}");
    assert_eq!(downloads[0]["severity"], "WARN");
    assert_eq!(downloads[0]["who"], "CustodianA");

    // A takes the file and A's share to a fresh appliance: too few shares.
    let mut fresh = Appliance::start();
    let fresh_admin = fresh.api().login_changing("admin", "admin123", ADMIN_PW);
    let fresh_before = fresh.snapshot();
    let e = fresh_admin
        .post("/api/v1/wrapper-key/import", json!({"shares": [share_a]}))
        .expect(400);
    assert_eq!(e["field"], "shares", "{e}");
    assert!(message(&e).contains("at least 2 different shares"), "{e}");
    let (code, _, body) = fresh_admin.bytes("POST", "/api/v1/backups/restore", file.clone());
    assert_eq!(code, 409, "{}", String::from_utf8_lossy(&body));
    assert_eq!(fresh.snapshot(), fresh_before, "nothing restored");

    // --- the legitimate paths -------------------------------------------------
    // A and B together rebuild the key and restore the backup.
    let v = fresh_admin
        .post(
            "/api/v1/wrapper-key/import",
            json!({"shares": [share_a, share_b]}),
        )
        .ok();
    assert_eq!(v["key_id"], json!(key_id));
    let (code, _, body) = fresh_admin.bytes("POST", "/api/v1/backups/restore", file);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    fresh.restart();
    let fresh_admin = fresh.api().login("admin", ADMIN_PW);
    let domains = fresh_admin.get("/api/v1/domains").ok();
    assert_eq!(domains[0]["name"], DOMAIN, "{domains}");

    // A quorum (A's and C's shares) exports again, here to the accomplice
    // too; the accomplice's share is still here when A resets their
    // password, so it is withdrawn, with a WARN entry naming both.
    let v = a
        .post(
            "/api/v1/wrapper-key/export",
            json!({"minimum_custodians": 2, "total_custodians": 3,
                   "custodians": ["CustodianA", "CustodianC", "Accomplice"],
                   "shares": [share_a, share_c]}),
        )
        .ok();
    assert_eq!(v["key_id"], json!(key_id));
    assert_eq!(v["collected"], json!([]));
    drop(accomplice);
    a.call(
        "PATCH",
        "/api/v1/administrators/Accomplice",
        Some(json!({"password": "Reset!Acc0mp"})),
    )
    .ok();
    let as_accomplice = anon.login_changing("Accomplice", "Reset!Acc0mp", "Tak3n!Over2");
    assert_eq!(as_accomplice.get("/api/v1/wrapper-key/share").status, 404);
    let withdrawn = audit(&s.admin, "withdrew the uncollected wrapper-key share");
    assert_eq!(withdrawn.len(), 1, "{withdrawn:?}");
    assert_eq!(withdrawn[0]["severity"], "WARN");
    let what = withdrawn[0]["what"].as_str().unwrap_or_default();
    assert!(
        what.contains("Accomplice")
            && what.contains("CustodianA")
            && what.contains("exported again"),
        "{what}"
    );
    assert_eq!(
        a.get("/api/v1/wrapper-key").ok()["custodians"],
        json!(["CustodianA", "CustodianC"])
    );
}

fn security_admin(setup_admin: &Api, anon: &Api, login: &str, pw: &str, read_only: bool) -> Api {
    setup_admin
        .post(
            "/api/v1/administrators",
            json!({"login": login, "password": TMP_PW, "confirm_password": TMP_PW,
                   "user_type": "security", "read_only": read_only}),
        )
        .expect(201);
    anon.login_changing(login, TMP_PW, pw)
}

#[test]
fn only_a_writer_reveals_the_registration_secret() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let anon = app.api();
    let reader = security_admin(&s.admin, &anon, "HostReader", "H0stReader!pw", true);
    s.dom
        .post(
            &format!("/api/v1/domains/{DOMAIN}/administrators"),
            json!({"login": "HostReader", "roles": ["host"]}),
        )
        .expect(201);
    let path = format!("/api/v1/domains/{DOMAIN}/registration-secret");
    // The settings, without the secret, are readable.
    let v = reader.get(&path).ok();
    assert!(v["shared_secret"].is_null(), "{v}");
    let before = app.snapshot();
    let e = reader.get(&format!("{path}?show=yes")).expect(403);
    assert!(
        message(&e)
            .contains("read-only administrators may not reveal the registration shared secret"),
        "{e}"
    );
    assert_eq!(app.snapshot(), before);
    assert!(
        audit(&s.admin, "displayed the registration shared secret").is_empty(),
        "nothing was shown"
    );
    // A Security Administrator with write access and the Host role still can.
    let v = s.sec.get(&format!("{path}?show=yes")).ok();
    assert_eq!(v["shared_secret"], tests::SHARED_SECRET);
}

fn logins(v: &Value) -> Vec<String> {
    let mut l: Vec<String> = v
        .as_array()
        .expect("list")
        .iter()
        .map(|a| a["login"].as_str().expect("login").to_owned())
        .collect();
    l.sort();
    l
}

fn domains_of(list: &Value, login: &str) -> Value {
    list.as_array()
        .expect("list")
        .iter()
        .find(|a| a["login"] == login)
        .map(|a| a["domains"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn domain_administrators_see_only_their_domains() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let anon = app.api();
    s.admin
        .post(
            "/api/v1/administrators",
            json!({"login": "OtherDomainAdmin", "password": TMP_PW, "confirm_password": TMP_PW, "user_type": "domain"}),
        )
        .expect(201);
    s.sys
        .post(
            "/api/v1/domains",
            json!({"name": "OtherDomain", "kind": "global", "domain_administrator": "OtherDomainAdmin"}),
        )
        .expect(201);
    let dom2 = anon.login_changing("OtherDomainAdmin", TMP_PW, "Oth3r!Domain");
    security_admin(&s.admin, &anon, "OtherSecurity", "Oth3r!Security", false);
    dom2.post(
        "/api/v1/domains/OtherDomain/administrators",
        json!({"login": "OtherSecurity", "roles": ["key"]}),
    )
    .expect(201);
    // SecurityAdministrator works in both domains.
    dom2.post(
        "/api/v1/domains/OtherDomain/administrators",
        json!({"login": "SecurityAdministrator", "roles": ["audit"]}),
    )
    .expect(201);

    let list = s.dom.get("/api/v1/administrators").ok();
    assert_eq!(
        logins(&list),
        ["DomainAdministrator", "SecurityAdministrator"],
        "{list}"
    );
    assert_eq!(
        domains_of(&list, "SecurityAdministrator"),
        json!([DOMAIN]),
        "memberships of other domains are left out"
    );
    assert_eq!(
        s.dom.get("/api/v1/administrators/OtherSecurity").status,
        404
    );
    assert_eq!(
        s.dom
            .get("/api/v1/administrators/SystemAdministrator")
            .status,
        404
    );
    assert_eq!(
        s.dom
            .get("/api/v1/domains/OtherDomain/administrators")
            .status,
        404
    );
    let v = s
        .dom
        .get("/api/v1/administrators/SecurityAdministrator")
        .ok();
    assert_eq!(v["domains"], json!([DOMAIN]));

    let list2 = dom2.get("/api/v1/administrators").ok();
    assert_eq!(
        logins(&list2),
        ["OtherDomainAdmin", "OtherSecurity", "SecurityAdministrator"],
        "{list2}"
    );
    assert_eq!(
        domains_of(&list2, "SecurityAdministrator"),
        json!(["OtherDomain"])
    );

    // An administrator of another global domain is added by typed login;
    // then the Domain Administrator sees them, with this domain only.
    s.dom
        .post(
            &format!("/api/v1/domains/{DOMAIN}/administrators"),
            json!({"login": "OtherSecurity", "roles": ["audit"]}),
        )
        .expect(201);
    let list = s.dom.get("/api/v1/administrators").ok();
    assert_eq!(domains_of(&list, "OtherSecurity"), json!([DOMAIN]));
    // An administrator in no domain yet is listed, to be added.
    s.admin
        .post(
            "/api/v1/administrators",
            json!({"login": "NewSecurity", "password": TMP_PW, "confirm_password": TMP_PW, "user_type": "security"}),
        )
        .expect(201);
    assert!(logins(&s.dom.get("/api/v1/administrators").ok()).contains(&"NewSecurity".to_owned()));
    // System Administrators still see everyone.
    assert!(
        logins(&s.sys.get("/api/v1/administrators").ok()).contains(&"OtherDomainAdmin".to_owned())
    );
}

fn id_of(app: &Appliance, sql: &str) -> i64 {
    tests::StoreDb::open(app.data_dir())
        .query_row(sql, tests::store_params![], |r| r.get(0))
        .expect(sql)
}

#[test]
fn deleted_domains_keys_and_hosts_never_lend_their_ids() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    s.sys
        .post(
            "/api/v1/domains",
            json!({"name": "Ephemeral", "kind": "global", "description": "to be deleted"}),
        )
        .expect(201);
    let x = id_of(&app, "SELECT id FROM domains WHERE name = 'Ephemeral'");
    s.sys.call("DELETE", "/api/v1/domains/Ephemeral", None).ok();
    s.sys
        .post(
            "/api/v1/domains",
            json!({"name": "Successor", "kind": "global"}),
        )
        .expect(201);
    let y = id_of(&app, "SELECT id FROM domains WHERE name = 'Successor'");
    assert_ne!(x, y);
    let log = s.sys.get("/api/v1/audit?domain=Successor").ok();
    let entries = log["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{log}");
    assert!(
        entries
            .iter()
            .all(|e| !e["what"].as_str().unwrap_or_default().contains("Ephemeral")),
        "{log}"
    );

    let keys = format!("/api/v1/domains/{DOMAIN}/keys");
    let new_key = |name: &str| {
        s.sec
            .post(
                &keys,
                json!({"name": name, "algorithm": "AES256", "key_type": "stored_on_server"}),
            )
            .expect(201);
    };
    new_key("shortlived");
    let k1 = id_of(&app, "SELECT id FROM agent_keys WHERE name = 'shortlived'");
    s.sec
        .call("DELETE", &format!("{keys}/shortlived"), None)
        .ok();
    new_key("shortlived");
    let k2 = id_of(&app, "SELECT id FROM agent_keys WHERE name = 'shortlived'");
    assert_ne!(k1, k2);

    let hosts = format!("/api/v1/domains/{DOMAIN}/hosts");
    s.sec
        .post(&hosts, json!({"host_name": "gone.example.com"}))
        .expect(201);
    let h1 = id_of(
        &app,
        "SELECT id FROM hosts WHERE host_name = 'gone.example.com'",
    );
    s.sec
        .call("DELETE", &format!("{hosts}/gone.example.com"), None)
        .ok();
    s.sec
        .post(&hosts, json!({"host_name": "next.example.com"}))
        .expect(201);
    let h2 = id_of(
        &app,
        "SELECT id FROM hosts WHERE host_name = 'next.example.com'",
    );
    assert_ne!(h1, h2);
}
