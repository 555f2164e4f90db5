//! Builds an OVA from a raw disk image and checks it, printing what each step
//! took: `cargo run --release -p ova --example make_ova -- DISK.raw OUT_DIR [VERSION]`.
//!
//! A manual check of the library on a real image (and the way its time and
//! memory were measured); the image build calls the library directly.

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use ova::{OvfParams, build_ova, render_ovf, verify_ova, write_stream_vmdk};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args_os().skip(1);
    let (Some(raw), Some(out_dir)) = (args.next(), args.next()) else {
        return Err("usage: make_ova DISK.raw OUT_DIR [VERSION]".into());
    };
    let version = args
        .next()
        .map(|v| v.into_string().map_err(|_| "VERSION is not UTF-8"))
        .transpose()?
        .unwrap_or_else(|| "0.0.0".into());
    let (raw, out_dir) = (PathBuf::from(raw), PathBuf::from(out_dir));

    let vmdk_name = format!("custos-{version}-disk1.vmdk");
    let vmdk = out_dir.join(&vmdk_name);
    let start = Instant::now();
    let info = write_stream_vmdk(&raw, &vmdk)?;
    println!(
        "VMDK {}: {info:?} in {:.2?}",
        vmdk.display(),
        start.elapsed()
    );

    let ovf = render_ovf(&OvfParams::custos("Custos", &version, &vmdk_name, &info))?;
    let ova = out_dir.join(format!("custos-{version}.ova"));
    let start = Instant::now();
    build_ova(&ova, &format!("custos-{version}.ovf"), &ovf, &vmdk)?;
    println!("OVA {} in {:.2?}", ova.display(), start.elapsed());

    let start = Instant::now();
    let members = verify_ova(&ova)?;
    println!("verified {members:?} in {:.2?}", start.elapsed());
    Ok(())
}
