//! The live facts behind the objects of §13, rendered as their OCTET
//! STRINGs: the server time, the licence, the HA nodes, a `df`-like and a
//! `vmstat`-like table. The tables are read from `/proc` and `statvfs`
//! when asked; the parsers take text so tests can feed them.

use std::collections::HashMap;
use std::fmt::Write;
use std::path::Path;

use appliance::licence::{AgentTerms, NOT_FOUND};
use appliance::local::LicenceFacts;

/// Longest text value served; a longer table is cut at a line end.
pub const MAX_VALUE: usize = 8 * 1024;

/// Cuts `s` to [`MAX_VALUE`] bytes at the last line end that fits, or, in
/// a single line longer than that, at the last character that fits (a
/// mount point or a value may hold multi-byte UTF-8: the cut is on a
/// character boundary, never inside one).
pub fn bounded(mut s: String) -> String {
    if s.len() > MAX_VALUE {
        let mut end = MAX_VALUE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let cut = s[..end].rfind('\n').unwrap_or(end);
        s.truncate(cut);
    }
    s
}

/// sysDescr: the product, its version, the kernel.
pub fn sys_descr() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "Custos key manager {} (Linux {} {})",
        appliance::VERSION,
        release.trim(),
        std::env::consts::ARCH
    )
}

/// The kernel's host name (what `setinfo hostname` sets).
pub fn kernel_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "custos".into())
}

/// 1.3.6.1.4.1.21513.3.0: `2015-08-18 20:56:53.135 PDT`, in the time zone
/// of `/etc/localtime` (set with `gmttimezone set`).
pub fn server_time() -> String {
    jiff::ZonedDateTime::now()
        .strftime("%Y-%m-%d %H:%M:%S%.3f %Z")
        .to_string()
}

fn yes_no(b: bool) -> &'static str {
    if b { "Yes" } else { "No" }
}

fn agent(name: &str, a: &AgentTerms) -> String {
    format!(
        "Agent Type: {name}, Installed: {}, Max Agents: {}, Expiry: {}",
        yes_no(a.installed),
        a.max_agents,
        a.expires
    )
}

/// 1.3.6.1.4.1.21513.5.0: the licence's terms in the order of §13.
pub fn licences(view: Option<&LicenceFacts>) -> String {
    let Some(v) = view else {
        return NOT_FOUND.to_owned();
    };
    let t = &v.terms;
    format!(
        "{}; {}; Key Vault: {}; Multi-Domain: {}; Max Domains: {}; Issued To: {}",
        agent("Key", &t.key_agent),
        agent("FS", &t.fs_agent),
        yes_no(t.key_vault),
        yes_no(t.multiple_domains),
        t.domains_allowed(),
        t.issued_to
    )
}

/// 1.3.6.1.4.1.21513.6.0: `Failover: <name>; Primary: <name>; `, from the
/// appliance's place in its HA group (§11); standalone, it is its own
/// primary.
pub fn ha_nodes(role: &appliance::store::HaRole, host_name: &str) -> String {
    role.snmp_text(host_name)
}

/// `\040`-style escapes of `/proc/self/mounts` undone.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        let value = octal.map(|d| d.iter().fold(0u16, |acc, c| acc * 8 + u16::from(c - b'0')));
        if let Some(v) = value
            .filter(|_| b[i] == b'\\')
            .and_then(|v| u8::try_from(v).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mounted file systems (device, mount point) from `/proc/self/mounts`
/// text; a device mounted twice is listed at its shortest mount point, as
/// `df` does.
pub fn mounts(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut by_device: HashMap<String, usize> = HashMap::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(dev), Some(dir)) = (f.next(), f.next()) else {
            continue;
        };
        let (dev, dir) = (unescape(dev), unescape(dir));
        if let Some(&i) = by_device.get(&dev).filter(|_| dev.starts_with('/')) {
            if dir.len() < out[i].1.len() {
                out[i].1 = dir;
            }
            continue;
        }
        if let Some(i) = out.iter().position(|(_, d)| *d == dir) {
            // Mounted over: the later mount is the one visible.
            out[i].0 = dev.clone();
            by_device.insert(dev, i);
            continue;
        }
        by_device.insert(dev.clone(), out.len());
        out.push((dev, dir));
    }
    out
}

/// One file system's size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub total: u64,
    pub free: u64,
    pub available: u64,
}

fn statvfs(dir: &str) -> Option<Usage> {
    let st = nix::sys::statvfs::statvfs(Path::new(dir)).ok()?;
    let frag = st.fragment_size() as u64;
    Some(Usage {
        total: st.blocks() as u64 * frag,
        free: st.blocks_free() as u64 * frag,
        available: st.blocks_available() as u64 * frag,
    })
}

/// The table of `df -hk -B 1024K`: sizes in MiB rounded up, Use% of what
/// is not reserved, file systems without blocks left out.
pub fn df_table(rows: &[(String, String, Usage)]) -> String {
    const MIB: u64 = 1024 * 1024;
    let mut lines = vec![[
        "Filesystem".to_owned(),
        "1M-blocks".to_owned(),
        "Used".to_owned(),
        "Available".to_owned(),
        "Use%".to_owned(),
        "Mounted on".to_owned(),
    ]];
    for (dev, dir, u) in rows {
        if u.total == 0 {
            continue;
        }
        let used = u.total.saturating_sub(u.free);
        let pct = match used + u.available {
            0 => "-".to_owned(),
            d => format!("{}%", (used * 100).div_ceil(d)),
        };
        lines.push([
            dev.clone(),
            u.total.div_ceil(MIB).to_string(),
            used.div_ceil(MIB).to_string(),
            u.available.div_ceil(MIB).to_string(),
            pct,
            dir.clone(),
        ]);
    }
    let width = |c: usize| lines.iter().map(|l| l[c].len()).max().unwrap_or(0);
    let w: Vec<usize> = (0..6).map(width).collect();
    let mut out = String::new();
    for l in &lines {
        let _ = writeln!(
            out,
            "{:<w0$} {:>w1$} {:>w2$} {:>w3$} {:>w4$} {}",
            l[0],
            l[1],
            l[2],
            l[3],
            l[4],
            l[5],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4],
        );
    }
    out
}

/// 1.3.6.1.4.1.21513.7.0: disk usage per mounted file system.
pub fn disk_usage() -> String {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let rows: Vec<(String, String, Usage)> = mounts(&text)
        .into_iter()
        .filter_map(|(dev, dir)| statvfs(&dir).map(|u| (dev, dir, u)))
        .collect();
    bounded(df_table(&rows))
}

/// `name value` lines (`/proc/vmstat`, `/proc/stat`) and `Name: value kB`
/// lines (`/proc/meminfo`) as a map of the first number after each name.
fn numbers(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?.trim_end_matches(':').to_owned();
            let v = f.next()?.parse().ok()?;
            Some((name, v))
        })
        .collect()
}

/// The texts `vmstat` reads.
#[derive(Debug, Default, Clone)]
pub struct ProcTexts {
    pub stat: String,
    pub meminfo: String,
    pub vmstat: String,
    pub uptime: String,
}

impl ProcTexts {
    pub fn read() -> ProcTexts {
        let r = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        ProcTexts {
            stat: r("/proc/stat"),
            meminfo: r("/proc/meminfo"),
            vmstat: r("/proc/vmstat"),
            uptime: r("/proc/uptime"),
        }
    }
}

/// The table of `vmstat` run without a delay: processes now, memory in KiB
/// now, and swap, block I/O, interrupts, context switches and CPU shares
/// averaged since boot.
pub fn vmstat_table(p: &ProcTexts) -> String {
    let stat = numbers(&p.stat);
    let mem = numbers(&p.meminfo);
    let vm = numbers(&p.vmstat);
    let get = |m: &HashMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    let uptime = p
        .uptime
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|u| *u >= 1.0)
        .unwrap_or(1.0);
    let per_second = |v: u64| (v as f64 / uptime).round() as u64;
    let page_kib = 4;
    let cpu: Vec<u64> = p
        .stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let c = |i: usize| cpu.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let total: u64 = (0..8).map(c).sum::<u64>().max(1);
    let share = |v: u64| (v * 100 + total / 2) / total;
    let figures = [
        get(&stat, "procs_running"),
        get(&stat, "procs_blocked"),
        get(&mem, "SwapTotal").saturating_sub(get(&mem, "SwapFree")),
        get(&mem, "MemFree"),
        get(&mem, "Buffers"),
        get(&mem, "Cached") + get(&mem, "SReclaimable"),
        per_second(get(&vm, "pswpin") * page_kib),
        per_second(get(&vm, "pswpout") * page_kib),
        per_second(get(&vm, "pgpgin")),
        per_second(get(&vm, "pgpgout")),
        per_second(get(&stat, "intr")),
        per_second(get(&stat, "ctxt")),
        share(c(0) + c(1)),
        share(c(2) + c(5) + c(6)),
        share(c(3)),
        share(c(4)),
        share(c(7)),
    ];
    let widths = [2, 2, 6, 6, 6, 6, 4, 4, 5, 5, 4, 4, 2, 2, 2, 2, 2];
    let mut line = String::new();
    for (v, w) in figures.iter().zip(widths) {
        let _ = write!(line, " {v:>w$}");
    }
    format!(
        "procs -----------memory---------- ---swap-- -----io---- -system-- ------cpu-----\n \
         r  b   swpd   free   buff  cache   si   so    bi    bo   in   cs us sy id wa st\n{}\n",
        &line[1..]
    )
}

/// 1.3.6.1.4.1.21513.8.0.
pub fn system_stats() -> String {
    bounded(vmstat_table(&ProcTexts::read()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_time_looks_like_the_spec() {
        let t = server_time();
        // 2015-08-18 20:56:53.135 PDT
        let (date, rest) = t.split_once(' ').expect("date");
        let (time, zone) = rest.split_once(' ').expect("time");
        assert_eq!(date.len(), 10, "{t}");
        assert_eq!(time.len(), 12, "{t}");
        assert_eq!(&time[8..9], ".", "{t}");
        assert!(!zone.is_empty(), "{t}");
    }

    #[test]
    fn df_like_table() {
        let mounts_text = "/dev/vda2 / ext4 rw 0 0\nproc /proc proc rw 0 0\n\
            /dev/vda4 /var/lib/custos ext4 rw 0 0\n/dev/vda4 /var/lib/custos/again ext4 rw 0 0\n\
            tmpfs /run tmpfs rw 0 0\n/dev/sdb1 /mnt/with\\040space ext4 rw 0 0\n";
        let m = mounts(mounts_text);
        assert_eq!(
            m.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>(),
            ["/", "/proc", "/var/lib/custos", "/run", "/mnt/with space"]
        );
        const MIB: u64 = 1024 * 1024;
        let rows = vec![
            (
                "/dev/vda2".into(),
                "/".into(),
                Usage {
                    total: 1969 * MIB,
                    free: 735 * MIB,
                    available: 635 * MIB,
                },
            ),
            (
                "proc".into(),
                "/proc".into(),
                Usage {
                    total: 0,
                    free: 0,
                    available: 0,
                },
            ),
            (
                "/dev/vda4".into(),
                "/var/lib/custos".into(),
                Usage {
                    total: 100 * MIB,
                    free: 99 * MIB,
                    available: 94 * MIB,
                },
            ),
        ];
        let table = df_table(&rows);
        let expected = "\
Filesystem 1M-blocks Used Available Use% Mounted on
/dev/vda2       1969 1234       635  67% /
/dev/vda4        100    1        94   2% /var/lib/custos
";
        assert_eq!(table, expected);
    }

    #[test]
    fn vmstat_like_table() {
        let p = ProcTexts {
            stat: "cpu  4600 0 1100 4300 100 0 0 0 0 0\ncpu0 1 2 3\nintr 49600 1 2\nctxt 98300\nprocs_running 1\nprocs_blocked 0\n".into(),
            meminfo: "MemTotal: 24000000 kB\nMemFree: 12521908 kB\nBuffers: 123020 kB\nCached: 11000000 kB\nSReclaimable: 809144 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n".into(),
            vmstat: "pgpgin 111000\npgpgout 592100\npswpin 0\npswpout 0\n".into(),
            uptime: "100.00 150.00\n".into(),
        };
        let expected = "\
procs -----------memory---------- ---swap-- -----io---- -system-- ------cpu-----
 r  b   swpd   free   buff  cache   si   so    bi    bo   in   cs us sy id wa st
 1  0      0 12521908 123020 11809144    0    0  1110  5921  496  983 46 11 43  1  0
";
        assert_eq!(vmstat_table(&p), expected);
        assert!(vmstat_table(&ProcTexts::default()).lines().count() == 3);
    }

    #[test]
    fn licence_text_and_bounds() {
        assert_eq!(licences(None), "License not found");
        assert_eq!(
            ha_nodes(&appliance::store::HaRole::Standalone, "custos.example.com"),
            "Primary: custos.example.com; "
        );
        assert_eq!(
            ha_nodes(
                &appliance::store::HaRole::Failover {
                    primary: "a.example.com".into()
                },
                "b.example.com"
            ),
            "Failover: b.example.com; Primary: a.example.com; "
        );
        let long = "line\n".repeat(MAX_VALUE);
        let cut = bounded(long);
        assert!(cut.len() <= MAX_VALUE && cut.ends_with("line"));
        // Multi-byte text across the limit (a mount point, a location of
        // `é`s): cut on a character boundary, not a panic.
        for text in [
            format!("a{}", "é".repeat(MAX_VALUE)),
            format!("ab{}", "€".repeat(MAX_VALUE)),
            format!("Filesystem\n/dev/sda1 /srv/{}\n", "é".repeat(MAX_VALUE)),
        ] {
            let cut = bounded(text.clone());
            assert!(
                cut.len() <= MAX_VALUE && text.starts_with(&cut),
                "{}",
                cut.len()
            );
        }
        let one_line = bounded(format!("a{}", "é".repeat(MAX_VALUE)));
        assert_eq!(one_line.len(), MAX_VALUE - 1);
        assert!(sys_descr().starts_with("Custos key manager "));
    }
}
