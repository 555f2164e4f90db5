//! Stream-optimised VMDK writer (VMware "Virtual Disk Format 5.0",
//! stream-optimized compressed sparse extent).
//!
//! File layout, in 512-byte sectors:
//!
//! ```text
//! 0        sparse header, gdOffset = GD_AT_END
//! 1..      embedded descriptor (NUL-padded to whole sectors)
//! 128..    for each run of 512 grains (one grain table's worth):
//!            for each non-zero 64 KiB grain: grain marker (lba u64, size u32)
//!              + RFC 1950 zlib stream, padded to a sector
//!            if any grain of the run was written: GT marker + grain table (4 sectors)
//!          GD marker + grain directory (padded to a sector)
//!          footer marker + copy of the header with the real gdOffset
//!          end-of-stream marker (a zero sector)
//! ```
//!
//! Grain-table and directory entries are sector offsets: a table entry points at
//! its grain's marker, a directory entry at its table (after the marker). All-zero
//! grains are not written (entry 0), and a grain table whose grains are all zero is
//! not written either (directory entry 0) — both read back as zeros.
//!
//! Capacity: the header counts whole sectors, so a raw image whose length is not a
//! multiple of 512 is padded with zeros up to the next sector (the VMDK, and so the
//! OVF's `ovf:capacity`, is then up to 511 bytes larger than the raw file). The
//! capacity is *not* rounded to a whole grain: when it is not a multiple of 64 KiB,
//! the last grain holds only the sectors inside the capacity, compressed at that
//! length, as VMware's own `open-vmdk` writer does.
//!
//! Compression runs on all cores, a batch of grains at a time; records are
//! written in grain order, so the output does not depend on the thread count.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::thread;

use aws_lc_rs::digest;
use flate2::{Compress, Compression, FlushCompress, Status};

use crate::{Error, Result};

/// Bytes in one grain, the unit of allocation and compression (128 sectors).
pub const GRAIN_BYTES: usize = 64 * 1024;

const SECTOR: u64 = 512;
const SECTOR_BYTES: usize = 512;
const GRAIN_SECTORS: u64 = 128;
const GTES_PER_GT: usize = 512;
const GT_SECTORS: u64 = (GTES_PER_GT * 4) as u64 / SECTOR;
/// Sectors before the first grain: header plus descriptor area, as ovftool writes.
const OVERHEAD_SECTORS: u64 = 128;
const DESCRIPTOR_OFFSET: u64 = 1;

const MAGIC: u32 = 0x564d_444b; // "KDMV" on disk
const VERSION: u32 = 3;
const FLAG_VALID_NEWLINE_DETECTION: u32 = 1 << 0;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const GD_AT_END: u64 = u64::MAX;
const COMPRESS_DEFLATE: u16 = 1;

const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;
const GRAIN_MARKER_BYTES: usize = 12;

/// zlib's default level: within a few percent of level 9 on disk images, and
/// several times faster.
const COMPRESSION_LEVEL: u32 = 6;
/// Grains each compression thread gets per batch (2 MiB of input).
const GRAINS_PER_THREAD: usize = 32;
/// Beyond this, more threads only add memory.
const MAX_THREADS: usize = 16;

/// What the OVF needs to know about a written VMDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmdkInfo {
    /// Virtual disk size: the raw image's length rounded up to whole sectors.
    pub capacity_bytes: u64,
    /// Exact length of the VMDK file (the OVF's `File ovf:size`).
    pub file_size: u64,
    /// Bytes covered by written (non-zero) grains, 64 KiB each, the last grain
    /// counted only up to the capacity (the OVF's `Disk ovf:populatedSize`).
    pub populated_bytes: u64,
}

/// Converts the raw disk image `raw` into a stream-optimised VMDK at `out`.
///
/// Reads `raw` once, front to back, in bounded memory (a few MiB per core).
/// `out` is created or truncated; on error it is removed. The descriptor's
/// content ID is derived from the disk content, so the same raw image always
/// gives the same bytes.
pub fn write_stream_vmdk(raw: &Path, out: &Path) -> Result<VmdkInfo> {
    let extent_name = extent_name(out)?;
    let mut input = File::open(raw).map_err(Error::io("open", raw))?;
    let raw_len = input
        .metadata()
        .map_err(Error::io("read metadata of", raw))?
        .len();
    if raw_len == 0 {
        return Err(raw_error(raw, "is empty"));
    }
    if same_file(raw, out) {
        return Err(raw_error(raw, "is also the output path"));
    }
    let file = File::create(out).map_err(Error::io("create", out))?;
    let result = write_stream(&mut input, raw, raw_len, file, out, &extent_name);
    if result.is_err() {
        // Best effort: a half-written VMDK must not be mistaken for a good one.
        let _ = fs::remove_file(out);
    }
    result
}

fn raw_error(raw: &Path, reason: impl Into<String>) -> Error {
    Error::RawImage {
        path: raw.to_path_buf(),
        reason: reason.into(),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The file name written into the descriptor's extent line.
fn extent_name(out: &Path) -> Result<String> {
    let invalid = |reason: &str| Error::InvalidParam {
        field: "VMDK file name",
        reason: format!("{}: {reason}", out.display()),
    };
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| invalid("not a UTF-8 file name"))?;
    if name.len() > 255 || name.chars().any(|c| c.is_control() || c == '"') {
        return Err(invalid(
            "must be at most 255 bytes without quotes or control characters",
        ));
    }
    Ok(name.to_owned())
}

fn write_stream(
    input: &mut File,
    raw: &Path,
    raw_len: u64,
    file: File,
    out: &Path,
    extent_name: &str,
) -> Result<VmdkInfo> {
    let capacity_sectors = raw_len.div_ceil(SECTOR);
    let capacity_bytes = capacity_sectors * SECTOR;
    let grains = capacity_sectors.div_ceil(GRAIN_SECTORS);
    let gd_entries = usize::try_from(grains.div_ceil(GTES_PER_GT as u64))
        .map_err(|_| raw_error(raw, "is too large for a VMDK"))?;
    if grains > u64::from(u32::MAX) {
        return Err(raw_error(raw, "is too large for a VMDK"));
    }

    // The descriptor has a fixed length (the content ID is fixed-width hex), so a
    // provisional one reserves its place; the real one is written at the end.
    let descriptor_len = descriptor(0, &[0; 16], capacity_sectors, extent_name).len();
    let descriptor_sectors = (descriptor_len as u64).div_ceil(SECTOR);
    if DESCRIPTOR_OFFSET + descriptor_sectors > OVERHEAD_SECTORS {
        return Err(Error::InvalidParam {
            field: "VMDK file name",
            reason: "descriptor does not fit before the first grain".into(),
        });
    }
    let header = Header {
        capacity_sectors,
        descriptor_sectors,
    };

    let mut w = SectorWriter::new(file, out);
    w.write(&header.encode(GD_AT_END))?;
    w.pad_to_sector(OVERHEAD_SECTORS)?;

    let threads = thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .clamp(1, MAX_THREADS);
    let batch_grains = threads * GRAINS_PER_THREAD;
    let mut compressors: Vec<Compress> = (0..threads)
        .map(|_| Compress::new(Compression::new(COMPRESSION_LEVEL), true))
        .collect();
    let mut buf = vec![0u8; batch_grains * GRAIN_BYTES];
    let mut reader = input.take(raw_len);

    let mut content_id = digest::Context::new(&digest::SHA256);
    content_id.update(&capacity_sectors.to_le_bytes());
    let mut gd = vec![0u32; gd_entries];
    let mut gt = GrainTable::new();
    let mut populated_bytes = 0u64;
    let mut next_grain = 0u64;
    let mut read_total = 0u64;

    loop {
        let filled = read_full(&mut reader, &mut buf).map_err(Error::io("read", raw))?;
        if filled == 0 {
            break;
        }
        read_total += filled as u64;
        // Sector padding of the image's last, partial sector.
        let padded = filled.next_multiple_of(SECTOR_BYTES);
        buf[filled..padded].fill(0);
        let batch = &buf[..padded];

        let records = compress_batch(batch, next_grain, &mut compressors)
            .map_err(Error::io("compress", raw))?;
        for (i, record) in records.into_iter().enumerate() {
            let grain = next_grain + i as u64;
            let table = usize::try_from(grain / GTES_PER_GT as u64)
                .map_err(|_| raw_error(raw, "is too large for a VMDK"))?;
            if table != gt.index {
                gt.flush(&mut w, &mut gd)?;
                gt.start(table);
            }
            if let Some(record) = record {
                gt.entries[(grain % GTES_PER_GT as u64) as usize] = w.sector_u32()?;
                gt.used = true;
                content_id.update(&record);
                w.write(&record)?;
                let grain_start = grain * GRAIN_BYTES as u64;
                populated_bytes += (capacity_bytes - grain_start).min(GRAIN_BYTES as u64);
            }
        }
        next_grain += padded.div_ceil(GRAIN_BYTES) as u64;
        if filled < buf.len() {
            break;
        }
    }
    if read_total != raw_len || next_grain != grains {
        return Err(raw_error(raw, "changed size while it was read"));
    }
    gt.flush(&mut w, &mut gd)?;

    // Grain directory, footer, end of stream.
    let gd_bytes: Vec<u8> = gd.iter().flat_map(|e| e.to_le_bytes()).collect();
    let gd_sectors = (gd_bytes.len() as u64).div_ceil(SECTOR);
    w.write(&marker(gd_sectors, MARKER_GD))?;
    let gd_offset = w.sector();
    w.write(&gd_bytes)?;
    w.pad_to_sector(gd_offset + gd_sectors)?;
    w.write(&marker(1, MARKER_FOOTER))?;
    w.write(&header.encode(gd_offset))?;
    w.write(&marker(0, MARKER_EOS))?;
    let file_size = w.bytes;

    let id = content_id.finish();
    let id = id.as_ref();
    let mut cid = u32::from_le_bytes([id[0], id[1], id[2], id[3]]);
    if cid >= 0xffff_fffe {
        // ffffffff means "no parent" and fffffffe "disk of zeros" to some readers.
        cid = 0x7fff_fffe;
    }
    let mut long_id = [0u8; 16];
    long_id[..12].copy_from_slice(&id[4..16]);
    long_id[12..].copy_from_slice(&cid.to_be_bytes());
    let text = descriptor(cid, &long_id, capacity_sectors, extent_name);
    debug_assert_eq!(text.len(), descriptor_len);
    w.finish_with_descriptor(DESCRIPTOR_OFFSET * SECTOR, text.as_bytes())?;

    Ok(VmdkInfo {
        capacity_bytes,
        file_size,
        populated_bytes,
    })
}

/// The fields of the sparse extent header that vary; the rest are constants.
struct Header {
    capacity_sectors: u64,
    descriptor_sectors: u64,
}

impl Header {
    /// The 512-byte on-disk header (little-endian, packed).
    fn encode(&self, gd_offset: u64) -> [u8; SECTOR_BYTES] {
        let mut h = [0u8; SECTOR_BYTES];
        h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&VERSION.to_le_bytes());
        let flags = FLAG_VALID_NEWLINE_DETECTION | FLAG_COMPRESSED | FLAG_MARKERS;
        h[8..12].copy_from_slice(&flags.to_le_bytes());
        h[12..20].copy_from_slice(&self.capacity_sectors.to_le_bytes());
        h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
        h[28..36].copy_from_slice(&DESCRIPTOR_OFFSET.to_le_bytes());
        h[36..44].copy_from_slice(&self.descriptor_sectors.to_le_bytes());
        h[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
        // 48..56 rgdOffset: no redundant directory in a stream.
        h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
        h[64..72].copy_from_slice(&OVERHEAD_SECTORS.to_le_bytes());
        // 72 uncleanShutdown = 0; 73..77 the newline-detection characters.
        h[73..77].copy_from_slice(b"\n \r\n");
        h[77..79].copy_from_slice(&COMPRESS_DEFLATE.to_le_bytes());
        h
    }
}

/// The embedded text descriptor, NUL-padded to whole sectors.
fn descriptor(cid: u32, long_id: &[u8; 16], capacity_sectors: u64, extent_name: &str) -> String {
    // 255 heads x 63 sectors, as VMware uses for any disk past a few GB.
    let cylinders = capacity_sectors.div_ceil(255 * 63).min(65535);
    let long_id = hex::encode(long_id);
    let mut text = format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         encoding=\"UTF-8\"\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity_sectors} SPARSE \"{extent_name}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.adapterType = \"lsilogic\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"255\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.longContentID = \"{long_id}\"\n\
         ddb.virtualHWVersion = \"4\"\n"
    );
    let padded = text.len().next_multiple_of(SECTOR_BYTES);
    text.extend(std::iter::repeat_n('\0', padded - text.len()));
    text
}

/// A metadata marker sector: numSectors, size 0, type, zero padding.
fn marker(num_sectors: u64, kind: u32) -> [u8; SECTOR_BYTES] {
    let mut m = [0u8; SECTOR_BYTES];
    m[0..8].copy_from_slice(&num_sectors.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// The grain table being filled: one per run of 512 grains.
struct GrainTable {
    index: usize,
    entries: [u32; GTES_PER_GT],
    used: bool,
}

impl GrainTable {
    fn new() -> Self {
        GrainTable {
            index: 0,
            entries: [0; GTES_PER_GT],
            used: false,
        }
    }

    fn start(&mut self, index: usize) {
        self.index = index;
        self.entries = [0; GTES_PER_GT];
        self.used = false;
    }

    /// Writes the table (if any of its grains was written) and records it in the directory.
    fn flush(&mut self, w: &mut SectorWriter, gd: &mut [u32]) -> Result<()> {
        if !self.used {
            return Ok(());
        }
        w.write(&marker(GT_SECTORS, MARKER_GT))?;
        gd[self.index] = w.sector_u32()?;
        let bytes: Vec<u8> = self.entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        w.write(&bytes)?;
        self.used = false;
        Ok(())
    }
}

/// Compresses the grains of one batch; `None` for an all-zero grain.
///
/// Grain `i` of the batch goes to compressor `i % compressors.len()`, each on its
/// own thread, so zero and data grains spread evenly; the result is in grain
/// order whatever the thread count. Compressors are reused across grains and
/// batches: a fresh deflate state per grain costs more in page faults than the
/// compression itself.
fn compress_batch(
    batch: &[u8],
    first_grain: u64,
    compressors: &mut [Compress],
) -> io::Result<Vec<Option<Vec<u8>>>> {
    let grains: Vec<&[u8]> = batch.chunks(GRAIN_BYTES).collect();
    let count = grains.len();
    let lba = |i: usize| (first_grain + i as u64) * GRAIN_SECTORS;
    let threads = compressors.len().min(count);
    if threads <= 1 {
        let Some(z) = compressors.first_mut() else {
            return Err(io::Error::other("no compressor"));
        };
        return (0..count)
            .map(|i| grain_record(z, lba(i), grains[i]))
            .collect();
    }
    let mut out: Vec<Option<Vec<u8>>> = vec![None; count];
    thread::scope(|scope| {
        let workers: Vec<_> = compressors[..threads]
            .iter_mut()
            .enumerate()
            .map(|(t, z)| {
                let grains = &grains;
                scope.spawn(move || {
                    (t..count)
                        .step_by(threads)
                        .map(|i| grain_record(z, lba(i), grains[i]).map(|r| (i, r)))
                        .collect::<io::Result<Vec<_>>>()
                })
            })
            .collect();
        for worker in workers {
            let done = match worker.join() {
                Ok(done) => done?,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            for (i, r) in done {
                out[i] = r;
            }
        }
        Ok(out)
    })
}

/// A grain marker plus the zlib (RFC 1950) stream of `data`, padded to a sector.
fn grain_record(z: &mut Compress, lba: u64, data: &[u8]) -> io::Result<Option<Vec<u8>>> {
    if is_zero(data) {
        return Ok(None);
    }
    z.reset();
    // Room for incompressible data (deflate adds 5 bytes per 16 KiB stored
    // block, zlib 6); grown below if ever short.
    let mut buf = Vec::with_capacity(GRAIN_MARKER_BYTES + data.len() + data.len() / 256 + 64);
    buf.extend_from_slice(&lba.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    let start = z.total_in();
    loop {
        let consumed = usize::try_from(z.total_in() - start).map_err(io::Error::other)?;
        match z
            .compress_vec(&data[consumed..], &mut buf, FlushCompress::Finish)
            .map_err(io::Error::other)?
        {
            Status::StreamEnd => break,
            Status::Ok | Status::BufError => buf.reserve(SECTOR_BYTES * 8),
        }
    }
    let size = u32::try_from(buf.len() - GRAIN_MARKER_BYTES)
        .map_err(|_| io::Error::other("compressed grain larger than 4 GiB"))?;
    buf[8..12].copy_from_slice(&size.to_le_bytes());
    buf.resize(buf.len().next_multiple_of(SECTOR_BYTES), 0);
    Ok(Some(buf))
}

fn is_zero(data: &[u8]) -> bool {
    // OR-folding fixed-size chunks vectorises; `all(|b| b == 0)` does not.
    data.chunks(SECTOR_BYTES)
        .all(|chunk| chunk.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Fills `buf` unless the reader ends first; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The output file, with the position kept in bytes for sector offsets.
struct SectorWriter<'a> {
    inner: BufWriter<File>,
    path: &'a Path,
    bytes: u64,
}

impl<'a> SectorWriter<'a> {
    fn new(file: File, path: &'a Path) -> Self {
        SectorWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            path,
            bytes: 0,
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.inner
            .write_all(data)
            .map_err(Error::io("write", self.path))?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    fn sector(&self) -> u64 {
        debug_assert_eq!(self.bytes % SECTOR, 0, "records are sector-aligned");
        self.bytes / SECTOR
    }

    /// The current sector as a grain-table or directory entry (32 bits: files up to 2 TiB).
    fn sector_u32(&self) -> Result<u32> {
        u32::try_from(self.sector()).map_err(|_| Error::InvalidParam {
            field: "VMDK size",
            reason: format!("{} would exceed 2 TiB", self.path.display()),
        })
    }

    fn pad_to_sector(&mut self, sector: u64) -> Result<()> {
        let target = sector * SECTOR;
        while self.bytes < target {
            let n = (target - self.bytes).min(SECTOR) as usize;
            self.write(&[0u8; SECTOR_BYTES][..n])?;
        }
        Ok(())
    }

    fn finish_with_descriptor(self, offset: u64, descriptor: &[u8]) -> Result<()> {
        let path = self.path;
        let mut file = self
            .inner
            .into_inner()
            .map_err(|e| Error::io("write", path)(e.into_error()))?;
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.write_all(descriptor))
            .and_then(|()| file.flush())
            .map_err(Error::io("write", path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_matches_the_specification() {
        let h = Header {
            capacity_sectors: 0x1234,
            descriptor_sectors: 2,
        }
        .encode(GD_AT_END);
        assert_eq!(&h[0..4], b"KDMV");
        assert_eq!(u32::from_le_bytes([h[8], h[9], h[10], h[11]]), 0x0003_0001);
        assert_eq!(
            u64::from_le_bytes(h[56..64].try_into().expect("8 bytes")),
            u64::MAX
        );
        assert_eq!(&h[73..77], b"\n \r\n");
        assert_eq!(u16::from_le_bytes([h[77], h[78]]), 1);
        assert!(h[79..].iter().all(|&b| b == 0));
    }

    #[test]
    fn descriptor_length_does_not_depend_on_the_content_id() {
        let a = descriptor(0, &[0; 16], 4096, "disk.vmdk");
        let b = descriptor(0xdead_beef, &[0xff; 16], 4096, "disk.vmdk");
        assert_eq!(a.len(), b.len());
        assert_eq!(a.len() % SECTOR_BYTES, 0);
    }

    #[test]
    fn zero_grains_have_no_record() {
        let mut z = Compress::new(Compression::new(COMPRESSION_LEVEL), true);
        assert!(
            grain_record(&mut z, 0, &[0; GRAIN_BYTES])
                .expect("compress")
                .is_none()
        );
        let mut data = vec![0; GRAIN_BYTES];
        data[GRAIN_BYTES - 1] = 1;
        let record = grain_record(&mut z, 128, &data)
            .expect("compress")
            .expect("record");
        assert_eq!(record.len() % SECTOR_BYTES, 0);
        assert_eq!(
            u64::from_le_bytes(record[0..8].try_into().expect("8 bytes")),
            128
        );
        // RFC 1950 header: deflate, 32 KiB window, check bits valid.
        assert_eq!(record[12] & 0x0f, 8);
        assert_eq!(u16::from_be_bytes([record[12], record[13]]) % 31, 0);
    }

    #[test]
    fn batches_are_identical_whatever_the_thread_count() {
        let mut batch = vec![0u8; 7 * GRAIN_BYTES + 3 * SECTOR_BYTES];
        for (i, b) in batch.iter_mut().enumerate() {
            if (i / GRAIN_BYTES) % 2 == 1 || i > 7 * GRAIN_BYTES {
                *b = (i % 251) as u8;
            }
        }
        let compressors = |n| -> Vec<Compress> {
            (0..n)
                .map(|_| Compress::new(Compression::new(COMPRESSION_LEVEL), true))
                .collect()
        };
        let one = compress_batch(&batch, 10, &mut compressors(1)).expect("compress");
        let three = compress_batch(&batch, 10, &mut compressors(3)).expect("compress");
        // Reused compressors give the same bytes as fresh ones.
        let mut reused = compressors(3);
        compress_batch(&batch, 0, &mut reused).expect("compress");
        assert_eq!(
            compress_batch(&batch, 10, &mut reused).expect("compress"),
            three
        );
        assert_eq!(one, three);
        assert_eq!(one.len(), 8);
        assert!(one[0].is_none() && one[1].is_some() && one[7].is_some());
    }
}
