//! Any bytes as an uploaded backup file (System → Backup and Restore →
//! Restore, `POST /api/v1/backups/restore`), restored by a System
//! Administrator onto a store that has a wrapper key: the reader of the tar
//! headers, the manifest, the encrypted chunks and the JSON lines of the
//! payload never panics and never allocates more than its limits
//! (libFuzzer's `-rss_limit_mb` and `-malloc_limit_mb` catch that).
//!
//! Two ways in, by the first byte:
//!
//! * anything but `{`: the bytes are the whole file. The chunks are
//!   authenticated (AES-256-GCM), so a file not made with the store's
//!   wrapper key is always refused; this reaches the tar headers, the
//!   manifest and the chunk framing.
//! * `{`: the bytes are the payload's plain JSON lines, which the target
//!   seals as a backup made with the store's wrapper key would be (the
//!   format of `appliance/src/store/backup.rs`: 64 KiB chunks, the nonce
//!   carries the chunk's number and whether it is the last, the manifest's
//!   SHA-256 is the associated data). This reaches the restore itself: what
//!   a holder of the wrapper key's shares could put in a file. Such a
//!   payload may restore; the built-in admin is kept (users not included).

#![no_main]

use std::sync::OnceLock;

use appliance::Store;
use appliance::access::Actor;
use appliance::wrapper::WrapperKey;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine;
use libfuzzer_sys::fuzz_target;

const CHUNK: usize = 64 * 1024;

struct Target {
    store: Store,
    admin: Actor,
    manifest: Vec<u8>,
    key: LessSafeKey,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("custos-fuzz-backup-{}", std::process::id()));
        // A directory left by an earlier process with the same id.
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).expect("a store in the temporary directory");
        let mut admin = store
            .actor("admin", "fuzz", "api")
            .expect("the built-in admin");
        admin.must_change_password = false;
        // A wrapper key this target knows, imported from its shares.
        let wrapper = WrapperKey::generate();
        let shares = wrapper.split(2, 2).expect("shares");
        store
            .import_wrapper_key(&admin, &shares, &[])
            .expect("the wrapper key");
        let salt = [7u8; 32];
        let manifest = serde_json::to_vec_pretty(&serde_json::json!({
            "format": "custos-backup",
            "format_version": 1,
            "appliance_version": appliance::VERSION,
            "created_at": "2026-12-05T07:00:00Z",
            "host_name": "fuzz.example.com",
            "wrapper_key_id": wrapper.id(),
            "cipher": "AES-256-GCM",
            "chunk_size": CHUNK,
            "salt": base64::engine::general_purpose::STANDARD.encode(salt),
        }))
        .expect("the manifest");
        let data_key = wrapper.backup_key(&salt).expect("the data key");
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, data_key.expose()).expect("an AES-256 key"),
        );
        Target {
            store,
            admin,
            manifest,
            key,
        }
    })
}

fn nonce(counter: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

/// A backup file of this store whose payload is `plain`.
fn sealed_backup(t: &Target, plain: &[u8]) -> Vec<u8> {
    let aad = appliance::crypto::sha256(&t.manifest);
    let mut payload = Vec::new();
    let mut chunks: Vec<&[u8]> = plain.chunks(CHUNK).collect();
    // The last chunk is never a full one (the writer seals an empty one).
    if plain.len().is_multiple_of(CHUNK) {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut data = chunk.to_vec();
        t.key
            .seal_in_place_append_tag(nonce(i as u64, i == last), Aad::from(aad), &mut data)
            .expect("sealing a chunk");
        payload.extend_from_slice(&(data.len() as u32).to_be_bytes());
        payload.extend_from_slice(&data);
    }
    let mut ar = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("manifest.json", &t.manifest[..]),
        ("payload.enc", &payload[..]),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        ar.append_data(&mut h, name, data).expect("a tar member");
    }
    ar.into_inner().expect("the tar")
}

fuzz_target!(|data: &[u8]| {
    let t = target();
    if data.first() == Some(&b'{') {
        let file = sealed_backup(t, data);
        let _ = t
            .store
            .restore_backup(&t.admin, &mut file.as_slice(), false);
    } else {
        let include_users = data.len() % 2 == 1;
        let mut input = data;
        // Nothing but a backup made with this store's key restores.
        assert!(
            t.store
                .restore_backup(&t.admin, &mut input, include_users)
                .is_err(),
            "a file not made with this appliance's wrapper key was restored"
        );
    }
});
