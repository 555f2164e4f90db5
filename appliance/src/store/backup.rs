//! §12: the wrapper key and its custodians, and the system-level backup
//! and restore.
//!
//! A backup is a tar of two members: `manifest.json` (plain: format,
//! appliance version, time, host, wrapper key id, the payload's salt) and
//! `payload.enc`, the store's configuration as JSON lines encrypted with
//! AES-256-GCM in 64 KiB chunks under a key derived from the wrapper key and
//! the salt. Each chunk's nonce carries its number and whether it is the
//! last one, and its associated data is the manifest's SHA-256, so a flipped
//! bit, a reordered, dropped or truncated chunk, an edited manifest or the
//! wrong wrapker key all fail authentication. Neither side holds the whole
//! payload in memory.
//!
//! Sealed values (key material, CA and server keys, shared secrets) are
//! opened for the payload and sealed again under the target's master key on
//! restore. The restore runs in one transaction: the old configuration stays
//! until the new one is complete and authenticated.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};

use crate::store::db::Value as SqlValue;
use crate::store::db::{OptionalExtension, Tx, params};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{CliSession, Store, audit_actor, hosts, keys, now, system};
use crate::access::{Access, Actor};
use crate::model::{Severity, UserType, fmt_time};
use crate::secret::{SecretBytes, SecretString};
use crate::wrapper::WrapperKey;
use crate::{Error, Result};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Plaintext bytes per encrypted chunk.
pub const CHUNK: usize = 64 * 1024;
const TAG_LEN: usize = 16;
const FORMAT: &str = "custos-backup";
const FORMAT_VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";
const PAYLOAD: &str = "payload.enc";
const MAX_MANIFEST: u64 = 64 * 1024;
/// Longest line of a payload a restore reads. A row is at most a few KB
/// (an RSA CA's certificate and key, a host's certificate, a licence file);
/// 1 MiB is far beyond any, and bounds what a restore holds in memory.
const MAX_PAYLOAD_LINE: u64 = 1024 * 1024;

/// The tables of a system-level backup (§12), parents first. Network, host
/// name, time zone, the CLI account, the log, the wrapper key and the
/// automatic backup's own settings are not in it.
const TABLES: &[&str] = &[
    "preferences",
    "system_identities",
    "licence",
    "domains",
    "administrators",
    "domain_members",
    "agent_keys",
    "key_versions",
    "registration_secrets",
    "hosts",
];

/// The key of each table of [`TABLES`], the order its rows are written in.
fn primary_key(table: &str) -> &'static str {
    match table {
        "preferences" | "system_identities" => "name",
        "domain_members" => "domain_id, admin_id",
        "key_versions" => "key_id, version",
        "registration_secrets" => "domain_id",
        _ => "id",
    }
}

/// The sealed column of a table and the context it is sealed under, from
/// the row's other columns.
fn sealed_column(table: &str) -> Option<&'static str> {
    match table {
        "system_identities" => Some("key_sealed"),
        "key_versions" => Some("material_sealed"),
        "registration_secrets" => Some("secret_sealed"),
        _ => None,
    }
}

fn seal_context(table: &str, cols: &[String], row: &[Value]) -> Result<String> {
    let col = |name: &str| -> Result<&Value> {
        cols.iter()
            .position(|c| c == name)
            .and_then(|i| row.get(i))
            .ok_or_else(|| corrupt(&format!("{table} has no {name}")))
    };
    let int = |name: &str| -> Result<i64> {
        col(name)?
            .as_i64()
            .ok_or_else(|| corrupt(&format!("{table}.{name} is not a number")))
    };
    match table {
        "system_identities" => {
            Ok(system::context(col("name")?.as_str().ok_or_else(|| {
                corrupt("system_identities.name is not text")
            })?))
        }
        "key_versions" => Ok(keys::version_context(int("key_id")?, int("version")?)),
        "registration_secrets" => Ok(hosts::secret_context(int("domain_id")?)),
        _ => Err(corrupt(&format!("{table} has no sealed column"))),
    }
}

fn corrupt(what: &str) -> Error {
    Error::invalid(
        "backup",
        format!("the backup's contents are not valid ({what})"),
    )
}

/// What the wrapper-key page and API show (never the key or a share).
#[derive(Debug, Clone, Serialize)]
pub struct WrapperStatus {
    pub exists: bool,
    pub key_id: Option<String>,
    pub origin: Option<String>,
    pub created_at: Option<String>,
    pub minimum_custodians: Option<i64>,
    pub total_custodians: Option<i64>,
    pub exported_at: Option<String>,
    pub custodians: Vec<String>,
    /// Custodians who confirmed they stored their share: the appliance no
    /// longer holds a copy of it.
    pub collected: Vec<String>,
    /// Whether exporting again or replacing the key needs a quorum (at
    /// least M shares of the current key): true once it was exported.
    pub quorum_required: bool,
}

/// A custodian's own share as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ShareState {
    /// The appliance still holds it; `shown` once the custodian saw it.
    Held { shown: bool },
    /// The custodian confirmed they stored it; the appliance deleted it.
    Collected { at: String },
}

/// One backup written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupInfo {
    /// `backup_config_<fqdn>_yyyy_mm_dd_hhmm.tar`
    pub file_name: String,
    pub bytes: u64,
    pub wrapper_key_id: String,
    pub created_at: String,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub file_host: String,
    pub file_created_at: String,
    pub wrapper_key_id: String,
    pub users_included: bool,
    pub rows: u64,
    pub key_versions: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    format: String,
    format_version: u32,
    appliance_version: String,
    created_at: String,
    host_name: String,
    wrapper_key_id: String,
    cipher: String,
    chunk_size: usize,
    salt: String,
}

/// The backup's file name for a host and a time (§12).
pub fn backup_file_name(fqdn: &str, at: time::OffsetDateTime) -> String {
    let safe: String = fqdn
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "backup_config_{safe}_{:04}_{:02}_{:02}_{:02}{:02}.tar",
        at.year(),
        at.month() as u8,
        at.day(),
        at.hour(),
        at.minute()
    )
}

fn nonce(counter: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

/// Encrypts what is written to it in chunks; `finish` writes the last one.
struct ChunkWriter<W: Write> {
    out: W,
    key: LessSafeKey,
    aad: [u8; 32],
    buf: Vec<u8>,
    counter: u64,
    written: u64,
}

impl<W: Write> ChunkWriter<W> {
    fn new(out: W, key: &[u8], aad: [u8; 32]) -> Result<Self> {
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key).map_err(|_| Error::Crypto("backup key"))?,
        );
        Ok(ChunkWriter {
            out,
            key,
            aad,
            buf: Vec::with_capacity(CHUNK),
            counter: 0,
            written: 0,
        })
    }

    fn seal_chunk(&mut self, last: bool) -> std::io::Result<()> {
        let mut data = std::mem::take(&mut self.buf);
        self.key
            .seal_in_place_append_tag(nonce(self.counter, last), Aad::from(self.aad), &mut data)
            .map_err(|_| std::io::Error::other("backup encryption failed"))?;
        self.out.write_all(&(data.len() as u32).to_be_bytes())?;
        self.out.write_all(&data)?;
        self.written += 4 + data.len() as u64;
        self.counter += 1;
        data.clear();
        self.buf = data;
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<(W, u64)> {
        self.seal_chunk(true)?;
        self.out.flush()?;
        Ok((self.out, self.written))
    }
}

impl<W: Write> Write for ChunkWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.seal_chunk(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decrypts chunks as they are read; fails on any change, and at the end
/// if the last chunk never came.
struct ChunkReader<R: Read> {
    inner: R,
    key: LessSafeKey,
    aad: [u8; 32],
    counter: u64,
    plain: Vec<u8>,
    pos: usize,
    done: bool,
}

fn refused(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned())
}

impl<R: Read> ChunkReader<R> {
    fn next_chunk(&mut self) -> std::io::Result<()> {
        let mut len = [0u8; 4];
        if let Err(e) = self.inner.read_exact(&mut len) {
            return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                refused("the backup file is truncated")
            } else {
                e
            });
        }
        let len = u32::from_be_bytes(len) as usize;
        if !(TAG_LEN..=CHUNK + TAG_LEN).contains(&len) {
            return Err(refused("the backup file is damaged"));
        }
        let mut data = vec![0u8; len];
        self.inner.read_exact(&mut data).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                refused("the backup file is truncated")
            } else {
                e
            }
        })?;
        // The last chunk is the one that opens with the "last" nonce.
        for last in [false, true] {
            let mut attempt = data.clone();
            if let Ok(plain) =
                self.key
                    .open_in_place(nonce(self.counter, last), Aad::from(self.aad), &mut attempt)
            {
                let n = plain.len();
                attempt.truncate(n);
                self.plain = attempt;
                self.pos = 0;
                self.counter += 1;
                self.done = last;
                return Ok(());
            }
        }
        Err(refused(
            "the backup file does not authenticate: it was changed or damaged, or it was made with another wrapper key",
        ))
    }
}

impl<R: Read> Read for ChunkReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn share_context(login: &str) -> String {
    format!("wrapper_shares:{login}")
}

const KEY_CONTEXT: &str = "wrapper_key:1";

fn wrapper_status(tx: &Tx<'_>) -> Result<WrapperStatus> {
    let row = tx
        .query_row(
            "SELECT key_id, origin, created_at, minimum_custodians, total_custodians, exported_at FROM wrapper_key WHERE id = 1",
            params![],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            },
        )
        .optional()?;
    let held = tx
        .prepare("SELECT login, collected_at IS NOT NULL FROM wrapper_shares ORDER BY number")?
        .query_map(crate::store::db::params![], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?))
        })?
        .collect::<crate::store::db::DbResult<Vec<(String, bool)>>>()?;
    let custodians = held.iter().map(|(l, _)| l.clone()).collect();
    let collected = held
        .into_iter()
        .filter(|(_, c)| *c)
        .map(|(l, _)| l)
        .collect();
    Ok(match row {
        None => WrapperStatus {
            exists: false,
            key_id: None,
            origin: None,
            created_at: None,
            minimum_custodians: None,
            total_custodians: None,
            exported_at: None,
            custodians: Vec::new(),
            collected: Vec::new(),
            quorum_required: false,
        },
        Some((id, origin, created, m, n, exported)) => WrapperStatus {
            exists: true,
            key_id: Some(id),
            origin: Some(origin),
            created_at: Some(created),
            minimum_custodians: m,
            total_custodians: n,
            quorum_required: exported.is_some(),
            exported_at: exported,
            custodians,
            collected,
        },
    })
}

impl Store {
    fn wrapper_key(&self, tx: &Tx<'_>) -> Result<Option<WrapperKey>> {
        let sealed: Option<Vec<u8>> = tx
            .query_row(
                "SELECT key_sealed FROM wrapper_key WHERE id = 1",
                params![],
                |r| r.get(0),
            )
            .optional()?;
        sealed
            .map(|s| WrapperKey::from_bytes(self.master.open(KEY_CONTEXT, &s)?))
            .transpose()
    }

    fn put_wrapper_key(&self, tx: &Tx<'_>, key: &WrapperKey, origin: &str) -> Result<()> {
        let sealed = self.master.seal(KEY_CONTEXT, key.expose())?;
        tx.execute("DELETE FROM wrapper_shares", params![])?;
        tx.execute(
            "INSERT INTO wrapper_key(id, key_sealed, key_id, origin, created_at) VALUES (1, ?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET key_sealed = excluded.key_sealed, key_id = excluded.key_id,
               origin = excluded.origin, created_at = excluded.created_at,
               minimum_custodians = NULL, total_custodians = NULL, exported_at = NULL",
            params![sealed, key.id(), origin, fmt_time(now())],
        )?;
        Ok(())
    }

    /// Once the current key was exported, changing who holds it (a new
    /// export, a new or imported key in its place) needs at least M of its
    /// shares in the same request, so that no single administrator can hand
    /// the key to themselves. Before the first export (the installation
    /// ceremony) none are needed.
    fn require_quorum(&self, tx: &Tx<'_>, quorum: &[SecretString]) -> Result<()> {
        // A pasted share is the text of a share, whether or not a quorum
        // is needed now: an empty one is a mistake to report, not ignore.
        if let Some(i) = quorum.iter().position(|s| s.expose().trim().is_empty()) {
            return Err(Error::invalid(
                "shares",
                format!(
                    "share {} is empty: paste the text of a share, or leave it out",
                    i + 1
                ),
            ));
        }
        let status = wrapper_status(tx)?;
        if !status.quorum_required {
            return Ok(());
        }
        let current = status.key_id.unwrap_or_default();
        let m = status.minimum_custodians.unwrap_or(2);
        if quorum.iter().all(|s| s.expose().trim().is_empty()) {
            return Err(Error::invalid(
                "shares",
                format!(
                    "wrapper key {current} has been exported to its custodians: paste at least {m} of its shares to change it or who holds it"
                ),
            ));
        }
        let rebuilt = WrapperKey::combine(quorum)?;
        if rebuilt.id() != current {
            return Err(Error::invalid(
                "shares",
                format!(
                    "the shares rebuild wrapper key {}, not the current wrapper key {current}",
                    rebuilt.id()
                ),
            ));
        }
        Ok(())
    }

    /// System → Wrapper Keys: whether a key exists, its id and custodians.
    pub fn wrapper_key_status(&self, actor: &Actor) -> Result<WrapperStatus> {
        actor.require_system(Access::Read)?;
        self.read(wrapper_status)
    }

    /// Creates the wrapper key. An existing one is replaced only when asked
    /// for: backups made with it can then be restored only by importing its
    /// shares again.
    /// Replacing a key that was exported needs a quorum of its shares.
    pub fn create_wrapper_key(
        &self,
        actor: &Actor,
        replace: bool,
        quorum: &[SecretString],
    ) -> Result<WrapperStatus> {
        actor.require_system(Access::Write)?;
        let key = WrapperKey::generate();
        self.write(|tx| {
            let old = wrapper_status(tx)?;
            if old.exists && !replace {
                return Err(Error::conflict(
                    "wrapper_key",
                    format!(
                        "wrapper key {} exists; replacing it means backups made with it need its shares to be restored",
                        old.key_id.unwrap_or_default()
                    ),
                ));
            }
            self.require_quorum(tx, quorum)?;
            self.put_wrapper_key(tx, &key, "created")?;
            let what = match old.key_id {
                Some(o) => format!("created wrapper key {} replacing {o}; its custodians' shares were withdrawn", key.id()),
                None => format!("created wrapper key {}", key.id()),
            };
            audit_actor(tx, actor, Severity::Info, None, &what)?;
            wrapper_status(tx)
        })
    }

    /// Export: splits the key into one share per custodian, any `m` (at
    /// least 2) of which rebuild it. Custodians are System Administrators,
    /// never the built-in `admin` (§5), each named once. Exporting again
    /// needs a quorum of the current shares.
    pub fn export_wrapper_key(
        &self,
        actor: &Actor,
        m: i64,
        n: i64,
        custodians: &[String],
        quorum: &[SecretString],
    ) -> Result<WrapperStatus> {
        actor.require_system(Access::Write)?;
        let (m8, n8) = crate::wrapper::check_split(m, n)?;
        if custodians.len() != n8 as usize {
            return Err(Error::invalid(
                "custodians",
                format!(
                    "choose exactly {n} custodians ({} chosen)",
                    custodians.len()
                ),
            ));
        }
        for (i, c) in custodians.iter().enumerate() {
            if c == super::admins::BUILTIN_ADMIN {
                return Err(Error::invalid(
                    "custodians",
                    "the built-in admin cannot be a wrapper-key custodian",
                ));
            }
            if custodians[..i].contains(c) {
                return Err(Error::invalid(
                    "custodians",
                    format!("{c} is chosen twice; each custodian holds one share"),
                ));
            }
        }
        self.write(|tx| {
            let key = self.wrapper_key(tx)?.ok_or_else(|| {
                Error::conflict("wrapper_key", "create or import a wrapper key first")
            })?;
            self.require_quorum(tx, quorum)?;
            for c in custodians {
                let t: Option<String> = tx
                    .query_row("SELECT user_type FROM administrators WHERE login = ?1", [c], |r| r.get(0))
                    .optional()?;
                match t.as_deref() {
                    None => return Err(Error::invalid("custodians", format!("administrator '{c}' does not exist"))),
                    Some(t) if t != UserType::System.as_str() => {
                        return Err(Error::invalid("custodians", format!("{c} is not a System Administrator")));
                    }
                    Some(_) => {}
                }
            }
            let shares = key.split(m8, n8)?;
            tx.execute("DELETE FROM wrapper_shares", params![])?;
            for (i, (login, share)) in custodians.iter().zip(shares.iter()).enumerate() {
                let sealed = self.master.seal(&share_context(login), share.expose().as_bytes())?;
                tx.execute(
                    "INSERT INTO wrapper_shares(login, number, share_sealed, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![login, i as i64 + 1, sealed, fmt_time(now())],
                )?;
            }
            tx.execute(
                "UPDATE wrapper_key SET minimum_custodians = ?1, total_custodians = ?2, exported_at = ?3 WHERE id = 1",
                params![m, n, fmt_time(now())],
            )?;
            audit_actor(
                tx,
                actor,
                Severity::Info,
                None,
                &format!("exported wrapper key {} as {m} of {n} shares to {}", key.id(), custodians.join(", ")),
            )?;
            wrapper_status(tx)
        })
    }

    /// Whether the actor holds a share (the dashboard shows a Show toggle).
    pub fn is_custodian(&self, actor: &Actor) -> Result<bool> {
        Ok(self.my_share_state(actor)?.is_some())
    }

    /// The state of the actor's own share, if they are a custodian.
    pub fn my_share_state(&self, actor: &Actor) -> Result<Option<ShareState>> {
        actor.require_signed_in(Access::Read)?;
        self.read(|tx| {
            let row = tx
                .query_row(
                    "SELECT collected_at, shown_at IS NOT NULL FROM wrapper_shares WHERE login = ?1",
                    [&actor.login],
                    |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, bool>(1)?)),
                )
                .optional()?;
            Ok(row.map(|(collected, shown)| match collected {
                Some(at) => ShareState::Collected { at },
                None => ShareState::Held { shown },
            }))
        })
    }

    fn my_sealed_share(tx: &Tx<'_>, actor: &Actor) -> Result<Vec<u8>> {
        let row: Option<(Option<Vec<u8>>, Option<String>)> = tx
            .query_row(
                "SELECT share_sealed, collected_at FROM wrapper_shares WHERE login = ?1",
                [&actor.login],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            None => Err(Error::not_found("wrapper-key share of", &actor.login)),
            Some((Some(sealed), _)) => Ok(sealed),
            Some((None, at)) => Err(Error::conflict(
                "share",
                format!(
                    "you confirmed on {} that you stored your wrapper-key share; the appliance no longer holds a copy",
                    at.unwrap_or_default()
                ),
            )),
        }
    }

    /// The actor's own share, and only theirs, until they confirm they
    /// stored it; showing it is audited.
    pub fn my_wrapper_share(&self, actor: &Actor) -> Result<SecretString> {
        actor.require_signed_in(Access::Read)?;
        self.write(|tx| {
            let sealed = Self::my_sealed_share(tx, actor)?;
            let plain = self.master.open(&share_context(&actor.login), &sealed)?;
            let share = String::from_utf8(plain.expose().to_vec())
                .map_err(|_| Error::Crypto("stored share is not text"))?;
            tx.execute(
                "UPDATE wrapper_shares SET shown_at = ?2 WHERE login = ?1",
                params![actor.login, fmt_time(now())],
            )?;
            audit_actor(
                tx,
                actor,
                Severity::Info,
                None,
                "displayed own wrapper-key share",
            )?;
            Ok(SecretString::new(share))
        })
    }

    /// The custodian confirms they stored their share away from the
    /// appliance: its sealed copy is deleted, so nothing here can show it
    /// again (§2), whoever signs in as them. Refused until they saw it.
    /// Answers when it was collected.
    pub fn confirm_share_stored(&self, actor: &Actor) -> Result<String> {
        actor.require_signed_in(Access::Read)?;
        self.write(|tx| {
            Self::my_sealed_share(tx, actor)?;
            let shown: bool = tx.query_row(
                "SELECT shown_at IS NOT NULL FROM wrapper_shares WHERE login = ?1",
                [&actor.login],
                |r| r.get(0),
            )?;
            if !shown {
                return Err(Error::conflict(
                    "share",
                    "show your wrapper-key share and store it first: the appliance deletes its copy when you confirm",
                ));
            }
            let at = fmt_time(now());
            tx.execute(
                "UPDATE wrapper_shares SET share_sealed = NULL, collected_at = ?2 WHERE login = ?1",
                params![actor.login, at],
            )?;
            audit_actor(
                tx,
                actor,
                Severity::Info,
                None,
                "confirmed storing own wrapper-key share; the appliance deleted its copy",
            )?;
            Ok(at)
        })
    }

    /// Import: rebuilds the wrapper key from at least M pasted shares.
    /// Putting it in place of another key that was exported needs a quorum
    /// of that key's shares too (`quorum`).
    pub fn import_wrapper_key(
        &self,
        actor: &Actor,
        shares: &[SecretString],
        quorum: &[SecretString],
    ) -> Result<WrapperStatus> {
        actor.require_system(Access::Write)?;
        let key = WrapperKey::combine(shares)?;
        self.write(|tx| {
            let old = wrapper_status(tx)?;
            if old.key_id.as_deref() == Some(key.id().as_str()) {
                audit_actor(
                    tx,
                    actor,
                    Severity::Info,
                    None,
                    &format!("imported wrapper key {} (already present)", key.id()),
                )?;
                return wrapper_status(tx);
            }
            self.require_quorum(tx, quorum).map_err(|e| match e {
                Error::Invalid { rule, .. } => Error::invalid("current_shares", rule),
                other => other,
            })?;
            self.put_wrapper_key(tx, &key, "imported")?;
            let what = match old.key_id {
                Some(o) => format!(
                    "imported wrapper key {} from shares, replacing {o}",
                    key.id()
                ),
                None => format!("imported wrapper key {} from shares", key.id()),
            };
            audit_actor(tx, actor, Severity::Info, None, &what)?;
            wrapper_status(tx)
        })
    }

    /// `backup wrapperkey show` (admin CLI): the wrapper key's id and
    /// custodians, for the discard's typed confirmation.
    pub fn cli_wrapper_key_status(&self, session: &CliSession) -> Result<WrapperStatus> {
        self.wrapper_key_status(&session.actor())
    }

    /// `backup wrapperkey discard` (admin CLI only): the way out when so
    /// many shares were lost that no quorum can be pasted any more. The key
    /// and every share still held are deleted (ERROR in the log); a new key
    /// can then be created and exported without a quorum. `cliadmin` is a
    /// separate credential (§2), so no web administrator can do this alone.
    pub fn cli_discard_wrapper_key(&self, session: &CliSession, key_id: &str) -> Result<String> {
        let actor = session.actor();
        actor.require_system(Access::Write)?;
        self.write(|tx| {
            let status = wrapper_status(tx)?;
            let Some(current) = status.key_id else {
                return Err(Error::conflict("wrapper_key", "there is no wrapper key to discard"));
            };
            if key_id.trim().to_ascii_lowercase() != current {
                return Err(Error::invalid(
                    "key_id",
                    format!("type the id of the current wrapper key ({current}) to discard it"),
                ));
            }
            tx.execute("DELETE FROM wrapper_shares", params![])?;
            tx.execute("DELETE FROM wrapper_key", params![])?;
            audit_actor(
                tx,
                &actor,
                Severity::Error,
                None,
                &format!(
                    "discarded wrapper key {current} with the admin CLI (custodians: {}); backups made with it can be restored only with a quorum of its shares; create and export a new wrapper key",
                    if status.custodians.is_empty() { "none".to_owned() } else { status.custodians.join(", ") }
                ),
            )?;
            Ok(current)
        })
    }

    /// System → Backup and Restore → Manual → Backup (System Administrators).
    /// A backup holds every key, so read-only administrators may not make
    /// one, and each download is a WARN entry naming who took it.
    pub fn write_backup(
        &self,
        actor: &Actor,
        fqdn: &str,
        out: &mut dyn Write,
    ) -> Result<BackupInfo> {
        actor.require_system(Access::Write)?;
        let info = self.write_backup_unchecked(fqdn, out)?;
        self.write(|tx| {
            audit_actor(
                tx,
                actor,
                Severity::Warn,
                None,
                &format!(
                    "{} downloaded backup {} ({} bytes, wrapper key {})",
                    actor.login, info.file_name, info.bytes, info.wrapper_key_id
                ),
            )
        })?;
        Ok(info)
    }

    /// Writes a backup of the configuration to `out` (for the automatic
    /// backup, which audits its own push). It reads a snapshot on a
    /// connection of its own, so the key service is not held up.
    pub fn write_backup_unchecked(&self, fqdn: &str, out: &mut dyn Write) -> Result<BackupInfo> {
        let key = self.read(|tx| self.wrapper_key(tx))?.ok_or_else(|| {
            Error::conflict(
                "wrapper_key",
                "no wrapper key: create or import one under System → Wrapper Keys first",
            )
        })?;
        let created = now();
        let salt = crate::crypto::random_secret(32);
        let manifest = Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            appliance_version: crate::VERSION.into(),
            created_at: fmt_time(created),
            host_name: fqdn.into(),
            wrapper_key_id: key.id(),
            cipher: "AES-256-GCM".into(),
            chunk_size: CHUNK,
            salt: B64.encode(salt.expose()),
        };
        let manifest_bytes =
            serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Crypto(leak(e)))?;
        let aad = crate::crypto::sha256(&manifest_bytes);
        let data_key = key.backup_key(salt.expose())?;

        // The encrypted payload goes to a temporary file first: a tar header
        // needs the member's size.
        let tmp = TempFile::create(&self.dir)?;
        let io = |e: std::io::Error| Error::Io {
            path: tmp.path.clone(),
            source: e,
        };
        {
            let file = std::io::BufWriter::new(tmp.file()?);
            let mut w = ChunkWriter::new(file, data_key.expose(), aad)?;
            let mut conn = self.reader()?;
            let snap = conn.begin(crate::store::db::Mode::Read)?;
            for table in TABLES {
                self.dump_table(&snap, table, &mut w).map_err(|e| match e {
                    Error::Io { source, .. } => io(source),
                    other => other,
                })?;
            }
            snap.finish()?;
            let (mut file, _) = w.finish().map_err(io)?;
            file.flush().map_err(io)?;
            file.get_ref().sync_all().map_err(io)?;
        }
        let payload_len = std::fs::metadata(&tmp.path).map_err(io)?.len();
        let mut counting = Counting { inner: out, n: 0 };
        {
            let mut ar = tar::Builder::new(&mut counting);
            let mut h = tar::Header::new_ustar();
            h.set_size(manifest_bytes.len() as u64);
            h.set_mode(0o600);
            h.set_mtime(created.unix_timestamp().max(0) as u64);
            h.set_cksum();
            ar.append_data(&mut h, MANIFEST, manifest_bytes.as_slice())
                .map_err(io)?;
            let mut h = tar::Header::new_ustar();
            h.set_size(payload_len);
            h.set_mode(0o600);
            h.set_mtime(created.unix_timestamp().max(0) as u64);
            h.set_cksum();
            ar.append_data(&mut h, PAYLOAD, std::io::BufReader::new(tmp.file_read()?))
                .map_err(io)?;
            ar.finish().map_err(io)?;
        }
        Ok(BackupInfo {
            file_name: backup_file_name(fqdn, created),
            bytes: counting.n,
            wrapper_key_id: key.id(),
            created_at: fmt_time(created),
        })
    }

    fn dump_table(&self, tx: &Tx<'_>, table: &str, w: &mut dyn Write) -> Result<()> {
        let io = |e: std::io::Error| Error::Io {
            path: self.dir.join(super::DB_FILE),
            source: e,
        };
        // Rows in key order, so a backup reads the same from either engine.
        let sql = format!("SELECT * FROM {table}");
        let cols = tx.column_names(&sql)?;
        let sql = format!("{sql} ORDER BY {}", primary_key(table));
        let sealed = sealed_column(table).and_then(|c| cols.iter().position(|x| x == c));
        serde_json::to_writer(&mut *w, &json!({ "t": table, "c": cols }))
            .map_err(|e| io(e.into()))?;
        w.write_all(b"\n").map_err(io)?;
        tx.for_each(&sql, params![], |r| -> Result<()> {
            let mut vals = Vec::with_capacity(cols.len());
            let mut sealed_bytes: Option<Vec<u8>> = None;
            for (i, v) in r.into_values().into_iter().enumerate() {
                vals.push(match v {
                    SqlValue::Null => Value::Null,
                    SqlValue::Int(v) => json!(v),
                    SqlValue::Real(v) => json!(v),
                    SqlValue::Text(t) => Value::String(t),
                    SqlValue::Blob(b) if Some(i) == sealed => {
                        sealed_bytes = Some(b);
                        Value::Null
                    }
                    SqlValue::Blob(b) => json!({ "b": B64.encode(b) }),
                });
            }
            if let (Some(i), Some(bytes)) = (sealed, sealed_bytes) {
                let ctx = seal_context(table, &cols, &vals)?;
                let plain = self.master.open(&ctx, &bytes)?;
                vals[i] = json!({ "s": B64.encode(plain.expose()) });
            }
            serde_json::to_writer(&mut *w, &json!({ "r": vals })).map_err(|e| io(e.into()))?;
            w.write_all(b"\n").map_err(io)?;
            Ok(())
        })
    }

    /// Restore (§12): replaces the configuration with a backup's, with or
    /// without its administrators, in one transaction. Refused, with
    /// nothing changed, when the file is damaged, truncated or was made with
    /// another wrapper key. The caller ends every session afterwards.
    pub fn restore_backup(
        &self,
        actor: &Actor,
        input: &mut dyn Read,
        include_users: bool,
    ) -> Result<RestoreReport> {
        actor.require_system(Access::Write)?;
        let key = self.read(|tx| self.wrapper_key(tx))?.ok_or_else(|| {
            Error::conflict(
                "wrapper_key",
                "this appliance has no wrapper key: import the shares of the key the backup was made with first",
            )
        })?;
        // The two members are read here, header by header (issue 12,
        // item 9): exact names in order, regular files, sizes checked
        // before a byte of them is read, nothing after them.
        let manifest_len = member_header(input, MANIFEST, MAX_MANIFEST)?;
        let mut manifest_bytes = Vec::new();
        input
            .take(manifest_len)
            .read_to_end(&mut manifest_bytes)
            .map_err(|_| not_a_backup())?;
        if manifest_bytes.len() as u64 != manifest_len {
            return Err(refused_io("the backup file is truncated"));
        }
        skip_padding(input, manifest_len)?;
        let manifest: Manifest =
            serde_json::from_slice(&manifest_bytes).map_err(|_| not_a_backup())?;
        if manifest.format != FORMAT
            || manifest.format_version != FORMAT_VERSION
            || manifest.cipher != "AES-256-GCM"
        {
            return Err(Error::invalid(
                "backup",
                format!(
                    "backup format {} version {} is not one this appliance reads",
                    manifest.format, manifest.format_version
                ),
            ));
        }
        if manifest.wrapper_key_id != key.id() {
            return Err(Error::invalid(
                "backup",
                format!(
                    "the backup was made with wrapper key {}, but this appliance has wrapper key {}: import the shares of {} first",
                    manifest.wrapper_key_id,
                    key.id(),
                    manifest.wrapper_key_id
                ),
            ));
        }
        let salt = B64.decode(&manifest.salt).map_err(|_| not_a_backup())?;
        let data_key = key.backup_key(&salt)?;
        let aad = crate::crypto::sha256(&manifest_bytes);
        let payload_len = member_header(input, PAYLOAD, MAX_PAYLOAD)?;
        let reader = ChunkReader {
            inner: input.take(payload_len),
            key: LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, data_key.expose())
                    .map_err(|_| Error::Crypto("backup key"))?,
            ),
            aad,
            counter: 0,
            plain: Vec::new(),
            pos: 0,
            done: false,
        };
        let mut lines = BufReader::with_capacity(CHUNK, reader);
        self.write(|tx| {
            let report = self.apply_payload(tx, &mut lines, include_users, &manifest)?;
            // Nothing may follow the last chunk, nor the payload member.
            let mut rest = lines.into_inner().inner;
            let mut one = [0u8; 1];
            if rest.read(&mut one).map_err(|_| not_a_backup())? != 0 {
                return Err(refused_io(
                    "the backup file holds data after the end of payload.enc",
                ));
            }
            let input = rest.into_inner();
            skip_padding(input, payload_len)?;
            end_of_archive(input)?;
            audit_actor(
                tx,
                actor,
                Severity::Warn,
                None,
                &format!(
                    "restored the configuration from a backup of {} made {} (wrapper key {}, users {}): {} rows, {} key versions",
                    manifest.host_name,
                    manifest.created_at,
                    manifest.wrapper_key_id,
                    if include_users { "included" } else { "kept" },
                    report.rows,
                    report.key_versions
                ),
            )?;
            Ok(report)
        })
    }

    fn apply_payload(
        &self,
        tx: &Tx<'_>,
        mut lines: impl BufRead,
        include_users: bool,
        manifest: &Manifest,
    ) -> Result<RestoreReport> {
        tx.defer_foreign_keys(true)?;
        // Administrators kept (without users): their restriction to a
        // domain is put back by the domain's name.
        let kept_restrictions: Vec<(i64, String)> = if include_users {
            Vec::new()
        } else {
            tx.prepare("SELECT a.id, d.name FROM administrators a JOIN domains d ON d.id = a.restrict_to_domain")?
                .query_map(crate::store::db::params![], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<crate::store::db::DbResult<_>>()?
        };
        // Site settings that hang off a domain (per-domain email groups and
        // their sent-notice ledger) are not in a backup, but deleting the
        // domains would cascade to them: keep them and put them back under
        // the domain of the same name.
        let kept_groups = saved_rows(
            tx,
            "email_groups",
            "SELECT g.*, d.name FROM email_groups g JOIN domains d ON d.id = g.domain_id",
        )?;
        let kept_outbox = saved_rows(
            tx,
            "email_outbox",
            "SELECT o.* FROM email_outbox o JOIN email_groups g ON g.id = o.group_id WHERE g.domain_id IS NOT NULL",
        )?;
        let mut deletes: Vec<&str> = vec![
            "hosts",
            "registration_secrets",
            "key_versions",
            "agent_keys",
            "domain_members",
            "domains",
            "licence",
            "system_identities",
            "preferences",
        ];
        if include_users {
            deletes.insert(5, "administrators");
        }
        for t in deletes {
            tx.execute(&format!("DELETE FROM {t}"), params![])?;
        }
        let current_admins: HashMap<String, i64> = tx
            .prepare("SELECT login, id FROM administrators")?
            .query_map(crate::store::db::params![], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<crate::store::db::DbResult<_>>()?;
        let mut backup_admins: HashMap<i64, String> = HashMap::new();
        let mut table = String::new();
        let mut cols: Vec<String> = Vec::new();
        let mut insert_sql = String::new();
        let mut seen_tables = Vec::new();
        let (mut rows, mut versions) = (0u64, 0u64);
        let mut line = String::new();
        loop {
            line.clear();
            // At most one line past the limit is read: a longer one is
            // refused, not held in memory whole.
            let n = (&mut lines)
                .take(MAX_PAYLOAD_LINE + 1)
                .read_line(&mut line)
                .map_err(|e| {
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        Error::invalid("backup", e.to_string())
                    } else {
                        Error::Io {
                            path: self.dir.clone(),
                            source: e,
                        }
                    }
                })?;
            if n == 0 {
                break;
            }
            if n as u64 > MAX_PAYLOAD_LINE {
                return Err(corrupt(&format!(
                    "a line is longer than {MAX_PAYLOAD_LINE} bytes"
                )));
            }
            let v: Value =
                serde_json::from_str(line.trim_end()).map_err(|_| corrupt("a line is not JSON"))?;
            if let Some(t) = v.get("t").and_then(Value::as_str) {
                if !TABLES.contains(&t) || seen_tables.contains(&t.to_owned()) {
                    return Err(corrupt(&format!("unexpected table {t}")));
                }
                table = t.to_owned();
                seen_tables.push(table.clone());
                cols = v
                    .get("c")
                    .and_then(Value::as_array)
                    .ok_or_else(|| corrupt("a table has no columns"))?
                    .iter()
                    .map(|c| {
                        c.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| corrupt("a column name is not text"))
                    })
                    .collect::<Result<_>>()?;
                for c in &cols {
                    if !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
                        return Err(corrupt("a column name is not valid"));
                    }
                }
                insert_sql = format!(
                    "INSERT INTO {table} ({}) VALUES ({})",
                    cols.join(", "),
                    vec!["?"; cols.len()].join(", ")
                );
                continue;
            }
            let mut vals = v
                .get("r")
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| corrupt("a row is not a list"))?;
            if table.is_empty() || vals.len() != cols.len() {
                return Err(corrupt("a row does not match its table"));
            }
            if table == "administrators" {
                let id = col_int(&cols, &vals, "id")?;
                let login = col_str(&cols, &vals, "login")?;
                backup_admins.insert(id, login);
                if !include_users {
                    continue;
                }
            }
            if table == "domain_members" && !include_users {
                let backup_id = col_int(&cols, &vals, "admin_id")?;
                let Some(current) = backup_admins
                    .get(&backup_id)
                    .and_then(|l| current_admins.get(l))
                else {
                    continue;
                };
                let i = cols
                    .iter()
                    .position(|c| c == "admin_id")
                    .expect("checked above");
                vals[i] = json!(current);
            }
            let sealed = sealed_column(&table).and_then(|c| cols.iter().position(|x| x == c));
            let mut params: Vec<SqlValue> = Vec::with_capacity(vals.len());
            for (i, val) in vals.iter().enumerate() {
                params.push(if Some(i) == sealed {
                    let plain = val
                        .get("s")
                        .and_then(Value::as_str)
                        .and_then(|s| B64.decode(s).ok())
                        .map(SecretBytes::new)
                        .ok_or_else(|| corrupt("a secret value is malformed"))?;
                    let ctx = seal_context(&table, &cols, &vals)?;
                    SqlValue::Blob(self.master.seal(&ctx, plain.expose())?)
                } else {
                    to_sql(val)?
                });
            }
            tx.prepare_cached(&insert_sql)?
                .execute(crate::store::db::params_from_iter(params.iter()))
                .map_err(|e| corrupt(&format!("{table}: {e}")))?;
            rows += 1;
            if table == "key_versions" {
                versions += 1;
            }
        }
        for t in TABLES {
            if !seen_tables.iter().any(|s| s == t) {
                return Err(corrupt(&format!("table {t} is missing")));
            }
        }
        if let Some((cols, rows)) = kept_groups {
            // The last column is the domain's name (not a column of the table).
            let names = &cols[..cols.len() - 1];
            let di = names
                .iter()
                .position(|c| c == "domain_id")
                .ok_or_else(|| corrupt("email_groups"))?;
            let mut put_back = Vec::new();
            for mut row in rows {
                let Some(SqlValue::Text(domain)) = row.pop() else {
                    continue;
                };
                let id: Option<i64> = tx
                    .query_row("SELECT id FROM domains WHERE name = ?1", [&domain], |r| {
                        r.get(0)
                    })
                    .optional()?;
                if let Some(id) = id {
                    row[di] = SqlValue::Int(id);
                    put_back.push(row);
                }
            }
            insert_rows(tx, "email_groups", names, &put_back)?;
            if let Some((ocols, orows)) = kept_outbox {
                let gi = ocols
                    .iter()
                    .position(|c| c == "group_id")
                    .ok_or_else(|| corrupt("email_outbox"))?;
                let gid = names
                    .iter()
                    .position(|c| c == "id")
                    .ok_or_else(|| corrupt("email_groups"))?;
                let kept: Vec<&SqlValue> = put_back.iter().map(|r| &r[gid]).collect();
                let orows: Vec<Vec<SqlValue>> = orows
                    .into_iter()
                    .filter(|r| kept.contains(&&r[gi]))
                    .collect();
                insert_rows(tx, "email_outbox", &ocols, &orows)?;
            }
        }
        if include_users {
            // Shares are kept by login; a custodian whose account the
            // backup does not have holds none any more.
            tx.execute(
                "DELETE FROM wrapper_shares WHERE login NOT IN (SELECT login FROM administrators)",
                params![],
            )?;
        }
        for (id, domain) in kept_restrictions {
            tx.execute(
                "UPDATE administrators SET restrict_to_domain = (SELECT id FROM domains WHERE name = ?2) WHERE id = ?1",
                params![id, domain],
            )?;
        }
        // PostgreSQL's identity sequences follow the ids just written, as
        // SQLite's AUTOINCREMENT does by itself.
        for t in [
            "domains",
            "administrators",
            "agent_keys",
            "hosts",
            "email_groups",
            "email_outbox",
        ] {
            tx.advance_identity(t, 0)?;
        }
        tx.defer_foreign_keys(false)
            .map_err(|e| corrupt(&format!("references: {e}")))?;
        Ok(RestoreReport {
            file_host: manifest.host_name.clone(),
            file_created_at: manifest.created_at.clone(),
            wrapper_key_id: manifest.wrapper_key_id.clone(),
            users_included: include_users,
            rows,
            key_versions: versions,
        })
    }
}

/// Every row of `sql` (when `table` exists in this store), with its column
/// names.
type Rows = (Vec<String>, Vec<Vec<SqlValue>>);

fn saved_rows(tx: &Tx<'_>, table: &str, sql: &str) -> Result<Option<Rows>> {
    if !tx.table_exists(table)? {
        return Ok(None);
    }
    let mut stmt = tx.prepare(sql)?;
    let cols: Vec<String> = stmt.column_names()?;
    let n = cols.len();
    let rows = stmt
        .query_map(crate::store::db::params![], |r| {
            (0..n)
                .map(|i| r.get::<_, SqlValue>(i))
                .collect::<crate::store::db::DbResult<Vec<_>>>()
        })?
        .collect::<crate::store::db::DbResult<Vec<_>>>()?;
    Ok(Some((cols, rows)))
}

fn insert_rows(tx: &Tx<'_>, table: &str, cols: &[String], rows: &[Vec<SqlValue>]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        cols.join(", "),
        vec!["?"; cols.len()].join(", ")
    );
    let mut stmt = tx.prepare(&sql)?;
    for r in rows {
        stmt.execute(crate::store::db::params_from_iter(r.iter()))?;
    }
    Ok(())
}

fn col_int(cols: &[String], vals: &[Value], name: &str) -> Result<i64> {
    cols.iter()
        .position(|c| c == name)
        .and_then(|i| vals[i].as_i64())
        .ok_or_else(|| corrupt(&format!("{name} is missing")))
}

fn col_str(cols: &[String], vals: &[Value], name: &str) -> Result<String> {
    cols.iter()
        .position(|c| c == name)
        .and_then(|i| vals[i].as_str())
        .map(str::to_owned)
        .ok_or_else(|| corrupt(&format!("{name} is missing")))
}

fn to_sql(v: &Value) -> Result<SqlValue> {
    Ok(match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Int(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Int(i),
            None => SqlValue::Real(
                n.as_f64()
                    .ok_or_else(|| corrupt("a number is out of range"))?,
            ),
        },
        Value::String(s) => SqlValue::Text(s.clone()),
        Value::Object(o) => match o.get("b").and_then(Value::as_str) {
            Some(b) => SqlValue::Blob(
                B64.decode(b)
                    .map_err(|_| corrupt("a binary value is malformed"))?,
            ),
            None => return Err(corrupt("an object value is not a blob")),
        },
        Value::Array(_) => return Err(corrupt("a value is a list")),
    })
}

/// Largest `payload.enc` a restore reads (the API's upload limit too).
pub const MAX_PAYLOAD: u64 = 8 * 1024 * 1024 * 1024;
const BLOCK: usize = 512;

/// A NUL-terminated field of a tar header.
fn header_text(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// An octal number field of a tar header (spaces and NULs around it);
/// None for anything else (base-256 sizes included: far too large).
fn header_octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c: char| c == ' ' || c == '\0');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

/// Reads the header of the next member, which must be the regular file
/// `expected` of at most `max` bytes; its size. Every other case is
/// refused naming what was found.
fn member_header(input: &mut dyn Read, expected: &str, max: u64) -> Result<u64> {
    let mut h = [0u8; BLOCK];
    input.read_exact(&mut h).map_err(|_| {
        refused_io(&format!(
            "this is not a Custos backup file: it ends before its member {expected}"
        ))
    })?;
    if h.iter().all(|b| *b == 0) {
        return Err(refused_io(&format!(
            "this is not a Custos backup file: it ends before its member {expected}"
        )));
    }
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    if header_octal(&h[148..156]) != Some(sum) {
        return Err(not_a_backup());
    }
    let mut name = header_text(&h[..100]);
    // POSIX ustar ("ustar\0") has a name prefix; GNU ("ustar ") has none.
    if &h[257..263] == b"ustar\0" {
        let prefix = header_text(&h[345..500]);
        if !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
    }
    if name != expected {
        let shown: String = name.chars().take(100).filter(|c| !c.is_control()).collect();
        return Err(refused_io(&format!(
            "the backup file holds a member '{shown}' where {expected} was expected (a backup holds manifest.json, then payload.enc, and nothing else)"
        )));
    }
    if !matches!(h[156], b'0' | 0) {
        return Err(refused_io(&format!(
            "{expected} in the backup file is not a regular file"
        )));
    }
    let size = header_octal(&h[124..136])
        .filter(|s| *s <= max)
        .ok_or_else(|| {
            refused_io(&format!(
                "{expected} in the backup file claims a size over the {max} bytes allowed"
            ))
        })?;
    Ok(size)
}

/// Skips the zeros that fill a member of `len` bytes to its last block.
fn skip_padding(input: &mut dyn Read, len: u64) -> Result<()> {
    let pad = (BLOCK - (len % BLOCK as u64) as usize) % BLOCK;
    let mut buf = [0u8; BLOCK];
    input
        .read_exact(&mut buf[..pad])
        .map_err(|_| refused_io("the backup file is truncated"))?;
    Ok(())
}

/// After the two members only the end-of-archive zeros may follow (at
/// most a tar record of 10 KiB, GNU tar's blocking).
fn end_of_archive(input: &mut dyn Read) -> Result<()> {
    let mut rest = Vec::new();
    input
        .take(20 * BLOCK as u64 + 1)
        .read_to_end(&mut rest)
        .map_err(|_| not_a_backup())?;
    if rest.len() > 20 * BLOCK || rest.iter().any(|b| *b != 0) {
        return Err(refused_io(
            "the backup file holds more than manifest.json and payload.enc",
        ));
    }
    Ok(())
}

fn not_a_backup() -> Error {
    Error::invalid(
        "backup",
        "this is not a Custos backup file (a tar holding manifest.json and payload.enc)",
    )
}

fn refused_io(why: &str) -> Error {
    Error::invalid("backup", why.to_owned())
}

fn leak(e: serde_json::Error) -> &'static str {
    tracing::error!(error = %e, "backup manifest");
    "backup manifest"
}

/// Counts the bytes written through it.
struct Counting<'a> {
    inner: &'a mut dyn Write,
    n: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A private temporary file in the data directory's `tmp/`, removed when
/// dropped. It holds only ciphertext.
struct TempFile {
    path: std::path::PathBuf,
}

impl TempFile {
    fn create(dir: &std::path::Path) -> Result<TempFile> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let tmp = dir.join("tmp");
        let io = |source| Error::Io {
            path: tmp.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&tmp)
            .map_err(io)?;
        let path = tmp.join(format!("backup-{}.part", crate::crypto::random_token()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        Ok(TempFile { path })
    }

    fn file(&self) -> Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.path)
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })
    }

    fn file_read(&self) -> Result<std::fs::File> {
        std::fs::File::open(&self.path).map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::test_support::{store, system_actor};

    #[test]
    fn chunks_round_trip_and_refuse_changes() {
        let key = [7u8; 32];
        let aad = [1u8; 32];
        let data: Vec<u8> = (0..(CHUNK * 2 + 100)).map(|i| (i % 251) as u8).collect();
        let mut w = ChunkWriter::new(Vec::new(), &key, aad).expect("writer");
        w.write_all(&data).expect("write");
        let (enc, _) = w.finish().expect("finish");
        let read = |bytes: &[u8]| -> std::io::Result<Vec<u8>> {
            let mut r = ChunkReader {
                inner: bytes,
                key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).expect("key")),
                aad,
                counter: 0,
                plain: Vec::new(),
                pos: 0,
                done: false,
            };
            let mut out = Vec::new();
            r.read_to_end(&mut out)?;
            Ok(out)
        };
        assert_eq!(read(&enc).expect("round trip"), data);
        let mut flipped = enc.clone();
        flipped[100] ^= 1;
        assert!(read(&flipped).is_err());
        // Cut right after the second chunk: every chunk read is authentic,
        // but the last one never comes.
        let cut = 2 * (4 + CHUNK + TAG_LEN);
        let e = read(&enc[..cut]).expect_err("truncated");
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    fn tar_of(members: &[(&str, u8, &[u8])]) -> Vec<u8> {
        let mut t = tar::Builder::new(Vec::new());
        for (name, kind, data) in members {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_entry_type(tar::EntryType::new(*kind));
            h.set_path(name).expect("name");
            h.set_cksum();
            t.append(&h, *data).expect("append");
        }
        t.into_inner().expect("tar")
    }

    fn members_of(file: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut ar = tar::Archive::new(file);
        let mut out = vec![];
        for e in ar.entries().expect("entries") {
            let mut data = vec![];
            e.expect("entry").read_to_end(&mut data).expect("read");
            out.push(data);
        }
        assert_eq!(out.len(), 2);
        let payload = out.pop().expect("payload");
        (out.pop().expect("manifest"), payload)
    }

    /// A backup of `s` (made with its wrapper key) whose payload is `plain`.
    fn backup_with_payload(s: &Store, plain: &[u8]) -> Vec<u8> {
        let mut real = Vec::new();
        s.write_backup_unchecked("a.example.com", &mut real)
            .expect("backup");
        let (manifest_bytes, _) = members_of(&real);
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes).expect("manifest");
        let key = s
            .read(|tx| s.wrapper_key(tx))
            .expect("read")
            .expect("a wrapper key");
        let salt = B64.decode(&manifest.salt).expect("salt");
        let data_key = key.backup_key(&salt).expect("data key");
        let aad = crate::crypto::sha256(&manifest_bytes);
        let mut w = ChunkWriter::new(Vec::new(), data_key.expose(), aad).expect("writer");
        w.write_all(plain).expect("write");
        let (enc, _) = w.finish().expect("finish");
        tar_of(&[(MANIFEST, b'0', &manifest_bytes), (PAYLOAD, b'0', &enc)])
    }

    #[test]
    fn a_payload_line_over_the_limit_is_refused_not_held() {
        let (_d, s) = store();
        let actor = system_actor(&s);
        s.create_wrapper_key(&actor, false, &[]).expect("create");
        let mut plain = br#"{"t": "preferences", "c": ["id"]}"#.to_vec();
        plain.extend_from_slice(b"\n{\"r\": [\"");
        plain.resize(plain.len() + MAX_PAYLOAD_LINE as usize, b'a');
        plain.extend_from_slice(b"\"]}\n");
        let file = backup_with_payload(&s, &plain);
        let e = s
            .restore_backup(&actor, &mut file.as_slice(), false)
            .expect_err("too long");
        assert!(e.to_string().contains("longer than 1048576 bytes"), "{e}");
        // Under the limit the same shape is read and judged on its merits.
        let plain = br#"{"t": "nonsense", "c": []}"#.to_vec();
        let file = backup_with_payload(&s, &plain);
        let e = s
            .restore_backup(&actor, &mut file.as_slice(), false)
            .expect_err("no such table");
        assert!(e.to_string().contains("unexpected table nonsense"), "{e}");
    }

    #[test]
    fn backup_needs_a_wrapper_key_and_restores_onto_another_store() {
        let (_d1, a) = store();
        let actor = system_actor(&a);
        let mut out = Vec::new();
        let e = a
            .write_backup(&actor, "a.example.com", &mut out)
            .expect_err("no key");
        assert!(e.to_string().contains("wrapper key"), "{e}");
        a.create_wrapper_key(&actor, false, &[]).expect("create");
        let info = a
            .write_backup(&actor, "a.example.com", &mut out)
            .expect("backup");
        assert!(info.file_name.starts_with("backup_config_a.example.com_"));
        assert_eq!(info.bytes, out.len() as u64);

        let (_d2, b) = store();
        let actor_b = system_actor(&b);
        let e = b
            .restore_backup(&actor_b, &mut out.as_slice(), true)
            .expect_err("no key on b");
        assert!(e.to_string().contains("no wrapper key"), "{e}");
        // A key of its own is the wrong one.
        b.create_wrapper_key(&actor_b, false, &[]).expect("create");
        let e = b
            .restore_backup(&actor_b, &mut out.as_slice(), true)
            .expect_err("other key");
        assert!(e.to_string().contains("was made with wrapper key"), "{e}");
    }

    pub(crate) fn material(s: &Store, key: &str, version: i64) -> Vec<u8> {
        s.read(|tx| {
            let (kid, sealed): (i64, Vec<u8>) = tx.query_row(
                "SELECT k.id, v.material_sealed FROM key_versions v JOIN agent_keys k ON k.id = v.key_id WHERE k.name = ?1 AND v.version = ?2",
                params![key, version],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(s.master.open(&keys::version_context(kid, version), &sealed)?.expose().to_vec())
        })
        .expect("material")
    }

    #[test]
    fn restore_onto_another_store_serves_the_same_material() {
        use crate::store::keys::tests::{key_admin, new_key};
        let (_d1, a) = store();
        let sa = key_admin(&a);
        a.create_key(&sa, "D", new_key("recorder", false, None))
            .expect("key");
        a.rotate_key(&sa, "D", "recorder").expect("rotate");
        let sys = system_actor(&a);
        for login in ["keeper", "warden"] {
            a.create_admin(
                &sys,
                crate::store::NewAdmin {
                    login: login.into(),
                    description: String::new(),
                    rsa_user_id: None,
                    password: "K33per!pass".into(),
                    confirm_password: None,
                    user_type: UserType::System,
                    restrict_to_domain: None,
                    read_only: false,
                },
            )
            .expect("custodian");
        }
        a.create_wrapper_key(&sys, false, &[]).expect("wrapper");
        let e = a
            .export_wrapper_key(&sys, 2, 2, &["admin".into(), "keeper".into()], &[])
            .expect_err("admin");
        assert!(e.to_string().contains("built-in admin"), "{e}");
        let e = a
            .export_wrapper_key(&sys, 1, 1, &["keeper".into()], &[])
            .expect_err("1 of 1");
        assert!(e.to_string().contains("minimum_custodians"), "{e}");
        a.export_wrapper_key(&sys, 2, 2, &["keeper".into(), "warden".into()], &[])
            .expect("export");
        let custodian = |login: &str| {
            let mut c = a.actor(login, "t", "api").expect("custodian");
            c.must_change_password = false;
            c
        };
        let (keeper, warden) = (custodian("keeper"), custodian("warden"));
        assert!(a.is_custodian(&keeper).expect("custodian"));
        assert_eq!(
            a.my_share_state(&keeper).expect("state"),
            Some(ShareState::Held { shown: false })
        );
        let e = a.confirm_share_stored(&keeper).expect_err("not shown yet");
        assert!(e.to_string().contains("show your wrapper-key share"), "{e}");
        let shares = [
            a.my_wrapper_share(&keeper).expect("share"),
            a.my_wrapper_share(&warden).expect("share"),
        ];
        assert!(
            a.my_wrapper_share(&sys).is_err(),
            "only the custodian sees a share"
        );
        a.confirm_share_stored(&keeper).expect("stored");
        let e = a.my_wrapper_share(&keeper).expect_err("collected");
        assert!(e.to_string().contains("no longer holds a copy"), "{e}");
        // Exporting again needs a quorum of the current shares.
        let e = a
            .export_wrapper_key(&sys, 2, 2, &["keeper".into(), "warden".into()], &[])
            .expect_err("no quorum");
        assert!(
            matches!(
                e,
                Error::Invalid {
                    field: "shares",
                    ..
                }
            ),
            "{e}"
        );
        let e = a
            .export_wrapper_key(
                &sys,
                2,
                2,
                &["keeper".into(), "warden".into()],
                &shares[..1],
            )
            .expect_err("one share");
        assert!(e.to_string().contains("at least 2 different shares"), "{e}");
        let e = a
            .create_wrapper_key(&sys, true, &[])
            .expect_err("no quorum");
        assert!(
            matches!(
                e,
                Error::Invalid {
                    field: "shares",
                    ..
                }
            ),
            "{e}"
        );
        let mut file = Vec::new();
        a.write_backup(&sys, "a.example.com", &mut file)
            .expect("backup");
        let la: Vec<String> = a
            .list_admins(&sys)
            .expect("a")
            .into_iter()
            .map(|x| x.login)
            .collect();
        a.delete_admin(&sys, "keeper").expect("delete custodian");
        assert_eq!(
            a.wrapper_key_status(&sys).expect("status").custodians,
            ["warden"],
            "the share went with its custodian"
        );
        // Resetting a custodian's password withdraws a share still held.
        a.update_admin(
            &sys,
            "warden",
            crate::store::AdminUpdate {
                password: Some("R3set!pass".into()),
                ..Default::default()
            },
        )
        .expect("reset");
        assert!(
            a.wrapper_key_status(&sys)
                .expect("status")
                .custodians
                .is_empty()
        );

        let (_d2, b) = store();
        let sys_b = system_actor(&b);
        let e = b
            .import_wrapper_key(&sys_b, &shares[..1], &[])
            .expect_err("one share");
        assert!(e.to_string().contains("at least 2 different shares"), "{e}");
        b.import_wrapper_key(&sys_b, &shares, &[]).expect("import");
        let before = b
            .read(|tx| {
                Ok(tx.query_row("SELECT COUNT(*) FROM audit", params![], |r| {
                    r.get::<_, i64>(0)
                })?)
            })
            .expect("count");
        // Damaged and truncated files change nothing.
        let mut flipped = file.clone();
        let n = flipped.len();
        flipped[n - 2000] ^= 0x40;
        assert!(
            b.restore_backup(&sys_b, &mut flipped.as_slice(), true)
                .is_err()
        );
        assert!(
            b.restore_backup(&sys_b, &mut &file[..file.len() / 2], true)
                .is_err()
        );
        // Members other than the two expected, in order, as regular files
        // of bounded size, are refused before anything is read or changed.
        let (manifest, payload) = members_of(&file);
        let big_header = {
            let mut t = tar_of(&[(MANIFEST, b'0', &manifest), (PAYLOAD, b'0', &payload)]);
            // manifest.json claiming 8 GiB: its size field rewritten.
            t[124..136].copy_from_slice(b"77777777777\0");
            let sum: u64 = t[..512]
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u64::from(*b)
                    }
                })
                .sum();
            t[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            t
        };
        for (bad, why) in [
            (
                tar_of(&[
                    (MANIFEST, b'0', &manifest),
                    (PAYLOAD, b'0', &payload),
                    ("extra.txt", b'0', b"more"),
                ]),
                "holds more than manifest.json and payload.enc",
            ),
            (
                tar_of(&[(MANIFEST, b'0', &manifest), ("payload.bin", b'0', &payload)]),
                "a member 'payload.bin' where payload.enc was expected",
            ),
            (
                tar_of(&[(PAYLOAD, b'0', &payload), (MANIFEST, b'0', &manifest)]),
                "a member 'payload.enc' where manifest.json was expected",
            ),
            (
                tar_of(&[(MANIFEST, b'2', b""), (PAYLOAD, b'0', &payload)]),
                "manifest.json in the backup file is not a regular file",
            ),
            (
                big_header,
                "manifest.json in the backup file claims a size over",
            ),
            (
                tar_of(&[(MANIFEST, b'0', &manifest)]),
                "ends before its member payload.enc",
            ),
        ] {
            match b.restore_backup(&sys_b, &mut bad.as_slice(), true) {
                Err(Error::Invalid {
                    field: "backup",
                    rule,
                }) => {
                    assert!(rule.contains(why), "{rule}")
                }
                other => panic!("{why}: {other:?}"),
            }
        }
        assert_eq!(b.list_domains(&sys_b).expect("domains").len(), 0);
        let after = b
            .read(|tx| {
                Ok(tx.query_row("SELECT COUNT(*) FROM audit", params![], |r| {
                    r.get::<_, i64>(0)
                })?)
            })
            .expect("count");
        assert_eq!(before, after);

        let report = b
            .restore_backup(&sys_b, &mut file.as_slice(), true)
            .expect("restore");
        assert_eq!(report.key_versions, 2);
        for v in [1, 2] {
            assert_eq!(material(&a, "recorder", v), material(&b, "recorder", v));
        }
        let lb: Vec<String> = b
            .list_admins(&system_actor(&b))
            .expect("b")
            .into_iter()
            .map(|x| x.login)
            .collect();
        assert_eq!(la, lb);
        assert!(b.licence_unchecked().expect("licence").is_some());
    }

    /// A backup made on one engine restores onto the other, both ways: the
    /// same key material served, the same administrators, and new ids
    /// after the restored ones.
    #[test]
    fn a_backup_restores_across_engines() {
        use crate::store::keys::tests::{key_admin, new_key};
        use crate::store::{Backend, NewDomain};
        let server = match crate::pg_harness::shared() {
            Ok(s) => s,
            Err(why) => {
                crate::pg_harness::skip("store::backup::a_backup_restores_across_engines", &why);
                return;
            }
        };
        let on = |postgres: bool| {
            let dir = tempfile::tempdir().expect("tempdir");
            let backend = if postgres {
                Backend::Postgres(server.fresh_database().expect("database"))
            } else {
                Backend::Sqlite
            };
            let s = Store::open_with(dir.path(), backend).expect("open");
            (dir, s)
        };
        for (from_pg, to_pg) in [(false, true), (true, false)] {
            let (_d1, a) = on(from_pg);
            let sa = key_admin(&a);
            a.create_key(&sa, "D", new_key("recorder", false, None))
                .expect("key");
            a.rotate_key(&sa, "D", "recorder").expect("rotate");
            let sys = system_actor(&a);
            a.create_wrapper_key(&sys, false, &[]).expect("wrapper");
            let mut file = Vec::new();
            a.write_backup(&sys, "a.example.com", &mut file)
                .expect("backup");

            let (_d2, b) = on(to_pg);
            let sys_b = system_actor(&b);
            // The same wrapper key, as the custodians would bring it.
            let key = a.read(|tx| a.wrapper_key(tx)).expect("read").expect("key");
            b.write(|tx| b.put_wrapper_key(tx, &key, "imported"))
                .expect("import");
            let report = b
                .restore_backup(&sys_b, &mut file.as_slice(), true)
                .expect("restore");
            assert_eq!(report.key_versions, 2, "{from_pg} → {to_pg}");
            for v in [1, 2] {
                assert_eq!(material(&a, "recorder", v), material(&b, "recorder", v));
            }
            let names = |s: &Store| -> Vec<String> {
                s.list_admins(&system_actor(s))
                    .expect("admins")
                    .into_iter()
                    .map(|x| x.login)
                    .collect()
            };
            assert_eq!(names(&a), names(&b));
            // Ids go on after the restored ones on the new engine too.
            let sys_b = system_actor(&b);
            b.create_domain(
                &sys_b,
                NewDomain {
                    name: "After".into(),
                    kind: crate::model::DomainKind::Global,
                    organization: String::new(),
                    description: String::new(),
                    help_desk_information: None,
                    domain_administrator: None,
                },
            )
            .expect("a domain after the restore");
            let ids = |s: &Store| -> Vec<i64> {
                s.read(|tx| {
                    Ok(tx
                        .prepare("SELECT id FROM domains ORDER BY id")?
                        .query_map(params![], |r| r.get(0))?
                        .collect::<crate::store::db::DbResult<Vec<i64>>>()?)
                })
                .expect("ids")
            };
            let (ia, ib) = (ids(&a), ids(&b));
            assert_eq!(ib[..ia.len()], ia[..]);
            assert!(ib[ia.len()] > ia[ia.len() - 1]);
        }
    }
}
