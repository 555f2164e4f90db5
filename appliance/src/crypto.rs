//! Sealing secrets at rest (AES-256-GCM under the master key), randomness,
//! digests and key derivation. One crypto library for all of it: aws-lc-rs,
//! the same one rustls uses, so the appliance carries a single implementation.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::secret::SecretBytes;
use crate::{Error, Result};

/// File name of the master key inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
const MASTER_KEY_LEN: usize = 32;
/// Version byte in front of every sealed value, so the format can change.
const SEAL_FORMAT: u8 = 1;

/// File name, inside the data directory, of the master key sealed to the
/// VM's TPM (a systemd credential made by `custos-master-key.service`).
/// When it exists, the key is never read from `master.key`: only from the
/// copy unsealed into memory at boot.
pub const SEALED_MASTER_KEY_FILE: &str = "master.key.cred";
/// Where `custos-master-key.service` puts the unsealed master key: a tmpfs
/// (memory, never the disk), readable by the key service's user only.
pub const UNSEALED_MASTER_KEY: &str = "/run/custos-master/master.key";

/// How the master key is kept at rest: what the dashboard tells the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyProtection {
    /// Sealed to the VM's TPM: a copy of the disks yields no keys.
    Tpm,
    /// In `master.key` on the data partition: whoever copies the disk has
    /// every key.
    Disk,
}

/// The key that seals every secret kept in the store.
pub struct MasterKey {
    key: LessSafeKey,
    /// The key's bytes, for the one place they leave the appliance: to a
    /// registered HA failover over the mutually authenticated control
    /// channel (§11), which must open what the primary sealed.
    bytes: SecretBytes,
    protection: KeyProtection,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// Loads the master key of the store in `dir`: the copy unsealed from the
    /// TPM when `dir` holds a sealed key, else `dir/master.key`, created
    /// (mode 0600) when the directory holds no store yet.
    pub fn load_or_create(dir: &Path) -> Result<MasterKey> {
        MasterKey::load_or_create_with(dir, Path::new(UNSEALED_MASTER_KEY))
    }

    /// [`MasterKey::load_or_create`] with the unsealed copy at `unsealed`.
    /// A sealed key that was not unsealed is an error, never a reason to make
    /// a new key: that would orphan every secret in the store.
    pub fn load_or_create_with(dir: &Path, unsealed: &Path) -> Result<MasterKey> {
        if dir.join(SEALED_MASTER_KEY_FILE).exists() {
            return match read_key_file(unsealed) {
                Ok(mut key) => {
                    key.protection = KeyProtection::Tpm;
                    Ok(key)
                }
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    Err(Error::Io {
                        path: unsealed.to_path_buf(),
                        source: std::io::Error::other(
                            "the master key is sealed to this VM's TPM and was not unsealed at boot \
                             (see custos-master-key.service); a disk copied to another VM cannot be unsealed",
                        ),
                    })
                }
                Err(e) => Err(e),
            };
        }
        let path = dir.join(MASTER_KEY_FILE);
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        match read_key_file(&path) {
            Ok(key) => Ok(key),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                // Written under a private name, then linked into place: a
                // second daemon starting at the same moment either loses the
                // race and reads the winner's complete file, or wins it.
                let bytes = random_secret(MASTER_KEY_LEN);
                let tmp = dir.join(format!(".{MASTER_KEY_FILE}.{}", random_token()));
                write_new_private_file(&tmp, bytes.expose())?;
                let linked = std::fs::hard_link(&tmp, &path);
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => {
                        std::fs::File::open(dir)
                            .and_then(|d| d.sync_all())
                            .map_err(io)?;
                        MasterKey::from_bytes(bytes.expose())
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        MasterKey::load_or_create_with(dir, unsealed)
                    }
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The HA group's key on a failover: `bytes` came from the primary and
    /// are kept sealed under this node's own key, so they are as protected
    /// at rest as this one.
    pub fn adopt(&self, bytes: &[u8]) -> Result<MasterKey> {
        let mut key = MasterKey::from_bytes(bytes)?;
        key.protection = self.protection;
        Ok(key)
    }

    /// How this key is kept at rest.
    pub fn protection(&self) -> KeyProtection {
        self.protection
    }

    /// The key itself, for a registered failover (keyd's control API).
    pub fn expose_for_failover(&self) -> &SecretBytes {
        &self.bytes
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<MasterKey> {
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| Error::Crypto("bad key"))?;
        Ok(MasterKey {
            key: LessSafeKey::new(key),
            bytes: SecretBytes::new(bytes.to_vec()),
            protection: KeyProtection::Disk,
        })
    }

    /// Encrypts `plain`, binding it to `context` (table, column and row), so a
    /// sealed value copied to another row does not open.
    pub fn seal(&self, context: &str, plain: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| Error::Crypto("seal failed"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(SEAL_FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        zeroize::Zeroize::zeroize(&mut buf);
        Ok(out)
    }

    /// Decrypts a value sealed by [`MasterKey::seal`] with the same context.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<SecretBytes> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != SEAL_FORMAT {
            return Err(Error::Crypto("sealed value is malformed"));
        }
        let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN]
            .try_into()
            .map_err(|_| Error::Crypto("sealed value is malformed"))?;
        let mut buf = sealed[1 + NONCE_LEN..].to_vec();
        let plain_len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| Error::Crypto("sealed value does not authenticate"))?
            .len();
        buf.truncate(plain_len);
        Ok(SecretBytes::new(buf))
    }
}

/// Reads a master key file. One readable by group or others is refused: the
/// appliance fails closed rather than trusting it.
fn read_key_file(path: &Path) -> Result<MasterKey> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(io(std::io::Error::other(
            "master key file is accessible to group or others; expected mode 0600",
        )));
    }
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(io)?);
    if bytes.len() != MASTER_KEY_LEN {
        return Err(Error::Crypto("master key file has the wrong length"));
    }
    MasterKey::from_bytes(&bytes)
}

/// Creates `path` with mode 0600 (failing if it exists), writes and syncs it.
pub fn write_new_private_file(path: &Path, data: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: PathBuf::from(path),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

pub fn fill_random(buf: &mut [u8]) {
    // The OS CSPRNG through aws-lc; failure here means the platform is broken.
    aws_lc_rs::rand::fill(buf).expect("the system random number generator failed");
}

pub fn random_secret(len: usize) -> SecretBytes {
    let mut v = vec![0u8; len];
    fill_random(&mut v);
    SecretBytes::new(v)
}

/// A random token for sessions, URL-safe base64 of 32 random bytes.
pub fn random_token() -> String {
    use base64::Engine;
    let bytes = random_secret(32);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.expose())
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The fingerprint format operators compare by eye: upper-case hex pairs
/// separated by colons, of the SHA-256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = sha256(der);
    let hex = hex::encode_upper(digest);
    hex.as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).expect("hex is ASCII"))
        .collect::<Vec<_>>()
        .join(":")
}

struct OutLen(usize);
impl aws_lc_rs::hkdf::KeyType for OutLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256: derives `len` bytes from `ikm` for the purpose `info`.
pub fn hkdf_sha256(ikm: &[u8], salt: &[u8], info: &[u8], len: usize) -> Result<SecretBytes> {
    let prk = aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, salt).extract(ikm);
    let info = [info];
    let okm = prk
        .expand(&info, OutLen(len))
        .map_err(|_| Error::Crypto("hkdf length"))?;
    let mut out = vec![0u8; len];
    okm.fill(&mut out).map_err(|_| Error::Crypto("hkdf fill"))?;
    Ok(SecretBytes::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_context_binding() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = MasterKey::load_or_create(dir.path()).expect("create");
        let mode = std::fs::metadata(dir.path().join(MASTER_KEY_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = k.seal("t:1", b"material").expect("seal");
        assert_eq!(k.open("t:1", &sealed).expect("open").expose(), b"material");
        assert!(k.open("t:2", &sealed).is_err());
        let mut flipped = sealed.clone();
        *flipped.last_mut().expect("tag") ^= 1;
        assert!(k.open("t:1", &flipped).is_err());
        // The same file opens again after a "restart".
        let k2 = MasterKey::load_or_create(dir.path()).expect("reload");
        assert_eq!(k2.open("t:1", &sealed).expect("open").expose(), b"material");
    }

    #[test]
    fn world_readable_master_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        MasterKey::load_or_create(dir.path()).expect("create");
        let p = dir.path().join(MASTER_KEY_FILE);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(MasterKey::load_or_create(dir.path()).is_err());
    }

    #[test]
    fn a_sealed_key_is_read_only_from_its_unsealed_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = tempfile::tempdir().expect("tempdir");
        let unsealed = run.path().join("master.key");
        // A plain store first: its key is on disk.
        let plain = MasterKey::load_or_create_with(dir.path(), &unsealed).expect("create");
        assert_eq!(plain.protection(), KeyProtection::Disk);
        let sealed = plain.seal("t:1", b"material").expect("seal");
        // Sealed at boot: the plain file is gone, its bytes are in memory.
        let bytes = std::fs::read(dir.path().join(MASTER_KEY_FILE)).expect("read");
        std::fs::write(dir.path().join(SEALED_MASTER_KEY_FILE), b"tpm-sealed").expect("cred");
        std::fs::remove_file(dir.path().join(MASTER_KEY_FILE)).expect("rm");
        // Not unsealed (another VM's TPM): an error, and no new key is made.
        let err = MasterKey::load_or_create_with(dir.path(), &unsealed).expect_err("refused");
        assert!(err.to_string().contains("sealed to this VM's TPM"), "{err}");
        assert!(!dir.path().join(MASTER_KEY_FILE).exists());
        write_new_private_file(&unsealed, &bytes).expect("unsealed");
        let k = MasterKey::load_or_create_with(dir.path(), &unsealed).expect("unsealed");
        assert_eq!(k.protection(), KeyProtection::Tpm);
        assert_eq!(k.open("t:1", &sealed).expect("open").expose(), b"material");
        // Even a plain key file left beside the sealed one is not used.
        write_new_private_file(&dir.path().join(MASTER_KEY_FILE), &[7u8; 32]).expect("plain");
        let k = MasterKey::load_or_create_with(dir.path(), &unsealed).expect("unsealed");
        assert_eq!(k.open("t:1", &sealed).expect("open").expose(), b"material");
    }

    #[test]
    fn fingerprint_format() {
        let fp = fingerprint(b"abc");
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp.starts_with("BA:78:16:BF"));
    }
}
