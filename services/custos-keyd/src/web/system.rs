//! System (§4): General Preferences and License. The other System pages
//! (upgrade, web server certificate, wrapper keys, backup, SNMP, email,
//! syslog) arrive with their own features.

use appliance::model::SecurityMode;
use appliance::store::PreferencesUpdate;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::form::{Errors, Form, Posted};
use super::layout::{self, Input, field, general_errors, select, textarea};
use super::{Ctx, Page, WebError, WebResult};
use crate::state::AppState;

pub(super) fn submenu(current: &str) -> Markup {
    layout::submenu(&[
        (
            "General Preferences",
            "/system/preferences",
            current == "prefs",
        ),
        ("License", "/system/license", current == "licence"),
        ("Wrapper Keys", "/system/wrapper-keys", current == "wrapper"),
        ("Backup and Restore", "/system/backup", current == "backup"),
        ("SNMP", "/system/snmp", current == "snmp"),
        ("Email Notification", "/system/email", current == "email"),
        ("High Availability", "/system/ha", current == "ha"),
    ])
}

const PREF_FIELDS: [&str; 5] = [
    "key_refresh_period",
    "session_timeout",
    "max_failed_logins",
    "lockout_minutes",
    "security_mode",
];

fn prefs_form(ctx: &Ctx, values: &Form, errors: &Errors) -> Markup {
    let modes = vec![
        (
            "compatible".to_owned(),
            "Compatible (RSA, TLS 1.2 and 1.3)".to_owned(),
        ),
        (
            "suite_b".to_owned(),
            "Suite B (ECDSA P-384 only)".to_owned(),
        ),
    ];
    let write = ctx.can_write();
    let body = html! {
        (general_errors(errors, &PREF_FIELDS))
        (layout::form(ctx, "/system/preferences", html! {
            fieldset disabled[!write] {
                legend { "Keys and Sessions" }
                (field(Input::Number, "Key Refresh Period (minutes)", "key_refresh_period", values, errors,
                    Some("1 to 44640; applies to every key without its own period (recommended 5)."), true))
                (field(Input::Number, "Session Timeout (minutes)", "session_timeout", values, errors,
                    Some("Web console and API sessions end after this much inactivity."), true))
                (field(Input::Number, "Failed Logins Before Lock-out", "max_failed_logins", values, errors, None, true))
                (field(Input::Number, "Lock-out Duration (minutes)", "lockout_minutes", values, errors, None, true))
                (select("Security Mode", "security_mode", &modes, values, errors,
                    Some("Applies when the key service restarts; hosts of the other mode must register again.")))
            }
            @if write {
                div.actions { button.primary type="submit" { "Apply" } }
            }
        }))
    };
    layout::page(
        ctx,
        Page::System,
        "General Preferences",
        submenu("prefs"),
        body,
    )
}

pub async fn preferences_page(ctx: Ctx) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let p = ctx.store(|s, a| s.preferences(a)).await?;
    let values = Form::default()
        .with("key_refresh_period", p.key_refresh_period.to_string())
        .with("session_timeout", p.session_timeout.to_string())
        .with("max_failed_logins", p.max_failed_logins.to_string())
        .with("lockout_minutes", p.lockout_minutes.to_string())
        .with("security_mode", p.security_mode.as_str());
    Ok(prefs_form(&ctx, &values, &Errors::none()).into_response())
}

fn update(form: &Form) -> appliance::Result<PreferencesUpdate> {
    let required = |name: &'static str, label: &str| -> appliance::Result<Option<i64>> {
        match form.int(name, label)? {
            None => Err(appliance::Error::invalid(
                name,
                format!("{label} is required"),
            )),
            v => Ok(v),
        }
    };
    Ok(PreferencesUpdate {
        key_refresh_period: required("key_refresh_period", "the Key Refresh Period")?,
        session_timeout: required("session_timeout", "the Session Timeout")?,
        max_failed_logins: required("max_failed_logins", "the number of failed logins")?,
        lockout_minutes: required("lockout_minutes", "the lock-out duration")?,
        security_mode: Some(SecurityMode::parse(form.get("security_mode"))?),
    })
}

pub async fn update_preferences(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let outcome = match update(&form) {
        Ok(up) => ctx.store(move |s, a| s.update_preferences(a, up)).await,
        Err(e) => Err(e.into()),
    };
    match outcome {
        Ok(p) => {
            let msg = if p.security_mode != ctx.st.mode {
                "Preferences saved. The new security mode applies when the key service restarts."
            } else {
                "Preferences saved."
            };
            Ok(layout::done(&ctx, "/system/preferences", msg))
        }
        Err(e) => {
            let errors = Errors::from_web(e)?;
            Ok((StatusCode::BAD_REQUEST, prefs_form(&ctx, &form, &errors)).into_response())
        }
    }
}

async fn licence_form(ctx: &Ctx, values: &Form, errors: &Errors) -> WebResult<Markup> {
    let licence = ctx.store(|s, a| s.licence(a)).await?;
    let body = html! {
        section aria-labelledby="h-installed" {
            h2 #h-installed { "Installed Licence" }
            (super::dashboard::licence_summary(licence.as_ref()))
        }
        @if ctx.can_write() {
            section aria-labelledby="h-upload" {
                h2 #h-upload { "Upload a Licence File" }
                p.hint { "The file is signed by the vendor; the appliance checks the signature and the limits before it replaces the installed licence." }
                (general_errors(errors, &["licence", "licence_file"]))
                form method="post" action="/system/license" enctype="multipart/form-data" novalidate {
                    input type="hidden" name="csrf" value=(ctx.session.csrf);
                    div.field.invalid[errors.field("licence_file").is_some()] {
                        label for="licence_file" { "Licence File" }
                        input type="file" id="licence_file" name="licence_file" accept=".lic,.txt,text/plain";
                        @if let Some(m) = errors.field("licence_file") { p.field-error id="licence_file-error" role="alert" { (m) } }
                    }
                    (textarea("Or paste the licence text", "licence", values, errors, None))
                    div.actions { button.primary type="submit" { "Upload" } }
                }
            }
        }
    };
    Ok(layout::page(
        ctx,
        Page::System,
        "License",
        submenu("licence"),
        body,
    ))
}

pub async fn licence_page(ctx: Ctx) -> WebResult<Response> {
    ctx.require(Page::System)?;
    Ok(licence_form(&ctx, &Form::default(), &Errors::none())
        .await?
        .into_response())
}

/// Before the licence form's body is read (issue 12, item 9): the session
/// must be a System Administrator's with write access, the only one who may
/// install a licence (§10), and the announced size at most
/// [`crate::api::LICENCE_BODY_MAX`] (the route's body limit refuses a body
/// that grows past it while it is read).
pub async fn licence_upload_first(
    State(st): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let ctx = match Ctx::from_request_parts(&mut parts, &st).await {
        Ok(ctx) => ctx,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = ctx.require(Page::System) {
        return e.into_response();
    }
    if !ctx.can_write() {
        return WebError::Forbidden(format!(
            "{} is read-only: only a System Administrator with write access may install a licence",
            ctx.actor.login
        ))
        .into_response();
    }
    let max = crate::api::LICENCE_BODY_MAX;
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        return WebError::TooLarge(format!(
            "A licence upload is at most {max} bytes ({} KiB); this one is larger. Choose the licence file the vendor sent.",
            max / 1024
        ))
        .into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// The upload form is multipart (a file); `Posted` reads it and checks its
/// CSRF token like every other form.
pub async fn upload_licence(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let text = form
        .opt("licence_file")
        .or_else(|| form.opt("licence"))
        .unwrap_or_default();
    let outcome = if text.is_empty() {
        Err(
            appliance::Error::invalid("licence_file", "choose a licence file or paste its text")
                .into(),
        )
    } else {
        ctx.store(move |s, a| s.install_licence(a, &text)).await
    };
    match outcome {
        Ok(l) => Ok(layout::done(
            &ctx,
            "/system/license",
            &format!(
                "Licence {} issued to {} installed.",
                l.terms.licence_id, l.terms.issued_to
            ),
        )),
        Err(e) => {
            let errors = Errors::from_web(e)?;
            Ok((
                StatusCode::BAD_REQUEST,
                licence_form(&ctx, &Form::default(), &errors).await?,
            )
                .into_response())
        }
    }
}
