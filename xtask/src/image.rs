//! The appliance image: reads the mkosi-style definition in `image/` and
//! carries out its steps without mkosi (which cannot build here: no loop
//! devices, no mounts): mmdebstrap for the packages (cached by a hash of the
//! package list and the apt sources), `mkosi.extra/` and the release
//! binaries on top, `mkosi.postinst` in a chroot, then a GPT disk laid out by
//! `mkosi.repart/` and written without mounting anything: `mkfs.ext4 -d` and
//! `mkfs.vfat` at partition offsets, `mcopy` into the ESP, systemd-boot for
//! UEFI and SYSLINUX for legacy BIOS.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use xshell::{Shell, cmd};

const MIB: u64 = 1024 * 1024;

/// GPT partition type GUIDs (the Discoverable Partitions Specification's).
fn type_guid(t: &str) -> Result<&'static str> {
    Ok(match t {
        "esp" => "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        "root" => "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
        "linux-generic" => "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        other => bail!("mkosi.repart: unknown partition Type={other}"),
    })
}

/// One `[Section] Key=Value` file; a key may repeat and a value may continue
/// on indented lines (mkosi's list syntax).
fn parse_ini(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    let mut last_key: Option<String> = None;
    for raw in text.lines() {
        let line = raw.trim_end();
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            if let Some(k) = &last_key {
                out.entry(k.clone())
                    .or_default()
                    .push(line.trim().to_owned());
            }
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_owned();
            last_key = None;
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let key = format!("{section}.{}", k.trim());
            if !v.trim().is_empty() {
                out.entry(key.clone())
                    .or_default()
                    .push(v.trim().to_owned());
            } else {
                out.entry(key.clone()).or_default();
            }
            last_key = Some(key);
        }
    }
    out
}

/// The packages of a `[Content] Packages=` list, one or more per line.
fn packages_of(conf: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    conf.get("Content.Packages")
        .map(|lines| {
            lines
                .iter()
                .flat_map(|l| l.split_whitespace().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn parse_size(s: &str) -> Result<u64> {
    let (num, mult) = match s.chars().last() {
        Some('K') => (&s[..s.len() - 1], 1024),
        Some('M') => (&s[..s.len() - 1], MIB),
        Some('G') => (&s[..s.len() - 1], 1024 * MIB),
        _ => (s, 1),
    };
    Ok(num.parse::<u64>().with_context(|| format!("size {s}"))? * mult)
}

#[derive(Debug, Clone)]
pub struct Partition {
    pub label: String,
    pub kind: String,
    pub format: Option<String>,
    pub size: u64,
    pub copy_root: bool,
}

#[derive(Debug, Clone)]
pub struct Definition {
    pub dir: PathBuf,
    pub release: String,
    pub packages: Vec<String>,
    pub cmdline: String,
    pub partitions: Vec<Partition>,
}

/// What a profile (`mkosi.profiles/NAME/`) adds.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub packages: Vec<String>,
    pub extra: Option<PathBuf>,
    pub postinst: Option<PathBuf>,
}

impl Profile {
    pub fn load(def: &Definition, name: &str) -> Result<Profile> {
        let dir = def.dir.join("mkosi.profiles").join(name);
        ensure!(dir.is_dir(), "image/mkosi.profiles has no profile {name}");
        let conf = match fs::read_to_string(dir.join("mkosi.conf")) {
            Ok(t) => parse_ini(&t),
            Err(_) => BTreeMap::new(),
        };
        let packages = packages_of(&conf);
        let extra = Some(dir.join("mkosi.extra")).filter(|p| p.is_dir());
        let postinst = Some(dir.join("mkosi.postinst")).filter(|p| p.is_file());
        Ok(Profile {
            packages,
            extra,
            postinst,
        })
    }
}

impl Definition {
    pub fn load(dir: &Path) -> Result<Definition> {
        let conf =
            parse_ini(&fs::read_to_string(dir.join("mkosi.conf")).context("image/mkosi.conf")?);
        let one = |k: &str| -> Result<String> {
            conf.get(k)
                .and_then(|v| v.first())
                .cloned()
                .with_context(|| format!("image/mkosi.conf has no {k}"))
        };
        let mut packages = packages_of(&conf);
        packages.sort();
        packages.dedup();
        ensure!(!packages.is_empty(), "image/mkosi.conf lists no Packages=");
        let mut files: Vec<PathBuf> = fs::read_dir(dir.join("mkosi.repart"))
            .context("image/mkosi.repart")?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        files.sort();
        let mut partitions = vec![];
        for f in files {
            let p = parse_ini(&fs::read_to_string(&f)?);
            let get = |k: &str| {
                p.get(&format!("Partition.{k}"))
                    .and_then(|v| v.first())
                    .cloned()
            };
            let kind = get("Type").with_context(|| format!("{}: no Type=", f.display()))?;
            type_guid(&kind)?;
            let size = parse_size(
                &get("SizeMinBytes")
                    .with_context(|| format!("{}: no SizeMinBytes=", f.display()))?,
            )?;
            ensure!(size % MIB == 0, "{}: sizes are whole MiB", f.display());
            partitions.push(Partition {
                label: get("Label").with_context(|| format!("{}: no Label=", f.display()))?,
                kind,
                format: get("Format"),
                size,
                copy_root: get("CopyFiles").as_deref() == Some("/"),
            });
        }
        Ok(Definition {
            dir: dir.to_path_buf(),
            release: one("Distribution.Release")?,
            packages,
            cmdline: one("Content.KernelCommandLine")?,
            partitions,
        })
    }
}

/// The build machine's apt sources, given to mmdebstrap as its mirrors.
pub fn apt_sources() -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "sources" || x == "list") {
                out.push(p);
            }
        }
    }
    let legacy = PathBuf::from("/etc/apt/sources.list");
    if legacy.metadata().is_ok_and(|m| m.len() > 0) {
        out.push(legacy);
    }
    out.sort();
    ensure!(
        !out.is_empty(),
        "this machine has no apt sources to build the image from"
    );
    Ok(out)
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// The package tree from mmdebstrap, cached under `cache` by a hash of
/// everything that decides its content.
pub fn base_tree(
    sh: &Shell,
    def: &Definition,
    profile: Option<&Profile>,
    cache: &Path,
) -> Result<PathBuf> {
    let sources = apt_sources()?;
    let mut packages = def.packages.clone();
    packages.extend(profile.map(|p| p.packages.clone()).unwrap_or_default());
    packages.sort();
    packages.dedup();
    let mut key = format!("release={}\npackages={}\n", def.release, packages.join(","));
    for s in &sources {
        let _ = writeln!(
            key,
            "{}:{}",
            s.display(),
            fs::read_to_string(s).unwrap_or_default()
        );
    }
    let hash = &sha256_hex(key.as_bytes())[..16];
    let dir = cache.join(format!("base-{hash}"));
    if dir.join(".complete").exists() {
        eprintln!("image: package tree cached ({})", dir.display());
        return Ok(dir);
    }
    let tmp = cache.join(format!("base-{hash}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).context("removing a half-built package tree")?;
    }
    fs::create_dir_all(cache)?;
    eprintln!(
        "image: building the package tree with mmdebstrap ({} packages; about two minutes)",
        packages.len()
    );
    let include = packages.join(",");
    let release = &def.release;
    // mmdebstrap takes one mirror argument per sources file.
    let mirrors: Vec<String> = sources.iter().map(|p| p.display().to_string()).collect();
    let hook = r#"--customize-hook=rm -f "$1"/etc/ssh/ssh_host_*"#;
    cmd!(
        sh,
        "mmdebstrap --mode=root --variant=minbase --format=directory --include={include}
         {hook} {release} {tmp} {mirrors...}"
    )
    .run()
    .context("mmdebstrap")?;
    fs::write(tmp.join(".complete"), key)?;
    fs::rename(&tmp, &dir)?;
    Ok(dir)
}

/// The version the image carries (the workspace's).
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Copies the cached package tree, lays `mkosi.extra/` (and a profile's), the
/// binaries and docs over it, and runs `mkosi.postinst` in it.
pub fn system_tree(
    sh: &Shell,
    def: &Definition,
    base: &Path,
    work: &Path,
    binaries: &[PathBuf],
    docs: &[PathBuf],
    profile: Option<&Profile>,
) -> Result<PathBuf> {
    let tree = work.join("tree");
    if tree.exists() {
        cmd!(sh, "rm -rf {tree}").run()?;
    }
    fs::create_dir_all(work)?;
    eprintln!("image: composing the system tree");
    cmd!(sh, "cp -a --reflink=auto {base} {tree}")
        .run()
        .context("copying the package tree")?;
    fs::remove_file(tree.join(".complete")).ok();
    let extra = def.dir.join("mkosi.extra");
    cmd!(sh, "cp -a --no-preserve=ownership {extra}/. {tree}/").run()?;
    if let Some(extra) = profile.and_then(|p| p.extra.as_ref()) {
        cmd!(sh, "cp -a --no-preserve=ownership {extra}/. {tree}/").run()?;
    }
    for b in binaries {
        let name = b.file_name().context("binary name")?;
        let dest = tree.join("usr/bin").join(name);
        fs::copy(b, &dest).with_context(|| format!("installing {}", b.display()))?;
        cmd!(sh, "chmod 0755 {dest}").run()?;
    }
    let doc = tree.join("usr/share/doc/custos");
    fs::create_dir_all(&doc)?;
    for d in docs {
        fs::copy(d, doc.join(d.file_name().context("doc name")?))?;
    }
    let mut os_release = fs::read_to_string(tree.join("usr/lib/os-release")).unwrap_or_default();
    let _ = write!(os_release, "IMAGE_ID=custos\nIMAGE_VERSION={}\n", version());
    fs::write(tree.join("usr/lib/os-release"), os_release)?;
    fs::copy(
        def.dir.join("mkosi.postinst"),
        tree.join("tmp/mkosi.postinst"),
    )?;
    cmd!(sh, "chroot {tree} /bin/sh /tmp/mkosi.postinst")
        .run()
        .context("mkosi.postinst")?;
    fs::remove_file(tree.join("tmp/mkosi.postinst"))?;
    if let Some(post) = profile.and_then(|p| p.postinst.as_ref()) {
        fs::copy(post, tree.join("tmp/profile.postinst"))?;
        cmd!(sh, "chroot {tree} /bin/sh /tmp/profile.postinst")
            .run()
            .context("the profile's mkosi.postinst")?;
        fs::remove_file(tree.join("tmp/profile.postinst"))?;
    }
    Ok(tree)
}

fn uuid() -> Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/random/uuid")?
        .trim()
        .to_uppercase())
}

/// Where a partition landed.
#[derive(Debug, Clone)]
pub struct Placed {
    pub part: Partition,
    pub start: u64,
    pub partuuid: String,
}

#[derive(Debug)]
pub struct Disk {
    pub path: PathBuf,
}

fn uid_gid(tree: &Path, user: &str) -> Result<(u32, u32)> {
    let passwd = fs::read_to_string(tree.join("etc/passwd"))?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == user {
            return Ok((f[2].parse()?, f[3].parse()?));
        }
    }
    bail!("the image has no user {user}")
}

fn newest(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)?
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
        .with_context(|| format!("no {prefix}* in {}", dir.display()))
}

/// Writes the GPT disk: ESP with both boot loaders, slot A from `tree`, slot
/// B empty, data partition empty and owned by the key service's user.
pub fn build_disk(sh: &Shell, def: &Definition, tree: &Path, work: &Path) -> Result<Disk> {
    let path = work.join("disk.raw");
    let mut start = MIB;
    let mut parts = vec![];
    for p in &def.partitions {
        parts.push(Placed {
            part: p.clone(),
            start,
            partuuid: uuid()?,
        });
        start += p.size;
    }
    let size = start + MIB;
    eprintln!(
        "image: writing the disk ({} MiB, {} partitions)",
        size / MIB,
        parts.len()
    );
    fs::remove_file(&path).ok();
    let path_s = path.display().to_string();
    let size_s = size.to_string();
    cmd!(sh, "truncate -s {size_s} {path_s}").run()?;
    let mut script = format!("label: gpt\nlabel-id: {}\nunit: sectors\n", uuid()?);
    for p in &parts {
        let attrs = if p.part.kind == "esp" {
            ", attrs=\"LegacyBIOSBootable\""
        } else {
            ""
        };
        let _ = writeln!(
            script,
            "start={}, size={}, type={}, name=\"{}\", uuid={}{attrs}",
            p.start / 512,
            p.part.size / 512,
            type_guid(&p.part.kind)?,
            p.part.label,
            p.partuuid
        );
    }
    cmd!(sh, "sfdisk --quiet {path_s}")
        .stdin(script)
        .run()
        .context("sfdisk")?;

    let root_a = parts
        .iter()
        .find(|p| p.part.copy_root)
        .context("no partition with CopyFiles=/")?
        .clone();
    let cmdline = format!(
        "root=PARTUUID={} rw rootwait {}",
        root_a.partuuid.to_lowercase(),
        def.cmdline
    );
    for p in &parts {
        let offset = p.start;
        let kib = format!("{}k", p.part.size / 1024);
        let label = &p.part.label;
        match (p.part.format.as_deref(), p.part.copy_root) {
            (Some("ext4"), true) => {
                // The kernel and initrd live on the ESP; the slot keeps its own copy too.
                let ext = format!("offset={offset}");
                cmd!(
                    sh,
                    "mkfs.ext4 -q -F -L {label} -E {ext} -d {tree} {path_s} {kib}"
                )
                .run()?;
            }
            (Some("ext4"), false) => {
                let (uid, gid) = uid_gid(tree, "custos")?;
                let empty = work.join(format!("{label}-root"));
                fs::create_dir_all(&empty)?;
                let owner = format!("offset={offset},root_owner={uid}:{gid}");
                cmd!(
                    sh,
                    "mkfs.ext4 -q -F -L {label} -E {owner} -d {empty} {path_s} {kib}"
                )
                .run()?;
            }
            (Some("vfat"), _) => esp(sh, def, tree, &path_s, p, &cmdline)?,
            (None, _) => {}
            (Some(f), _) => bail!("mkosi.repart: unsupported Format={f}"),
        }
    }
    cmd!(sh, "sfdisk --verify {path_s}")
        .quiet()
        .ignore_stdout()
        .run()
        .context("the partition table does not verify")?;
    for p in parts
        .iter()
        .filter(|p| p.part.format.as_deref() == Some("ext4"))
    {
        let spec = format!("{path_s}?offset={}", p.start);
        cmd!(sh, "e2fsck -fn {spec}")
            .quiet()
            .ignore_stdout()
            .run()
            .with_context(|| format!("{} does not check", p.part.label))?;
    }
    Ok(Disk { path })
}

/// The ESP: systemd-boot as the removable-media loader for UEFI, SYSLINUX
/// (via gptmbr.bin and the LegacyBIOSBootable attribute) for BIOS; both boot
/// slot A's kernel from `/custos-a`.
fn esp(
    sh: &Shell,
    def: &Definition,
    tree: &Path,
    disk: &str,
    p: &Placed,
    cmdline: &str,
) -> Result<()> {
    let sector = (p.start / 512).to_string();
    let kib = (p.part.size / 1024).to_string();
    let label = &p.part.label;
    cmd!(
        sh,
        "mkfs.vfat -F 32 -s 1 -n {label} --offset {sector} -h {sector} {disk} {kib}"
    )
    .quiet()
    .ignore_stdout()
    .run()?;
    let img = format!("{disk}@@{}", p.start);
    cmd!(
        sh,
        "mmd -i {img} ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries ::/custos-a ::/syslinux"
    )
    .run()?;
    let sdboot = tree.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi");
    ensure!(
        sdboot.exists(),
        "the image lacks systemd-boot ({}): add systemd-boot-efi to Packages=",
        sdboot.display()
    );
    let kernel = newest(&tree.join("boot"), "vmlinuz-")?;
    let initrd = newest(&tree.join("boot"), "initrd.img-")?;
    cmd!(sh, "mcopy -i {img} {sdboot} ::/EFI/BOOT/BOOTX64.EFI").run()?;
    cmd!(sh, "mcopy -i {img} {kernel} ::/custos-a/vmlinuz").run()?;
    cmd!(sh, "mcopy -i {img} {initrd} ::/custos-a/initrd.img").run()?;
    let version = version();
    let loader = "default custos-a.conf\ntimeout 2\nconsole-mode keep\neditor no\n".to_string();
    let entry = format!(
        "title Custos {version} (slot A)\nlinux /custos-a/vmlinuz\ninitrd /custos-a/initrd.img\noptions {cmdline}\n"
    );
    let syslinux = format!(
        "SERIAL 0 115200\nDEFAULT custos-a\nPROMPT 0\nTIMEOUT 20\n\nLABEL custos-a\n  MENU LABEL Custos {version} (slot A)\n  LINUX /custos-a/vmlinuz\n  INITRD /custos-a/initrd.img\n  APPEND {cmdline}\n"
    );
    let staging = tree.parent().context("work dir")?.join("esp-files");
    fs::create_dir_all(&staging)?;
    for (name, text, dest) in [
        ("loader.conf", loader, "::/loader/loader.conf"),
        ("custos-a.conf", entry, "::/loader/entries/custos-a.conf"),
        ("syslinux.cfg", syslinux, "::/syslinux/syslinux.cfg"),
    ] {
        let f = staging.join(name);
        fs::write(&f, text)?;
        cmd!(sh, "mcopy -i {img} {f} {dest}").run()?;
    }
    let offset = p.start.to_string();
    cmd!(
        sh,
        "syslinux --offset {offset} --directory /syslinux --install {disk}"
    )
    .run()
    .context("installing SYSLINUX")?;
    let mbr = "/usr/lib/SYSLINUX/gptmbr.bin";
    cmd!(
        sh,
        "dd if={mbr} of={disk} bs=440 count=1 conv=notrunc status=none"
    )
    .run()?;
    let _ = def;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("root")
            .join("image")
    }

    #[test]
    fn ini_lists_continue_on_indented_lines() {
        let c = parse_ini(
            "# c\n[Content]\nPackages=\n        a b\n        c\nBootable=yes\n[Other]\nX=1\n",
        );
        assert_eq!(packages_of(&c), ["a", "b", "c"]);
        assert_eq!(c["Content.Bootable"], ["yes"]);
        assert_eq!(c["Other.X"], ["1"]);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("128M").expect("size"), 128 * MIB);
        assert_eq!(parse_size("2G").expect("size"), 2048 * MIB);
        assert!(parse_size("12Q").is_err());
    }

    #[test]
    fn the_image_definition_reads_as_the_spec_needs() {
        let def = Definition::load(&image_dir()).expect("image/");
        assert_eq!(def.release, "bookworm");
        for p in [
            "linux-image-cloud-amd64",
            "systemd-sysv",
            "openssh-server",
            "systemd-boot-efi",
            "sudo",
        ] {
            assert!(def.packages.contains(&p.to_string()), "{p} missing");
        }
        assert!(def.cmdline.contains("net.ifnames=0") && def.cmdline.contains("console=ttyS0"));
        let labels: Vec<(&str, &str)> = def
            .partitions
            .iter()
            .map(|p| (p.label.as_str(), p.kind.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("ESP", "esp"),
                ("custos-root-a", "root"),
                ("custos-root-b", "root"),
                ("custos-data", "linux-generic")
            ]
        );
        assert!(def.partitions[1].copy_root && !def.partitions[2].copy_root);
        assert_eq!(def.partitions[2].format, None, "slot B starts empty");
        let installer = Profile::load(&def, "installer").expect("installer profile");
        assert!(installer.packages.contains(&"live-boot".to_string()));
        assert!(installer.postinst.is_some() && installer.extra.is_some());
        assert!(Profile::load(&def, "nonexistent").is_err());
    }

    #[test]
    fn the_preset_enables_the_appliance_units_and_disables_the_rest() {
        let preset = fs::read_to_string(
            image_dir().join("mkosi.extra/usr/lib/systemd/system-preset/90-custos.preset"),
        )
        .expect("preset");
        let lines: Vec<&str> = preset
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect();
        assert_eq!(lines.last(), Some(&"disable *"));
        for unit in [
            "custos-keyd.service",
            "custos-backupd.service",
            "custos-notifyd.service",
            "custos-snmpd.service",
            "custos-ready.service",
            "ssh.service",
            "systemd-networkd.service",
        ] {
            assert!(
                lines.contains(&format!("enable {unit}").as_str()),
                "{unit} is not enabled"
            );
        }
    }
}
