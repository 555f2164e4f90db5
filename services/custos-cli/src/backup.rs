//! `system` → `backup`: the automatic backup of §12 from the CLI, the same
//! settings as System → Backup and Restore → Automatic in the web console.
//! Times are 24-hour `HH:MM` in UTC, shown also with AM/PM; weekdays are
//! English names. The push itself is custos-backupd's.

use appliance::store::{AutomaticBackup, Frequency, Schedule, ScpTarget, TimeOfDay, parse_weekday};

use crate::menu::{Args, Command, Outcome};
use crate::session::Ctx;

// The `backup` commands; `system`'s command table lists each.

pub const SHOW: Command = Command {
    words: &["backup", "show"],
    args: "",
    example: "backup show",
    help: "Show the automatic backup: schedule (UTC), SCP target, pinned host key, last push",
    run: show,
};

pub const SCHEDULE_DAILY: Command = Command {
    words: &["backup", "schedule", "daily"],
    args: "HH:MM",
    example: "backup schedule daily 02:30",
    help: "Back up every day at HH:MM (24-hour, UTC)",
    run: schedule_daily,
};

pub const SCHEDULE_WEEKLY: Command = Command {
    words: &["backup", "schedule", "weekly"],
    args: "DAY HH:MM",
    example: "backup schedule weekly sunday 02:30",
    help: "Back up once a week on DAY (monday … sunday) at HH:MM (24-hour, UTC)",
    run: schedule_weekly,
};

pub const TARGET: Command = Command {
    words: &["backup", "target"],
    args: "HOST DIRECTORY USER [PORT]",
    example: "backup target 10.1.1.20 /srv/backups/custos custos-backup 22",
    help: "Set the SCP target: host, absolute directory, user name, SSH port (default 22)",
    run: target,
};

pub const PUBKEY: Command = Command {
    words: &["backup", "pubkey"],
    args: "",
    example: "backup pubkey",
    help: "Print this appliance's SSH public key for the target's ~/.ssh/authorized_keys",
    run: pubkey,
};

pub const HOSTKEY_FORGET: Command = Command {
    words: &["backup", "hostkey", "forget"],
    args: "",
    example: "backup hostkey forget",
    help: "Forget the target's pinned host key after a deliberate change (the next push learns it)",
    run: forget_host_key,
};

pub const NOW: Command = Command {
    words: &["backup", "now"],
    args: "",
    example: "backup now",
    help: "Push a backup to the target now",
    run: now,
};

pub const HISTORY: Command = Command {
    words: &["backup", "history"],
    args: "",
    example: "backup history",
    help: "The latest pushes: time, file, size, result",
    run: history,
};

pub const REMOVE: Command = Command {
    words: &["backup", "remove"],
    args: "",
    example: "backup remove",
    help: "Remove the schedule and the target (the appliance's SSH key stays)",
    run: remove,
};

pub const WRAPPER_SHOW: Command = Command {
    words: &["backup", "wrapperkey", "show"],
    args: "",
    example: "backup wrapperkey show",
    help: "Show the wrapper key's id, its M of N and its custodians (never the key)",
    run: wrapper_show,
};

pub const WRAPPER_DISCARD: Command = Command {
    words: &["backup", "wrapperkey", "discard"],
    args: "",
    example: "backup wrapperkey discard",
    help: "Discard the wrapper key when too many shares are lost for a quorum (asks for its id)",
    run: wrapper_discard,
};

fn wrapper_show(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    let v = ctx.store.cli_wrapper_key_status(ctx.session)?;
    let Some(id) = v.key_id else {
        return Ok("there is no wrapper key".into());
    };
    ctx.say(&format!("Wrapper key: {id}"))?;
    match (v.minimum_custodians, v.total_custodians) {
        (Some(m), Some(n)) => ctx.say(&format!(
            "Exported: {m} of {n}; custodians holding shares: {}",
            if v.custodians.is_empty() {
                "none".to_owned()
            } else {
                v.custodians.join(", ")
            }
        ))?,
        _ => ctx.say("Not exported yet")?,
    }
    Ok("backup wrapperkey show".into())
}

fn wrapper_discard(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    let v = ctx.store.cli_wrapper_key_status(ctx.session)?;
    let Some(id) = v.key_id else {
        return Err(appliance::Error::conflict(
            "wrapper_key",
            "there is no wrapper key to discard",
        )
        .into());
    };
    let warning = format!(
        "Wrapper key {id} and every share of it still held here are deleted: backups made with it can then be restored only with a quorum of its shares."
    );
    ctx.confirm(&[
        &warning,
        "Do this only when so many shares are lost that no quorum can be pasted; then create and export a new key with its custodians present.",
    ])?;
    let typed = ctx.ask("Type the wrapper key's id to discard it", "")?;
    let gone = ctx.store.cli_discard_wrapper_key(ctx.session, &typed)?;
    Ok(format!(
        "wrapper key {gone} was discarded; create a new one under System → Wrapper Keys and export it to its custodians"
    ))
}

fn describe(ctx: &mut Ctx<'_>, v: &AutomaticBackup) -> Result<(), crate::menu::Failure> {
    let schedule = match &v.schedule {
        Some(s) => s.describe(),
        None => "not set".into(),
    };
    let target = match &v.target {
        Some(t) => t.to_string(),
        None => "not set".into(),
    };
    let pinned = match (&v.host_key_fingerprint, &v.target) {
        (Some(fp), _) => fp.clone(),
        (None, Some(_)) => "not pinned yet (learned on the first push)".into(),
        (None, None) => "none".into(),
    };
    let next = v
        .next_run(time::OffsetDateTime::now_utc())
        .map(appliance::model::fmt_time)
        .unwrap_or_else(|| "none (a schedule and a target are both needed)".into());
    ctx.say(&format!("Schedule: {schedule}"))?;
    ctx.say(&format!("SCP target: {target}"))?;
    ctx.say(&format!("Target host key: {pinned}"))?;
    ctx.say(&format!("Next backup: {next}"))?;
    if v.now_requested_at.is_some() {
        ctx.say("Backup Now: requested, waiting for custos-backupd")?;
    }
    Ok(())
}

fn show(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    let v = ctx.store.cli_automatic_backup(ctx.session)?;
    describe(ctx, &v)?;
    let last = ctx.store.cli_backup_history(ctx.session, 1)?;
    match last.first() {
        Some(h) if h.success => ctx.say(&format!(
            "Last push: {} {} ({} bytes) succeeded",
            h.at,
            h.file_name.as_deref().unwrap_or("?"),
            h.bytes.unwrap_or(0)
        ))?,
        Some(h) => ctx.say(&format!(
            "Last push: {} failed: {}",
            h.at,
            h.error.as_deref().unwrap_or("?")
        ))?,
        None => ctx.say("Last push: none yet")?,
    }
    Ok("backup show".into())
}

fn set_schedule(ctx: &mut Ctx<'_>, schedule: Schedule) -> Outcome {
    let v = ctx.store.cli_set_backup_schedule(ctx.session, schedule)?;
    let mut msg = format!("backups run {}", schedule.describe());
    if v.target.is_none() {
        msg.push_str("; set the SCP target with 'backup target' too");
    }
    Ok(msg)
}

fn schedule_daily(ctx: &mut Ctx<'_>, args: &Args) -> Outcome {
    let time = TimeOfDay::parse("time", args.value(0))?;
    set_schedule(ctx, Schedule::new(Frequency::Daily, time, None)?)
}

fn schedule_weekly(ctx: &mut Ctx<'_>, args: &Args) -> Outcome {
    let day = parse_weekday("weekday", args.value(0))?;
    let time = TimeOfDay::parse("time", args.value(1))?;
    set_schedule(ctx, Schedule::new(Frequency::Weekly, time, Some(day))?)
}

fn target(ctx: &mut Ctx<'_>, args: &Args) -> Outcome {
    let port = match args.get(3) {
        None => None,
        Some(p) => Some(p.parse::<i64>().map_err(|_| {
            appliance::Error::invalid("target_port", "must be a port number from 1 to 65535")
        })?),
    };
    let t = ScpTarget::new(args.value(0), port, args.value(1), args.value(2))?;
    let v = ctx.store.cli_set_backup_target(ctx.session, t.clone())?;
    let pinned = match &v.host_key_fingerprint {
        Some(fp) => format!("the pinned host key {fp} is kept"),
        None => "its host key is learned and pinned on the first push".into(),
    };
    Ok(format!(
        "backups go to {t}; {pinned}. Add the key of 'backup pubkey' to ~{}/.ssh/authorized_keys there",
        t.user
    ))
}

fn pubkey(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    let os = ctx.store.os_settings()?;
    let host = crate::system::host_name(ctx, &os);
    let key = ctx.store.cli_backup_ssh_public_key(ctx.session, &host)?;
    ctx.say(&key)?;
    Ok("backup pubkey: add this line to the target user's ~/.ssh/authorized_keys".into())
}

fn forget_host_key(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    let v = ctx.store.cli_automatic_backup(ctx.session)?;
    let Some(fp) = v.host_key_fingerprint else {
        return Err(appliance::Error::conflict(
            "forget_host_key",
            "no host key is pinned yet; it is learned on the first push",
        )
        .into());
    };
    let warning = format!(
        "The pinned host key {fp} of the backup target is forgotten: the next push trusts whatever key the target presents."
    );
    ctx.confirm(&[
        &warning,
        "Do this only after a deliberate change on the target (a reinstall, a new host key).",
    ])?;
    ctx.store.cli_forget_backup_host_key(ctx.session)?;
    Ok(format!(
        "the host key {fp} is forgotten; the next push learns and pins the target's key"
    ))
}

fn now(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    let v = ctx.store.cli_request_backup_now(ctx.session)?;
    let target = v.target.map(|t| t.to_string()).unwrap_or_default();
    Ok(format!(
        "a backup to {target} was requested; custos-backupd pushes it within a few seconds ('backup history' shows the result)"
    ))
}

fn history(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    let h = ctx.store.cli_backup_history(ctx.session, 20)?;
    if h.is_empty() {
        ctx.say("No backup was pushed yet.")?;
    }
    for e in &h {
        let result = if e.success {
            format!(
                "success {} ({} bytes)",
                e.file_name.as_deref().unwrap_or("?"),
                e.bytes.unwrap_or(0)
            )
        } else {
            let retry = e
                .retry_in_secs
                .map(|s| format!("; retry in {s} s"))
                .unwrap_or_default();
            format!("FAILED: {}{retry}", e.error.as_deref().unwrap_or("?"))
        };
        ctx.say(&format!(
            "{}  {:<9}  attempt {}  {}  {result}",
            e.at,
            e.kind.title(),
            e.attempt,
            e.target
        ))?;
    }
    Ok(format!("backup history: {} entries", h.len()))
}

fn remove(ctx: &mut Ctx<'_>, _: &Args) -> Outcome {
    ctx.confirm(&[
        "The backup schedule, the SCP target and its pinned host key are removed; no automatic backup runs until they are set again.",
    ])?;
    ctx.store.cli_remove_automatic_backup(ctx.session)?;
    Ok("the automatic backup schedule and settings were removed".into())
}
