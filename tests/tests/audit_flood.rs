//! Issue 12, item 6: the audit log cannot be flooded and key release does
//! not depend on it. Repeated failed sign-ins and registrations from one
//! address write the first entry and then one summary with the count; a
//! host still gets its key when the bookkeeping write after a release
//! fails.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::*;

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting until {what}");
}

fn total(api: &Api) -> i64 {
    api.get("/api/v1/audit?limit=1").ok()["total"]
        .as_i64()
        .expect("total")
}

fn entries(api: &Api, text: &str) -> Vec<Value> {
    let q: String = text
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    api.get(&format!("/api/v1/audit?limit=1000&text={q}")).ok()["entries"]
        .as_array()
        .expect("entries")
        .clone()
}

#[test]
fn a_flood_of_failed_sign_ins_and_registrations_writes_a_summary() {
    // A window of 10 s and a periodic task every second, so the summaries
    // come quickly (the appliance's defaults are 60 s and 60 s).
    let app = Appliance::start_with(&["--refusal-window", "10", "--rotation-interval", "1"]);
    let s = recommended_setup(&app);
    let before = total(&s.sys);
    let anon = app.api();
    let attempts = 80;
    let mut refused = 0;
    for i in 0..attempts {
        let login = if i % 2 == 0 {
            "nobody"
        } else {
            "SecurityAdministrator"
        };
        let r = anon.call(
            "POST",
            "/api/v1/login",
            Some(json!({"login": login, "password": format!("Wrong-{i}")})),
        );
        // 401, or 403 once SecurityAdministrator is locked out; each is a
        // refusal the store records (429 would be one turned away before).
        assert!(
            [401, 403, 429].contains(&r.status),
            "{} {}",
            r.status,
            r.body
        );
        refused += usize::from(r.status != 429);
    }
    let host_dir = tempfile::tempdir().expect("tempdir");
    for _ in 0..20 {
        let out = register_host(
            &app,
            "enrol",
            "flood.example.com",
            "Wr0ng-Secret-x",
            host_dir.path(),
        );
        assert_ne!(out.status, 0, "a wrong secret registers nothing");
    }
    eventually("the summaries are written", || {
        !entries(&s.sys, "more failed sign-ins from 127.0.0.1").is_empty()
            && !entries(&s.sys, "more failed registrations (registration refused").is_empty()
    });
    let summaries = entries(&s.sys, "more failed sign-ins from 127.0.0.1");
    let counted: usize = summaries
        .iter()
        .map(|e| {
            let what = e["what"].as_str().expect("what");
            what.split(' ')
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("{what}"))
        })
        .sum();
    let written = entries(&s.sys, "failed login").len() + entries(&s.sys, "login refused").len();
    assert_eq!(
        counted + written,
        refused,
        "every failed sign-in is written or counted: {summaries:?}"
    );
    assert!(
        summaries[0]["what"]
            .as_str()
            .expect("what")
            .contains("in the last")
    );
    assert_eq!(summaries[0]["severity"], "WARN");
    // The first of each window, its summary, and the lock-out: a handful,
    // not one row per attempt.
    let added = total(&s.sys) - before;
    assert!(
        added <= (attempts + 20) / 5,
        "{added} rows for {attempts} sign-ins and 20 registrations"
    );
}

#[test]
fn key_release_survives_a_failed_bookkeeping_write() {
    let app = Appliance::start();
    let _s = recommended_setup(&app);
    let host_dir = tempfile::tempdir().expect("tempdir");
    register_host(
        &app,
        "enrol",
        "rec1.example.com",
        SHARED_SECRET,
        host_dir.path(),
    )
    .ok();
    // The audit table refuses every insert from now on, as a full disk
    // would refuse the write.
    let db = tests::StoreDb::open(app.data_dir());
    db.execute_batch(if db.is_postgres() {
        "CREATE FUNCTION test_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$;
         CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION test_refuse_audit();"
    } else {
        "CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit refused'); END;"
    })
    .expect("trigger");
    drop(db);
    let (v1, n) = fetch_key(&app, host_dir.path(), "recorder", None);
    assert_eq!((v1.len(), n), (64, 1));
    // Again: the failed write did not count as done.
    let (again, _) = fetch_key(&app, host_dir.path(), "recorder", None);
    assert_eq!(again, v1);
}

#[test]
fn old_audit_rows_are_archived_then_deleted() {
    // Keep 20 rows; the periodic task runs every second.
    let app = Appliance::start_with(&["--audit-max-rows", "20", "--rotation-interval", "1"]);
    let s = recommended_setup(&app);
    // Each sign-in is a row: well past the limit.
    for _ in 0..30 {
        app.api().login("SystemAdministrator", SYS_PW);
    }
    let dir = app.data_dir().join("audit");
    eventually("the table is trimmed", || {
        total(&s.sys) <= 25 && dir.exists()
    });
    let archives: Vec<_> = std::fs::read_dir(&dir)
        .expect("DATA/audit")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !archives.is_empty()
            && archives
                .iter()
                .all(|n| n.starts_with("audit-") && n.ends_with(".jsonl.gz")),
        "{archives:?}"
    );
    // The rows left are the newest, and the archives start at the first.
    let oldest_kept = s.sys.get("/api/v1/audit?limit=1000").ok()["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["id"].as_i64())
        .min()
        .expect("rows");
    assert!(oldest_kept > 20, "{oldest_kept}");
    let mut names = archives.clone();
    names.sort();
    assert!(names[0].starts_with("audit-000000000001-"), "{names:?}");
    let last_archived: i64 = names
        .last()
        .and_then(|n| n.trim_end_matches(".jsonl.gz").rsplit('-').next())
        .and_then(|n| n.parse().ok())
        .expect("last id");
    assert_eq!(
        last_archived + 1,
        oldest_kept,
        "no row lost between archive and table"
    );
}
