//! System → Email Notification (§14): the SMTP Server tab (the page says
//! "SMTP server not set" until it is; Send test mail) and the Email
//! Notification List tab (add, edit, delete, enable, disable). The store
//! checks every change again; the mail itself goes out through the same
//! code `custos-notifyd` uses.

use appliance::model::Severity;
use appliance::store::{
    EmailGroupUpdate, EmailGroupView, NewEmailGroup, NoticeType, SMTP_NOT_SET, SecretUpdate,
    SmtpSecurity, SmtpUpdate, parse_threshold,
};
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::form::{Errors, Form, Posted};
use super::layout::{self, Input, checkbox, field, general_errors, or_dash, select, textarea};
use super::{Ctx, Page, WebResult};

const TITLE: &str = "Email Notification";

/// The two tabs of the page.
fn tabs(current: &str) -> Markup {
    let tab = |label: &str, link: &str, here: bool| {
        html! {
            @if here { span.tab.current aria-current="page" { (label) } }
            @else { a href=(link) { (label) } }
        }
    };
    html! {
        nav.tabs aria-label="Email Notification" {
            (tab("SMTP Server", "/system/email", current == "smtp"))
            (tab("Email Notification List", "/system/email/groups", current == "groups"))
        }
    }
}

fn page(ctx: &Ctx, title: &str, body: Markup) -> Markup {
    layout::page(
        ctx,
        Page::System,
        title,
        super::system::submenu("email"),
        body,
    )
}

// --- SMTP Server tab ------------------------------------------------------------

const SMTP_FIELDS: [&str; 7] = [
    "host",
    "port",
    "security",
    "username",
    "password",
    "sender",
    "ca_certificate",
];

async fn smtp_page(
    ctx: &Ctx,
    values: Option<&Form>,
    errors: &Errors,
    test_errors: &Errors,
) -> WebResult<Markup> {
    let current = ctx.store(|s, a| s.smtp_settings(a)).await?;
    let stored;
    let values = match values {
        Some(v) => v,
        None => {
            stored = match &current {
                Some(v) => Form::default()
                    .with("host", v.host.clone())
                    .with("port", v.port.to_string())
                    .with("security", v.security.as_str())
                    .with("username", v.username.clone().unwrap_or_default())
                    .with("sender", v.sender.clone())
                    .with(
                        "ca_certificate",
                        v.ca_certificate.clone().unwrap_or_default(),
                    ),
                None => Form::default()
                    .with("security", SmtpSecurity::Starttls.as_str())
                    .with("sender", format!("custos@{}", ctx.st.host_name)),
            };
            &stored
        }
    };
    let securities: Vec<(String, String)> = SmtpSecurity::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), s.title().to_owned()))
        .collect();
    let password_hint = if current.as_ref().is_some_and(|c| c.password_set) {
        "A password is stored; leave this empty to keep it. Clearing the user name removes it."
    } else {
        "Only with a user name."
    };
    let write = ctx.can_write();
    let body = html! {
        (tabs("smtp"))
        @match &current {
            None => p.notice.warn role="status" #smtp-status { (SMTP_NOT_SET) ". Email notifications are not sent until it is." },
            Some(c) => p.notice.ok role="status" #smtp-status {
                "SMTP server " (c.host) ":" (c.port) " (" (c.security.title()) "), sender " (c.sender)
                @if let Some(u) = &c.username { ", authentication as " (u) }
                ". Last changed " (c.updated_at) "."
            },
        }
        (general_errors(errors, &SMTP_FIELDS))
        (layout::form(ctx, "/system/email/smtp", html! {
            fieldset disabled[!write] {
                legend { "SMTP Server" }
                (field(Input::Text, "Server", "host", values, errors, Some("Host name or IP address of the mail relay."), true))
                (select("Security", "security", &securities, values, errors,
                    Some("STARTTLS and TLS verify the server's certificate against the system's roots and the CA certificate below.")))
                (field(Input::Number, "Port", "port", values, errors, Some("Empty: 25 for none, 587 for STARTTLS, 465 for TLS."), false))
                (field(Input::Text, "Sender (From)", "sender", values, errors, Some("The address notices come from."), true))
                (field(Input::Text, "User Name", "username", values, errors, Some("Optional: for servers that require authentication."), false))
                (field(Input::Password, "Password", "password", values, errors, Some(password_hint), false))
                (textarea("CA Certificate (PEM)", "ca_certificate", values, errors,
                    Some("Optional: the root certificate of a relay with a private CA.")))
            }
            @if write {
                div.actions { button.primary type="submit" { "Apply" } }
            }
        }))
        @if current.is_some() && write {
            section aria-labelledby="h-test" {
                h2 #h-test { "Send Test Mail" }
                (general_errors(test_errors, &["to"]))
                (layout::form(ctx, "/system/email/test", html! {
                    (field(Input::Text, "Recipient", "to", &Form::default(), test_errors,
                        Some("The mail is sent at once; the server's answer is shown here."), true))
                    div.actions { button type="submit" { "Send Test Mail" } }
                }))
            }
        }
    };
    Ok(page(ctx, TITLE, body))
}

pub async fn smtp(ctx: Ctx) -> WebResult<Response> {
    ctx.require(Page::System)?;
    Ok(smtp_page(&ctx, None, &Errors::none(), &Errors::none())
        .await?
        .into_response())
}

fn smtp_update(form: &Form) -> appliance::Result<SmtpUpdate> {
    let password = form.secret("password");
    Ok(SmtpUpdate {
        host: form.get("host").to_owned(),
        port: form.int("port", "the port")?,
        security: SmtpSecurity::parse(form.get("security"))?,
        username: form.opt("username"),
        password: if password.expose().is_empty() {
            SecretUpdate::Keep
        } else {
            SecretUpdate::Set(password)
        },
        sender: form.get("sender").to_owned(),
        ca_certificate: form.opt("ca_certificate"),
    })
}

pub async fn set_smtp(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let outcome = match smtp_update(&form) {
        Ok(up) => ctx.store(move |s, a| s.set_smtp_settings(a, up)).await,
        Err(e) => Err(e.into()),
    };
    match outcome {
        Ok(v) => Ok(layout::done(
            &ctx,
            "/system/email",
            &format!("SMTP server {}:{} saved.", v.host, v.port),
        )),
        Err(e) => {
            let errors = Errors::from_web(e)?;
            Ok((
                StatusCode::BAD_REQUEST,
                smtp_page(&ctx, Some(&form), &errors, &Errors::none()).await?,
            )
                .into_response())
        }
    }
}

pub async fn send_test(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let to = form.get("to").trim().to_owned();
    let t = to.clone();
    let cfg = match ctx.store(move |s, a| s.test_mail_config(a, &t)).await {
        Ok(c) => c,
        Err(e) => {
            let errors = Errors::from_web(e)?;
            return Ok((
                StatusCode::BAD_REQUEST,
                smtp_page(&ctx, None, &Errors::none(), &errors).await?,
            )
                .into_response());
        }
    };
    let server = cfg.describe();
    let outcome = custos_notifyd::send_test(&cfg, &to, &ctx.st.host_name, &ctx.actor.login).await;
    let failure = outcome.as_ref().err().map(|e| e.to_string());
    let (t, srv, f) = (to.clone(), server.clone(), failure.clone());
    ctx.store(move |s, a| s.log_test_mail(a, &t, &srv, f.as_deref()))
        .await?;
    Ok(match failure {
        None => layout::done(
            &ctx,
            "/system/email",
            &format!("Test mail sent to {to} through {server}."),
        ),
        Some(e) => layout::refused(
            &ctx,
            "/system/email",
            &format!("The test mail to {to} was not sent through {server}: {e}"),
        ),
    })
}

// --- Email Notification List tab -------------------------------------------------

fn scope(g: &EmailGroupView) -> Markup {
    html! {
        @match &g.domain { Some(d) => { "Domain " (d) }, None => "System-wide", }
    }
}

pub async fn groups(ctx: Ctx) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let all = ctx.store(|s, a| s.list_email_groups(a)).await?;
    let set = ctx.store(|s, a| s.smtp_settings(a)).await?.is_some();
    let write = ctx.can_write();
    let body = html! {
        (tabs("groups"))
        @if !set {
            p.notice.warn role="status" { (SMTP_NOT_SET) ": notices wait until it is set on the SMTP Server tab." }
        }
        (layout::form(&ctx, "/system/email/groups/change", html! {
            table.list {
                caption.visually-hidden { "Email notification groups" }
                thead { tr {
                    @if write { th scope="col" { input type="checkbox" data-select-all aria-label="Select all"; } }
                    th scope="col" { "Group Name" }
                    th scope="col" { "Type" }
                    th scope="col" { "Threshold" }
                    th scope="col" { "Message Contains" }
                    th scope="col" { "Scope" }
                    th scope="col" { "Email Address List" }
                    th scope="col" { "Enabled" }
                    th scope="col" { "Delivery" }
                } }
                tbody {
                    @for g in &all {
                        tr {
                            @if write { td { input type="checkbox" name="group" value=(g.name) aria-label=(format!("Select {}", g.name)); } }
                            td { a href=(format!("/system/email/groups/edit/{}", g.name)) { (g.name) } }
                            td { (g.notice_type.title()) }
                            td { @if g.notice_type == NoticeType::Generic { (g.threshold.as_str()) } @else { span.muted { "—" } } }
                            td { (or_dash(Some(g.message_contains.as_str()).filter(|m| !m.is_empty()))) }
                            td { (scope(g)) }
                            td { (g.recipients) }
                            td { @if g.enabled { span.badge.ok { "enabled" } } @else { span.badge { "disabled" } } }
                            td {
                                (g.sent) " sent"
                                @if g.pending > 0 { ", " (g.pending) " waiting" }
                                @if g.failed > 0 { ", " span.badge.bad { (g.failed) " given up" } }
                                @if let Some(e) = &g.last_error { p.hint { "Last error: " (e) } }
                            }
                        }
                    }
                    @if all.is_empty() { tr { td colspan="9" .muted { "No notification groups yet." } } }
                }
            }
            @if write {
                div.actions {
                    a.button href="/system/email/groups/add" { "Add" }
                    button type="submit" name="action" value="enable" { "Enable" }
                    button type="submit" name="action" value="disable" { "Disable" }
                    button.danger type="submit" name="action" value="delete" { "Delete" }
                }
            }
        }))
    };
    Ok(page(&ctx, TITLE, body).into_response())
}

pub async fn change_groups(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    const LIST: &str = "/system/email/groups";
    let names: Vec<String> = form.all("group").into_iter().map(str::to_owned).collect();
    if names.is_empty() {
        return Ok(layout::refused(
            &ctx,
            LIST,
            "Select the notification groups first.",
        ));
    }
    let action = form.get("action").to_owned();
    for name in &names {
        let n = name.clone();
        let outcome = match action.as_str() {
            "enable" | "disable" => {
                let up = EmailGroupUpdate {
                    enabled: Some(action == "enable"),
                    ..Default::default()
                };
                ctx.store(move |s, a| s.update_email_group(a, &n, up))
                    .await
                    .map(drop)
            }
            "delete" => ctx.store(move |s, a| s.delete_email_group(a, &n)).await,
            _ => {
                Err(appliance::Error::invalid("action", "must be enable, disable or delete").into())
            }
        };
        if let Err(e) = outcome {
            let msg = Errors::from_web(e)?.summary();
            return Ok(layout::refused(&ctx, LIST, &format!("{name}: {msg}")));
        }
    }
    let what = match action.as_str() {
        "enable" => "Enabled",
        "disable" => "Disabled",
        _ => "Deleted",
    };
    Ok(layout::done(
        &ctx,
        LIST,
        &format!("{what} {}.", names.join(", ")),
    ))
}

const GROUP_FIELDS: [&str; 8] = [
    "name",
    "recipients",
    "subject",
    "type",
    "threshold",
    "message_contains",
    "domain",
    "enabled",
];

/// The add and edit form; `editing` is the name of the group changed.
async fn group_form(
    ctx: &Ctx,
    editing: Option<&str>,
    values: &Form,
    errors: &Errors,
) -> WebResult<Markup> {
    let domains = ctx.store(|s, a| s.list_domains(a)).await?;
    let mut scopes = vec![(String::new(), "System-wide".to_owned())];
    scopes.extend(
        domains
            .iter()
            .map(|d| (d.name.clone(), format!("Domain {}", d.name))),
    );
    let types: Vec<(String, String)> = NoticeType::ALL
        .iter()
        .map(|t| (t.as_str().to_owned(), t.title().to_owned()))
        .collect();
    let thresholds = vec![
        (
            "ERROR".to_owned(),
            "ERROR: ERROR and FATAL messages".to_owned(),
        ),
        ("FATAL".to_owned(), "FATAL: FATAL messages only".to_owned()),
    ];
    let action = match editing {
        Some(n) => format!("/system/email/groups/edit/{n}"),
        None => "/system/email/groups/add".to_owned(),
    };
    let write = ctx.can_write();
    let body = html! {
        (tabs("groups"))
        (general_errors(errors, &GROUP_FIELDS))
        (layout::form(ctx, &action, html! {
            fieldset disabled[!write] {
                legend { "Notification Group" }
                @match editing {
                    Some(n) => div.field { "Group Name: " strong #name { (n) } },
                    None => (field(Input::Text, "Group Name", "name", values, errors, Some("Up to 64 letters, digits, '.', '_' and '-'."), true)),
                }
                (field(Input::Text, "Email Address List", "recipients", values, errors,
                    Some("Comma separated, e.g. ops@example.com, security@example.com."), true))
                (field(Input::Text, "Subject", "subject", values, errors,
                    Some("Optional: empty gives a subject naming the appliance and the event."), false))
                (select("Type", "type", &types, values, errors,
                    Some("Generic: log messages. Key and Certificate Expiration: 90, 60 and 15 days before expiry and 7 days after.")))
                (select("Threshold", "threshold", &thresholds, values, errors, Some("For Generic groups.")))
                (field(Input::Text, "Message Contains", "message_contains", values, errors,
                    Some("Only messages containing this text (any case); empty: all."), false))
                (select("Scope", "domain", &scopes, values, errors,
                    Some("A domain's group hears of that domain's log messages, keys and host certificates only.")))
                (checkbox("Enabled", "enabled", values, errors, None))
            }
            @if write {
                div.actions {
                    button.primary type="submit" { "OK" }
                    a.button href="/system/email/groups" { "Cancel" }
                }
            }
        }))
    };
    let title = match editing {
        Some(_) => "Edit Notification Group",
        None => "Add Notification Group",
    };
    Ok(page(ctx, title, body))
}

pub async fn add_page(ctx: Ctx) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let values = Form::default()
        .with("type", NoticeType::Generic.as_str())
        .with("threshold", Severity::Error.as_str())
        .with("enabled", "on");
    Ok(group_form(&ctx, None, &values, &Errors::none())
        .await?
        .into_response())
}

fn new_group(form: &Form) -> appliance::Result<NewEmailGroup> {
    Ok(NewEmailGroup {
        name: form.get("name").trim().to_owned(),
        recipients: form.get("recipients").to_owned(),
        subject: form.get("subject").to_owned(),
        notice_type: NoticeType::parse(form.get("type"))?,
        threshold: parse_threshold(form.get("threshold"))?,
        message_contains: form.get("message_contains").trim().to_owned(),
        enabled: form.checked("enabled"),
        domain: form.opt("domain"),
    })
}

pub async fn add(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let outcome = match new_group(&form) {
        Ok(new) => ctx.store(move |s, a| s.create_email_group(a, new)).await,
        Err(e) => Err(e.into()),
    };
    match outcome {
        Ok(g) => Ok(layout::done(
            &ctx,
            "/system/email/groups",
            &format!("Notification group {} added.", g.name),
        )),
        Err(e) => {
            let errors = Errors::from_web(e)?;
            Ok((
                StatusCode::BAD_REQUEST,
                group_form(&ctx, None, &form, &errors).await?,
            )
                .into_response())
        }
    }
}

pub async fn edit_page(ctx: Ctx, Path(name): Path<String>) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let n = name.clone();
    let g = ctx.store(move |s, a| s.get_email_group(a, &n)).await?;
    let mut values = Form::default()
        .with("recipients", g.recipients.clone())
        .with("subject", g.subject.clone())
        .with("type", g.notice_type.as_str())
        .with("threshold", g.threshold.as_str())
        .with("message_contains", g.message_contains.clone())
        .with("domain", g.domain.clone().unwrap_or_default());
    if g.enabled {
        values = values.with("enabled", "on");
    }
    Ok(group_form(&ctx, Some(&g.name), &values, &Errors::none())
        .await?
        .into_response())
}

fn group_update(form: &Form) -> appliance::Result<EmailGroupUpdate> {
    Ok(EmailGroupUpdate {
        recipients: Some(form.get("recipients").to_owned()),
        subject: Some(form.get("subject").to_owned()),
        notice_type: Some(NoticeType::parse(form.get("type"))?),
        threshold: Some(parse_threshold(form.get("threshold"))?),
        message_contains: Some(form.get("message_contains").trim().to_owned()),
        enabled: Some(form.checked("enabled")),
        domain: Some(form.opt("domain")),
    })
}

pub async fn edit(Path(name): Path<String>, Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let outcome = match group_update(&form) {
        Ok(up) => {
            let n = name.clone();
            ctx.store(move |s, a| s.update_email_group(a, &n, up)).await
        }
        Err(e) => Err(e.into()),
    };
    match outcome {
        Ok(g) => Ok(layout::done(
            &ctx,
            "/system/email/groups",
            &format!("Notification group {} saved.", g.name),
        )),
        Err(e) => {
            let errors = Errors::from_web(e)?;
            Ok((
                StatusCode::BAD_REQUEST,
                group_form(&ctx, Some(&name), &form, &errors).await?,
            )
                .into_response())
        }
    }
}
