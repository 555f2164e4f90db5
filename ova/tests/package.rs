//! The OVA: member order, ustar headers, manifest digests, and a consumer's
//! checks (`verify_ova`) including tampered archives.

mod common;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use aws_lc_rs::digest;
use common::{GRAIN, mixed_image, noise, write_raw};
use ova::{Error, OvfParams, build_ova, render_ovf, verify_ova, write_stream_vmdk};

const OVF_NAME: &str = "custos-0.1.0.ovf";
const VMDK_NAME: &str = "custos-0.1.0-disk1.vmdk";

struct Built {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    ova: PathBuf,
    ovf: String,
    vmdk: PathBuf,
}

fn build() -> Built {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let raw = dir.join("disk.raw");
    mixed_image(&raw);
    let vmdk = dir.join(VMDK_NAME);
    let info = write_stream_vmdk(&raw, &vmdk).expect("VMDK");
    let ovf = render_ovf(&OvfParams::custos(
        "Custos Project",
        "0.1.0",
        VMDK_NAME,
        &info,
    ))
    .expect("OVF");
    let ova = dir.join("custos-0.1.0.ova");
    build_ova(&ova, OVF_NAME, &ovf, &vmdk).expect("OVA");
    Built {
        _dir: tmp,
        dir,
        ova,
        ovf,
        vmdk,
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

/// (name, offset of data, data) of each member, read straight from the ustar blocks.
fn members(bytes: &[u8]) -> Vec<(String, usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= bytes.len() && bytes[at..at + 512].iter().any(|&b| b != 0) {
        let h = &bytes[at..at + 512];
        assert_eq!(&h[257..263], b"ustar\0", "POSIX ustar magic");
        assert_eq!(&h[263..265], b"00", "ustar version");
        assert_eq!(h[156], b'0', "regular file");
        assert_eq!(&h[100..107], b"0000644", "mode 0644");
        let field = |r: std::ops::Range<usize>| {
            let s = std::str::from_utf8(&h[r])
                .expect("ascii")
                .trim_end_matches('\0')
                .trim();
            u64::from_str_radix(s, 8).expect("octal")
        };
        assert_eq!(field(136..148), 1_577_836_800, "fixed mtime");
        let size = field(124..136) as usize;
        let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8(h[..name_end].to_vec()).expect("name");
        out.push((name, at + 512, bytes[at + 512..at + 512 + size].to_vec()));
        at += 512 + size.next_multiple_of(512);
    }
    assert!(
        bytes[at..].iter().all(|&b| b == 0),
        "two zero blocks end the archive"
    );
    assert!(bytes.len() - at >= 1024);
    out
}

#[test]
fn members_are_ovf_manifest_disk_with_matching_digests() {
    let b = build();
    let names = verify_ova(&b.ova).expect("verify");
    assert_eq!(names, [OVF_NAME, "custos-0.1.0.mf", VMDK_NAME]);

    let bytes = fs::read(&b.ova).expect("read OVA");
    let members = members(&bytes);
    let vmdk = fs::read(&b.vmdk).expect("read VMDK");
    assert_eq!(members.len(), 3);
    assert_eq!(members[0].0, OVF_NAME);
    assert_eq!(members[0].2, b.ovf.as_bytes());
    assert_eq!(members[2].0, VMDK_NAME);
    assert!(members[2].2 == vmdk);
    let manifest = String::from_utf8(members[1].2.clone()).expect("manifest text");
    assert_eq!(
        manifest,
        format!(
            "SHA256({OVF_NAME})= {}\nSHA256({VMDK_NAME})= {}\n",
            sha256_hex(b.ovf.as_bytes()),
            sha256_hex(&vmdk)
        )
    );
}

#[test]
fn gnu_tar_lists_the_members_in_order() {
    let b = build();
    let out = match Command::new("tar").arg("-tvf").arg(&b.ova).output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("SKIPPED: tar cannot be run: {e}");
            return;
        }
    };
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(names, [OVF_NAME, "custos-0.1.0.mf", VMDK_NAME], "{listing}");
    assert!(
        listing.lines().all(|l| l.starts_with("-rw-r--r-- 0/0")),
        "{listing}"
    );
}

#[test]
fn the_same_inputs_give_the_same_ova() {
    let b = build();
    let again = b.dir.join("again.ova");
    build_ova(&again, OVF_NAME, &b.ovf, &b.vmdk).expect("OVA");
    assert!(fs::read(&again).expect("read") == fs::read(&b.ova).expect("read"));
}

fn flip(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).expect("read");
    bytes[offset] ^= 0x01;
    fs::write(path, bytes).expect("write");
}

#[test]
fn a_flipped_byte_in_the_disk_is_caught() {
    let b = build();
    let bytes = fs::read(&b.ova).expect("read");
    let (_, disk_at, disk) = &members(&bytes)[2];
    flip(&b.ova, disk_at + disk.len() / 2);
    let err = verify_ova(&b.ova).expect_err("tampered disk");
    assert!(
        matches!(&err, Error::DigestMismatch { member, .. } if member == VMDK_NAME),
        "{err}"
    );
}

#[test]
fn a_flipped_byte_in_the_descriptor_is_caught() {
    let b = build();
    let bytes = fs::read(&b.ova).expect("read");
    let (_, ovf_at, ovf) = &members(&bytes)[0];
    let memory = ovf_at + find(ovf, b"<rasd:VirtualQuantity>4096");
    flip(&b.ova, memory + "<rasd:VirtualQuantity>".len());
    let err = verify_ova(&b.ova).expect_err("tampered OVF");
    assert!(
        matches!(&err, Error::DigestMismatch { member, .. } if member == OVF_NAME),
        "{err}"
    );
}

#[test]
fn a_flipped_byte_in_the_manifest_is_caught() {
    let b = build();
    let bytes = fs::read(&b.ova).expect("read");
    let (_, mf_at, mf) = &members(&bytes)[1];
    // Change the last hex digit of the disk's digest to another hex digit.
    let at = mf_at + mf.len() - 2;
    let mut tampered = bytes.clone();
    tampered[at] = if tampered[at] == b'0' { b'1' } else { b'0' };
    fs::write(&b.ova, tampered).expect("write");
    let err = verify_ova(&b.ova).expect_err("tampered manifest");
    assert!(
        matches!(&err, Error::DigestMismatch { member, .. } if member == VMDK_NAME),
        "{err}"
    );
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

/// Writes a ustar archive with the given members, as a tool other than ours would.
fn write_tar(path: &Path, members: &[(&str, &[u8])]) {
    let mut tar = tar::Builder::new(File::create(path).expect("create"));
    for (name, data) in members {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).expect("path");
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append(&h, *data).expect("append");
    }
    tar.finish().expect("finish");
}

#[test]
fn wrong_order_and_missing_members_are_refused() {
    let b = build();
    let bytes = fs::read(&b.ova).expect("read");
    let m = members(&bytes);
    let (ovf, mf, disk) = (&m[0].2[..], &m[1].2[..], &m[2].2[..]);
    let mf_name = "custos-0.1.0.mf";
    let bad = b.dir.join("bad.ova");

    for (what, members) in [
        (
            "manifest first",
            vec![(mf_name, mf), (OVF_NAME, ovf), (VMDK_NAME, disk)],
        ),
        (
            "disk before manifest",
            vec![(OVF_NAME, ovf), (VMDK_NAME, disk), (mf_name, mf)],
        ),
        ("no disk", vec![(OVF_NAME, ovf), (mf_name, mf)]),
        (
            "extra member",
            vec![
                (OVF_NAME, ovf),
                (mf_name, mf),
                (VMDK_NAME, disk),
                ("notes.txt", b"hi"),
            ],
        ),
        (
            "manifest misnamed",
            vec![(OVF_NAME, ovf), ("other.mf", mf), (VMDK_NAME, disk)],
        ),
    ] {
        write_tar(&bad, &members);
        let err = verify_ova(&bad).expect_err(what);
        assert!(matches!(err, Error::InvalidOva { .. }), "{what}: {err}");
    }

    // A manifest that leaves the disk out.
    let short = String::from_utf8_lossy(mf)
        .lines()
        .next()
        .expect("line")
        .to_owned()
        + "\n";
    write_tar(
        &bad,
        &[
            (OVF_NAME, ovf),
            (mf_name, short.as_bytes()),
            (VMDK_NAME, disk),
        ],
    );
    let err = verify_ova(&bad).expect_err("incomplete manifest");
    assert!(err.to_string().contains("no digest"), "{err}");

    // A disk whose size differs from the OVF's ovf:size (digests made consistent).
    let shorter = &disk[..disk.len() - 512];
    let mf2 = format!(
        "SHA256({OVF_NAME})= {}\nSHA256({VMDK_NAME})= {}\n",
        sha256_hex(ovf),
        sha256_hex(shorter)
    );
    write_tar(
        &bad,
        &[
            (OVF_NAME, ovf),
            (mf_name, mf2.as_bytes()),
            (VMDK_NAME, shorter),
        ],
    );
    let err = verify_ova(&bad).expect_err("size mismatch");
    assert!(err.to_string().contains("the OVF says"), "{err}");
}

#[test]
fn build_refuses_a_descriptor_that_does_not_match_the_disk() {
    let b = build();
    let out = b.dir.join("x.ova");
    let size = fs::metadata(&b.vmdk).expect("stat").len();
    let wrong_size = b
        .ovf
        .replace(&format!("ovf:size=\"{size}\""), "ovf:size=\"1\"");
    let err = build_ova(&out, OVF_NAME, &wrong_size, &b.vmdk).expect_err("wrong size");
    assert!(
        matches!(err, Error::InvalidParam { field: "OVF", .. }),
        "{err}"
    );
    assert!(!out.exists());

    let other = b.dir.join("other.vmdk");
    let raw = b.dir.join("small.raw");
    write_raw(&raw, GRAIN, &[(0, noise(5, 512))]);
    write_stream_vmdk(&raw, &other).expect("VMDK");
    let err = build_ova(&out, OVF_NAME, &b.ovf, &other).expect_err("wrong name");
    assert!(
        err.to_string()
            .contains("References must list exactly other.vmdk"),
        "{err}"
    );

    let err = build_ova(&out, "custos.xml", &b.ovf, &b.vmdk).expect_err("not .ovf");
    assert!(
        matches!(
            err,
            Error::InvalidParam {
                field: "OVF name",
                ..
            }
        ),
        "{err}"
    );
    let err = build_ova(&out, "../custos.ovf", &b.ovf, &b.vmdk).expect_err("path");
    assert!(
        matches!(
            err,
            Error::InvalidParam {
                field: "OVF name",
                ..
            }
        ),
        "{err}"
    );
}
