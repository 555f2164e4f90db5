//! The Hyper-V ISO (spec §17): a hybrid ISO that boots with BIOS (Hyper-V
//! Generation 1, ISOLINUX) and UEFI (Generation 2, shim and Debian's signed
//! GRUB), into a live installer that writes the appliance's disk image onto
//! the VM's first empty disk and reboots into it.
//!
//! The installer system itself is the image's `installer` profile; this
//! crate lays out the ISO around it: the live kernel, initrd and squashfs,
//! the compressed disk image, the two boot menus, and the El Torito images,
//! assembled with xorriso. No mounts and no loop devices are needed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{0}")]
    Input(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(io(format!("starting {shown}")))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: shown,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// The EFI loaders for the UEFI boot: shim (Microsoft-signed) and Debian's
/// signed GRUB for CDs (`gcdx64.efi.signed`), which finds the ISO by its
/// `/.disk/info`.
#[derive(Debug, Clone)]
pub struct EfiLoaders {
    pub shim: PathBuf,
    pub grub: PathBuf,
}

/// Everything the ISO is made of.
#[derive(Debug, Clone)]
pub struct IsoInputs {
    /// The installer system (the image's `installer` profile), with its
    /// kernel and live-boot initrd in `boot/`.
    pub tree: PathBuf,
    /// The appliance disk image the installer writes.
    pub disk: PathBuf,
    pub version: String,
    /// The appliance's kernel command line (console, interface names).
    pub cmdline: String,
    pub efi: EfiLoaders,
    /// Scratch space.
    pub work: PathBuf,
    pub out: PathBuf,
}

/// Files from the build machine's syslinux/isolinux packages.
const ISOLINUX_BIN: &str = "/usr/lib/ISOLINUX/isolinux.bin";
const ISOHYBRID_MBR: &str = "/usr/lib/ISOLINUX/isohdpfx.bin";
const LDLINUX_C32: &str = "/usr/lib/syslinux/modules/bios/ldlinux.c32";

/// The live system's kernel command line: live-boot, the appliance's
/// consoles (VGA last, so the operator's prompt is there), and the switch
/// that starts the installer.
pub fn live_cmdline(cmdline: &str) -> String {
    let base: Vec<&str> = cmdline
        .split_whitespace()
        .filter(|w| !w.starts_with("console="))
        .collect();
    format!(
        "boot=live components {} console=ttyS0,115200 console=tty0 custos.install",
        base.join(" ")
    )
}

/// ISOLINUX's menu (BIOS).
pub fn render_isolinux(version: &str, cmdline: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "SERIAL 0 115200");
    let _ = writeln!(s, "DEFAULT install");
    let _ = writeln!(s, "PROMPT 1");
    let _ = writeln!(s, "TIMEOUT 50");
    let _ = writeln!(
        s,
        "SAY Custos {version}: 'install' (default, in 5 s) writes the appliance onto the first empty disk;"
    );
    let _ = writeln!(s, "SAY 'disk' boots the first hard disk.");
    let _ = writeln!(s, "LABEL install");
    let _ = writeln!(s, "  LINUX /live/vmlinuz");
    let _ = writeln!(s, "  INITRD /live/initrd.img");
    let _ = writeln!(s, "  APPEND {}", live_cmdline(cmdline));
    let _ = writeln!(s, "LABEL disk");
    let _ = writeln!(s, "  LOCALBOOT 0x80");
    s
}

/// GRUB's menu (UEFI).
pub fn render_grub(version: &str, cmdline: &str) -> String {
    format!(
        "serial --unit=0 --speed=115200\n\
         terminal_input console serial\n\
         terminal_output console serial\n\
         set default=0\n\
         set timeout=5\n\
         menuentry 'Install Custos {version} onto the first empty disk' {{\n\
         \x20   linux /live/vmlinuz {}\n\
         \x20   initrd /live/initrd.img\n\
         }}\n\
         menuentry 'Boot from the first hard disk' {{\n\
         \x20   exit\n\
         }}\n",
        live_cmdline(cmdline)
    )
}

/// The small GRUB configuration inside the EFI image: find the ISO and hand
/// over to its menu.
pub fn render_grub_stub() -> String {
    "search --no-floppy --file --set=root /.disk/info\nset prefix=($root)/boot/grub\nconfigfile $prefix/grub.cfg\n".to_owned()
}

fn newest(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(format!("reading {}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| Error::Input(format!("no {prefix}* in {}", dir.display())))
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
    }
    std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(d) = to.parent() {
        std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
    }
    std::fs::copy(from, to).map_err(io(format!("copying {}", from.display())))?;
    Ok(())
}

/// Builds the ISO; returns its size in bytes.
pub fn build_iso(i: &IsoInputs) -> Result<u64> {
    for f in [ISOLINUX_BIN, ISOHYBRID_MBR, LDLINUX_C32] {
        if !Path::new(f).exists() {
            return Err(Error::Input(format!(
                "{f} is missing: apt-get install isolinux syslinux-common"
            )));
        }
    }
    let stage = i.work.join("iso");
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(io("clearing the ISO staging folder"))?;
    }
    std::fs::create_dir_all(stage.join("live")).map_err(io("creating the ISO staging folder"))?;

    copy(
        &newest(&i.tree.join("boot"), "vmlinuz-")?,
        &stage.join("live/vmlinuz"),
    )?;
    copy(
        &newest(&i.tree.join("boot"), "initrd.img-")?,
        &stage.join("live/initrd.img"),
    )?;
    run(Command::new("mksquashfs")
        .arg(&i.tree)
        .arg(stage.join("live/filesystem.squashfs"))
        .args([
            "-noappend",
            "-quiet",
            "-comp",
            "zstd",
            "-Xcompression-level",
            "6",
            "-b",
            "1M",
            "-e",
            "boot",
        ]))?;

    // The appliance disk, compressed, and its exact size for the installer's check.
    std::fs::create_dir_all(stage.join("custos")).map_err(io("creating custos/"))?;
    run(Command::new("zstd")
        .args(["-q", "-T0", "-6", "-f"])
        .arg(&i.disk)
        .arg("-o")
        .arg(stage.join("custos/disk.raw.zst")))?;
    let disk_size = std::fs::metadata(&i.disk)
        .map_err(io("the disk image"))?
        .len();
    write(&stage.join("custos/disk.size"), &format!("{disk_size}\n"))?;
    write(
        &stage.join(".disk/info"),
        &format!("Custos {} installer\n", i.version),
    )?;

    // BIOS: ISOLINUX.
    copy(
        Path::new(ISOLINUX_BIN),
        &stage.join("isolinux/isolinux.bin"),
    )?;
    copy(Path::new(LDLINUX_C32), &stage.join("isolinux/ldlinux.c32"))?;
    write(
        &stage.join("isolinux/isolinux.cfg"),
        &render_isolinux(&i.version, &i.cmdline),
    )?;

    // UEFI: shim and signed GRUB in a small FAT image; GRUB reads the menu from the ISO.
    write(
        &stage.join("boot/grub/grub.cfg"),
        &render_grub(&i.version, &i.cmdline),
    )?;
    let efi = stage.join("boot/efiboot.img");
    let stub = i.work.join("grub-stub.cfg");
    write(&stub, &render_grub_stub())?;
    let loaders = [&i.efi.shim, &i.efi.grub]
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .map(|m| m.len())
                .map_err(io(format!("{}", p.display())))
        })
        .sum::<Result<u64>>()?;
    let kib = (loaders / 1024 + 1024).div_ceil(1024) * 1024;
    run(Command::new("mkfs.vfat")
        .args(["-C", "-n", "CUSTOS_EFI"])
        .arg(&efi)
        .arg(kib.to_string()))?;
    let img = efi.display().to_string();
    run(Command::new("mmd").args(["-i", &img, "::/EFI", "::/EFI/BOOT", "::/EFI/debian"]))?;
    run(Command::new("mcopy")
        .args(["-i", &img])
        .arg(&i.efi.shim)
        .arg("::/EFI/BOOT/BOOTX64.EFI"))?;
    run(Command::new("mcopy")
        .args(["-i", &img])
        .arg(&i.efi.grub)
        .arg("::/EFI/BOOT/grubx64.efi"))?;
    run(Command::new("mcopy")
        .args(["-i", &img])
        .arg(&stub)
        .arg("::/EFI/debian/grub.cfg"))?;

    run(Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(&i.out)
        .args(["-V", "CUSTOS", "-r", "-J", "-joliet-long"])
        .args(["-isohybrid-mbr", ISOHYBRID_MBR])
        .args(["-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat"])
        .args(["-no-emul-boot", "-boot-load-size", "4", "-boot-info-table"])
        .args([
            "-eltorito-alt-boot",
            "-e",
            "boot/efiboot.img",
            "-no-emul-boot",
            "-isohybrid-gpt-basdat",
        ])
        .arg(&stage))?;
    std::fs::remove_dir_all(&stage).map_err(io("clearing the ISO staging folder"))?;
    Ok(std::fs::metadata(&i.out).map_err(io("the ISO"))?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn menus_boot_the_installer_with_the_appliance_consoles() {
        let cmdline = "net.ifnames=0 console=tty0 console=ttyS0,115200 quiet";
        let live = live_cmdline(cmdline);
        assert_eq!(
            live,
            "boot=live components net.ifnames=0 quiet console=ttyS0,115200 console=tty0 custos.install"
        );
        let iso = render_isolinux("1.2.3", cmdline);
        assert!(
            iso.contains("DEFAULT install")
                && iso.contains(&format!("APPEND {live}"))
                && iso.contains("LOCALBOOT 0x80")
        );
        let grub = render_grub("1.2.3", cmdline);
        assert!(
            grub.contains("Install Custos 1.2.3")
                && grub.contains(&format!("linux /live/vmlinuz {live}"))
        );
        assert!(render_grub_stub().contains("/.disk/info"));
    }
}
