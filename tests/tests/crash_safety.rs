//! No acknowledged write is lost: SIGKILL the key service in the middle of a
//! burst of key creations; after a restart every key whose creation was
//! acknowledged is there, and a registered host reads it.

use std::sync::{Arc, Mutex};

use serde_json::json;
use tests::*;

#[test]
fn keys_acknowledged_before_a_sigkill_survive_it() {
    let mut app = Appliance::start();
    let s = recommended_setup(&app);
    let dir = tempfile::tempdir().expect("tempdir");
    register_host(&app, "enrol", "rec1.example.com", SHARED_SECRET, dir.path()).ok();

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = vec![];
    for t in 0..3 {
        let sec = s.sec.clone();
        let acked = acked.clone();
        writers.push(std::thread::spawn(move || {
            for i in 0..10_000 {
                let name = format!("burst-{t}-{i}");
                let r = sec.try_call(
                    "POST",
                    &format!("/api/v1/domains/{DOMAIN}/keys"),
                    Some(json!({"name": name})),
                );
                match r {
                    Ok(r) if r.status == 201 => acked.lock().expect("lock").push(name),
                    _ => return,
                }
            }
        }));
    }
    // Kill once a good number of creations were acknowledged, with the
    // writers still sending.
    while acked.lock().expect("lock").len() < 40 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    app.kill();
    for w in writers {
        let _ = w.join();
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 40);

    app.start_again();
    let sec = app.api().login("SecurityAdministrator", SEC_PW);
    let keys = sec.get(&format!("/api/v1/domains/{DOMAIN}/keys")).ok();
    let names: Vec<&str> = keys
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    for name in &acked {
        assert!(
            names.contains(&name.as_str()),
            "acknowledged key {name} was lost"
        );
    }
    // Every one of them is readable by the host.
    for name in acked.iter().step_by(5) {
        let (k, v) = fetch_key(&app, dir.path(), name, None);
        assert_eq!((k.len(), v), (64, 1));
    }
}
