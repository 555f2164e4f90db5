//! `cargo xtask dist`: the release binaries, the system tree, the disk, and
//! from it the OVA (VMware) and the ISO (Hyper-V). Each artefact is printed
//! with its size at the end.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use xshell::{Shell, cmd};

use crate::image::{self, Definition, Profile};

/// Debian packages the image build runs: (command or file, packages).
/// What the QEMU smoke tests and `cargo xtask vm` run. Debian 12's
/// qemu-system-x86 needs the qemu-utils of the same release (the machines
/// may carry a newer backport).
pub const SMOKE_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86 qemu-utils/bookworm"),
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf"),
    ("ssh", "openssh-client"),
];

pub const IMAGE_PACKAGES: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("mkfs.ext4", "e2fsprogs"),
    ("e2fsck", "e2fsprogs"),
    ("sfdisk", "fdisk"),
    ("mkfs.vfat", "dosfstools"),
    ("mcopy", "mtools"),
    ("syslinux", "syslinux"),
    ("/usr/lib/SYSLINUX/gptmbr.bin", "syslinux-common"),
    ("qemu-img", "qemu-utils"),
    ("zstd", "zstd"),
    ("mksquashfs", "squashfs-tools"),
    ("xorriso", "xorriso"),
    ("/usr/lib/ISOLINUX/isolinux.bin", "isolinux"),
    ("dpkg-deb", "dpkg"),
];

/// shim and Debian's signed GRUB for the ISO's UEFI boot, downloaded once
/// from the machine's apt sources and unpacked without installing them.
fn efi_loaders(sh: &Shell, cache: &Path) -> Result<hyperv::EfiLoaders> {
    let dir = cache.join("efi");
    let loaders = hyperv::EfiLoaders {
        shim: dir.join("shimx64.efi.signed"),
        grub: dir.join("gcdx64.efi.signed"),
    };
    if loaders.shim.exists() && loaders.grub.exists() {
        return Ok(loaders);
    }
    let tmp = cache.join("efi.tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    eprintln!("dist: fetching shim-signed and grub-efi-amd64-signed");
    let download = |sh: &Shell| {
        cmd!(sh, "apt-get download shim-signed grub-efi-amd64-signed")
            .quiet()
            .run()
    };
    {
        let _d = sh.push_dir(&tmp);
        if download(sh).is_err() {
            cmd!(sh, "apt-get update -q")
                .run()
                .context("apt-get update")?;
            download(sh).context("apt-get download shim-signed grub-efi-amd64-signed")?;
        }
        for deb in fs::read_dir(&tmp)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        {
            cmd!(sh, "dpkg-deb -x {deb} unpacked").run()?;
        }
    }
    fs::create_dir_all(&dir)?;
    fs::copy(
        tmp.join("unpacked/usr/lib/shim/shimx64.efi.signed"),
        &loaders.shim,
    )
    .context("shimx64.efi.signed in shim-signed")?;
    fs::copy(
        tmp.join("unpacked/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed"),
        &loaders.grub,
    )
    .context("gcdx64.efi.signed in grub-efi-amd64-signed")?;
    fs::remove_dir_all(&tmp)?;
    Ok(loaders)
}

/// Builds the images; returns the folder holding them.
pub fn dist(
    sh: &Shell,
    root: &Path,
    target: &Path,
    profile: Option<&str>,
    build: bool,
) -> Result<PathBuf> {
    let started = Instant::now();
    let def = Definition::load(&root.join("image"))?;
    let suffix = profile.map(|p| format!("-{p}")).unwrap_or_default();
    let profile = profile.map(|p| Profile::load(&def, p)).transpose()?;
    let version = image::version();

    let cargo = crate::cargo();
    let units = [
        "custos-keyd",
        "custos-backupd",
        "custos-notifyd",
        "custos-snmpd",
    ];
    // Units whose issues have landed join the image as they appear.
    let optional = ["custos-cli"];
    let mut packages: Vec<&str> = units.to_vec();
    for o in optional {
        if root.join("services").join(o).join("Cargo.toml").exists() {
            packages.push(o);
        }
    }
    let pflags: Vec<String> = packages
        .iter()
        .flat_map(|p| ["-p".to_string(), p.to_string()])
        .collect();
    if build {
        eprintln!("dist: building the release binaries");
        cmd!(sh, "{cargo} build --release {pflags...}")
            .run()
            .context("building the release binaries")?;
    }
    let mut binaries: Vec<PathBuf> = packages
        .iter()
        .map(|p| target.join("release").join(p))
        .collect();
    if !build {
        binaries.retain(|b| b.exists() || units.iter().any(|u| b.ends_with(u)));
    }

    let cache = target.join("image-cache");
    let work = target.join(format!("image{suffix}"));
    let base = image::base_tree(sh, &def, profile.as_ref(), &cache)?;
    let docs = [root.join("README.md"), root.join("ARCHITECTURE.md")];
    let tree = image::system_tree(sh, &def, &base, &work, &binaries, &docs, profile.as_ref())?;
    let disk = image::build_disk(sh, &def, &tree, &work)?;

    let dist = target.join("dist");
    fs::create_dir_all(&dist)?;
    let name = format!("custos-{version}{suffix}");
    eprintln!("dist: writing the stream-optimised VMDK");
    let vmdk = work.join(format!("{name}-disk1.vmdk"));
    let info = ova::write_stream_vmdk(&disk.path, &vmdk)?;
    let disk_file = vmdk
        .file_name()
        .context("vmdk name")?
        .to_string_lossy()
        .into_owned();
    let params = ova::OvfParams::custos("Custos project", version, &disk_file, &info);
    let ovf = ova::render_ovf(&params)?;
    let ova_path = dist.join(format!("{name}.ova"));
    ova::build_ova(&ova_path, &format!("{name}.ovf"), &ovf, &vmdk)?;
    fs::remove_file(&vmdk).ok();

    eprintln!("dist: building the installer system for the ISO");
    let installer = Profile::load(&def, "installer")?;
    let base_i = image::base_tree(sh, &def, Some(&installer), &cache)?;
    let work_i = target.join("image-installer");
    let tree_i = image::system_tree(
        sh,
        &def,
        &base_i,
        &work_i,
        &binaries,
        &docs,
        Some(&installer),
    )?;
    let efi = efi_loaders(sh, &cache)?;
    eprintln!("dist: writing the ISO");
    let iso_path = dist.join(format!("{name}.iso"));
    hyperv::build_iso(&hyperv::IsoInputs {
        tree: tree_i,
        disk: disk.path.clone(),
        version: version.to_owned(),
        cmdline: def.cmdline.clone(),
        efi,
        work: work_i,
        out: iso_path.clone(),
    })?;

    eprintln!("dist: done in {:.0} s", started.elapsed().as_secs_f64());
    for a in [&ova_path, &iso_path] {
        let size = fs::metadata(a)?.len();
        println!("{:>10.1} MiB  {}", size as f64 / 1048576.0, a.display());
    }
    Ok(dist)
}
