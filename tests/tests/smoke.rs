//! QEMU smoke tests of the built images (`cargo xtask test` builds them with
//! `cargo xtask dist` and sets CUSTOS_SMOKE_DIST). They boot under TCG when
//! KVM is not usable, as on the build machines.
//!
//! Without CUSTOS_SMOKE_DIST they are skipped, saying so: a plain
//! `cargo test` does not build images.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tests::vm::{Boot, Firmware, Vm};
use tests::*;

const READY_TIMEOUT: Duration = Duration::from_secs(900);

/// One VM at a time: two TCG guests on two cores only slow each other down.
static ONE_VM: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The built images, or `None` after recording `test` as skipped.
fn dist(test: &str) -> Option<PathBuf> {
    match std::env::var_os("CUSTOS_SMOKE_DIST") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            skip(
                &format!("smoke::{test}"),
                "no images: set CUSTOS_SMOKE_DIST=target/dist (cargo xtask test does, after cargo xtask dist)",
            );
            None
        }
    }
}

fn newest(dir: &Path, ext: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dist dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == ext) && !p.to_string_lossy().contains("-dev")
        })
        .collect();
    found.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    found
        .pop()
        .unwrap_or_else(|| panic!("no .{ext} in {}", dir.display()))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Untars the OVA and checks its member order and every manifest digest with
/// the standard tools; returns the VMDK.
fn unpack_ova(ova: &Path, into: &Path) -> PathBuf {
    let members = run(Command::new("tar").arg("-tf").arg(ova));
    let members: Vec<&str> = members.lines().collect();
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(
        members[0].ends_with(".ovf")
            && members[1].ends_with(".mf")
            && members[2].ends_with(".vmdk"),
        "order: {members:?}"
    );
    run(Command::new("tar").arg("-xf").arg(ova).arg("-C").arg(into));
    let mf = std::fs::read_to_string(into.join(members[1])).expect("manifest");
    let mut checked = 0;
    for line in mf.lines() {
        let (name, digest) = line
            .strip_prefix("SHA256(")
            .and_then(|l| l.split_once(")= "))
            .unwrap_or_else(|| panic!("manifest line {line}"));
        let sum = run(Command::new("sha256sum").arg(into.join(name)));
        assert_eq!(
            sum.split_whitespace().next(),
            Some(digest),
            "digest of {name}"
        );
        checked += 1;
    }
    assert_eq!(checked, 2, "the manifest covers the OVF and the VMDK");
    let ovf = std::fs::read_to_string(into.join(members[0])).expect("ovf");
    assert!(!ovf.contains("{{"), "placeholder left in the OVF");
    let info = run(Command::new("qemu-img")
        .args(["info"])
        .arg(into.join(members[2])));
    assert!(info.contains("streamOptimized"), "{info}");
    into.join(members[2])
}

/// The checks through the forwarded ports: HTTPS with the appliance's
/// certificate, the default admin login, a host registering and fetching a
/// key, SSH for cliadmin. Returns the registered host's directory and the
/// key bytes.
fn check_running_appliance(vm: &Vm, host_dir: &Path, first_boot: bool, master_key: &str) -> String {
    // "the web console answers over HTTPS with the appliance's certificate": on
    // 443 as on 8445, verified against the CA the appliance hands to hosts.
    let ca = {
        let mut urls = HashMap::new();
        urls.insert(
            "enrol".to_string(),
            format!("https://127.0.0.1:{}", vm.port("enrol")),
        );
        Appliance::remote(urls).ca_pem("enrol")
    };
    let on_443 = Api::new(&format!("https://127.0.0.1:{}", vm.port("web")), &ca);
    assert_eq!(on_443.get("/api/openapi.json").status, 200);
    let login_page = on_443.get("/login");
    assert_eq!(login_page.status, 200);
    assert!(
        login_page.body.to_string().contains("Sign in"),
        "the web console's sign-in page"
    );
    let mut urls = HashMap::new();
    for (name, _) in tests::vm::GUEST_PORTS {
        urls.insert(
            name.to_string(),
            format!("https://127.0.0.1:{}", vm.port(name)),
        );
    }
    let app = Appliance::remote(urls);
    let api = app.api(); // verifies the console's certificate against the appliance CA
    // The console on 443 presents the same certificate chain (the client trusts only the CA).
    let v = api
        .post(
            "/api/v1/login",
            json!({"login": "admin", "password": if first_boot { "admin123" } else { ADMIN_PW }}),
        )
        .ok();
    assert_eq!(v["must_change_password"], json!(first_boot));
    let s = if first_boot {
        let fresh = api.login("admin", "admin123");
        assert_eq!(
            fresh.get("/api/v1/domains").expect(403)["error"],
            "password_change_required"
        );
        recommended_setup(&app)
    } else {
        let admin = api.login("admin", ADMIN_PW);
        Setup {
            sys: api.login("SystemAdministrator", SYS_PW),
            dom: api.login("DomainAdministrator", DOM_PW),
            sec: api.login("SecurityAdministrator", SEC_PW),
            admin,
        }
    };
    // The image's web console in a real browser: the System Administrator
    // signs in and sees the licence installed by the setup on the dashboard.
    {
        let mut b = tests::browser::Browser::start(
            &format!("https://127.0.0.1:{}", vm.port("web")),
            "smoke",
        );
        b.open("/login");
        b.fill("login", "SystemAdministrator");
        b.fill("password", SYS_PW);
        b.press("Log In");
        assert_eq!(b.path(), "/dashboard", "{}", b.body());
        assert!(b.body().contains("Custos tests"), "{}", b.body());
        // Where the master key is: sealed to the TPM, or said to be on disk.
        let said = if master_key == "tpm" {
            "Sealed to this VM's TPM"
        } else {
            "Unsealed on disk"
        };
        assert!(b.body().contains(said), "{}", b.body());
        b.screenshot("dashboard-in-vm");
    }
    let info: Value = s.admin.get("/api/v1/system").ok();
    assert_eq!(info["master_key"], master_key, "{info}");
    if first_boot {
        let out = register_host(&app, "enrol", "rec1.example.com", SHARED_SECRET, host_dir);
        out.ok();
        assert!(
            out.stdout
                .contains(info["rsa_ca_fingerprint"].as_str().expect("fp"))
        );
    }
    // The VM's key port is forwarded to another host port.
    let path = host_dir.join("agent.json");
    let mut saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("agent.json")).expect("json");
    saved["key_port"] = vm.port("keys").into();
    std::fs::write(&path, saved.to_string()).expect("write agent.json");
    let (key, version) = fetch_key(&app, host_dir, "recorder", Some(1));
    assert_eq!((key.len(), version), (64, 1));
    check_snmp(&s.sys, vm.port("snmp"), first_boot);
    check_ssh(vm.port("ssh"));
    key
}

/// SNMP (§13) through the forwarded UDP port 161: enabled through the API
/// at first boot (it stays enabled across the reboot), then `snmpget` is
/// answered by custos-snmpd once it has read its settings.
fn check_snmp(sys: &Api, port: u16, first_boot: bool) {
    const COMMUNITY: &str = "Sm0ke-Community";
    if first_boot {
        sys.call(
            "PUT",
            "/api/v1/snmp",
            Some(json!({"enabled": true, "community": COMMUNITY, "sys_location": "QEMU"})),
        )
        .ok();
    }
    let target = format!("udp:127.0.0.1:{port}");
    let oids = [".1.3.6.1.2.1.1.6.0", ".1.3.6.1.4.1.21513.1.0"];
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let out = tests::snmp::query("snmpget", "2c", COMMUNITY, &target, &oids);
        if out.ok {
            assert_eq!(
                tests::snmp::value_of(&out.stdout, oids[0]).as_deref(),
                Some("QEMU"),
                "{}",
                out.stdout
            );
            assert!(
                out.stdout.contains(".1.3.6.1.4.1.21513.1.0 = STRING: "),
                "{}",
                out.stdout
            );
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no SNMP answer through the forwarded port: {out:?}"
        );
    }
}

/// Real OpenSSH to cliadmin on the forwarded port, the password coming
/// from an askpass program (no terminal needed for it).
fn ssh_command(port: u16, askpass: &Path, tty: bool) -> Command {
    let mut cmd = Command::new("ssh");
    if tty {
        cmd.arg("-tt");
    }
    for opt in [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "PubkeyAuthentication=no",
        "PreferredAuthentications=password",
        "NumberOfPasswordPrompts=1",
        "ConnectTimeout=30",
    ] {
        cmd.args(["-o", opt]);
    }
    cmd.args(["-p", &port.to_string(), "cliadmin@127.0.0.1"])
        .env("SSH_ASKPASS", askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0");
    cmd
}

/// OpenSSH answers for cliadmin and accepts the default password.
fn check_ssh(port: u16) {
    let dir = tempfile::tempdir().expect("tempdir");
    let askpass = dir.path().join("askpass");
    std::fs::write(&askpass, "#!/bin/sh\necho cliadmin123\n").expect("askpass");
    run(Command::new("chmod").arg("+x").arg(&askpass));
    let out = ssh_command(port, &askpass, false)
        .arg("exit")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("ssh (apt-get install openssh-client)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("Permission denied") && !err.contains("Connection refused"),
        "ssh cliadmin: {err}"
    );
    assert!(
        err.contains("Warning: Permanently added"),
        "ssh did not reach the appliance: {err}"
    );
}

fn boot(firmware: Firmware, disk: &Path, format: &'static str, snapshot: bool, work: &Path) -> Vm {
    boot_with(firmware, disk, format, snapshot, None, work)
}

fn boot_with(
    firmware: Firmware,
    disk: &Path,
    format: &'static str,
    snapshot: bool,
    tpm: Option<&Path>,
    work: &Path,
) -> Vm {
    let mut vm = start(firmware, disk, format, snapshot, tpm, work);
    let took = vm
        .wait_ready(READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{firmware:?} boot: {e:#}"));
    eprintln!(
        "{firmware:?} ({}): all units ready {:.0} s after power-on",
        vm.accel,
        took.as_secs_f64()
    );
    vm
}

fn start(
    firmware: Firmware,
    disk: &Path,
    format: &'static str,
    snapshot: bool,
    tpm: Option<&Path>,
    work: &Path,
) -> Vm {
    Vm::start(&Boot {
        firmware,
        disk: disk.to_path_buf(),
        disk_format: format,
        snapshot,
        cdrom: None,
        memory_mb: 1024,
        fixed_ports: false,
        work: work.to_path_buf(),
        tpm: tpm.map(Path::to_path_buf),
    })
    .expect("QEMU starts")
}

/// `debugfs`'s listing of the data partition's top folder (label
/// custos-data) of a powered-off VM's disk: what whoever copies the disk
/// finds there.
fn data_partition_listing(disk: &Path, format: &str, work: &Path) -> String {
    let raw = work.join("copy.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", format, "-O", "raw"])
        .arg(disk)
        .arg(&raw));
    let table: Value =
        serde_json::from_str(&run(Command::new("sfdisk").arg("-J").arg(&raw))).expect("sfdisk -J");
    let parts = table["partitiontable"]["partitions"]
        .as_array()
        .expect("partitions");
    let data = parts
        .iter()
        .find(|p| p["name"] == "custos-data")
        .unwrap_or_else(|| panic!("no custos-data partition: {table}"));
    let sector = table["partitiontable"]["sectorsize"]
        .as_u64()
        .unwrap_or(512);
    let (start, size) = (
        data["start"].as_u64().expect("start"),
        data["size"].as_u64().expect("size"),
    );
    let part = work.join("data.ext4");
    run(Command::new("dd")
        .arg(format!("if={}", raw.display()))
        .arg(format!("of={}", part.display()))
        .arg(format!("bs={sector}"))
        .arg(format!("skip={start}"))
        .arg(format!("count={size}"))
        .args(["conv=sparse", "status=none"]));
    let _ = std::fs::remove_file(&raw);
    let listing = run(Command::new("debugfs").args(["-R", "ls -l /"]).arg(&part));
    let _ = std::fs::remove_file(&part);
    listing
}

#[test]
fn ova_boots_under_uefi_and_keeps_state_across_a_reboot() {
    let Some(dist) = dist("ova_boots_under_uefi_and_keeps_state_across_a_reboot") else {
        return;
    };
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().expect("tempdir");
    let vmdk = unpack_ova(&newest(&dist, "ova"), work.path());
    // Writes go to an overlay so the reboot sees them.
    let overlay = work.path().join("overlay.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "vmdk", "-b"])
        .arg(&vmdk)
        .arg(&overlay));
    let host = tempfile::tempdir().expect("tempdir");
    // The VM has a TPM 2.0 (as a vSphere vTPM or a Hyper-V Gen 2 TPM): the
    // master key is sealed to it at first boot.
    let tpm_state = work.path().join("tpm");
    let tpm = tests::vm::swtpm_available().then_some(tpm_state.as_path());
    if tpm.is_none() {
        tests::skip(
            "ova_boots_under_uefi_and_keeps_state_across_a_reboot: the TPM checks",
            "swtpm is not installed (apt-get install swtpm)",
        );
    }
    let sealing = if tpm.is_some() { "tpm" } else { "disk" };
    let mut vm = boot_with(
        Firmware::Uefi,
        &overlay,
        "qcow2",
        false,
        tpm,
        &work.path().join("uefi"),
    );
    let key = check_running_appliance(&vm, host.path(), true, sealing);
    vm.power_off(Duration::from_secs(300))
        .expect("clean power-off");
    drop(vm);

    if tpm.is_some() {
        // What a copy of the disk holds: the sealed key, never the key.
        let listing = data_partition_listing(&overlay, "qcow2", work.path());
        assert!(
            listing.contains("master.key.cred"),
            "the data partition of a TPM appliance:\n{listing}"
        );
        assert!(
            !listing
                .lines()
                .any(|l| l.trim_end().ends_with(" master.key")),
            "a plain master key on the data partition of a TPM appliance:\n{listing}"
        );
        // The copy booted in another VM (another TPM) opens no store.
        let mut copy = start(
            Firmware::Uefi,
            &overlay,
            "qcow2",
            true,
            Some(&work.path().join("other-tpm")),
            &work.path().join("copy"),
        );
        let err = copy
            .wait_ready(READY_TIMEOUT)
            .expect_err("a disk copied to a VM with another TPM must not serve keys");
        let err = format!("{err:#}");
        assert!(
            err.contains("FAILED custos-master-key.service")
                && err.contains("sealed to a TPM this VM does not have"),
            "{err}"
        );
        drop(copy);
    }

    let vm = boot_with(
        Firmware::Uefi,
        &overlay,
        "qcow2",
        false,
        tpm,
        &work.path().join("uefi-2"),
    );
    let after = check_running_appliance(&vm, host.path(), false, sealing);
    assert_eq!(
        key, after,
        "the key served after the reboot has other bytes"
    );
}

#[test]
fn ova_boots_under_bios() {
    let Some(dist) = dist("ova_boots_under_bios") else {
        return;
    };
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().expect("tempdir");
    let vmdk = unpack_ova(&newest(&dist, "ova"), work.path());
    let host = tempfile::tempdir().expect("tempdir");
    let vm = boot(
        Firmware::Bios,
        &vmdk,
        "vmdk",
        true,
        &work.path().join("bios"),
    );
    check_running_appliance(&vm, host.path(), true, "disk");
}

/// The admin CLI through real OpenSSH (issue 4 in the image): first login
/// with the default password, the agreement, the forced change, a new host
/// name; then a second login with the new password sees it.
fn check_cli_over_ssh(port: u16) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pw_file = dir.path().join("password");
    let askpass = dir.path().join("askpass");
    std::fs::write(&pw_file, "cliadmin123").expect("password file");
    std::fs::write(&askpass, format!("#!/bin/sh\ncat {}\n", pw_file.display())).expect("askpass");
    run(Command::new("chmod").arg("+x").arg(&askpass));
    let ssh = || {
        rexpect::session::spawn_command(ssh_command(port, &askpass, true), Some(120_000))
            .expect("ssh session")
    };
    let new_pw = "Cli!Adm1nPw";
    let mut s = ssh();
    s.exp_string("Type Y to accept the licence agreement: ")
        .expect("agreement");
    s.send_line("Y").expect("send");
    s.exp_string("Current password: ")
        .expect("current password prompt");
    s.send_line("cliadmin123").expect("send");
    s.exp_string("New password: ").expect("new password prompt");
    s.send_line(new_pw).expect("send");
    s.exp_string("Retype new password: ")
        .expect("retype prompt");
    s.send_line(new_pw).expect("send");
    s.exp_string("custos$ ")
        .expect("the menu after the password change");
    s.send_line("system setinfo hostname rec-vault.example.com")
        .expect("send");
    s.exp_string("SUCCESS: the host name is rec-vault.example.com")
        .expect("host name set");
    s.send_line("system security suiteb show").expect("send");
    s.exp_string("Current mode is: compatible")
        .expect("security mode");
    s.send_line("exit").expect("send");
    s.exp_eof().expect("logout");

    std::fs::write(&pw_file, new_pw).expect("password file");
    let mut s = ssh();
    s.exp_string("custos$ ")
        .expect("the menu at once on the second login");
    s.send_line("system setinfo show").expect("send");
    s.exp_string("rec-vault.example.com")
        .expect("the new host name");
    s.send_line("exit").expect("send");
    s.exp_eof().expect("logout");
}

#[test]
fn iso_installs_onto_an_empty_disk_under_bios_and_the_disk_boots_alone() {
    let Some(dist) = dist("iso_installs_onto_an_empty_disk_under_bios_and_the_disk_boots_alone")
    else {
        return;
    };
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    install_and_boot(&dist, Firmware::Bios, true);
}

#[test]
fn iso_installs_under_uefi_too() {
    let Some(dist) = dist("iso_installs_under_uefi_too") else {
        return;
    };
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    install_and_boot(&dist, Firmware::Uefi, false);
}

/// Hyper-V's procedure: an empty fixed disk, the ISO attached, power on;
/// the installer writes the disk and restarts (QEMU exits: -no-reboot);
/// then the disk boots alone.
fn install_and_boot(dist: &Path, firmware: Firmware, with_cli: bool) {
    let iso = newest(dist, "iso");
    let work = tempfile::tempdir().expect("tempdir");
    let disk = work.path().join("hyperv.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("8G"));
    let mut vm = Vm::start(&Boot {
        firmware,
        disk: disk.clone(),
        disk_format: "qcow2",
        snapshot: false,
        cdrom: Some(iso),
        memory_mb: 1024,
        fixed_ports: false,
        work: work.path().join("install"),
        tpm: None,
    })
    .expect("QEMU starts");
    vm.wait_exit(Duration::from_secs(1800))
        .expect("the installer finishes and restarts");
    let console = vm.serial_text();
    assert!(
        console.contains("custos-installer: done"),
        "installer console:\n{console}"
    );
    eprintln!(
        "{firmware:?} ({}): installed from the ISO in {:.0} s",
        vm.accel,
        vm.started.elapsed().as_secs_f64()
    );
    drop(vm);

    let host = tempfile::tempdir().expect("tempdir");
    let vm = boot(
        firmware,
        &disk,
        "qcow2",
        false,
        &work.path().join("installed"),
    );
    check_running_appliance(&vm, host.path(), true, "disk");
    if with_cli {
        check_cli_over_ssh(vm.port("ssh"));
    }
}

#[test]
fn installer_refuses_a_disk_with_data_unless_confirmed() {
    let Some(dist) = dist("installer_refuses_a_disk_with_data_unless_confirmed") else {
        return;
    };
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let iso = newest(&dist, "iso");
    let work = tempfile::tempdir().expect("tempdir");
    // A disk that holds someone's data: a recognisable pattern at its start.
    let raw = work.path().join("used.raw");
    let mut data = vec![0u8; 4 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i % 251) as u8 | 1;
    }
    std::fs::write(&raw, &data).expect("write");
    run(Command::new("truncate").arg("-s").arg("6G").arg(&raw));
    let vm = Vm::start(&Boot {
        firmware: Firmware::Bios,
        disk: raw.clone(),
        disk_format: "raw",
        snapshot: false,
        cdrom: Some(iso),
        memory_mb: 1024,
        fixed_ports: false,
        work: work.path().join("install"),
        tpm: None,
    })
    .expect("QEMU starts");
    // The installer asks on the console; the operator answers "no".
    let deadline = std::time::Instant::now() + Duration::from_secs(900);
    while !vm.serial_text().contains("is not empty") {
        assert!(
            std::time::Instant::now() < deadline,
            "no warning about the used disk:\n{}",
            vm.serial_text()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(2));
    vm.type_text("no\n").expect("type on the console");
    while !vm.serial_text().contains("nothing was written") {
        assert!(
            std::time::Instant::now() < deadline,
            "the installer did not stop:\n{}",
            vm.serial_text()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(vm);
    let after = std::fs::read(&raw).expect("read");
    assert_eq!(
        &after[..data.len()],
        &data[..],
        "the refused disk was changed"
    );
}
