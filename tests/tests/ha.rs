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
