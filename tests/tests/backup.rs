//! §12 end to end: a wrapper key split among custodians, a backup of one
//! appliance restored onto a second fresh one (without, then with, its
//! administrators), compared field by field, with a host registered on the
//! first fetching byte-identical key versions from the second; and the
//! refusals (tampered, truncated, wrong key, too few or repeated shares)
//! that change nothing.

use std::path::Path;

use serde_json::{Value, json};
use tests::{
    ADMIN_PW, Api, Appliance, DOMAIN, SEC_PW, SHARED_SECRET, SYS_PW, fetch_key, recommended_setup,
    register_host,
};

const CUSTODIAN_PW: &str = "Cust0dian!Pw";

/// Copies a host's registration folder and points it at another appliance's
/// key port (the host keeps its certificate and the CA it trusts).
fn point_host_at(from: &Path, to: &Path, key_port: u16) {
    std::fs::create_dir_all(to).expect("dir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
    let path = to.join("agent.json");
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("agent.json")).expect("json");
    v["key_port"] = json!(key_port);
    std::fs::write(&path, serde_json::to_string_pretty(&v).expect("json")).expect("write");
}

fn keys_of(api: &Api) -> Value {
    let mut v = api.get(&format!("/api/v1/domains/{DOMAIN}/keys")).ok();
    // The listing is the comparison: drop nothing, every field must match.
    if let Some(a) = v.as_array_mut() {
        a.sort_by_key(|k| k["name"].as_str().unwrap_or("").to_owned());
    }
    v
}

fn logins(api: &Api) -> Vec<String> {
    let mut v: Vec<String> = api
        .get("/api/v1/administrators")
        .ok()
        .as_array()
        .expect("list")
        .iter()
        .map(|a| a["login"].as_str().expect("login").to_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn backup_restores_onto_another_appliance_and_tampering_changes_nothing() {
    // --- appliance A: the recommended setup, a host, two key versions -------
    let a = Appliance::start();
    let s = recommended_setup(&a);
    let host = tempfile::tempdir().expect("host dir");
    register_host(&a, "enrol", "rec1.example.com", SHARED_SECRET, host.path()).ok();
    s.sec
        .post(
            &format!("/api/v1/domains/{DOMAIN}/keys/recorder/rotate"),
            json!({}),
        )
        .ok();
    let (v1, _) = fetch_key(&a, host.path(), "recorder", Some(1));
    let (v2, current) = fetch_key(&a, host.path(), "recorder", None);
    assert_eq!(current, 2);
    s.admin
        .call(
            "PATCH",
            "/api/v1/preferences",
            Some(json!({"key_refresh_period": 30, "session_timeout": 20})),
        )
        .ok();

    // Three custodians, any two of whom rebuild the wrapper key.
    let anon = a.api();
    let mut custodians = Vec::new();
    for c in ["Custodian1", "Custodian2", "Custodian3"] {
        s.admin
            .post(
                "/api/v1/administrators",
                json!({"login": c, "password": "Tmp!Cust0dy", "confirm_password": "Tmp!Cust0dy", "user_type": "system"}),
            )
            .expect(201);
        custodians.push(anon.login_changing(c, "Tmp!Cust0dy", CUSTODIAN_PW));
    }
    // No backup without a wrapper key.
    let (status, _, body) = s.admin.bytes("POST", "/api/v1/backups", Vec::new());
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    s.admin.post("/api/v1/wrapper-key", json!({})).expect(201);
    let refused = s
        .admin
        .post(
            "/api/v1/wrapper-key/export",
            json!({"minimum_custodians": 2, "total_custodians": 3, "custodians": ["admin", "Custodian1", "Custodian2"]}),
        )
        .expect(400);
    assert_eq!(refused["field"], "custodians", "{refused}");
    let status = s
        .admin
        .post(
            "/api/v1/wrapper-key/export",
            json!({"minimum_custodians": 2, "total_custodians": 3, "custodians": ["Custodian1", "Custodian2", "Custodian3"]}),
        )
        .ok();
    let key_id = status["key_id"].as_str().expect("key id").to_owned();
    let shares: Vec<String> = custodians
        .iter()
        .map(|c| {
            c.get("/api/v1/wrapper-key/share").ok()["share"]
                .as_str()
                .expect("share")
                .to_owned()
        })
        .collect();
    // A share is only ever given to its custodian.
    assert_eq!(s.admin.get("/api/v1/wrapper-key/share").status, 404);
    assert_eq!(s.sys.get("/api/v1/wrapper-key/share").status, 404);

    let (status, disposition, file) = s.admin.bytes("POST", "/api/v1/backups", Vec::new());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&file));
    assert!(
        disposition.contains("backup_config_") && disposition.ends_with(".tar\""),
        "{disposition}"
    );
    assert!(
        !file
            .windows(SHARED_SECRET.len())
            .any(|w| w == SHARED_SECRET.as_bytes()),
        "the shared secret is not in the file in clear"
    );

    // --- appliance B: fresh --------------------------------------------------
    let mut b = Appliance::start();
    let b_admin = b.api().login_changing("admin", "admin123", ADMIN_PW);
    // Its own wrapper key is the wrong one.
    b_admin.post("/api/v1/wrapper-key", json!({})).expect(201);
    let before = b.snapshot();
    let (status, _, body) = b_admin.bytes("POST", "/api/v1/backups/restore", file.clone());
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains(&format!("made with wrapper key {key_id}")));
    // Too few, repeated and mixed shares.
    let e = b_admin
        .post("/api/v1/wrapper-key/import", json!({"shares": [shares[0]]}))
        .expect(400);
    assert!(
        e["message"].as_str().unwrap_or("").contains("at least 2"),
        "{e}"
    );
    let e = b_admin
        .post(
            "/api/v1/wrapper-key/import",
            json!({"shares": [shares[1], shares[1]]}),
        )
        .expect(400);
    assert!(
        e["message"].as_str().unwrap_or("").contains("repeats"),
        "{e}"
    );
    assert_eq!(b.snapshot(), before, "refused imports change nothing");
    // Any two shares rebuild it.
    for pair in [[0, 1], [0, 2], [1, 2]] {
        let v = b_admin
            .post(
                "/api/v1/wrapper-key/import",
                json!({"shares": [shares[pair[0]], shares[pair[1]]]}),
            )
            .ok();
        assert_eq!(v["key_id"], json!(key_id));
    }

    // Tampered and truncated files are refused and change nothing.
    let before = b.snapshot();
    let mut flipped = file.clone();
    let at = flipped.len() - 3000;
    flipped[at] ^= 0x01;
    let truncated = file[..file.len() / 2].to_vec();
    let mut edited_manifest = file.clone();
    let pos = edited_manifest
        .windows(7)
        .position(|w| w == b"created")
        .expect("manifest");
    edited_manifest[pos + 20] ^= 0x01;
    for (what, bad) in [
        ("flipped bit", flipped),
        ("truncated", truncated),
        ("edited manifest", edited_manifest),
        ("not a backup", b"hello".to_vec()),
    ] {
        let (status, _, body) =
            b_admin.bytes("POST", "/api/v1/backups/restore?include_users=true", bad);
        assert_eq!(status, 400, "{what}: {}", String::from_utf8_lossy(&body));
        let msg = String::from_utf8_lossy(&body).to_string();
        assert!(msg.contains("\"field\":\"backup\""), "{what}: {msg}");
    }
    assert_eq!(b.snapshot(), before, "refused restores change nothing");
    assert_eq!(
        b_admin.get("/api/v1/domains").status,
        403,
        "still no licence on B"
    );

    // --- restore without users: B keeps its administrators --------------------
    let (status, _, body) = b_admin.bytes("POST", "/api/v1/backups/restore", file.clone());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let report: Value = serde_json::from_slice(&body).expect("report");
    assert_eq!(report["key_versions"], 2);
    assert_eq!(report["users_included"], false);
    assert_eq!(
        b_admin.get("/api/v1/system").status,
        401,
        "a restore ends every session"
    );
    b.restart();
    let b_admin = b.api().login("admin", ADMIN_PW);
    assert_eq!(logins(&b_admin), ["admin"], "administrators kept");
    assert_eq!(
        b_admin.get("/api/v1/licence").ok()["terms"],
        s.admin.get("/api/v1/licence").ok()["terms"],
        "licence restored"
    );
    assert_eq!(
        b_admin.get("/api/v1/preferences").ok(),
        s.admin.get("/api/v1/preferences").ok(),
        "preferences restored"
    );
    // Without users the domains come back without their administrators
    // (none of A's exist here); every other field is A's.
    let strip = |mut v: Value| {
        for d in v.as_array_mut().expect("domains") {
            d.as_object_mut()
                .expect("domain")
                .remove("domain_administrators");
        }
        v
    };
    let domains_b = b_admin.get("/api/v1/domains").ok();
    assert_eq!(domains_b[0]["domain_administrators"], json!([]));
    assert_eq!(
        strip(domains_b),
        strip(s.admin.get("/api/v1/domains").ok()),
        "domains restored"
    );

    // The host registered on A fetches the same bytes from B: B now serves
    // A's certificate authority.
    let moved = tempfile::tempdir().expect("moved host");
    point_host_at(host.path(), moved.path(), b.port("keys"));
    assert_eq!(fetch_key(&b, moved.path(), "recorder", Some(1)).0, v1);
    assert_eq!(
        fetch_key(&b, moved.path(), "recorder", None),
        (v2.clone(), 2)
    );

    // --- restore with users: A's administrators, passwords and roles ----------
    let (status, _, body) =
        b_admin.bytes("POST", "/api/v1/backups/restore?include_users=true", file);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    b.restart();
    let b_admin = b.api().login("admin", ADMIN_PW);
    assert_eq!(
        logins(&b_admin),
        logins(&s.admin),
        "administrators restored"
    );
    let b_sec = b.api().login("SecurityAdministrator", SEC_PW);
    assert_eq!(
        keys_of(&b_sec),
        keys_of(&s.sec),
        "keys and versions restored field by field"
    );
    assert_eq!(
        b_sec.get(&format!("/api/v1/domains/{DOMAIN}/hosts")).ok(),
        s.sec.get(&format!("/api/v1/domains/{DOMAIN}/hosts")).ok(),
        "hosts restored"
    );
    let b_sys = b.api().login("SystemAdministrator", SYS_PW);
    assert_eq!(
        b_sys.get("/api/v1/domains").ok(),
        s.sys.get("/api/v1/domains").ok()
    );
    assert_eq!(
        b_sys
            .get(&format!("/api/v1/domains/{DOMAIN}/administrators"))
            .ok(),
        s.sys
            .get(&format!("/api/v1/domains/{DOMAIN}/administrators"))
            .ok(),
        "memberships and roles restored"
    );
    assert_eq!(fetch_key(&b, moved.path(), "recorder", Some(1)).0, v1);
    // The restore is in B's audit log, and the wrapper key itself never
    // left A: B's custodians list is its own (none).
    let log = b_admin.get("/api/v1/audit?text=restored").ok();
    assert!(log["total"].as_i64().unwrap_or(0) >= 1, "{log}");
    assert_eq!(
        b_admin.get("/api/v1/wrapper-key").ok()["custodians"],
        json!([])
    );
}
