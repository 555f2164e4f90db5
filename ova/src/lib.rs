//! Packaging of the Custos disk image for VMware: a raw disk becomes a
//! stream-optimised VMDK, an OVF descriptor is rendered from
//! `ova/template.ovf`, and both go into an OVA with a SHA-256 manifest.
//!
//! The three steps, in the order the image build calls them:
//!
//! 1. [`write_stream_vmdk`] writes the disk in VMware's canonical stream layout
//!    (header with the grain directory "at end", embedded descriptor, compressed
//!    grains with markers, grain tables, grain directory, footer, end-of-stream
//!    marker). This is the layout ovftool and vSphere's content library accept;
//!    `qemu-img`'s own streamOptimized output (directory at the start, padding
//!    after the end-of-stream marker) is not.
//! 2. [`render_ovf`] fills the template; it fails if a placeholder is left and
//!    XML-escapes every value.
//! 3. [`build_ova`] writes a ustar archive: the OVF, then the manifest, then the
//!    disk (the order the OVF specification requires). [`verify_ova`] checks an
//!    OVA the way a consumer would: member order, references, sizes and every
//!    manifest digest.
//!
//! The crate does no network I/O and needs no external tool; the tests use
//! `qemu-img` as an independent reader of the VMDKs it writes.

use std::io;
use std::path::PathBuf;

mod ovf;
mod package;
mod vmdk;

pub use ovf::{DiskController, Firmware, OvfParams, TEMPLATE, render_ovf, render_ovf_template};
pub use package::{build_ova, verify_ova};
pub use vmdk::{GRAIN_BYTES, VmdkInfo, write_stream_vmdk};

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while building or checking an OVA.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The raw disk image cannot be converted (empty, too large, changed while read).
    #[error("raw disk image {}: {reason}", path.display())]
    RawImage { path: PathBuf, reason: String },
    /// A template placeholder has no value (or is misspelt).
    #[error("OVF template: placeholder {{{{{name}}}}} has no value")]
    UnknownPlaceholder { name: String },
    /// A `{{` in the template is never closed.
    #[error("OVF template: placeholder opened at byte {offset} is not closed with }}}}")]
    UnterminatedPlaceholder { offset: usize },
    /// A parameter is outside what the OVF, the VMDK or ustar can carry.
    #[error("invalid {field}: {reason}")]
    InvalidParam { field: &'static str, reason: String },
    /// The OVA is malformed: member order, names, types, references or manifest.
    #[error("OVA {}: {reason}", path.display())]
    InvalidOva { path: PathBuf, reason: String },
    /// A member's SHA-256 differs from the manifest.
    #[error("OVA {}: SHA-256 of {member} is {actual}, the manifest says {expected}", path.display())]
    DigestMismatch {
        path: PathBuf,
        member: String,
        expected: String,
        actual: String,
    },
}

impl Error {
    fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}
