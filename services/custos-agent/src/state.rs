//! The registration a host keeps in its `--dir`: `host.key`, `host.crt`, `ca.crt`
//! and `agent.json`.
//!
//! Every file is written atomically (temporary file in the same folder, fsync,
//! rename, fsync of the folder), and `agent.json` last, so a folder either holds a
//! whole registration or none that `load` accepts. The folder is created 0700 and
//! the key file 0600.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub const KEY_FILE: &str = "host.key";
pub const CERTIFICATE_FILE: &str = "host.crt";
pub const CA_FILE: &str = "ca.crt";
pub const REGISTRATION_FILE: &str = "agent.json";

/// `agent.json`: where the appliance is and who this host is to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// The primary appliance's host name or address, without port.
    pub server: String,
    pub enrol_port: u16,
    pub key_port: u16,
    pub domain: String,
    pub host_name: String,
    /// `HOST[:PORT]` of the failover appliance; the port defaults to `key_port`.
    pub failover: Option<String>,
    /// RFC 3339, UTC.
    pub registered_at: String,
    /// SHA-256 of the appliance CA pinned at registration (`AB:CD:…`); `ca.crt`
    /// must match it before any connection trusts it.
    pub ca_fingerprint: String,
}

/// Everything a registration folder holds.
#[derive(Debug)]
pub struct Saved {
    pub registration: Registration,
    pub key_pem: Zeroizing<String>,
    pub certificate_pem: String,
    pub ca_pem: String,
}

/// Writes a registration into `dir`, creating the folder 0700 if needed.
pub fn save(dir: &Path, saved: &Saved) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut json = serde_json::to_string_pretty(&saved.registration)
        .context("serialising the registration")?;
    json.push('\n');
    write_atomic(&dir.join(KEY_FILE), saved.key_pem.as_bytes(), 0o600)?;
    write_atomic(
        &dir.join(CERTIFICATE_FILE),
        saved.certificate_pem.as_bytes(),
        0o644,
    )?;
    write_atomic(&dir.join(CA_FILE), saved.ca_pem.as_bytes(), 0o644)?;
    write_atomic(&dir.join(REGISTRATION_FILE), json.as_bytes(), 0o644)?;
    Ok(())
}

/// Rewrites only the registration's settings (`agent.json`), as when the
/// appliance names its failover.
pub fn save_registration(dir: &Path, registration: &Registration) -> Result<()> {
    let mut json =
        serde_json::to_string_pretty(registration).context("serialising the registration")?;
    json.push('\n');
    write_atomic(&dir.join(REGISTRATION_FILE), json.as_bytes(), 0o644)
}

/// Reads the registration in `dir`.
pub fn load(dir: &Path) -> Result<Saved> {
    let json = match fs::read_to_string(dir.join(REGISTRATION_FILE)) {
        Ok(json) => json,
        Err(error) if error.kind() == io::ErrorKind::NotFound => bail!(
            "no registration in {}: run custos-agent register first",
            dir.display()
        ),
        Err(error) => {
            return Err(error)
                .with_context(|| format!("reading {}", dir.join(REGISTRATION_FILE).display()));
        }
    };
    let registration: Registration = serde_json::from_str(&json)
        .with_context(|| format!("{} is malformed", dir.join(REGISTRATION_FILE).display()))?;
    let read = |name: &str| -> Result<String> {
        let path = dir.join(name);
        fs::read_to_string(&path).with_context(|| {
            format!(
                "the registration in {} is incomplete: reading {}",
                dir.display(),
                path.display()
            )
        })
    };
    Ok(Saved {
        registration,
        key_pem: Zeroizing::new(read(KEY_FILE)?),
        certificate_pem: read(CERTIFICATE_FILE)?,
        ca_pem: read(CA_FILE)?,
    })
}

/// Replaces `path` with `contents` atomically; the file gets `mode` from its
/// creation on, so a key is never readable by others, not even briefly.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(format!(".tmp{}", std::process::id()));
    let temporary = dir.join(temporary_name);

    match fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("removing {}", temporary.display()));
        }
    }
    let result = (|| -> Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)
            .with_context(|| format!("creating {}", temporary.display()))?;
        file.write_all(contents)
            .with_context(|| format!("writing {}", temporary.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", temporary.display()))?;
        fs::rename(&temporary, path)
            .with_context(|| format!("renaming {} to {}", temporary.display(), path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result?;
    File::open(&dir)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    const FP: &str = "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:\
                      B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD";

    fn example() -> Saved {
        Saved {
            registration: Registration {
                server: "custos.example".to_owned(),
                enrol_port: 8443,
                key_port: 8444,
                domain: "recording".to_owned(),
                host_name: "app01".to_owned(),
                failover: Some("custos-b.example:8447".to_owned()),
                registered_at: "2025-01-02T03:04:05Z".to_owned(),
                ca_fingerprint: FP.to_owned(),
            },
            key_pem: Zeroizing::new("-----BEGIN PRIVATE KEY-----\n…\n".to_owned()),
            certificate_pem: "host certificate".to_owned(),
            ca_pem: "CA certificate".to_owned(),
        }
    }

    #[test]
    fn registration_round_trips_with_private_modes() {
        let temp = tempfile::tempdir().expect("temporary folder");
        let dir = temp.path().join("agent");
        let saved = example();
        save(&dir, &saved).expect("save");

        let loaded = load(&dir).expect("load");
        assert_eq!(loaded.registration, saved.registration);
        assert_eq!(*loaded.key_pem, *saved.key_pem);
        assert_eq!(loaded.certificate_pem, saved.certificate_pem);
        assert_eq!(loaded.ca_pem, saved.ca_pem);

        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .expect("list")
            .map(|entry| entry.expect("entry").file_name())
            .filter(|name| name.to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn registration_json_has_the_documented_shape() {
        let json = serde_json::to_value(&example().registration).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "server": "custos.example",
                "enrol_port": 8443,
                "key_port": 8444,
                "domain": "recording",
                "host_name": "app01",
                "failover": "custos-b.example:8447",
                "registered_at": "2025-01-02T03:04:05Z",
                "ca_fingerprint": FP,
            })
        );
        let no_failover: Registration = serde_json::from_value(serde_json::json!({
            "server": "custos.example", "enrol_port": 8443, "key_port": 8444,
            "domain": "d", "host_name": "h", "failover": null,
            "registered_at": "2025-01-02T03:04:05Z", "ca_fingerprint": FP,
        }))
        .expect("null failover");
        assert_eq!(no_failover.failover, None);
    }

    #[test]
    fn an_empty_folder_holds_no_registration() {
        let temp = tempfile::tempdir().expect("temporary folder");
        let error = load(temp.path()).expect_err("nothing saved");
        assert_eq!(
            error.to_string(),
            format!(
                "no registration in {}: run custos-agent register first",
                temp.path().display()
            )
        );
    }

    #[test]
    fn atomic_write_replaces_and_keeps_the_mode() {
        let temp = tempfile::tempdir().expect("temporary folder");
        let path = temp.path().join("key.bin");
        write_atomic(&path, b"first", 0o600).expect("first");
        write_atomic(&path, b"second", 0o600).expect("second");
        assert_eq!(fs::read(&path).expect("read"), b"second");
        assert_eq!(mode(&path), 0o600);
    }
}
