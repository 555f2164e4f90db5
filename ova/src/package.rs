//! The OVA: a ustar archive holding the OVF descriptor, then its manifest, then
//! the files the descriptor references, in the order it lists them (OVF 1.1 §5.3;
//! vSphere streams an OVA and relies on that order).
//!
//! The manifest (`<ovf stem>.mf`) has one `SHA256(<member>)= <hex>` line per
//! other member. It comes before the disk, yet the disk's digest is only known
//! once the disk has been read; rather than read a multi-GB VMDK twice,
//! [`build_ova`] writes the manifest with a placeholder digest of the same length,
//! hashes the disk while copying it into the archive, and then overwrites the
//! placeholder in place. Headers carry fixed owner, mode (0644) and mtime
//! ([`MTIME`]), so equal inputs give equal OVAs.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use aws_lc_rs::digest;

use crate::ovf::{check_member_name, unescape};
use crate::{Error, Result};

/// Modification time of every member: 2020-01-01T00:00:00Z. Fixed so that
/// equal inputs give byte-identical OVAs; not 0, which some tar readers call
/// implausible.
pub const MTIME: u64 = 1_577_836_800;

/// The largest member a plain ustar header can describe (11 octal digits).
const USTAR_MAX_SIZE: u64 = 0o777_7777_7777;
/// Descriptor and manifest are read into memory by [`verify_ova`]; a real one is
/// a few KiB.
const MAX_TEXT_MEMBER: u64 = 16 << 20;
const DIGEST_HEX_LEN: usize = 64;

/// Writes the OVA `out`: `ovf_name` with the text `ovf`, its manifest, and the
/// VMDK `vmdk` (stored under its file name, which the OVF must reference with
/// its exact size). `out` is removed if anything fails.
pub fn build_ova(out: &Path, ovf_name: &str, ovf: &str, vmdk: &Path) -> Result<()> {
    check_member_name("OVF name", ovf_name)?;
    let stem = ovf_name
        .strip_suffix(".ovf")
        .ok_or_else(|| Error::InvalidParam {
            field: "OVF name",
            reason: format!("{ovf_name:?} must end with .ovf"),
        })?;
    let mf_name = format!("{stem}.mf");
    let vmdk_name =
        vmdk.file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::InvalidParam {
                field: "VMDK path",
                reason: format!("{} has no UTF-8 file name", vmdk.display()),
            })?;
    check_member_name("VMDK file name", vmdk_name)?;

    let disk = File::open(vmdk).map_err(Error::io("open", vmdk))?;
    let disk_size = disk
        .metadata()
        .map_err(Error::io("read metadata of", vmdk))?
        .len();
    if disk_size > USTAR_MAX_SIZE {
        return Err(Error::InvalidParam {
            field: "VMDK size",
            reason: format!("{disk_size} bytes do not fit a ustar header (8 GiB)"),
        });
    }
    let references = references(ovf).map_err(|reason| Error::InvalidParam {
        field: "OVF",
        reason,
    })?;
    if references != [(vmdk_name.to_owned(), Some(disk_size))] {
        return Err(Error::InvalidParam {
            field: "OVF",
            reason: format!(
                "References must list exactly {vmdk_name} with ovf:size=\"{disk_size}\", found {references:?}"
            ),
        });
    }

    let file = File::create(out).map_err(Error::io("create", out))?;
    let result = write_ova(
        file, out, ovf_name, ovf, &mf_name, disk, vmdk_name, disk_size, vmdk,
    );
    if result.is_err() {
        let _ = fs::remove_file(out);
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn write_ova(
    file: File,
    out: &Path,
    ovf_name: &str,
    ovf: &str,
    mf_name: &str,
    disk: File,
    vmdk_name: &str,
    disk_size: u64,
    vmdk: &Path,
) -> Result<()> {
    let write_err = Error::io("write", out);
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));

    tar.append(&ustar_header(ovf_name, ovf.len() as u64)?, ovf.as_bytes())
        .map_err(Error::io("write", out))?;

    let ovf_digest = sha256_hex(ovf.as_bytes());
    let placeholder = manifest(&[
        (ovf_name, &ovf_digest),
        (vmdk_name, &"0".repeat(DIGEST_HEX_LEN)),
    ]);
    let mf_offset = tar
        .get_mut()
        .stream_position()
        .map_err(Error::io("write", out))?
        + 512;
    tar.append(
        &ustar_header(mf_name, placeholder.len() as u64)?,
        placeholder.as_bytes(),
    )
    .map_err(Error::io("write", out))?;

    let mut reader = HashingReader::new(BufReader::with_capacity(1 << 20, disk).take(disk_size));
    tar.append(&ustar_header(vmdk_name, disk_size)?, &mut reader)
        .map_err(Error::io("write", out))?;
    let (disk_digest, copied) = reader.finish();
    if copied != disk_size {
        return Err(Error::InvalidParam {
            field: "VMDK",
            reason: format!("{} changed size while it was packaged", vmdk.display()),
        });
    }

    let real = manifest(&[(ovf_name, &ovf_digest), (vmdk_name, &disk_digest)]);
    debug_assert_eq!(real.len(), placeholder.len());
    let mut w = tar.into_inner().map_err(Error::io("write", out))?;
    w.seek(SeekFrom::Start(mf_offset))
        .and_then(|_| w.write_all(real.as_bytes()))
        .and_then(|()| w.flush())
        .map_err(write_err)
}

fn ustar_header(name: &str, size: u64) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).map_err(|e| Error::InvalidParam {
        field: "OVA member name",
        reason: format!("{name:?}: {e}"),
    })?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

fn manifest(entries: &[(&str, &str)]) -> String {
    entries
        .iter()
        .map(|(name, hex)| format!("SHA256({name})= {hex}\n"))
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

/// Hashes and counts what passes through it.
struct HashingReader<R> {
    inner: R,
    ctx: digest::Context,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            ctx: digest::Context::new(&digest::SHA256),
            count: 0,
        }
    }

    fn finish(self) -> (String, u64) {
        (hex::encode(self.ctx.finish()), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctx.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// `(ovf:href, ovf:size)` of each `File` in the descriptor's `References`, in order.
///
/// A small scanner, not an XML parser: it reads descriptors shaped like ours
/// (unprefixed `References`/`File` elements, double-quoted attributes).
fn references(ovf: &str) -> Result<Vec<(String, Option<u64>)>, String> {
    let start = ovf.find("<References>").ok_or("no <References> element")?;
    let end = ovf[start..]
        .find("</References>")
        .ok_or("<References> is not closed")?
        + start;
    let section = &ovf[start..end];
    let mut files = Vec::new();
    let mut rest = section;
    while let Some(at) = rest.find("<File") {
        let tail = &rest[at..];
        let close = tail.find('>').ok_or("<File> is not closed")?;
        let element = &tail[..close];
        let href = attribute(element, "ovf:href")?.ok_or("<File> without ovf:href")?;
        let size = attribute(element, "ovf:size")?
            .map(|s| {
                s.parse::<u64>()
                    .map_err(|_| format!("ovf:size {s:?} is not a number"))
            })
            .transpose()?;
        files.push((href, size));
        rest = &tail[close..];
    }
    Ok(files)
}

fn attribute(element: &str, name: &str) -> Result<Option<String>, String> {
    let key = format!(" {name}=\"");
    let Some(at) = element.find(&key) else {
        return Ok(None);
    };
    let value = &element[at + key.len()..];
    let end = value.find('"').ok_or(format!("{name} is not closed"))?;
    unescape(&value[..end])
        .map(Some)
        .ok_or(format!("{name} has a bad entity reference"))
}

/// One parsed manifest line: member name and lower-case hex digest.
fn parse_manifest(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let rest = line
            .strip_prefix("SHA256(")
            .ok_or_else(|| format!("manifest line {line:?} is not SHA256(name)= hex"))?;
        let (name, hex) = rest
            .rsplit_once(")=")
            .ok_or_else(|| format!("manifest line {line:?} is not SHA256(name)= hex"))?;
        let hex = hex.trim().to_ascii_lowercase();
        if hex.len() != DIGEST_HEX_LEN || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("manifest digest for {name} is not 64 hex digits"));
        }
        if entries.iter().any(|(n, _)| n == name) {
            return Err(format!("manifest lists {name} twice"));
        }
        entries.push((name.to_owned(), hex));
    }
    Ok(entries)
}

/// One member as read from the archive.
struct Member {
    name: String,
    size: u64,
    digest: String,
}

/// Checks the OVA at `path` and returns its member names in archive order.
///
/// Checked: every member is a regular file with a ustar header and a plain name;
/// the first is the `.ovf`, the second its `.mf`, the rest are exactly the files
/// the OVF references, in its order and with its sizes; the manifest lists every
/// member but itself, once, with a matching SHA-256.
pub fn verify_ova(path: &Path) -> Result<Vec<String>> {
    let bad = |reason: String| Error::InvalidOva {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(Error::io("open", path))?;
    let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 20, file));
    let mut members: Vec<Member> = Vec::new();
    let mut texts: Vec<String> = Vec::new();

    let entries = archive.entries().map_err(Error::io("read", path))?;
    for entry in entries {
        let mut entry = entry.map_err(Error::io("read", path))?;
        let index = members.len();
        let name = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| bad(format!("member {index} has a non-UTF-8 name")))?;
        if entry.header().as_ustar().is_none() {
            return Err(bad(format!("member {name:?} does not have a ustar header")));
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(bad(format!("member {name:?} is not a regular file")));
        }
        check_member_name("OVA member name", &name).map_err(|e| bad(e.to_string()))?;
        if members.iter().any(|m| m.name == name) {
            return Err(bad(format!("member {name:?} appears twice")));
        }
        let size = entry.size();
        let mut hashing = HashingReader::new(&mut entry);
        if index < 2 {
            if size > MAX_TEXT_MEMBER {
                return Err(bad(format!(
                    "member {name:?} is too large for a descriptor or manifest"
                )));
            }
            let mut text = String::new();
            hashing
                .read_to_string(&mut text)
                .map_err(|_| bad(format!("member {name:?} is not UTF-8 text")))?;
            texts.push(text);
        } else {
            io::copy(&mut hashing, &mut io::sink()).map_err(Error::io("read", path))?;
        }
        let (digest, read) = hashing.finish();
        if read != size {
            return Err(bad(format!("member {name:?} is truncated")));
        }
        members.push(Member { name, size, digest });
    }

    let [ovf, mf, files @ ..] = members.as_slice() else {
        return Err(bad(format!(
            "has {} members; an OVF, a manifest and a disk are needed",
            members.len()
        )));
    };
    let stem = ovf.name.strip_suffix(".ovf").ok_or_else(|| {
        bad(format!(
            "first member {:?} is not the .ovf descriptor",
            ovf.name
        ))
    })?;
    if mf.name != format!("{stem}.mf") {
        return Err(bad(format!(
            "second member {:?} is not the manifest {stem}.mf",
            mf.name
        )));
    }

    let references = references(&texts[0]).map_err(|e| bad(format!("{}: {e}", ovf.name)))?;
    let names: Vec<&str> = files.iter().map(|m| m.name.as_str()).collect();
    let referenced: Vec<&str> = references.iter().map(|(n, _)| n.as_str()).collect();
    if names != referenced {
        return Err(bad(format!(
            "members after the manifest are {names:?}, the OVF references {referenced:?}"
        )));
    }
    for (member, (_, size)) in files.iter().zip(&references) {
        if let Some(size) = size
            && *size != member.size
        {
            return Err(bad(format!(
                "{} is {} bytes, the OVF says {size}",
                member.name, member.size
            )));
        }
    }

    let manifest = parse_manifest(&texts[1]).map_err(|e| bad(format!("{}: {e}", mf.name)))?;
    let listed: Vec<&Member> = std::iter::once(ovf).chain(files).collect();
    for (name, _) in &manifest {
        if !listed.iter().any(|m| &m.name == name) {
            return Err(bad(format!(
                "the manifest lists {name:?}, which is not in the OVA"
            )));
        }
    }
    for member in listed {
        let (_, expected) = manifest
            .iter()
            .find(|(n, _)| *n == member.name)
            .ok_or_else(|| bad(format!("the manifest has no digest for {:?}", member.name)))?;
        if *expected != member.digest {
            return Err(Error::DigestMismatch {
                path: path.to_path_buf(),
                member: member.name.clone(),
                expected: expected.clone(),
                actual: member.digest.clone(),
            });
        }
    }
    Ok(members.into_iter().map(|m| m.name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_read_in_order_with_sizes() {
        let ovf = r#"<Envelope><References>
            <File ovf:href="a&amp;b.vmdk" ovf:id="file1" ovf:size="42"/>
            <File ovf:id="file2" ovf:href="c.iso"/>
          </References><DiskSection/></Envelope>"#;
        assert_eq!(
            references(ovf),
            Ok(vec![("a&b.vmdk".into(), Some(42)), ("c.iso".into(), None)])
        );
        assert!(references("<Envelope/>").is_err());
    }

    #[test]
    fn manifest_lines_are_strict() {
        let hex = "ab".repeat(32);
        assert_eq!(
            parse_manifest(&format!("SHA256(x.ovf)= {hex}\n")),
            Ok(vec![("x.ovf".into(), hex.clone())])
        );
        assert!(parse_manifest(&format!("SHA1(x.ovf)= {hex}\n")).is_err());
        assert!(parse_manifest("SHA256(x.ovf)= abc\n").is_err());
        assert!(parse_manifest(&format!("SHA256(x)= {hex}\nSHA256(x)= {hex}\n")).is_err());
    }
}
