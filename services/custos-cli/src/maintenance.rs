//! `maintenance`: NTP (systemd-timesyncd), the time zone, the date and the
//! time (systemd-timedated).

use std::path::PathBuf;
use std::time::Duration;

use appliance::os::{NtpServer, TimeZone, shown};
use time::{Date, Month, OffsetDateTime, Time};

use crate::host::{Cmd, Emulated};
use crate::menu::{Args, Category, Command, Failure, Outcome};
use crate::render::{self, LOCALTIME_LINK, ZONEINFO_DIR};
use crate::session::{Ctx, interrupted};

pub const CATEGORY: Category = Category {
    name: "maintenance",
    help: "NTP servers, time zone, date and time, unlocking the web admin",
    commands: &[
        Command {
            words: &["ntpdate", "show"],
            args: "",
            example: "ntpdate show",
            help: "Show the NTP servers and whether NTP is on",
            run: ntp_show,
        },
        Command {
            words: &["ntpdate", "add"],
            args: "SERVER",
            example: "ntpdate add ntp1.example.com",
            help: "Add an NTP server (host name or address)",
            run: ntp_add,
        },
        Command {
            words: &["ntpdate", "delete"],
            args: "SERVER",
            example: "ntpdate delete ntp1.example.com",
            help: "Remove an NTP server",
            run: ntp_delete,
        },
        Command {
            words: &["ntpdate", "on"],
            args: "",
            example: "ntpdate on",
            help: "Synchronise the clock with the NTP servers",
            run: ntp_on,
        },
        Command {
            words: &["ntpdate", "off"],
            args: "",
            example: "ntpdate off",
            help: "Stop synchronising the clock with NTP",
            run: ntp_off,
        },
        Command {
            words: &["ntpdate", "sync"],
            args: "",
            example: "ntpdate sync",
            help: "Synchronise the clock now",
            run: ntp_sync,
        },
        Command {
            words: &["gmttimezone", "list"],
            args: "[AREA]",
            example: "gmttimezone list Europe",
            help: "List the time zones (of one area)",
            run: tz_list,
        },
        Command {
            words: &["gmttimezone", "show"],
            args: "",
            example: "gmttimezone show",
            help: "Show the time zone",
            run: tz_show,
        },
        Command {
            words: &["gmttimezone", "set"],
            args: "AREA/CITY",
            example: "gmttimezone set Europe/Berlin",
            help: "Set the time zone (the server software needs a restart)",
            run: tz_set,
        },
        Command {
            words: &["date"],
            args: "[MM/DD/YYYY]",
            example: "date 12/31/2026",
            help: "Show or set the date",
            run: date,
        },
        Command {
            words: &["time"],
            args: "[HH:MM:SS]",
            example: "time 14:30:00",
            help: "Show or set the time (24-hour)",
            run: time_of_day,
        },
        Command {
            words: &["unlock", "admin"],
            args: "",
            example: "unlock admin",
            help: "End the lock-out of the web console's built-in administrator admin",
            run: unlock_admin,
        },
    ],
};

/// `unlock admin`: whoever guesses the web administrator's password from
/// the network can lock it again and again; the operator at the appliance's
/// own console ends the lock-out (audited).
fn unlock_admin(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    ctx.confirm(&[
        "The lock-out of the web administrator admin ends and its failed sign-ins are forgotten; if someone is guessing its password, they can go on.",
    ])?;
    if ctx.store.unlock_builtin_admin(ctx.session)? {
        Ok("the web administrator admin is unlocked".into())
    } else {
        Ok("the web administrator admin was not locked; its failed sign-ins are cleared".into())
    }
}

/// How long `ntpdate sync` waits for the clock to be synchronised.
const SYNC_WAIT: Duration = Duration::from_secs(30);

const TIMESYNCD: &str = "systemd-timesyncd";

fn apply_ntp(ctx: &mut Ctx<'_>, what: &str, ntp: &appliance::os::Ntp) -> Result<(), Failure> {
    let restart = [Cmd::new(&["systemctl", "restart", TIMESYNCD])];
    let cmds: &[Cmd] = if ntp.enabled { &restart } else { &[] };
    ctx.apply(what, &[render::timesyncd(ntp)], cmds)
}

fn ntp_show(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    let ntp = ctx.store.os_settings()?.ntp;
    ctx.say(&format!("NTP: {}", if ntp.enabled { "on" } else { "off" }))?;
    if ntp.servers.is_empty() {
        ctx.say("NTP servers: none set (the system's fallback servers are used)")?;
    } else {
        let list: Vec<&str> = ntp.servers.iter().map(|s| s.as_str()).collect();
        ctx.say(&format!("NTP servers: {}", list.join(", ")))?;
    }
    let synced = match ctx.host.query(&[
        "timedatectl",
        "show",
        "--property=NTPSynchronized",
        "--value",
    ]) {
        Some(Ok(v)) => v.trim().to_owned(),
        Some(Err(e)) => format!("unknown ({e:#})"),
        None => format!("not read ({} is a test root)", ctx.host.root().display()),
    };
    ctx.say(&format!("Synchronised: {synced}"))?;
    Ok("ntpdate show".into())
}

fn ntp_add(ctx: &mut Ctx<'_>, args: &Args) -> Outcome {
    let server = NtpServer::parse("server", args.value(0))?;
    let os = ctx.store.cli_update_os_settings(ctx.session, |os| {
        os.ntp.add(server.clone())?;
        Ok(format!("added the NTP server {server}"))
    })?;
    apply_ntp(ctx, &format!("the NTP server {server}"), &os.ntp)?;
    Ok(format!("NTP server {server} added"))
}

fn ntp_delete(ctx: &mut Ctx<'_>, args: &Args) -> Outcome {
    let server = NtpServer::parse("server", args.value(0))?;
    let os = ctx.store.cli_update_os_settings(ctx.session, |os| {
        os.ntp.delete(&server)?;
        Ok(format!("removed the NTP server {server}"))
    })?;
    apply_ntp(ctx, &format!("removing the NTP server {server}"), &os.ntp)?;
    Ok(format!("NTP server {server} removed"))
}

fn ntp_switch(ctx: &mut Ctx<'_>, on: bool) -> Outcome {
    let word = if on { "on" } else { "off" };
    let os = ctx.store.cli_update_os_settings(ctx.session, |os| {
        os.ntp.enabled = on;
        Ok(format!("turned NTP {word}"))
    })?;
    ctx.apply(
        &format!("turning NTP {word}"),
        &[render::timesyncd(&os.ntp)],
        &[Cmd::new(&[
            "timedatectl",
            "set-ntp",
            if on { "true" } else { "false" },
        ])],
    )?;
    Ok(format!("NTP is {word}"))
}

fn ntp_on(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    ntp_switch(ctx, true)
}

fn ntp_off(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    ntp_switch(ctx, false)
}

fn ntp_sync(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    if !ctx.store.os_settings()?.ntp.enabled {
        return Err(Failure::Error(anyhow::anyhow!(
            "NTP is off; turn it on first (ntpdate on)"
        )));
    }
    // A restart makes timesyncd ask its servers at once.
    ctx.apply(
        "an NTP synchronisation",
        &[],
        &[Cmd::new(&["systemctl", "restart", TIMESYNCD])],
    )?;
    ctx.audit("forced an NTP synchronisation")?;
    let started = std::time::Instant::now();
    loop {
        match ctx.host.query(&[
            "timedatectl",
            "show",
            "--property=NTPSynchronized",
            "--value",
        ]) {
            None => {
                return Ok(format!(
                    "NTP synchronisation requested (not waited for: {} is a test root)",
                    ctx.host.root().display()
                ));
            }
            Some(Ok(v)) if v.trim() == "yes" => {
                return Ok("the clock is synchronised with NTP".into());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(Failure::Error(e)),
        }
        if interrupted() {
            return Err(Failure::Error(anyhow::anyhow!("interrupted")));
        }
        if started.elapsed() > SYNC_WAIT {
            return Err(Failure::Error(anyhow::anyhow!(
                "the clock is not synchronised after {} seconds; check the NTP servers (ntpdate show) and the network",
                SYNC_WAIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The tz database: the root's, or this machine's when the root has none.
fn zoneinfo(ctx: &Ctx<'_>) -> PathBuf {
    let under_root = ctx.host.path(ZONEINFO_DIR);
    if under_root.is_dir() {
        under_root
    } else {
        PathBuf::from(ZONEINFO_DIR)
    }
}

fn zone_exists(ctx: &Ctx<'_>, tz: &TimeZone) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(zoneinfo(ctx).join(tz.as_str()))
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|()| &magic == b"TZif")
}

fn tz_list(ctx: &mut Ctx<'_>, args: &Args) -> Outcome {
    let dir = zoneinfo(ctx);
    let table = ["zone1970.tab", "zone.tab"]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .ok_or_else(|| anyhow::anyhow!("the time zone database ({}) is missing", dir.display()))?;
    let mut zones: Vec<&str> = table
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split('\t').nth(2))
        .collect();
    zones.push("UTC");
    zones.sort_unstable();
    zones.dedup();
    if let Some(area) = args.get(0) {
        let area = area.to_ascii_lowercase();
        zones.retain(|z| z.to_ascii_lowercase().starts_with(&area));
        if zones.is_empty() {
            return Err(Failure::Error(anyhow::anyhow!(
                "area: no time zone starts with '{}'",
                shown(args.value(0))
            )));
        }
    }
    let width = zones.iter().map(|z| z.len()).max().unwrap_or(0) + 2;
    for row in zones.chunks(3) {
        let line: String = row.iter().map(|z| format!("{z:<width$}")).collect();
        ctx.say(line.trim_end())?;
    }
    Ok(format!("{} time zones", zones.len()))
}

/// The zone `/etc/localtime` points to.
fn current_zone(ctx: &Ctx<'_>) -> String {
    match std::fs::read_link(ctx.host.path(LOCALTIME_LINK)) {
        Ok(target) => {
            let t = target.to_string_lossy();
            match t.split_once("zoneinfo/") {
                Some((_, zone)) => zone.to_owned(),
                None => t.into_owned(),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "UTC".into(),
        Err(_) => "unknown (/etc/localtime is not a link)".into(),
    }
}

fn tz_show(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    let zone = current_zone(ctx);
    ctx.say(&format!("Time zone: {zone}"))?;
    Ok("gmttimezone show".into())
}

fn tz_set(ctx: &mut Ctx<'_>, args: &Args) -> Outcome {
    let tz = TimeZone::parse("time_zone", args.value(0))?;
    if !zone_exists(ctx, &tz) {
        return Err(Failure::Error(anyhow::anyhow!(
            "time_zone: '{tz}' is not in the time zone database (see gmttimezone list)"
        )));
    }
    ctx.apply(
        &format!("the time zone {tz}"),
        &[],
        &[
            Cmd::new(&["timedatectl", "set-timezone", tz.as_str()]).emulating(Emulated::Symlink {
                path: LOCALTIME_LINK,
                target: render::localtime_target(&tz),
            }),
        ],
    )?;
    ctx.audit(&format!("set the time zone to {tz}"))?;
    Ok(format!(
        "the time zone is {tz}. Restart the server software (system restart) to apply it to the services."
    ))
}

/// The local time (the machine's zone), or UTC when it cannot be known.
fn now_local() -> OffsetDateTime {
    OffsetDateTime::now_local().unwrap_or_else(|_| OffsetDateTime::now_utc())
}

fn two_digits(s: &str) -> Option<u8> {
    (s.len() == 2 && s.chars().all(|c| c.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn parse_date(s: &str) -> anyhow::Result<Date> {
    let bad = || anyhow::anyhow!("date: '{}' is not a date as MM/DD/YYYY", shown(s));
    let parts: Vec<&str> = s.split('/').collect();
    let [m, d, y] = parts.as_slice() else {
        return Err(bad());
    };
    let (Some(m), Some(d)) = (two_digits(m), two_digits(d)) else {
        return Err(bad());
    };
    let y: i32 = (y.len() == 4 && y.chars().all(|c| c.is_ascii_digit()))
        .then(|| y.parse().ok())
        .flatten()
        .ok_or_else(bad)?;
    if !(2000..=2099).contains(&y) {
        anyhow::bail!("date: the year must be between 2000 and 2099");
    }
    let month = Month::try_from(m).map_err(|_| bad())?;
    Date::from_calendar_date(y, month, d).map_err(|_| bad())
}

fn parse_time(s: &str) -> anyhow::Result<Time> {
    let bad = || anyhow::anyhow!("time: '{}' is not a time as HH:MM:SS (24-hour)", shown(s));
    let parts: Vec<&str> = s.split(':').collect();
    let [h, m, sec] = parts.as_slice() else {
        return Err(bad());
    };
    let (Some(h), Some(m), Some(sec)) = (two_digits(h), two_digits(m), two_digits(sec)) else {
        return Err(bad());
    };
    Time::from_hms(h, m, sec).map_err(|_| bad())
}

fn fmt_date(d: Date) -> String {
    format!("{:02}/{:02}/{:04}", u8::from(d.month()), d.day(), d.year())
}

fn fmt_time(t: Time) -> String {
    format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
}

/// Sets the clock (local time) with timedated; refused while NTP sets it.
fn set_clock(ctx: &mut Ctx<'_>, date: Date, time: Time, what: &str, value: String) -> Outcome {
    if ctx.store.os_settings()?.ntp.enabled {
        return Err(Failure::Error(anyhow::anyhow!(
            "NTP sets the clock; turn NTP off first (ntpdate off)"
        )));
    }
    let stamp = format!(
        "{:04}-{:02}-{:02} {}",
        date.year(),
        u8::from(date.month()),
        date.day(),
        fmt_time(time)
    );
    ctx.apply(
        &format!("the {what} {value}"),
        &[],
        &[Cmd::new(&["timedatectl", "set-time", &stamp])],
    )?;
    ctx.audit(&format!("set the {what} to {value}"))?;
    Ok(format!("{what} set to {value}"))
}

fn date(ctx: &mut Ctx<'_>, args: &Args) -> Outcome {
    let now = now_local();
    let Some(value) = args.get(0) else {
        ctx.say(&format!("Date: {}", fmt_date(now.date())))?;
        return Ok("date".into());
    };
    let d = parse_date(value)?;
    set_clock(ctx, d, now.time(), "date", fmt_date(d))
}

fn time_of_day(ctx: &mut Ctx<'_>, args: &Args) -> Outcome {
    let now = now_local();
    let Some(value) = args.get(0) else {
        ctx.say(&format!("Time: {}", fmt_time(now.time())))?;
        return Ok("time".into());
    };
    let t = parse_time(value)?;
    set_clock(ctx, now.date(), t, "time", fmt_time(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times() {
        assert_eq!(
            fmt_date(parse_date("12/31/2026").expect("date")),
            "12/31/2026"
        );
        assert_eq!(
            fmt_date(parse_date("02/29/2028").expect("leap")),
            "02/29/2028"
        );
        for bad in [
            "02/30/2026",
            "13/01/2026",
            "1/1/2026",
            "12/31/1999",
            "12-31-2026",
            "",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
        assert_eq!(fmt_time(parse_time("23:59:59").expect("time")), "23:59:59");
        for bad in ["24:00:00", "12:60:00", "1:00:00", "12:00", "noon"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
