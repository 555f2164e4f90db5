//! Booting the built appliance in QEMU: the one place that knows the QEMU
//! command line, used by the smoke tests and by `cargo xtask vm`.
//!
//! KVM is used only when the host CPU exposes virtualisation (on the build
//! machines `/dev/kvm` exists but guests die in it), otherwise TCG.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Guest ports forwarded to the host (TCP), by name.
pub const GUEST_PORTS: [(&str, u16); 7] = [
    ("web", 443),
    ("web-alt", 8445),
    ("enrol", 8443),
    ("keys", 8444),
    ("enrol-ec", 8446),
    ("keys-ec", 8447),
    ("ssh", 22),
];
/// Guest UDP ports forwarded (SNMP, custos-snmpd).
pub const GUEST_UDP_PORTS: [(&str, u16); 1] = [("snmp", 161)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    Uefi,
    Bios,
}

/// How to boot: firmware, disks, optional CD.
#[derive(Debug, Clone)]
pub struct Boot {
    pub firmware: Firmware,
    /// The system disk; `snapshot` discards writes.
    pub disk: PathBuf,
    pub disk_format: &'static str,
    pub snapshot: bool,
    /// An ISO attached as a CD (Hyper-V-like install).
    pub cdrom: Option<PathBuf>,
    pub memory_mb: u32,
    /// Fixed host ports for the forwards (`cargo xtask vm`), or ephemeral ones.
    pub fixed_ports: bool,
    pub work: PathBuf,
    /// A TPM 2.0 (swtpm) whose state lives in this folder: the same folder
    /// on the next boot is the same TPM, as a VM's vTPM is.
    pub tpm: Option<PathBuf>,
}

/// Whether swtpm is there to give a VM a TPM.
pub fn swtpm_available() -> bool {
    Command::new("swtpm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts swtpm for one boot on `state`; it ends when QEMU disconnects.
fn start_swtpm(state: &Path, work: &Path) -> anyhow::Result<(Child, PathBuf)> {
    std::fs::create_dir_all(state)?;
    let sock = work.join("swtpm.sock");
    let _ = std::fs::remove_file(&sock);
    let mut child = Command::new("swtpm")
        .args(["socket", "--tpm2", "--terminate", "--tpmstate"])
        .arg(format!("dir={}", state.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", sock.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting swtpm (apt-get install swtpm)")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        if let Some(status) = child.try_wait()? {
            bail!("swtpm exited ({status}) before its socket appeared");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("swtpm did not open {} within 10 s", sock.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((child, sock))
}

pub fn kvm_usable() -> bool {
    if let Ok(a) = std::env::var("CUSTOS_QEMU_ACCEL") {
        return a == "kvm";
    }
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    Path::new("/dev/kvm").exists()
        && flags
            .lines()
            .any(|l| l.starts_with("flags") && (l.contains(" vmx") || l.contains(" svm")))
}

/// Free loopback ports, all different: every socket stays bound until all
/// are chosen (a port released at once can be handed out again, and QEMU
/// then fails to set up the second forwarding rule).
fn free_ports(tcp: usize, udp: usize) -> anyhow::Result<(Vec<u16>, Vec<u16>)> {
    let held_tcp = (0..tcp)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let held_udp = (0..udp)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let tcp = held_tcp
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()?;
    let udp = held_udp
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok((tcp, udp))
}

/// A running VM; powered off (hard) when dropped.
pub struct Vm {
    child: Option<Child>,
    swtpm: Option<Child>,
    pub serial: PathBuf,
    monitor: PathBuf,
    pub ports: Vec<(String, u16)>,
    pub accel: &'static str,
    pub started: Instant,
}

impl Vm {
    pub fn start(b: &Boot) -> anyhow::Result<Vm> {
        std::fs::create_dir_all(&b.work)?;
        let serial = b.work.join("serial.log");
        let monitor = b.work.join("monitor.sock");
        let _ = std::fs::remove_file(&serial);
        let _ = std::fs::remove_file(&monitor);
        let accel = if kvm_usable() { "kvm" } else { "tcg" };
        let mut ports = vec![];
        let mut fwd = String::from("user,id=n0");
        let (free_tcp, free_udp) = free_ports(GUEST_PORTS.len(), GUEST_UDP_PORTS.len())?;
        for (i, (name, guest)) in GUEST_PORTS.iter().enumerate() {
            let host = if b.fixed_ports {
                guest + 10000
            } else {
                free_tcp[i]
            };
            fwd.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
            ports.push((name.to_string(), host));
        }
        for (i, (name, guest)) in GUEST_UDP_PORTS.iter().enumerate() {
            let host = if b.fixed_ports {
                guest + 10000
            } else {
                free_udp[i]
            };
            fwd.push_str(&format!(",hostfwd=udp:127.0.0.1:{host}-:{guest}"));
            ports.push((name.to_string(), host));
        }
        let mut cmd = Command::new("qemu-system-x86_64");
        let machine = match b.firmware {
            Firmware::Uefi => format!("q35,accel={accel}"),
            Firmware::Bios => format!("pc,accel={accel}"),
        };
        cmd.args([
            "-machine",
            &machine,
            "-m",
            &b.memory_mb.to_string(),
            "-smp",
            "2",
        ])
        .args(["-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-monitor")
        .arg(format!("unix:{},server,nowait", monitor.display()))
        .args(["-netdev", &fwd, "-device", "virtio-net-pci,netdev=n0"])
        // eth1, the backup network: present and left alone.
        .args([
            "-netdev",
            "user,id=n1,restrict=on",
            "-device",
            "virtio-net-pci,netdev=n1",
        ]);
        if b.firmware == Firmware::Uefi {
            let vars = b.work.join("OVMF_VARS.fd");
            std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars)
                .context("OVMF (apt-get install ovmf)")?;
            cmd.arg("-drive")
                .arg("if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd");
            cmd.arg("-drive")
                .arg(format!("if=pflash,format=raw,file={}", vars.display()));
        }
        let snap = if b.snapshot { ",snapshot=on" } else { "" };
        cmd.arg("-drive").arg(format!(
            "file={},format={},if=none,id=d0{snap}",
            b.disk.display(),
            b.disk_format
        ));
        cmd.args(["-device", "virtio-blk-pci,drive=d0,bootindex=1"]);
        if let Some(iso) = &b.cdrom {
            cmd.arg("-drive").arg(format!(
                "file={},format=raw,if=none,id=cd0,media=cdrom,readonly=on",
                iso.display()
            ));
            // Hyper-V Generation 1 has an IDE DVD drive, Generation 2 a SCSI
            // one. (q35's AHCI would need a driver the appliance's cloud
            // kernel does not carry.)
            match b.firmware {
                Firmware::Bios => cmd.args(["-device", "ide-cd,drive=cd0,bootindex=0"]),
                Firmware::Uefi => cmd.args([
                    "-device",
                    "virtio-scsi-pci,id=scsi0",
                    "-device",
                    "scsi-cd,drive=cd0,bus=scsi0.0,bootindex=0",
                ]),
            };
        }
        let swtpm = match &b.tpm {
            Some(state) => {
                let (child, sock) = start_swtpm(state, &b.work)?;
                cmd.arg("-chardev")
                    .arg(format!("socket,id=chrtpm,path={}", sock.display()))
                    .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
                    .args(["-device", "tpm-tis,tpmdev=tpm0"]);
                Some(child)
            }
            None => None,
        };
        // Its own process group: a Ctrl-C in the terminal reaches the runner,
        // which powers the VM off cleanly, not QEMU, which would just die.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = match cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                if let Some(mut t) = swtpm {
                    let _ = t.kill();
                    let _ = t.wait();
                }
                return Err(e)
                    .context("starting qemu-system-x86_64 (apt-get install qemu-system-x86)");
            }
        };
        Ok(Vm {
            child: Some(child),
            swtpm,
            serial,
            monitor,
            ports,
            accel,
            started: Instant::now(),
        })
    }

    pub fn port(&self, name: &str) -> u16 {
        self.ports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("no port {name}"))
    }

    pub fn serial_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    /// Waits for `custos: ready` on the serial console. A failed unit (the
    /// readiness unit prints `custos: FAILED <unit>` and its journal) or QEMU
    /// exiting is an error carrying the console output.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.serial_text();
            if text.contains("custos: not ready") {
                let failed: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains("custos: FAILED") || l.contains("custos: journal"))
                    .collect();
                bail!("an appliance unit failed:\n{}", failed.join("\n"));
            }
            if text.contains("custos: ready") {
                return Ok(self.started.elapsed());
            }
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!(
                    "QEMU exited ({status}) before the appliance was ready; console:\n{}",
                    tail(&text, 60)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "no readiness line after {:?} ({}); console:\n{}",
                    timeout,
                    self.accel,
                    tail(&text, 60)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// ACPI power button, then waits for QEMU to exit (a clean shutdown).
    pub fn power_off(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.monitor_command("system_powerdown")?;
        if self.exited_within(timeout)? {
            return Ok(());
        }
        bail!("the VM did not power off within {timeout:?}")
    }

    /// Whether QEMU exits within `timeout`.
    fn exited_within(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        let Some(c) = self.child.as_mut() else {
            return Ok(true);
        };
        while Instant::now() < deadline {
            if c.try_wait()?.is_some() {
                self.child = None;
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(false)
    }

    /// Types on the VM's keyboard (the VGA console), through the monitor.
    pub fn type_text(&self, text: &str) -> anyhow::Result<()> {
        for c in text.chars() {
            let key = match c {
                '\n' => "ret".to_string(),
                ' ' => "spc".to_string(),
                c if c.is_ascii_lowercase() || c.is_ascii_digit() => c.to_string(),
                c if c.is_ascii_uppercase() => format!("shift-{}", c.to_ascii_lowercase()),
                other => bail!("cannot type {other:?}"),
            };
            self.monitor_command(&format!("sendkey {key}"))?;
        }
        Ok(())
    }

    /// Sends one command to the QEMU monitor, after its greeting, and waits
    /// for the next prompt (QEMU drops input from a client that leaves early).
    fn monitor_command(&self, command: &str) -> anyhow::Result<()> {
        use std::io::Read;
        let mut s = UnixStream::connect(&self.monitor).context("QEMU monitor")?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut seen = Vec::new();
        let mut buf = [0u8; 512];
        let mut prompts = 0;
        let mut sent = false;
        while prompts < 2 {
            let n = s.read(&mut buf).context("reading the QEMU monitor")?;
            if n == 0 {
                bail!("the QEMU monitor closed");
            }
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen).into_owned();
            prompts = text.matches("(qemu)").count();
            if prompts >= 1 && !sent {
                s.write_all(format!("{command}\n").as_bytes())?;
                sent = true;
            }
        }
        Ok(())
    }

    /// Waits for QEMU to exit by itself (the installer reboots with -no-reboot).
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<()> {
        if self.exited_within(timeout)? {
            return Ok(());
        }
        bail!(
            "the VM did not exit within {timeout:?}; console:\n{}",
            tail(&self.serial_text(), 40)
        )
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // swtpm ends with QEMU's connection (--terminate); reap it either way.
        if let Some(mut t) = self.swtpm.take() {
            let _ = t.kill();
            let _ = t.wait();
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
