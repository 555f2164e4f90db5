//! The stream-optimised VMDK: read back by `qemu-img` and by an independent
//! walk of the file that checks VMware's canonical stream layout.

mod common;

use std::fs;
use std::io::Read;
use std::path::Path;

use common::{GRAIN, GT_SPAN, have_qemu_img, mixed_image, noise, qemu_img, write_raw};
use flate2::read::ZlibDecoder;
use ova::{VmdkInfo, write_stream_vmdk};

const SECTOR: u64 = 512;

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// What the walk found, in file order.
#[derive(Debug, PartialEq)]
enum Record {
    Grain { sector: u64, lba: u64 },
    GrainTable { sector: u64 },
    GrainDirectory { sector: u64, sectors: u64 },
    Footer,
    EndOfStream,
}

struct Walk {
    header: Vec<u8>,
    descriptor: String,
    records: Vec<Record>,
    footer: Vec<u8>,
    /// The disk as rebuilt from the grains alone.
    disk: Vec<u8>,
}

/// Walks a stream-optimised VMDK from the first grain to the end-of-stream
/// marker, using nothing but the markers, and rebuilds the disk from the grains.
fn walk(bytes: &[u8]) -> Walk {
    assert_eq!(bytes.len() as u64 % SECTOR, 0, "file is whole sectors");
    let header = bytes[..512].to_vec();
    let capacity = le64(&header, 12);
    let desc_offset = le64(&header, 28) as usize * 512;
    let desc_len = le64(&header, 36) as usize * 512;
    let descriptor = String::from_utf8(bytes[desc_offset..desc_offset + desc_len].to_vec())
        .expect("descriptor is UTF-8")
        .trim_end_matches('\0')
        .to_owned();
    let overhead = le64(&header, 64);
    assert!(
        bytes[desc_offset + desc_len..overhead as usize * 512]
            .iter()
            .all(|&b| b == 0),
        "nothing between descriptor and first grain"
    );

    let mut disk = vec![0u8; (capacity * SECTOR) as usize];
    let mut records = Vec::new();
    let mut footer = Vec::new();
    let mut sector = overhead;
    loop {
        let at = (sector * SECTOR) as usize;
        assert!(
            at + 512 <= bytes.len(),
            "ran past the end without an end-of-stream marker"
        );
        let val = le64(bytes, at);
        let size = le32(bytes, at + 8);
        if size != 0 {
            let data = &bytes[at + 12..at + 12 + size as usize];
            assert_eq!(&data[..1], &[0x78], "grain is a zlib (RFC 1950) stream");
            let mut grain = Vec::new();
            ZlibDecoder::new(data)
                .read_to_end(&mut grain)
                .expect("grain inflates");
            let start = (val * SECTOR) as usize;
            let expected = (disk.len() - start).min(GRAIN as usize);
            assert_eq!(
                grain.len(),
                expected,
                "grain at lba {val} inflates to the grain (or the rest of the disk)"
            );
            disk[start..start + grain.len()].copy_from_slice(&grain);
            let padding =
                &bytes[at + 12 + size as usize..at + (12 + size as usize).next_multiple_of(512)];
            assert!(padding.iter().all(|&b| b == 0), "grain padding is zero");
            records.push(Record::Grain { sector, lba: val });
            sector += (12 + u64::from(size)).div_ceil(SECTOR);
            continue;
        }
        let kind = le32(bytes, at + 12);
        assert!(
            bytes[at + 16..at + 512].iter().all(|&b| b == 0),
            "marker padding is zero"
        );
        match kind {
            0 => {
                assert_eq!(val, 0);
                records.push(Record::EndOfStream);
                assert_eq!(
                    at + 512,
                    bytes.len(),
                    "end-of-stream marker is the last sector"
                );
                break;
            }
            1 => {
                assert_eq!(val, 4, "a grain table is 4 sectors");
                records.push(Record::GrainTable { sector: sector + 1 });
                sector += 1 + val;
            }
            2 => {
                records.push(Record::GrainDirectory {
                    sector: sector + 1,
                    sectors: val,
                });
                sector += 1 + val;
            }
            3 => {
                assert_eq!(val, 1, "the footer is one sector");
                records.push(Record::Footer);
                footer = bytes[at + 512..at + 1024].to_vec();
                sector += 2;
            }
            other => panic!("unknown marker type {other} at sector {sector}"),
        }
    }
    Walk {
        header,
        descriptor,
        records,
        footer,
        disk,
    }
}

/// Checks the header, marker order and table contents against the format.
fn check_layout(bytes: &[u8], walk: &Walk, raw_len: u64) {
    let h = &walk.header;
    let capacity = raw_len.div_ceil(SECTOR);
    assert_eq!(&h[0..4], b"KDMV", "magic");
    assert_eq!(le32(h, 4), 3, "version");
    assert_eq!(
        le32(h, 8),
        0x0003_0001,
        "flags: newline test, compressed grains, markers"
    );
    assert_eq!(le64(h, 12), capacity, "capacity in sectors");
    assert_eq!(le64(h, 20), 128, "grain size");
    assert_eq!(le64(h, 28), 1, "descriptor offset");
    assert!(le64(h, 36) >= 1, "descriptor size");
    assert_eq!(le32(h, 44), 512, "GTEs per GT");
    assert_eq!(le64(h, 48), 0, "no redundant directory");
    assert_eq!(le64(h, 56), u64::MAX, "GD_AT_END in the header");
    assert_eq!(le64(h, 64), 128, "overhead");
    assert_eq!(h[72], 0, "clean");
    assert_eq!(&h[73..77], b"\n \r\n", "newline detection characters");
    assert_eq!(u16::from_le_bytes([h[77], h[78]]), 1, "deflate");
    assert!(h[79..].iter().all(|&b| b == 0));

    let d = &walk.descriptor;
    assert!(d.starts_with("# Disk DescriptorFile\n"), "{d}");
    assert!(d.contains("createType=\"streamOptimized\"\n"), "{d}");
    assert!(d.contains(&format!("\nRW {capacity} SPARSE \"")), "{d}");
    assert!(d.contains("ddb.adapterType = \"lsilogic\"\n"), "{d}");
    assert!(d.contains("ddb.virtualHWVersion = \"4\"\n"), "{d}");
    assert!(d.contains("parentCID=ffffffff\n"), "{d}");

    // Order: grains of table k, then table k (if any grain), ..., directory, footer, end.
    let n = walk.records.len();
    assert_eq!(walk.records[n - 1], Record::EndOfStream);
    assert_eq!(walk.records[n - 2], Record::Footer);
    let Record::GrainDirectory {
        sector: gd_sector,
        sectors: gd_sectors,
    } = walk.records[n - 3]
    else {
        panic!(
            "the directory precedes the footer: {:?}",
            &walk.records[n - 3..]
        );
    };
    let grains = capacity.div_ceil(128);
    let tables = grains.div_ceil(512);
    assert_eq!(gd_sectors, (tables * 4).div_ceil(SECTOR));
    let gd_at = (gd_sector * SECTOR) as usize;
    let gd: Vec<u32> = (0..tables as usize)
        .map(|i| le32(bytes, gd_at + 4 * i))
        .collect();
    assert!(
        bytes[gd_at + 4 * tables as usize..gd_at + (gd_sectors * SECTOR) as usize]
            .iter()
            .all(|&b| b == 0)
    );

    let mut last_lba = None;
    let mut pending: Vec<(u64, u64)> = Vec::new(); // grains since the last table
    let mut table_sectors = Vec::new();
    for record in &walk.records[..n - 3] {
        match *record {
            Record::Grain { sector, lba } => {
                assert_eq!(lba % 128, 0, "grains start on grain boundaries");
                assert!(
                    last_lba.is_none_or(|l| lba > l),
                    "grains in ascending order"
                );
                if let Some(&(first, _)) = pending.first() {
                    assert_eq!(
                        first / (128 * 512),
                        lba / (128 * 512),
                        "a table closes each run of 512 grains"
                    );
                }
                last_lba = Some(lba);
                pending.push((lba, sector));
            }
            Record::GrainTable { sector } => {
                let &(first, _) = pending.first().expect("no empty grain tables");
                let table = first / (128 * 512);
                assert_eq!(
                    gd[table as usize] as u64, sector,
                    "directory points at table {table}"
                );
                let at = (sector * SECTOR) as usize;
                for i in 0..512u64 {
                    let entry = u64::from(le32(bytes, at + 4 * i as usize));
                    let lba = (table * 512 + i) * 128;
                    match pending.iter().find(|(l, _)| *l == lba) {
                        Some(&(_, grain_sector)) => {
                            assert_eq!(entry, grain_sector, "entry for lba {lba}")
                        }
                        None => assert_eq!(entry, 0, "no grain at lba {lba}"),
                    }
                }
                table_sectors.push(sector);
                pending.clear();
            }
            ref other => panic!("unexpected {other:?} before the directory"),
        }
    }
    assert!(pending.is_empty(), "every grain is followed by its table");
    for (i, entry) in gd.iter().enumerate() {
        if *entry != 0 {
            assert!(
                table_sectors.contains(&u64::from(*entry)),
                "directory entry {i}"
            );
        }
    }
    assert_eq!(gd.iter().filter(|e| **e != 0).count(), table_sectors.len());

    // The footer is the header with the directory's real offset.
    let mut expected = walk.header.clone();
    expected[56..64].copy_from_slice(&gd_sector.to_le_bytes());
    assert_eq!(walk.footer, expected, "footer = header with gdOffset");
}

fn convert(raw: &Path, out: &Path) -> (VmdkInfo, Vec<u8>) {
    let info = write_stream_vmdk(raw, out).expect("write VMDK");
    let bytes = fs::read(out).expect("read VMDK");
    assert_eq!(info.file_size, bytes.len() as u64);
    (info, bytes)
}

#[test]
fn layout_is_the_canonical_stream_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("disk.raw");
    let out = dir.path().join("disk.vmdk");
    let len = mixed_image(&raw);
    let (info, bytes) = convert(&raw, &out);
    let walk = walk(&bytes);
    check_layout(&bytes, &walk, len);

    let original = fs::read(&raw).expect("read raw");
    assert!(walk.disk == original, "grains rebuild the raw image");

    let grains: Vec<u64> = walk
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Grain { lba, .. } => Some(lba / 128),
            _ => None,
        })
        .collect();
    assert_eq!(
        grains,
        [0, 2, 3, 10, 100, 101, 102, 103, 511, 1024, 1025, 1029]
    );
    let tables = walk
        .records
        .iter()
        .filter(|r| matches!(r, Record::GrainTable { .. }))
        .count();
    assert_eq!(tables, 2, "the all-zero middle table is left out");

    assert_eq!(info.capacity_bytes, len);
    // 11 whole grains and the last grain's 3 sectors.
    assert_eq!(info.populated_bytes, 11 * GRAIN + 3 * 512);
}

#[test]
fn qemu_img_reads_back_the_raw_image() {
    if !have_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("disk.raw");
    let out = dir.path().join("disk.vmdk");
    let back = dir.path().join("back.raw");
    let len = mixed_image(&raw);
    let (info, _) = convert(&raw, &out);
    let out_s = out.to_str().expect("utf-8 path");

    let qinfo = qemu_img(&["info", "-f", "vmdk", out_s]).expect("qemu-img");
    let text = String::from_utf8_lossy(&qinfo.stdout);
    assert!(
        qinfo.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&qinfo.stderr)
    );
    assert!(text.contains("create type: streamOptimized"), "{text}");
    assert!(text.contains("compressed: true"), "{text}");
    assert!(
        text.contains(&format!("({} bytes)", info.capacity_bytes)),
        "{text}"
    );

    let check = qemu_img(&["check", "-f", "vmdk", out_s]).expect("qemu-img");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(text.contains("No errors were found"), "{text}");

    let conv = qemu_img(&[
        "convert",
        "-f",
        "vmdk",
        "-O",
        "raw",
        out_s,
        back.to_str().expect("utf-8"),
    ])
    .expect("qemu-img");
    assert!(
        conv.status.success(),
        "{}",
        String::from_utf8_lossy(&conv.stderr)
    );
    let original = fs::read(&raw).expect("read raw");
    let roundtrip = fs::read(&back).expect("read converted");
    assert_eq!(roundtrip.len() as u64, len);
    assert!(
        roundtrip == original,
        "qemu-img convert gives back the raw bytes"
    );
}

#[test]
fn unaligned_raw_is_padded_to_a_whole_sector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("odd.raw");
    let out = dir.path().join("odd.vmdk");
    let len = 3 * GRAIN + 100;
    write_raw(
        &raw,
        len,
        &[(GRAIN - 50, noise(9, 50)), (3 * GRAIN, noise(7, 100))],
    );
    let (info, bytes) = convert(&raw, &out);
    let walk = walk(&bytes);
    check_layout(&bytes, &walk, len);
    assert_eq!(info.capacity_bytes, 3 * GRAIN + 512);
    assert_eq!(info.populated_bytes, GRAIN + 512);
    let original = fs::read(&raw).expect("read raw");
    assert_eq!(&walk.disk[..len as usize], &original[..]);
    assert!(walk.disk[len as usize..].iter().all(|&b| b == 0));

    if !have_qemu_img() {
        return;
    }
    let back = dir.path().join("back.raw");
    let conv = qemu_img(&[
        "convert",
        "-f",
        "vmdk",
        "-O",
        "raw",
        out.to_str().expect("utf-8"),
        back.to_str().expect("utf-8"),
    ])
    .expect("qemu-img");
    assert!(
        conv.status.success(),
        "{}",
        String::from_utf8_lossy(&conv.stderr)
    );
    let roundtrip = fs::read(&back).expect("read converted");
    assert_eq!(roundtrip.len() as u64, info.capacity_bytes);
    assert_eq!(&roundtrip[..len as usize], &original[..]);
    assert!(roundtrip[len as usize..].iter().all(|&b| b == 0));
}

#[test]
fn all_zero_disk_has_only_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("zero.raw");
    let out = dir.path().join("zero.vmdk");
    write_raw(&raw, GT_SPAN + GRAIN, &[]);
    let (info, bytes) = convert(&raw, &out);
    let walk = walk(&bytes);
    check_layout(&bytes, &walk, GT_SPAN + GRAIN);
    assert_eq!(info.populated_bytes, 0);
    assert_eq!(
        walk.records.len(),
        3,
        "directory, footer, end: {:?}",
        walk.records
    );
    // header + descriptor area (128) + GD marker + GD + footer marker + footer + EOS
    assert_eq!(info.file_size, (128 + 1 + 1 + 1 + 1 + 1) * SECTOR);
}

#[test]
fn output_is_deterministic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("disk.raw");
    mixed_image(&raw);
    let (first, second) = (dir.path().join("1"), dir.path().join("2"));
    fs::create_dir(&first).expect("mkdir");
    fs::create_dir(&second).expect("mkdir");
    let (_, a) = convert(&raw, &first.join("disk.vmdk"));
    let (_, b) = convert(&raw, &second.join("disk.vmdk"));
    assert!(a == b, "same raw image, same VMDK");

    // A changed byte changes the content ID.
    let cid = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(&bytes[512..1024]).into_owned();
        let at = text.find("CID=").expect("CID");
        text[at..at + 12].to_owned()
    };
    write_raw(&raw, 2 * GT_SPAN, &[(7, vec![1])]);
    let (_, c) = convert(&raw, &first.join("disk.vmdk"));
    assert_ne!(cid(&a), cid(&c));
}

#[test]
fn empty_and_missing_inputs_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("empty.raw");
    let out = dir.path().join("empty.vmdk");
    write_raw(&raw, 0, &[]);
    let err = write_stream_vmdk(&raw, &out).expect_err("empty raw");
    assert!(err.to_string().contains("is empty"), "{err}");
    assert!(!out.exists());
    let err = write_stream_vmdk(&dir.path().join("missing.raw"), &out).expect_err("missing raw");
    assert!(
        matches!(err, ova::Error::Io { action: "open", .. }),
        "{err}"
    );
    write_raw(&raw, 4096, &[]);
    let err = write_stream_vmdk(&raw, &raw).expect_err("same file");
    assert!(err.to_string().contains("output"), "{err}");
    assert_eq!(fs::metadata(&raw).expect("raw kept").len(), 4096);
}
