//! §11 High Availability through the REST API: the group's failovers added
//! by case-sensitive host name, registered with the node certificate the
//! primary signs (named so no protected host's certificate can pass for
//! it), listed, and deleted; refusals name the field and change nothing.

use serde_json::json;
use tests::*;

/// A node's certificate signing request, as `convert2failover` makes it.
fn node_csr() -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
    rcgen::CertificateParams::new(vec!["custos-b.example.com".to_owned()])
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

#[test]
fn failovers_are_added_registered_listed_and_deleted() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let sys = &s.sys;

    // Refusals name the field, and change nothing.
    let before = store_snapshot(app.data_dir());
    for (body, status, field) in [
        (json!({"name": "failover"}), 400, "name"),
        (json!({"name": "two words.example.com"}), 400, "name"),
        (json!({"name": ""}), 400, "name"),
        (json!({"nom": "custos-b.example.com"}), 400, "nom"),
    ] {
        let r = sys.call("POST", "/api/v1/ha/nodes", Some(body.clone()));
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert!(
            r.body["field"]
                .as_str()
                .is_some_and(|f| f.starts_with(field)),
            "{body}: {}",
            r.body
        );
    }
    let r = sys.call(
        "POST",
        "/api/v1/ha/nodes/custos-b.example.com/registration",
        Some(json!({"csr": node_csr()})),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("add it under High Availability"),
        "{}",
        r.body
    );
    // Only System Administrators.
    s.sec
        .call(
            "POST",
            "/api/v1/ha/nodes",
            Some(json!({"name": "custos-b.example.com"})),
        )
        .expect(403);
    s.dom.get("/api/v1/ha/nodes").expect(403);
    assert_eq!(
        store_snapshot(app.data_dir()),
        before,
        "refusals changed the store"
    );

    let role = || sys.get("/api/v1/system").ok()["high_availability"].clone();
    assert_eq!(role(), json!({"role": "standalone"}));

    // Add, case-sensitively.
    let b = sys
        .post("/api/v1/ha/nodes", json!({"name": "Custos-B.example.com"}))
        .expect(201);
    assert_eq!(
        role(),
        json!({"role": "primary", "failovers": ["Custos-B.example.com"]})
    );
    assert_eq!(b["name"], "Custos-B.example.com");
    assert_eq!(b["registered"], false);
    let r = sys.call(
        "POST",
        "/api/v1/ha/nodes",
        Some(json!({"name": "Custos-B.example.com"})),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["field"], "name");
    let r = sys.call(
        "POST",
        "/api/v1/ha/nodes/custos-b.example.com/registration",
        Some(json!({"csr": node_csr()})),
    );
    assert_eq!(r.status, 409, "another case is another node: {}", r.body);

    // Register: a node certificate from the appliance's CA, whose
    // fingerprint the failover's operator compares with the dashboard's.
    let r = sys
        .post(
            "/api/v1/ha/nodes/Custos-B.example.com/registration",
            json!({"csr": "not a CSR"}),
        )
        .expect(400);
    assert_eq!(r["field"], "csr");
    let reg = sys
        .post(
            "/api/v1/ha/nodes/Custos-B.example.com/registration",
            json!({"csr": node_csr()}),
        )
        .expect(200);
    let system = sys.get("/api/v1/system").ok();
    assert_eq!(
        reg["ca_fingerprint"], system["rsa_ca_fingerprint"],
        "{reg} {system}"
    );
    let cert = reg["certificate"].as_str().expect("certificate");
    let fingerprint = fingerprint_of_pem(cert);
    let listed = sys.get("/api/v1/ha/nodes").ok();
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(2),
        "the failover and the primary: {listed}"
    );
    let node = listed
        .as_array()
        .and_then(|a| a.iter().find(|n| n["name"] == "Custos-B.example.com"))
        .expect("the failover");
    assert_eq!(node["registered"], true);
    assert_eq!(node["certificate_fingerprint"], fingerprint.as_str());
    assert!(
        listed
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n["role"] == "primary")),
        "{listed}"
    );
    let log = sys.get("/api/v1/audit?text=HA%20failover").ok();
    assert!(
        log.to_string()
            .contains("registered HA failover Custos-B.example.com"),
        "{log}"
    );

    // Delete.
    sys.call("DELETE", "/api/v1/ha/nodes/Custos-B.example.com", None)
        .expect(204);
    sys.call("DELETE", "/api/v1/ha/nodes/Custos-B.example.com", None)
        .expect(404);
    assert_eq!(sys.get("/api/v1/ha/nodes").ok(), json!([]));
    assert_eq!(role(), json!({"role": "standalone"}));
}

/// A client of the HA control port holding `cert` and `key`, trusting
/// `ca` and reaching the appliance (`custos-test`) at `url`'s address.
fn node_client(url: &str, ca: &str, cert: &str, key: &str) -> reqwest::blocking::Client {
    let addr: std::net::SocketAddr = url
        .trim_start_matches("https://")
        .parse()
        .expect("the HA port's address");
    reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA")])
        .identity(
            reqwest::Identity::from_pem(format!("{cert}\n{key}").as_bytes()).expect("identity"),
        )
        .resolve("custos-test", addr)
        .build()
        .expect("client")
}

/// §11: "a node that is not registered is refused". The HA control port
/// answers only a registered node's certificate; the group's master key
/// goes to it, audited; a protected host's certificate from the same CA,
/// a deleted node's, and none at all are refused at the handshake.
#[test]
fn the_control_port_answers_registered_nodes_only() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let sys = &s.sys;
    let url = app.url("ha").to_owned();
    let port = url.rsplit(':').next().expect("port").to_owned();
    let base = format!("https://custos-test:{port}");

    sys.post("/api/v1/ha/nodes", json!({"name": "custos-b.example.com"}))
        .expect(201);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
    let csr = rcgen::CertificateParams::new(vec!["custos-b.example.com".to_owned()])
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let reg = sys
        .post(
            "/api/v1/ha/nodes/custos-b.example.com/registration",
            json!({"csr": csr}),
        )
        .expect(200);
    let (cert, ca) = (
        reg["certificate"].as_str().expect("certificate").to_owned(),
        reg["ca_certificate"].as_str().expect("ca").to_owned(),
    );
    let node = node_client(&url, &ca, &cert, &key.serialize_pem());
    let hello: serde_json::Value = node
        .get(format!("{base}/ha/v1/hello"))
        .send()
        .expect("hello")
        .json()
        .expect("json");
    assert_eq!(hello["name"], "custos-test");
    assert_eq!(hello["high_availability"]["role"], "primary");
    let sent: serde_json::Value = node
        .post(format!("{base}/ha/v1/master-key"))
        .send()
        .expect("master key")
        .json()
        .expect("json");
    use base64::Engine;
    let got = base64::engine::general_purpose::STANDARD
        .decode(sent["master_key"].as_str().expect("key"))
        .expect("base64");
    let on_disk = std::fs::read(app.data_dir().join("master.key")).expect("master.key");
    assert_eq!(got, on_disk, "the group's master key");
    let log = sys.get("/api/v1/audit?text=master%20key").ok();
    assert!(
        log.to_string()
            .contains("sent the group's master key to HA failover custos-b.example.com"),
        "{log}"
    );

    // A protected host's certificate, signed by the same CA: refused.
    let host_cert = {
        let enrol = reqwest::blocking::Client::builder()
            .tls_certs_only([
                reqwest::Certificate::from_pem(app.ca_pem("enrol").as_bytes()).expect("ca"),
            ])
            .build()
            .expect("client");
        let host_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
        let csr = rcgen::CertificateParams::new(vec!["recorder-1".to_owned()])
            .expect("params")
            .serialize_request(&host_key)
            .expect("csr")
            .pem()
            .expect("pem");
        let v: serde_json::Value = enrol
            .post(format!("{}/agent/v1/register", app.url("enrol")))
            .json(&json!({"host_name": "recorder-1", "domain": DOMAIN, "shared_secret": SHARED_SECRET, "csr": csr}))
            .send()
            .expect("register")
            .json()
            .expect("json");
        (
            v["certificate"].as_str().expect("certificate").to_owned(),
            host_key.serialize_pem(),
        )
    };
    let host = node_client(&url, &ca, &host_cert.0, &host_cert.1);
    assert!(
        host.get(format!("{base}/ha/v1/hello")).send().is_err(),
        "a host's certificate opened the HA port"
    );
    // No certificate at all.
    let anonymous = reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA")])
        .resolve(
            "custos-test",
            url.trim_start_matches("https://").parse().expect("addr"),
        )
        .build()
        .expect("client");
    assert!(anonymous.get(format!("{base}/ha/v1/hello")).send().is_err());

    // Deleted, the node's certificate opens nothing any more.
    sys.call("DELETE", "/api/v1/ha/nodes/custos-b.example.com", None)
        .expect(204);
    let node = node_client(&url, &ca, &cert, &key.serialize_pem());
    assert!(
        node.get(format!("{base}/ha/v1/hello")).send().is_err(),
        "a deleted node was answered"
    );
}

/// System → High Availability in a real browser: Add with its refusal next
/// to the field, the list with its columns, Delete.
#[test]
fn the_console_page_adds_lists_and_deletes_failovers() {
    let app = Appliance::start();
    let _s = recommended_setup(&app);
    let mut b = tests::browser::Browser::start(app.url("web"), "ha");
    b.open("/login");
    b.fill("login", "SystemAdministrator");
    b.fill("password", SYS_PW);
    b.press("Log In");
    b.open("/system/preferences");
    b.follow("High Availability");
    assert_eq!(b.path(), "/system/ha", "{}", b.body());
    assert!(
        b.body().contains("Standalone: no failover configured"),
        "{}",
        b.body()
    );
    b.fill("name", "failover");
    b.press("Add");
    let e = b.text("#name-error").unwrap_or_default();
    assert!(e.contains("fully qualified"), "{}", b.body());
    b.fill("name", "custos-b.example.com");
    b.press("Add");
    assert!(
        b.body().contains("custos-b.example.com added"),
        "{}",
        b.body()
    );
    assert_eq!(
        b.texts("table.list th"),
        [
            "Select",
            "Name",
            "Role",
            "Registered",
            "Configured",
            "Last Synchronized",
            "Synchronization Status"
        ]
    );
    let rows = b.texts("table.list tbody tr");
    assert!(
        rows.iter().any(|r| r.contains("custos-b.example.com")
            && r.contains("Failover")
            && r.contains("Not replicating")),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("custos-test") && r.contains("Primary")),
        "{rows:?}"
    );
    b.screenshot("list");
    // Config Replication before the failover registered: refused, saying
    // what to do.
    b.click("input[name=name][value='custos-b.example.com']");
    b.press("Config Replication");
    assert!(
        b.body()
            .contains("has not registered: run ha convert2failover"),
        "{}",
        b.body()
    );
    // The replication mode, with its trade-off stated.
    b.open("/system/ha");
    assert!(
        b.body().contains("acknowledges no change at all"),
        "{}",
        b.body()
    );
    b.click("#mode-synchronous");
    b.press("Save Mode");
    assert!(
        b.body().contains("Replication is synchronous"),
        "{}",
        b.body()
    );
    b.open("/system/ha");
    b.click("input[name=name][value='custos-b.example.com']");
    b.press("Delete");
    assert!(
        b.body()
            .contains("Deleted custos-b.example.com from the group"),
        "{}",
        b.body()
    );
    assert!(b.body().contains("Standalone"), "{}", b.body());
}

/// §11 end to end through the REST API: two appliances on loopback, each
/// with its own PostgreSQL. The failover joins the primary whose CA the
/// operator pinned (a wrong fingerprint is refused before any credential
/// is sent), the primary configures the replication (its store moves into
/// its PostgreSQL; the failover's becomes a base backup of it, streaming),
/// and then: a key created on the primary is served by the failover within
/// seconds, under the failover's own server certificate from the shared
/// CA; the primary killed (service and PostgreSQL), a registered agent
/// gets its keys from the failover; every write on the failover is refused
/// naming the primary, and changes nothing.
#[test]
fn a_failover_joins_replicates_and_serves_keys_when_the_primary_dies() {
    let test = "ha::a_failover_joins_replicates_and_serves_keys_when_the_primary_dies";
    if let Err(why) = appliance::pg_harness::bin_dir() {
        skip(test, &why);
        return;
    }
    let mut a = Appliance::start_named("custos-a.example.com", &[]);
    let sa = recommended_setup(&a);
    let mut b = Appliance::start_named("custos-b.example.com", &[]);
    let sb = recommended_setup(&b);
    sa.sys
        .post("/api/v1/ha/nodes", json!({"name": "custos-b.example.com"}))
        .expect(201);

    // A host registered on the primary, told of the failover.
    let agent_dir = tempfile::tempdir().expect("tempdir");
    let failover_keys = format!("127.0.0.1:{}", b.port("keys"));
    register_host_with(
        &a,
        "enrol",
        "rec1.example.com",
        SHARED_SECRET,
        agent_dir.path(),
        &["--failover", &failover_keys],
    )
    .ok();
    let (before, _) = fetch_key(&a, agent_dir.path(), "recorder", None);
    // And one that was told nothing: Notify All Hosts will tell it.
    let told_dir = tempfile::tempdir().expect("tempdir");
    register_host(
        &a,
        "enrol",
        "rec3.example.com",
        SHARED_SECRET,
        told_dir.path(),
    )
    .ok();

    // Joining: the pinned CA must be the primary's.
    let primary = format!("127.0.0.1:{}", a.port("web"));
    let fp = a.ca_fingerprint("enrol");
    let join = |fp: &str, password: &str| {
        sb.sys.call(
            "POST",
            "/api/v1/ha/join",
            Some(
                json!({"primary": primary, "ca_fingerprint": fp, "login": "SystemAdministrator",
                        "password": password, "ha_port": a.port("ha")}),
            ),
        )
    };
    let b_before = b.snapshot();
    let r = join(&b.ca_fingerprint("enrol"), SYS_PW);
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["field"], "ca_fingerprint", "{}", r.body);
    assert!(
        r.body["message"].as_str().unwrap_or("").contains(&fp),
        "the refusal names the CA the primary presented: {}",
        r.body
    );
    let r = join("AB:CD", SYS_PW);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["field"], "ca_fingerprint", "{}", r.body);
    let r = join(&fp, "Wrong!Passw0rd");
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.body["message"].as_str().unwrap_or("").contains("401"),
        "{}",
        r.body
    );
    assert_eq!(b.snapshot(), b_before, "refused joins changed the failover");
    let ha = |app: &Appliance| app.api().login("SystemAdministrator", SYS_PW);
    assert_eq!(
        sa.sys.get("/api/v1/ha/nodes").ok()[1]["registered"],
        false,
        "nothing registered yet"
    );

    let joined = join(&fp, SYS_PW).ok();
    assert_eq!(joined["primary"], "custos-a.example.com");
    b.wait_restart();

    // Config Replication on the primary.
    let nodes = sa.sys.get("/api/v1/ha/nodes").ok();
    let node_b = nodes
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "custos-b.example.com"))
        .expect("b listed")
        .clone();
    assert_eq!(node_b["registered"], true, "{nodes}");
    assert_eq!(node_b["configured"], false, "{nodes}");
    let configured = sa
        .sys
        .post(
            "/api/v1/ha/nodes/custos-b.example.com/replication",
            json!({}),
        )
        .ok();
    assert_eq!(configured["configured"], true, "{configured}");
    b.wait_restart();
    assert!(
        std::fs::read_to_string(a.data_dir().join("store.backend"))
            .expect("the primary's store moved")
            .starts_with("postgresql"),
    );

    // Notify All Hosts: the next key answer names the failover, and the
    // agent keeps it.
    let told = sa.sys.post("/api/v1/ha/notify-hosts", json!({})).ok();
    assert_eq!(
        told["failovers"][0]["name"], "custos-b.example.com",
        "{told}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = a.agent(&[
            "get-key",
            "recorder",
            "--dir",
            told_dir.path().to_str().expect("dir"),
        ]);
        out.ok();
        if out.stderr.contains("custos-b.example.com") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent was not told of the failover: {}",
            out.stderr
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let saved = std::fs::read_to_string(told_dir.path().join("agent.json")).expect("agent.json");
    assert!(saved.contains(&failover_keys), "{saved}");

    // The failover knows what it is, and serves reads.
    let b_sys = ha(&b);
    assert_eq!(
        b_sys.get("/api/v1/system").ok()["high_availability"],
        json!({"role": "failover", "primary": "custos-a.example.com"})
    );
    assert_eq!(
        sa.sys.get("/api/v1/system").ok()["high_availability"],
        json!({"role": "primary", "failovers": ["custos-b.example.com"]})
    );

    // Synchronous replication: the failover confirms every commit.
    assert_eq!(
        sa.sys
            .call(
                "PUT",
                "/api/v1/ha/replication-mode",
                Some(json!({"mode": "at once"}))
            )
            .status,
        400
    );
    let mode = sa
        .sys
        .call(
            "PUT",
            "/api/v1/ha/replication-mode",
            Some(json!({"mode": "synchronous"})),
        )
        .ok();
    assert_eq!(mode["mode"], "synchronous");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let states: Vec<String> = StoreDb::open(a.data_dir())
            .rows(
                "SELECT sync_state FROM pg_stat_replication",
                store_params![],
            )
            .iter()
            .map(|r| r.get::<_, String>(0).expect("sync_state"))
            .collect();
        // `ANY 1 (*)`: any one failover's confirmation is enough (quorum).
        if states == ["quorum"] || states == ["sync"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the failover does not replicate synchronously: {states:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // A key created on the primary reaches the failover within seconds.
    sa.sec
        .post(
            &format!("/api/v1/domains/{DOMAIN}/keys"),
            json!({"name": "after-ha", "algorithm": "AES256", "key_type": "stored_on_server",
                   "automatic_key_rotation": false}),
        )
        .expect(201);
    let b_sec = b.api().login("SecurityAdministrator", SEC_PW);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = b_sec.get(&format!("/api/v1/domains/{DOMAIN}/keys"));
        if r.status == 200 && r.body.to_string().contains("after-ha") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the key did not reach the failover: {}",
            r.body
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // Writes on the failover are refused, naming the primary; nothing changes.
    let b_snapshot = b.snapshot();
    for (who, method, path, body) in [
        (
            &b_sec,
            "POST",
            format!("/api/v1/domains/{DOMAIN}/keys"),
            json!({"name": "on-failover", "algorithm": "AES256", "key_type": "stored_on_server",
                   "automatic_key_rotation": false}),
        ),
        (
            &b_sys,
            "POST",
            "/api/v1/ha/nodes".to_owned(),
            json!({"name": "custos-c.example.com"}),
        ),
    ] {
        let r = who.call(method, &path, Some(body));
        assert_eq!(r.status, 409, "{path}: {}", r.body);
        assert!(
            r.body["message"]
                .as_str()
                .unwrap_or("")
                .contains("custos-a.example.com"),
            "{path}: {}",
            r.body
        );
    }
    assert_eq!(
        b.snapshot(),
        b_snapshot,
        "refused writes changed the failover"
    );

    // The primary dies, service and PostgreSQL, right after acknowledging a
    // change: the agent's keys come from the failover, under the pinned
    // CA, and (synchronous mode) the change is there.
    sa.sec
        .post(
            &format!("/api/v1/domains/{DOMAIN}/keys"),
            json!({"name": "acknowledged", "algorithm": "AES256", "key_type": "stored_on_server",
                   "automatic_key_rotation": false}),
        )
        .expect(201);
    a.kill_node();
    let keys = b_sec.get(&format!("/api/v1/domains/{DOMAIN}/keys")).ok();
    assert!(
        keys.to_string().contains("\"acknowledged\""),
        "an acknowledged change was lost: {keys}"
    );
    let out = b.agent(&[
        "get-key",
        "recorder",
        "--reveal",
        "--dir",
        agent_dir.path().to_str().expect("dir"),
    ]);
    out.ok();
    assert!(out.stderr.contains("using failover"), "{}", out.stderr);
    assert!(out.stdout.contains(&before), "{}", out.stdout);
    // The host that was only told by Notify All Hosts reaches it too.
    let out = b.agent(&[
        "get-key",
        "recorder",
        "--reveal",
        "--dir",
        told_dir.path().to_str().expect("dir"),
    ]);
    out.ok();
    assert!(out.stderr.contains("using failover"), "{}", out.stderr);
    assert!(out.stdout.contains(&before), "{}", out.stdout);
    let out = b.agent(&[
        "get-key",
        "after-ha",
        "--reveal",
        "--dir",
        agent_dir.path().to_str().expect("dir"),
    ]);
    out.ok();
    assert!(out.stdout.contains("key:"), "{}", out.stdout);

    // convert2primary on the failover: it takes writes from then on.
    let promoted = b_sys.post("/api/v1/ha/promote", json!({})).ok();
    assert_eq!(
        promoted["former_primary"], "custos-a.example.com",
        "{promoted}"
    );
    assert_eq!(
        promoted["high_availability"],
        json!({"role": "primary", "failovers": ["custos-a.example.com"]})
    );
    b_sec
        .post(
            &format!("/api/v1/domains/{DOMAIN}/keys"),
            json!({"name": "on-new-primary", "algorithm": "AES256", "key_type": "stored_on_server",
                   "automatic_key_rotation": false}),
        )
        .expect(201);
    b_sec
        .post(
            &format!("/api/v1/domains/{DOMAIN}/keys/recorder/rotate"),
            json!({}),
        )
        .ok();
    let new_host = tempfile::tempdir().expect("tempdir");
    let failover_keys = format!("127.0.0.1:{}", a.port("keys"));
    register_host_with(
        &b,
        "enrol",
        "rec2.example.com",
        SHARED_SECRET,
        new_host.path(),
        &["--failover", &failover_keys],
    )
    .ok();
    let (on_b, _) = fetch_key(&b, new_host.path(), "on-new-primary", None);

    // The old primary comes back: it learns it was replaced, and refuses
    // every write, saying so.
    a.start_again();
    let a_sys = a.api().login("SystemAdministrator", SYS_PW);
    assert_eq!(
        a_sys.get("/api/v1/system").ok()["high_availability"],
        json!({"role": "fenced", "primary": "custos-b.example.com"})
    );
    let a_before = a.snapshot();
    let r = a_sys.call(
        "POST",
        "/api/v1/ha/nodes",
        Some(json!({"name": "custos-c.example.com"})),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("custos-b.example.com"),
        "{}",
        r.body
    );
    assert_eq!(a.snapshot(), a_before, "a fenced node changed");

    // It rejoins as a failover through Config Replication on the new
    // primary, and then serves what was made there.
    let configured = b_sys
        .post(
            "/api/v1/ha/nodes/custos-a.example.com/replication",
            json!({}),
        )
        .ok();
    assert_eq!(configured["configured"], true, "{configured}");
    a.wait_restart();
    let a_sys = a.api().login("SystemAdministrator", SYS_PW);
    assert_eq!(
        a_sys.get("/api/v1/system").ok()["high_availability"],
        json!({"role": "failover", "primary": "custos-b.example.com"})
    );
    let told = b_sys.post("/api/v1/ha/notify-hosts", json!({})).ok();
    assert_eq!(
        told["failovers"][0]["name"], "custos-a.example.com",
        "{told}"
    );
    b.kill_node();
    let out = a.agent(&[
        "get-key",
        "on-new-primary",
        "--reveal",
        "--dir",
        new_host.path().to_str().expect("dir"),
    ]);
    out.ok();
    assert!(out.stdout.contains(&on_b), "{}", out.stdout);
}
