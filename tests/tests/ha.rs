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
