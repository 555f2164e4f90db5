//! Helpers shared by the integration tests: synthetic raw disks and `qemu-img`.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

pub const GRAIN: u64 = 64 * 1024;
/// Bytes covered by one grain table (512 grains).
pub const GT_SPAN: u64 = 512 * GRAIN;

/// Deterministic incompressible bytes (xorshift64).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Compressible bytes: a repeating ramp.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 253) as u8).collect()
}

/// Writes a sparse raw image of `len` bytes with `chunks` at their offsets.
pub fn write_raw(path: &Path, len: u64, chunks: &[(u64, Vec<u8>)]) {
    let mut f = File::create(path).expect("create raw");
    f.set_len(len).expect("size raw");
    for (offset, data) in chunks {
        f.seek(SeekFrom::Start(*offset)).expect("seek raw");
        f.write_all(data).expect("write raw");
    }
}

/// A mixed image spanning three grain tables: the first with random, zero and
/// patterned grains; the second all zeros (its table must be left out); the
/// third short, ending in a partial grain of three sectors with data. The length
/// is a multiple of 512 but not of 64 KiB.
pub fn mixed_image(path: &Path) -> u64 {
    let len = 2 * GT_SPAN + 5 * GRAIN + 3 * 512;
    let half = (GRAIN / 2) as usize;
    let chunks = vec![
        (0, noise(1, GRAIN as usize)),
        // grain 1 stays zero
        (2 * GRAIN, pattern(GRAIN as usize)),
        (3 * GRAIN, noise(2, half)),
        (11 * GRAIN - 1, vec![0xff]),
        (100 * GRAIN + 4096, pattern(3 * GRAIN as usize)),
        (511 * GRAIN, noise(3, GRAIN as usize)),
        (2 * GT_SPAN, pattern(GRAIN as usize + 512)),
        (2 * GT_SPAN + 5 * GRAIN, noise(4, 3 * 512)),
    ];
    write_raw(path, len, &chunks);
    len
}

/// Runs `qemu-img`, or returns `None` when it is not installed.
pub fn qemu_img(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("qemu-img").args(args).output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("cannot run qemu-img: {e}"),
    }
}

pub fn have_qemu_img() -> bool {
    if qemu_img(&["--version"]).is_some() {
        true
    } else {
        eprintln!(
            "SKIPPED: qemu-img not found; it is the independent reader these tests check \
             against (apt-get install -y --no-install-recommends qemu-utils)"
        );
        false
    }
}
