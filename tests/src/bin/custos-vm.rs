//! `cargo xtask vm [--iso]`: boots the built appliance in QEMU with its ports
//! forwarded to fixed host ports, prints where to connect, and powers it off
//! cleanly on Ctrl-C. State is kept in target/vm between runs.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tests::vm::{Boot, Firmware, Vm};

#[derive(Parser)]
struct Args {
    /// Boot the Hyper-V ISO with an empty disk (it installs, then reboots
    /// into the disk) instead of the OVA's disk.
    #[arg(long)]
    iso: bool,
    /// Legacy BIOS instead of UEFI.
    #[arg(long)]
    bios: bool,
    /// Start from a fresh disk (forget the state of earlier runs).
    #[arg(long)]
    fresh: bool,
    /// The folder holding the images.
    #[arg(long, default_value = "target/dist")]
    dist: PathBuf,
}

fn newest(dir: &std::path::Path, ext: &str) -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: run cargo xtask dist first", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    found.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    found
        .pop()
        .with_context(|| format!("no .{ext} in {}: run cargo xtask dist first", dir.display()))
}

fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    let st = cmd.status().with_context(|| format!("{cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let work = PathBuf::from("target/vm");
    std::fs::create_dir_all(&work)?;
    let disk = work.join(if args.iso {
        "installed.qcow2"
    } else {
        "disk.qcow2"
    });
    if args.fresh || !disk.exists() {
        let _ = std::fs::remove_file(&disk);
        if args.iso {
            sh(Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&disk)
                .arg("8G"))?;
        } else {
            let ova = newest(&args.dist, "ova")?;
            sh(Command::new("tar")
                .arg("-xf")
                .arg(&ova)
                .arg("-C")
                .arg(&work))?;
            let vmdk = newest(&work, "vmdk")?;
            sh(Command::new("qemu-img")
                .args(["convert", "-q", "-O", "qcow2"])
                .arg(&vmdk)
                .arg(&disk))?;
            std::fs::remove_file(&vmdk)?;
        }
    }
    let firmware = if args.bios {
        Firmware::Bios
    } else {
        Firmware::Uefi
    };
    let cdrom = if args.iso {
        Some(newest(&args.dist, "iso")?)
    } else {
        None
    };
    let boot = Boot {
        firmware,
        disk: disk.clone(),
        disk_format: "qcow2",
        snapshot: false,
        cdrom,
        memory_mb: 2048,
        fixed_ports: true,
        work: work.clone(),
        // A vTPM when swtpm is installed, its state kept beside the disk, as
        // vSphere and Hyper-V keep one per VM: the master key is sealed to it.
        tpm: tests::vm::swtpm_available().then(|| work.join("tpm")),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::SeqCst)).context("Ctrl-C handler")?;

    let mut vm = Vm::start(&boot)?;
    println!(
        "booting ({}, {:?}); serial console in {}",
        vm.accel,
        firmware,
        vm.serial.display()
    );
    if args.iso {
        println!("installing from the ISO; the VM restarts into the disk when done");
        vm.wait_exit(Duration::from_secs(1800))?;
        vm = Vm::start(&Boot {
            cdrom: None,
            ..boot
        })?;
    }
    let took = vm.wait_ready(Duration::from_secs(1200))?;
    println!("ready after {:.0} s. Connect to:", took.as_secs_f64());
    println!(
        "  web console and API  https://127.0.0.1:{}/  (and :{})",
        vm.port("web"),
        vm.port("web-alt")
    );
    println!(
        "  agent enrolment      127.0.0.1:{} (RSA), 127.0.0.1:{} (Suite B)",
        vm.port("enrol"),
        vm.port("enrol-ec")
    );
    println!(
        "  key service          127.0.0.1:{} (RSA), 127.0.0.1:{} (Suite B)",
        vm.port("keys"),
        vm.port("keys-ec")
    );
    println!(
        "  SSH admin CLI        ssh -p {} cliadmin@127.0.0.1",
        vm.port("ssh")
    );
    println!("  SNMP                 udp 127.0.0.1:{}", vm.port("snmp"));
    println!("Ctrl-C powers it off cleanly.");
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("powering off");
    vm.power_off(Duration::from_secs(120))?;
    Ok(())
}
