//! Backup and restore of a store holding 100 000 key versions (§12): time
//! and peak memory (resident set, VmHWM) of each, in this process.
//!
//! `cargo bench -p appliance --bench backup [-- VERSIONS]`. The stores live
//! in /dev/shm when it exists, so the figures are the work of the backup
//! code (decrypting, encrypting, SQLite) rather than of the disk's fsync.

use std::time::Instant;

use appliance::Store;
use appliance::access::Actor;
use appliance::licence::{AgentTerms, LicenceTerms};
use appliance::model::{Algorithm, CreationMethod, DomainKind, KeyType, Role, UserType};
use appliance::secret::SecretString;
use appliance::store::{NewAdmin, NewDomain, NewKey};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn ready(s: &Store, login: &str) -> Actor {
    let mut a = s.actor(login, "bench", "api").expect("actor");
    a.must_change_password = false;
    a
}

fn main() {
    let versions: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let a = Store::open(&a_dir).expect("store a");
    let sys = ready(&a, "admin");
    let key = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../xtask/licence-dev-signing.key"
    ))
    .expect("development signing key");
    let pkcs8 = appliance::licence::pkcs8_from_pem(&key).expect("key");
    let terms = LicenceTerms {
        format: 1,
        licence_id: "BENCH".into(),
        issued_to: "Benchmark".into(),
        issued_at: "2026-01-01".into(),
        key_agent: AgentTerms {
            installed: true,
            max_agents: 10,
            expires: "2099-12-31".into(),
        },
        fs_agent: AgentTerms {
            installed: false,
            max_agents: 0,
            expires: "2099-12-31".into(),
        },
        key_vault: true,
        multiple_domains: true,
        max_domains: 10,
    };
    a.install_licence(
        &sys,
        &appliance::licence::issue(&pkcs8, &terms).expect("licence"),
    )
    .expect("install");
    for (login, t) in [("da", UserType::Domain), ("sa", UserType::Security)] {
        a.create_admin(
            &sys,
            NewAdmin {
                login: login.into(),
                description: String::new(),
                rsa_user_id: None,
                password: SecretString::new("B3nch!pass"),
                confirm_password: None,
                user_type: t,
                restrict_to_domain: None,
                read_only: false,
            },
        )
        .expect("admin");
    }
    a.create_domain(
        &sys,
        NewDomain {
            name: "D".into(),
            kind: DomainKind::Global,
            organization: String::new(),
            description: String::new(),
            help_desk_information: None,
            domain_administrator: Some("da".into()),
        },
    )
    .expect("domain");
    a.add_member(&ready(&a, "da"), "D", "sa", &[Role::Key])
        .expect("member");
    let sa = ready(&a, "sa");
    let keys = versions.div_ceil(100).max(1);
    let started = Instant::now();
    let mut made = 0;
    for k in 0..keys {
        let name = format!("key-{k:05}");
        a.create_key(
            &sa,
            "D",
            NewKey {
                name: name.clone(),
                description: String::new(),
                template: None,
                expiration_date: None,
                algorithm: Algorithm::Aes256,
                key_type: KeyType::StoredOnServer,
                unique_to_host: false,
                key_creation_method: CreationMethod::Generate,
                key_material: None,
                key_refresh_period: None,
                automatic_key_rotation: false,
                key_version_life_span: None,
            },
        )
        .expect("key");
        made += 1;
        while made < versions && made % 100 != 0 {
            a.rotate_key(&sa, "D", &name).expect("rotate");
            made += 1;
        }
        if made >= versions {
            break;
        }
    }
    eprintln!(
        "filled {made} key versions in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    a.create_wrapper_key(&sys, false, &[]).expect("wrapper key");
    for login in ["keeper", "warden"] {
        a.create_admin(
            &sys,
            NewAdmin {
                login: login.into(),
                description: String::new(),
                rsa_user_id: None,
                password: SecretString::new("K33per!pass"),
                confirm_password: None,
                user_type: UserType::System,
                restrict_to_domain: None,
                read_only: false,
            },
        )
        .expect("custodian");
    }
    a.export_wrapper_key(&sys, 2, 2, &["keeper".into(), "warden".into()], &[])
        .expect("export");
    let shares = [
        a.my_wrapper_share(&ready(&a, "keeper")).expect("share"),
        a.my_wrapper_share(&ready(&a, "warden")).expect("share"),
    ];

    let path = dir.path().join("backup.tar");
    reset_peak();
    let rss_before = peak_rss_kib();
    let t = Instant::now();
    let info = {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("file"));
        a.write_backup(&sys, "bench.example.com", &mut f)
            .expect("backup")
    };
    let backup_s = t.elapsed().as_secs_f64();
    let backup_peak = peak_rss_kib();

    let b = Store::open(&b_dir).expect("store b");
    let sys_b = ready(&b, "admin");
    b.import_wrapper_key(&sys_b, &shares, &[]).expect("import");
    reset_peak();
    let t = Instant::now();
    let report = {
        let mut f = std::io::BufReader::new(std::fs::File::open(&path).expect("file"));
        b.restore_backup(&sys_b, &mut f, true).expect("restore")
    };
    let restore_s = t.elapsed().as_secs_f64();
    let restore_peak = peak_rss_kib();
    assert_eq!(report.key_versions as usize, made);
    println!("key versions: {made}");
    println!(
        "backup file: {} bytes ({:.1} MiB)",
        info.bytes,
        info.bytes as f64 / 1048576.0
    );
    println!(
        "backup:  {backup_s:.2} s, peak RSS {:.1} MiB (before: {:.1} MiB)",
        backup_peak as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
    println!(
        "restore: {restore_s:.2} s, peak RSS {:.1} MiB",
        restore_peak as f64 / 1024.0
    );
}
