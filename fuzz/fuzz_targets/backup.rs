//! Any bytes as an uploaded backup file (System → Backup and Restore →
//! Restore, `POST /api/v1/backup/restore`), restored by a System
//! Administrator onto a store that has a wrapper key: the reader of the
//! tar headers, the manifest and the encrypted chunks never panics and
//! never allocates more than its limits (libFuzzer's `-rss_limit_mb` and
//! `-malloc_limit_mb` catch that); what it refuses leaves the store as it
//! was, which the next input finds.
//!
//! The payload's chunks are authenticated (AES-256-GCM), so mutations get
//! as far as the first chunk; the JSON lines behind it are reached only
//! with the wrapper key.

#![no_main]

use std::sync::OnceLock;

use appliance::Store;
use appliance::access::Actor;
use libfuzzer_sys::fuzz_target;

fn store() -> &'static (Store, Actor) {
    static STORE: OnceLock<(Store, Actor)> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("custos-fuzz-backup-{}", std::process::id()));
        let store = Store::open(&dir).expect("a store in the temporary directory");
        let mut admin = store
            .actor("admin", "fuzz", "api")
            .expect("the built-in admin");
        admin.must_change_password = false;
        store
            .create_wrapper_key(&admin, false, &[])
            .expect("a wrapper key");
        (store, admin)
    })
}

fuzz_target!(|data: &[u8]| {
    let (store, admin) = store();
    let include_users = data.len() % 2 == 1;
    let mut input = data;
    // Nothing but a backup made with this store's key restores.
    assert!(
        store
            .restore_backup(admin, &mut input, include_users)
            .is_err(),
        "a file not made by this appliance was restored"
    );
});
