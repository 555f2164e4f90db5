//! The image's systemd units as `systemd-analyze security` reads them
//! (offline, from image/mkosi.extra): each daemon runs as its own user with
//! only what it needs, sandboxed (issue 12, item 10). The exposure figures it
//! prints are the README's table.

use std::path::{Path, PathBuf};
use std::process::Command;

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("image/mkosi.extra/etc/systemd/system")
}

/// `[Service]` settings of a unit file, in order (a key may repeat).
fn settings(unit: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(units_dir().join(unit)).expect("unit file");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn values<'a>(s: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    s.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// (unit, its user, the highest overall exposure accepted)
const DAEMONS: &[(&str, &str, f64)] = &[
    ("custos-keyd.service", "custos", 2.0),
    ("custos-snmpd.service", "custos-snmp", 2.0),
    ("custos-notifyd.service", "custos-notify", 1.5),
    ("custos-backupd.service", "custos-backup", 1.5),
];

#[test]
fn each_daemon_has_its_own_user_and_only_the_key_service_writes_the_store() {
    let mut users = vec![];
    for (unit, user, _) in DAEMONS {
        let s = settings(unit);
        assert_eq!(values(&s, "User"), [*user], "{unit}");
        assert_eq!(values(&s, "Group"), [*user], "{unit}");
        users.push(*user);
        let writes_store = values(&s, "ReadWritePaths")
            .iter()
            .any(|v| v.split_whitespace().any(|p| p == "/var/lib/custos"));
        assert_eq!(
            writes_store,
            *unit == "custos-keyd.service",
            "{unit}: only the key service may write the data partition"
        );
        if *unit != "custos-keyd.service" {
            let hidden: Vec<&str> = values(&s, "InaccessiblePaths")
                .iter()
                .flat_map(|v| v.split_whitespace())
                .collect();
            assert!(
                hidden.contains(&"-/run/custos-master"),
                "{unit}: the unsealed master key must be hidden"
            );
        }
        for (key, want) in [
            ("ProtectSystem", "strict"),
            ("PrivateTmp", "yes"),
            ("NoNewPrivileges", "yes"),
            ("SystemCallFilter", "@system-service"),
        ] {
            assert!(values(&s, key).contains(&want), "{unit}: {key}={want}");
        }
        assert!(
            !values(&s, "RestrictAddressFamilies").is_empty(),
            "{unit}: RestrictAddressFamilies"
        );
        assert!(
            !values(&s, "CapabilityBoundingSet").is_empty(),
            "{unit}: CapabilityBoundingSet"
        );
    }
    users.sort_unstable();
    users.dedup();
    assert_eq!(users.len(), DAEMONS.len(), "two daemons share a user");
    // The image creates those users.
    let postinst = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .join("image/mkosi.postinst"),
    )
    .expect("postinst");
    for (_, user, _) in DAEMONS {
        assert!(
            postinst.contains(user),
            "mkosi.postinst never creates {user}"
        );
    }
}

#[test]
fn systemd_analyze_security_scores() {
    let probe = Command::new("systemd-analyze").arg("--version").output();
    if !probe.is_ok_and(|o| o.status.success()) {
        tests::skip(
            "units::systemd_analyze_security_scores",
            "systemd-analyze is not installed",
        );
        return;
    }
    let mut units: Vec<(&str, f64)> = DAEMONS.iter().map(|(u, _, max)| (*u, *max)).collect();
    units.push(("custos-master-key.service", 3.0));
    units.push(("custos-ready.service", 5.0));
    for (unit, max) in units {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(units_dir().join(unit))
            .output()
            .expect("systemd-analyze security");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("{unit}: no overall exposure in:\n{text}"));
        let score: f64 = line
            .split(':')
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{unit}: {line}"));
        println!("{unit}: exposure {score}");
        assert!(
            score <= max,
            "{unit}: exposure {score} above {max}:\n{text}"
        );
    }
}
