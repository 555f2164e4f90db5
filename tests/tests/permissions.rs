//! The permission matrix of spec §5: every admin API route, called by every
//! administrator type (read-only included), by an administrator of another
//! domain and by nobody, gives the spec's answer.

use serde_json::{Value, json};
use tests::*;

/// Actors, in the column order of the matrix below.
const WHO: [&str; 9] = [
    "sys", "sysro", "dom", "domro", "sec", "secro", "norole", "outsider", "anon",
];

/// One route: method, path and body ({who} is replaced by the actor's name),
/// and the expected status for each actor in `WHO` order.
struct Case {
    method: &'static str,
    path: &'static str,
    body: Option<Value>,
    expect: [u16; 9],
}

fn case(method: &'static str, path: &'static str, body: Option<Value>, expect: [u16; 9]) -> Case {
    Case {
        method,
        path,
        body,
        expect,
    }
}

fn fill(v: &Value, who: &str) -> Value {
    serde_json::from_str(&v.to_string().replace("{who}", who)).expect("json")
}

#[test]
fn every_route_for_every_administrator_type() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let anon = app.api();
    let d = format!("/api/v1/domains/{DOMAIN}");
    let pw = "Tmp!Passw0rd";
    let new_pw = "Matrix!Pw1";

    // Accounts of every kind.
    let mk = |login: &str, t: &str, ro: bool| {
        s.admin
            .post(
                "/api/v1/administrators",
                json!({"login": login, "password": pw, "user_type": t, "read_only": ro}),
            )
            .expect(201);
    };
    mk("sysro", "system", true);
    mk("domro", "domain", true);
    mk("secro", "security", true);
    mk("norole", "security", false);
    mk("outsider", "security", false);
    mk("OtherDA", "domain", false);
    for w in WHO {
        for prefix in ["victim", "victim2", "p", "r", "m"] {
            mk(&format!("{prefix}-{w}"), "security", false);
        }
    }
    let all_roles = json!(["audit", "key", "policy", "host", "challenge_response"]);
    s.dom
        .post(&format!("{d}/administrators"), json!({"login": "domro"}))
        .expect(201);
    s.dom
        .post(
            &format!("{d}/administrators"),
            json!({"login": "secro", "roles": all_roles}),
        )
        .expect(201);
    s.dom
        .post(&format!("{d}/administrators"), json!({"login": "norole"}))
        .expect(201);
    for w in WHO {
        s.dom
            .post(
                &format!("{d}/administrators"),
                json!({"login": format!("p-{w}"), "roles": ["key"]}),
            )
            .expect(201);
        s.dom
            .post(
                &format!("{d}/administrators"),
                json!({"login": format!("r-{w}")}),
            )
            .expect(201);
        s.sys
            .post("/api/v1/domains", json!({"name": format!("Empty-{w}")}))
            .expect(201);
        s.sec
            .post(&format!("{d}/keys"), json!({"name": format!("del-{w}")}))
            .expect(201);
        s.sec
            .post(
                &format!("{d}/hosts"),
                json!({"host_name": format!("hd-{w}")}),
            )
            .expect(201);
    }
    s.sec
        .post(&format!("{d}/hosts"), json!({"host_name": "fixed-host"}))
        .expect(201);
    s.sys
        .post(
            "/api/v1/domains",
            json!({"name": "OtherDomain", "domain_administrator": "OtherDA"}),
        )
        .expect(201);
    let other = anon.login_changing("OtherDA", pw, new_pw);
    other
        .post(
            "/api/v1/domains/OtherDomain/administrators",
            json!({"login": "outsider", "roles": all_roles}),
        )
        .expect(201);

    // Email notification groups to read, change and delete (§14).
    s.sys
        .post(
            "/api/v1/email/groups",
            json!({"name": "fixed-group", "recipients": "ops@example.com"}),
        )
        .expect(201);
    for w in WHO {
        s.sys
            .post(
                "/api/v1/email/groups",
                json!({"name": format!("gd-{w}"), "recipients": "ops@example.com"}),
            )
            .expect(201);
    }

    let mut clients = vec![s.sys.clone()];
    clients.push(anon.login_changing("sysro", pw, new_pw));
    clients.push(s.dom.clone());
    clients.push(anon.login_changing("domro", pw, new_pw));
    clients.push(s.sec.clone());
    for w in ["secro", "norole", "outsider"] {
        clients.push(anon.login_changing(w, pw, new_pw));
    }
    clients.push(anon.clone());

    let ok = 200;
    let cases = vec![
        case(
            "GET",
            "/api/v1/system",
            None,
            [ok, ok, ok, ok, ok, ok, ok, ok, 401],
        ),
        case(
            "GET",
            "/api/v1/administrators",
            None,
            [ok, ok, ok, ok, 403, 403, 403, 403, 401],
        ),
        case(
            "POST",
            "/api/v1/administrators",
            Some(
                json!({"login": "new-{who}", "password": "New!Passw0rd", "user_type": "security"}),
            ),
            [201, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "GET",
            "/api/v1/administrators/DomainAdministrator",
            None,
            [ok, ok, ok, ok, 403, 403, 403, 403, 401],
        ),
        case(
            "PATCH",
            "/api/v1/administrators/victim-{who}",
            Some(json!({"description": "changed"})),
            [ok, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "DELETE",
            "/api/v1/administrators/victim2-{who}",
            None,
            [204, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "GET",
            "/api/v1/domains",
            None,
            [ok, ok, ok, ok, ok, ok, ok, ok, 401],
        ),
        case(
            "POST",
            "/api/v1/domains",
            Some(json!({"name": "D-{who}"})),
            [201, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "GET",
            "/api/v1/domains/RecorderDomain",
            None,
            [ok, ok, ok, ok, ok, ok, ok, 404, 401],
        ),
        case(
            "DELETE",
            "/api/v1/domains/Empty-{who}",
            None,
            [204, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "GET",
            "/api/v1/domains/RecorderDomain/administrators",
            None,
            [ok, ok, ok, ok, 403, 403, 403, 404, 401],
        ),
        case(
            "POST",
            "/api/v1/domains/RecorderDomain/administrators",
            Some(json!({"login": "m-{who}", "roles": ["key"]})),
            [403, 403, 201, 403, 403, 403, 403, 404, 401],
        ),
        case(
            "PATCH",
            "/api/v1/domains/RecorderDomain/administrators/p-{who}",
            Some(json!({"roles": ["audit"]})),
            [403, 403, ok, 403, 403, 403, 403, 404, 401],
        ),
        case(
            "DELETE",
            "/api/v1/domains/RecorderDomain/administrators/r-{who}",
            None,
            [403, 403, 204, 403, 403, 403, 403, 404, 401],
        ),
        case(
            "GET",
            "/api/v1/domains/RecorderDomain/keys",
            None,
            [403, 403, 403, 403, ok, ok, 403, 404, 401],
        ),
        case(
            "POST",
            "/api/v1/domains/RecorderDomain/keys",
            Some(json!({"name": "k-{who}"})),
            [403, 403, 403, 403, 201, 403, 403, 404, 401],
        ),
        case(
            "GET",
            "/api/v1/domains/RecorderDomain/keys/recorder",
            None,
            [403, 403, 403, 403, ok, ok, 403, 404, 401],
        ),
        case(
            "POST",
            "/api/v1/domains/RecorderDomain/keys/recorder/rotate",
            Some(json!({})),
            [403, 403, 403, 403, ok, 403, 403, 404, 401],
        ),
        case(
            "DELETE",
            "/api/v1/domains/RecorderDomain/keys/del-{who}",
            None,
            [403, 403, 403, 403, 204, 403, 403, 404, 401],
        ),
        case(
            "GET",
            "/api/v1/domains/RecorderDomain/registration-secret",
            None,
            [403, 403, 403, 403, ok, ok, 403, 404, 401],
        ),
        case(
            "PUT",
            "/api/v1/domains/RecorderDomain/registration-secret",
            Some(json!({"creation_method": "manual", "shared_secret": SHARED_SECRET})),
            [403, 403, 403, 403, ok, 403, 403, 404, 401],
        ),
        case(
            "GET",
            "/api/v1/domains/RecorderDomain/hosts",
            None,
            [403, 403, 403, 403, ok, ok, 403, 404, 401],
        ),
        case(
            "POST",
            "/api/v1/domains/RecorderDomain/hosts",
            Some(json!({"host_name": "h-{who}"})),
            [403, 403, 403, 403, 201, 403, 403, 404, 401],
        ),
        case(
            "GET",
            "/api/v1/domains/RecorderDomain/hosts/fixed-host",
            None,
            [403, 403, 403, 403, ok, ok, 403, 404, 401],
        ),
        case(
            "PATCH",
            "/api/v1/domains/RecorderDomain/hosts/fixed-host",
            Some(json!({"registration_allowed": true})),
            [403, 403, 403, 403, ok, 403, 403, 404, 401],
        ),
        case(
            "DELETE",
            "/api/v1/domains/RecorderDomain/hosts/hd-{who}",
            None,
            [403, 403, 403, 403, 204, 403, 403, 404, 401],
        ),
        case(
            "POST",
            "/api/v1/domains/RecorderDomain/registration-secret/expire",
            Some(json!({})),
            [403, 403, 403, 403, ok, 403, 403, 404, 401],
        ),
        case(
            "GET",
            "/api/v1/preferences",
            None,
            [ok, ok, ok, ok, ok, ok, ok, ok, 401],
        ),
        case(
            "PATCH",
            "/api/v1/preferences",
            Some(json!({"session_timeout": 30})),
            [ok, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "GET",
            "/api/v1/audit",
            None,
            [ok, ok, ok, ok, ok, ok, 403, ok, 401],
        ),
        case(
            "GET",
            "/api/v1/licence",
            None,
            [ok, ok, ok, ok, ok, ok, ok, ok, 401],
        ),
        case(
            "PUT",
            "/api/v1/licence",
            Some(json!({"licence": generous_licence()})),
            [ok, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        // §14 email notifications: System Administrators; read-only ones read.
        case(
            "GET",
            "/api/v1/email/smtp",
            None,
            [ok, ok, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "PUT",
            "/api/v1/email/smtp",
            Some(
                json!({"host": "127.0.0.1", "port": 1, "security": "none", "sender": "custos@example.com"}),
            ),
            [ok, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        // Nothing listens on port 1: past the permission check, the mail
        // server's absence is the answer.
        case(
            "POST",
            "/api/v1/email/test",
            Some(json!({"to": "ops@example.com"})),
            [502, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "GET",
            "/api/v1/email/groups",
            None,
            [ok, ok, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "POST",
            "/api/v1/email/groups",
            Some(json!({"name": "g-{who}", "recipients": "{who}@example.com"})),
            [201, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "GET",
            "/api/v1/email/groups/fixed-group",
            None,
            [ok, ok, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "PATCH",
            "/api/v1/email/groups/fixed-group",
            Some(json!({"enabled": false})),
            [ok, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "DELETE",
            "/api/v1/email/groups/gd-{who}",
            None,
            [204, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        // §11 High Availability: System Administrators; read-only ones read.
        case(
            "GET",
            "/api/v1/ha/nodes",
            None,
            [ok, ok, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "POST",
            "/api/v1/ha/nodes",
            Some(json!({"name": "node-{who}.example.com"})),
            [201, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "POST",
            "/api/v1/ha/nodes/node-{who}.example.com/registration",
            Some(json!({"csr": "not a CSR"})),
            [400, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "POST",
            "/api/v1/ha/nodes/node-{who}.example.com/replication",
            None,
            [409, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "GET",
            "/api/v1/ha/replication-mode",
            None,
            [ok, ok, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "PUT",
            "/api/v1/ha/replication-mode",
            Some(json!({"mode": "asynchronous"})),
            [ok, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "POST",
            "/api/v1/ha/notify-hosts",
            None,
            [409, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "POST",
            "/api/v1/ha/promote",
            None,
            [409, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "POST",
            "/api/v1/ha/join",
            Some(
                json!({"primary": "127.0.0.1", "ca_fingerprint": "not a fingerprint",
                        "login": "SystemAdministrator", "password": "x"}),
            ),
            [400, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "DELETE",
            "/api/v1/ha/nodes/node-{who}.example.com",
            None,
            [204, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "GET",
            "/api/v1/snmp",
            None,
            [ok, ok, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "PUT",
            "/api/v1/snmp",
            Some(json!({"sys_location": "Rack of {who}", "acl": ["10.1.2.*"]})),
            [ok, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        // §12 automatic backup: System Administrators; read-only ones read.
        case(
            "GET",
            "/api/v1/backups/automatic",
            None,
            [ok, ok, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "PUT",
            "/api/v1/backups/automatic",
            Some(
                json!({"schedule": {"frequency": "weekly", "time": "02:30", "weekday": "sunday"},
                        "target": {"host": "backup.example.com", "directory": "/srv/backups", "user": "custos"}}),
            ),
            [ok, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "GET",
            "/api/v1/backups/ssh-public-key",
            None,
            [ok, ok, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "POST",
            "/api/v1/backups/now",
            Some(json!({})),
            [202, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "GET",
            "/api/v1/backups/history",
            None,
            [ok, ok, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "DELETE",
            "/api/v1/backups/automatic",
            None,
            [204, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        // §12 wrapper key and manual backups: System Administrators; a
        // share only for its custodian; no backup for read-only ones.
        case(
            "GET",
            "/api/v1/wrapper-key",
            None,
            [ok, ok, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "POST",
            "/api/v1/wrapper-key",
            Some(json!({})),
            [201, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "POST",
            "/api/v1/wrapper-key/export",
            Some(
                json!({"minimum_custodians": 2, "total_custodians": 2, "custodians": ["SystemAdministrator", "sysro"]}),
            ),
            [ok, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "GET",
            "/api/v1/wrapper-key/share",
            None,
            [ok, ok, 404, 404, 404, 404, 404, 404, 401],
        ),
        // A custodian, read-only or not, confirms they stored their own.
        case(
            "POST",
            "/api/v1/wrapper-key/share/stored",
            Some(json!({})),
            [ok, ok, 404, 404, 404, 404, 404, 404, 401],
        ),
        case(
            "POST",
            "/api/v1/wrapper-key/import",
            Some(json!({"shares": []})),
            [400, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "POST",
            "/api/v1/backups",
            None,
            [ok, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
        case(
            "POST",
            "/api/v1/backups/restore",
            None,
            [400, 403, 403, 403, 403, 403, 403, 403, 401],
        ),
    ];

    let mut failures = vec![];
    for c in &cases {
        for (i, who) in WHO.iter().enumerate() {
            let path = c.path.replace("{who}", who);
            let body = c.body.as_ref().map(|b| fill(b, who));
            let r = clients[i].call(c.method, &path, body);
            if r.status != c.expect[i] {
                failures.push(format!(
                    "{} {path} as {who}: expected {}, got {} {}",
                    c.method, c.expect[i], r.status, r.body
                ));
            }
            if r.status == 403 || r.status == 401 {
                assert!(
                    r.body["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "a refusal says why: {}",
                    r.body
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Every operation of the OpenAPI document was exercised by the matrix
    // (or by the login/password/logout tests).
    let doc = anon.get("/api/openapi.json").ok();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("ops").keys() {
            let m = method.to_uppercase();
            let covered = cases.iter().any(|c| {
                c.method == m
                    && c.path.replace("{who}", "x").split('/').count() == path.split('/').count()
                    && c.path
                        .split('/')
                        .zip(path.split('/'))
                        .all(|(a, b)| a == b || b.starts_with('{') || a.contains("{who}"))
            }) || ["/api/v1/login", "/api/v1/password", "/api/v1/logout"]
                .contains(&path.as_str())
                || (m == "PUT" && path == "/api/v1/preferences");
            assert!(
                covered,
                "{m} {path} is documented but not in the permission matrix"
            );
        }
    }
}

#[test]
fn read_only_administrators_change_only_their_own_password() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    s.admin
        .post(
            "/api/v1/administrators",
            json!({"login": "auditor", "password": "Aud!t0rPw", "read_only": true}),
        )
        .expect(201);
    let ro = app
        .api()
        .login_changing("auditor", "Aud!t0rPw", "Aud!t0rPw2");
    // It sees what a System Administrator sees ...
    ro.get("/api/v1/administrators").ok();
    ro.get("/api/v1/audit").ok();
    // ... changes its own password ...
    ro.post(
        "/api/v1/password",
        json!({"old": "Aud!t0rPw2", "new": "Aud!t0rPw3"}),
    )
    .ok();
    // ... and nothing else.
    let v = ro
        .post("/api/v1/domains", json!({"name": "Nope"}))
        .expect(403);
    assert!(
        v["message"]
            .as_str()
            .expect("message")
            .contains("read-only")
    );
    // Signing out ends the session.
    ro.post("/api/v1/logout", json!({})).expect(204);
    ro.get("/api/v1/preferences").expect(401);
}
