//! `custos-agent --failover`: when the primary does not answer (refused, or
//! silent past the timeout) the agent fetches from the failover; an answer
//! from the primary, even a refusal, is final.

use std::net::TcpListener;

use serde_json::Value;
use tests::*;

/// Points the saved registration's primary at `port` (the failover stays).
fn set_primary_port(dir: &std::path::Path, port: u16) {
    let path = dir.join("agent.json");
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("agent.json")).expect("json");
    v["key_port"] = port.into();
    std::fs::write(&path, serde_json::to_string_pretty(&v).expect("json")).expect("write");
}

#[test]
fn agent_falls_back_to_the_failover() {
    let app = Appliance::start();
    let _s = recommended_setup(&app);
    let dir = tempfile::tempdir().expect("tempdir");
    let failover = format!("127.0.0.1:{}", app.port("keys"));
    register_host_with(
        &app,
        "enrol",
        "rec1.example.com",
        SHARED_SECRET,
        dir.path(),
        &["--failover", &failover],
    )
    .ok();
    let (expected, _) = fetch_key(&app, dir.path(), "recorder", None);

    // Primary refuses connections: the failover answers.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    set_primary_port(dir.path(), closed_port);
    let out = app.agent(&[
        "get-key",
        "recorder",
        "--reveal",
        "--dir",
        dir.path().to_str().expect("dir"),
    ]);
    out.ok();
    assert!(
        out.stderr.contains("primary unreachable") && out.stderr.contains("using failover"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains(&expected));

    // Primary accepts but never answers: the failover after the timeout.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    set_primary_port(dir.path(), silent.local_addr().expect("addr").port());
    let started = std::time::Instant::now();
    let out = app.agent(&[
        "get-key",
        "recorder",
        "--reveal",
        "--timeout",
        "2",
        "--dir",
        dir.path().to_str().expect("dir"),
    ]);
    out.ok();
    assert!(
        out.stdout.contains(&expected) && out.stderr.contains("using failover"),
        "{out:?}"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "fell back before the timeout"
    );
    drop(silent);

    // A refusal from the primary is final: no failover for a missing key.
    set_primary_port(dir.path(), app.port("keys"));
    let out = app.agent(&[
        "get-key",
        "nonexistent",
        "--dir",
        dir.path().to_str().expect("dir"),
    ]);
    assert_eq!(out.status, 1);
    assert!(!out.stderr.contains("using failover"), "{}", out.stderr);
}
