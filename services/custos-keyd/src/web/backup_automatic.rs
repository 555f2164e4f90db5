//! System → Backup and Restore → Automatic (§12): the schedule (Daily or
//! Weekly, a time and a weekday), the SCP target with its pinned host key,
//! this appliance's SSH public key to copy, Backup Now, Remove Schedule and
//! Settings, and the history of pushes. custos-backupd does the pushing.
//!
//! The time is chosen as hour 1–12, minute and AM/PM from fixed lists and
//! stored as 24-hour `HH:MM` in UTC; the weekday's value is its English
//! name. Nothing submitted depends on the browser's language or time zone.

use appliance::store::{
    AutomaticBackup, AutomaticBackupUpdate, BackupHistoryEntry, DEFAULT_SSH_PORT, Frequency,
    Schedule, ScpTarget, TimeOfDay, WEEKDAYS, weekday_name, weekday_title,
};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::form::{Errors, Form, Posted};
use super::layout::{self, Input, checkbox, field, general_errors, radios, select};
use super::{Ctx, Page, WebResult};

const PAGE: &str = "/system/backup/automatic";
const FIELDS: [&str; 8] = [
    "frequency",
    "time",
    "weekday",
    "target_host",
    "target_port",
    "target_directory",
    "target_user",
    "forget_host_key",
];
/// History rows shown on the page.
const HISTORY_SHOWN: i64 = 50;

/// The form's values for the stored settings.
fn values(v: &AutomaticBackup) -> Form {
    let time = v
        .schedule
        .map(|s| s.time)
        .unwrap_or(TimeOfDay::new("time", 2, 0).expect("02:00 is a time"));
    let (hour, meridiem) = time.hour_12();
    let mut f = Form::default()
        .with(
            "frequency",
            v.schedule.map(|s| s.frequency.as_str()).unwrap_or(""),
        )
        .with("hour", hour.to_string())
        .with("minute", format!("{:02}", time.minute()))
        .with("meridiem", meridiem)
        .with(
            "weekday",
            weekday_name(
                v.schedule
                    .and_then(|s| s.weekday)
                    .unwrap_or(time::Weekday::Sunday),
            ),
        )
        .with("target_port", DEFAULT_SSH_PORT.to_string());
    if let Some(t) = &v.target {
        f = f
            .with("target_host", t.host.as_str())
            .with("target_port", t.port.to_string())
            .with("target_directory", t.directory.as_str())
            .with("target_user", t.user.as_str());
    }
    f
}

/// The time as three drop-downs (hour, minute, AM/PM) with the 24-hour UTC
/// value it is stored as.
fn time_field(values: &Form, errors: &Errors, stored: Option<TimeOfDay>) -> Markup {
    let error = errors.field("time");
    let opt = |name: &str, v: &str| values.get(name) == v;
    html! {
        fieldset.field.invalid[error.is_some()] #time
            aria-describedby=[error.map(|_| "time-error")] {
            legend { "Time (UTC)" }
            span.field.inline {
                label for="hour" { "Hour" }
                select #hour name="hour" {
                    @for h in 1..=12u8 {
                        @let v = h.to_string();
                        option value=(v) selected[opt("hour", &v)] { (v) }
                    }
                }
            }
            span.field.inline {
                label for="minute" { "Minute" }
                select #minute name="minute" {
                    @for m in 0..60u8 {
                        @let v = format!("{m:02}");
                        option value=(v) selected[opt("minute", &v)] { (v) }
                    }
                }
            }
            span.field.inline {
                label for="meridiem" { "AM/PM" }
                select #meridiem name="meridiem" {
                    option value="AM" selected[opt("meridiem", "AM")] { "AM" }
                    option value="PM" selected[opt("meridiem", "PM")] { "PM" }
                }
            }
            p.hint {
                "Times are UTC, the same for every administrator whatever their browser's language or time zone. "
                @if let Some(t) = stored {
                    "Stored as " strong { (t.as_24h()) " UTC" } " (" (t.as_12h()) ")."
                }
            }
            @if let Some(m) = error { p.field-error #time-error role="alert" { (m) } }
        }
    }
}

fn history_table(history: &[BackupHistoryEntry]) -> Markup {
    html! {
        @if history.is_empty() {
            p.muted { "No backup was pushed yet." }
        } @else {
            table.list {
                thead { tr {
                    th scope="col" { "Time (UTC)" }
                    th scope="col" { "Started By" }
                    th scope="col" { "Attempt" }
                    th scope="col" { "Target" }
                    th scope="col" { "File" }
                    th scope="col" { "Size (bytes)" }
                    th scope="col" { "Result" }
                } }
                tbody {
                    @for h in history {
                        tr {
                            td { (h.at) }
                            td { (h.kind.title()) }
                            td { (h.attempt) }
                            td { code { (h.target) } }
                            td { (layout::or_dash(h.file_name.as_deref())) }
                            td { @match h.bytes { Some(b) => (b), None => span.muted { "—" } } }
                            td {
                                @if h.success {
                                    span.badge.ok { "Success" }
                                } @else {
                                    span.badge.bad { "Failed" } " " (h.error.as_deref().unwrap_or(""))
                                    @if let Some(s) = h.retry_in_secs { " " span.muted { "(retry in " (s) " s)" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn page(ctx: &Ctx, form: Option<&Form>, errors: &Errors) -> WebResult<Markup> {
    let v = ctx.store(|s, a| s.automatic_backup(a)).await?;
    let host = ctx.st.host_name.clone();
    let public_key = ctx
        .store(move |s, a| s.backup_ssh_public_key(a, &host))
        .await?;
    let history = ctx.store(|s, a| s.backup_history(a, HISTORY_SHOWN)).await?;
    let wrapper = ctx.store(|s, a| s.wrapper_key_status(a)).await?;
    let stored = values(&v);
    let values = form.unwrap_or(&stored);
    let write = ctx.can_write();
    let next = v
        .next_run(time::OffsetDateTime::now_utc())
        .map(appliance::model::fmt_time);
    let weekdays: Vec<(String, String)> = WEEKDAYS
        .iter()
        .map(|d| (weekday_name(*d).to_owned(), weekday_title(*d).to_owned()))
        .collect();
    // The check box to forget the pinned key is there only when one is.
    let shown_fields: Vec<&str> = FIELDS
        .into_iter()
        .filter(|f| *f != "forget_host_key" || v.host_key_fingerprint.is_some())
        .collect();
    let body = html! {
        (super::backup::tabs("automatic"))
        @if !wrapper.exists {
            p.notice.warn { "No wrapper key: automatic backups fail until one is created or imported under System → Wrapper Keys." }
        }
        section aria-labelledby="h-status" {
            h2 #h-status { "Status" }
            table.facts {
                tr { th { "Schedule" } td {
                    @match &v.schedule { Some(s) => (s.describe()), None => span.muted { "Not set" } }
                } }
                tr { th { "SCP Target" } td {
                    @match &v.target { Some(t) => code { (t) }, None => span.muted { "Not set" } }
                } }
                tr { th { "Target Host Fingerprint" } td {
                    @match (&v.host_key_fingerprint, &v.target) {
                        (Some(fp), _) => { code.fp { (fp) } @if let Some(at) = &v.host_key_pinned_at { " " span.muted { "(pinned " (at) ")" } } },
                        (None, Some(_)) => span.muted { "Not pinned yet: learned and pinned on the first push" },
                        (None, None) => span.muted { "—" },
                    }
                } }
                tr { th { "Next Backup (UTC)" } td {
                    @match &next { Some(n) => (n), None => span.muted { "None: a schedule and a target are both needed" } }
                } }
                @if v.now_requested_at.is_some() {
                    tr { th { "Backup Now" } td { "Requested; custos-backupd pushes within a few seconds." } }
                }
            }
            @if write {
                div.actions {
                    (layout::form(ctx, "/system/backup/automatic/now", html! {
                        button.primary type="submit" disabled[v.target.is_none()] { "Backup Now" }
                    }))
                    (layout::form(ctx, "/system/backup/automatic/remove", html! {
                        button.danger type="submit" disabled[v.schedule.is_none() && v.target.is_none()] { "Remove Schedule and Settings" }
                    }))
                }
            }
        }
        section aria-labelledby="h-settings" {
            h2 #h-settings { "Schedule and Target" }
            (general_errors(errors, &shown_fields))
            (layout::form(ctx, PAGE, html! {
                fieldset disabled[!write] {
                    legend { "Schedule" }
                    (radios("Frequency", "frequency", &[("daily", "Daily"), ("weekly", "Weekly")], values, errors))
                    (time_field(values, errors, v.schedule.map(|s| s.time)))
                    (select("Day of the Week (Weekly)", "weekday", &weekdays, values, errors,
                        Some("Used by a weekly schedule only.")))
                }
                fieldset disabled[!write] {
                    legend { "Target: SCP" }
                    (field(Input::Text, "Target Host", "target_host", values, errors,
                        Some("IPv4 or IPv6 address or host name of the backup server."), true))
                    (field(Input::Number, "SSH Port", "target_port", values, errors, Some("Default 22."), false))
                    (field(Input::Text, "Target Directory", "target_directory", values, errors,
                        Some("Absolute path on the backup server, e.g. /srv/backups/custos; it must exist."), true))
                    (field(Input::Text, "User Name", "target_user", values, errors,
                        Some("The account on the backup server whose ~/.ssh/authorized_keys holds this appliance's public key."), true))
                    @if v.host_key_fingerprint.is_some() {
                        (checkbox("Forget the pinned host key", "forget_host_key", values, errors,
                            Some("Only after a deliberate change on the backup server (a reinstall, a new host key): the next push learns and pins its key again.")))
                    }
                }
                @if write {
                    div.actions { button.primary type="submit" { "Apply" } }
                }
            }))
        }
        section aria-labelledby="h-key" {
            h2 #h-key { "This Appliance's SSH Public Key" }
            p { "Add this line to " code { "~/.ssh/authorized_keys" } " of the user on the backup server. The private key never leaves the appliance." }
            pre.key #ssh-public-key { (public_key) }
        }
        section aria-labelledby="h-history" {
            h2 #h-history { "History" }
            (history_table(&history))
        }
    };
    Ok(layout::page(
        ctx,
        Page::System,
        "Backup and Restore",
        super::system::submenu("backup"),
        body,
    ))
}

pub async fn show(ctx: Ctx) -> WebResult<Response> {
    ctx.require(Page::System)?;
    Ok(page(&ctx, None, &Errors::none()).await?.into_response())
}

/// The submitted form as a change: the schedule when a frequency is chosen,
/// the target when any of its fields is filled in. Every refusal is kept,
/// next to its field.
fn update(form: &Form, errors: &mut Errors) -> Option<AutomaticBackupUpdate> {
    let mut add = |e: appliance::Error| match e {
        appliance::Error::Invalid { field, rule } | appliance::Error::Conflict { field, rule } => {
            errors.add(field, rule)
        }
        other => errors.add("", other.to_string()),
    };
    let schedule = match form.opt("frequency") {
        None => None,
        Some(f) => {
            let made = Frequency::parse("frequency", &f).and_then(|freq| {
                let time = TimeOfDay::from_12h(
                    "time",
                    form.get("hour"),
                    form.get("minute"),
                    form.get("meridiem"),
                )?;
                let weekday = match freq {
                    Frequency::Weekly => Some(appliance::store::parse_weekday(
                        "weekday",
                        form.get("weekday"),
                    )?),
                    Frequency::Daily => None,
                };
                Schedule::new(freq, time, weekday)
            });
            match made {
                Ok(s) => Some(s),
                Err(e) => {
                    add(e);
                    None
                }
            }
        }
    };
    let target_given = ["target_host", "target_directory", "target_user"]
        .iter()
        .any(|f| form.opt(f).is_some());
    let target = if target_given {
        let port = form
            .int("target_port", "the SSH port")
            .map(|p| p.or(Some(i64::from(DEFAULT_SSH_PORT))));
        match port.and_then(|p| {
            ScpTarget::new(
                form.get("target_host").trim(),
                p,
                form.get("target_directory").trim(),
                form.get("target_user").trim(),
            )
        }) {
            Ok(t) => Some(t),
            Err(e) => {
                add(e);
                None
            }
        }
    } else {
        None
    };
    let forget_host_key = form.checked("forget_host_key");
    if schedule.is_none() && target.is_none() && !forget_host_key && errors.general(&[]).is_empty()
    {
        errors.add(
            "frequency",
            "choose Daily or Weekly, or fill in the target, to change the automatic backup",
        );
    }
    if !errors.general(&[]).is_empty() {
        return None;
    }
    Some(AutomaticBackupUpdate {
        schedule,
        target,
        forget_host_key,
    })
}

pub async fn apply(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let mut errors = Errors::none();
    let outcome = match update(&form, &mut errors) {
        Some(up) => ctx.store(move |s, a| s.set_automatic_backup(a, up)).await,
        None => {
            return Ok((
                StatusCode::BAD_REQUEST,
                page(&ctx, Some(&form), &errors).await?,
            )
                .into_response());
        }
    };
    match outcome {
        Ok(v) => {
            let msg = match (&v.schedule, &v.target) {
                (Some(s), Some(t)) => format!("Saved: backups run {} to {t}.", s.describe()),
                (Some(s), None) => format!(
                    "Saved: backups run {}; fill in the target so they can be pushed.",
                    s.describe()
                ),
                (None, Some(t)) => format!(
                    "Saved: backups go to {t}; choose Daily or Weekly for them to run on their own (Backup Now works already)."
                ),
                (None, None) => "Saved.".to_owned(),
            };
            Ok(layout::done(&ctx, PAGE, &msg))
        }
        Err(e) => {
            let errors = Errors::from_web(e)?;
            Ok((
                StatusCode::BAD_REQUEST,
                page(&ctx, Some(&form), &errors).await?,
            )
                .into_response())
        }
    }
}

pub async fn backup_now(Posted(ctx, _): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    match ctx.store(|s, a| s.request_backup_now(a)).await {
        Ok(v) => Ok(layout::done(
            &ctx,
            PAGE,
            &format!(
                "Backup Now requested: custos-backupd pushes a backup to {} within a few seconds. Reload this page to see the result in the history.",
                v.target.map(|t| t.to_string()).unwrap_or_default()
            ),
        )),
        Err(e) => Ok(layout::refused(&ctx, PAGE, &Errors::from_web(e)?.summary())),
    }
}

pub async fn remove(Posted(ctx, _): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    match ctx.store(|s, a| s.remove_automatic_backup(a)).await {
        Ok(_) => Ok(layout::done(
            &ctx,
            PAGE,
            "The schedule, the target and its pinned host key were removed. This appliance's SSH key is kept.",
        )),
        Err(e) => Ok(layout::refused(&ctx, PAGE, &Errors::from_web(e)?.summary())),
    }
}
