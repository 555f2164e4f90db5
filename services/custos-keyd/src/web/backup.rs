//! System → Backup and Restore → Manual (§12): download a backup, and
//! restore one (with or without its administrators). The upload is
//! streamed to an unlinked file, never held in memory; its form carries
//! the session's CSRF token like every other.

use std::io::Write;
use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Multipart, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::form::{Errors, Posted, same_origin};
use super::layout::{self, general_errors};
use super::session::csrf_matches;
use super::{Ctx, Page, WebError, WebResult};
use crate::backup_api::{download, make_backup, restore_from};
use crate::state::AppState;

pub fn tabs(current: &str) -> Markup {
    html! {
        nav.tabs aria-label="Backup and Restore" {
            a.current[current == "manual"] href="/system/backup" aria-current=[(current == "manual").then_some("page")] { "Manual" }
            a.current[current == "automatic"] href="/system/backup/automatic" aria-current=[(current == "automatic").then_some("page")] { "Automatic" }
        }
    }
}

async fn page(ctx: &Ctx, errors: &Errors) -> WebResult<Markup> {
    let status = ctx.store(|s, a| s.wrapper_key_status(a)).await?;
    let write = ctx.can_write();
    let body = html! {
        (tabs("manual"))
        @if !status.exists {
            p.notice.warn { "No wrapper key: create or import one under System → Wrapper Keys before making or restoring a backup." }
        }
        section aria-labelledby="h-backup" {
            h2 #h-backup { "Backup" }
            p { "Downloads " code { "backup_config_<host>_yyyy_mm_dd_hhmm.tar" } ", encrypted and authenticated with wrapper key "
                code { (status.key_id.clone().unwrap_or_else(|| "—".into())) } ". It holds the certificates, preferences, licence, administrators, domains, hosts and every key version; not the network, host name or time zone." }
            (layout::form(ctx, "/system/backup/download", html! {
                div.actions { button.primary type="submit" disabled[!status.exists] { "Backup" } }
            }))
        }
        @if write {
            section aria-labelledby="h-restore" {
                h2 #h-restore { "Restore" }
                p.notice.warn { "A restore replaces the configuration: everything made since the backup is lost. Every session ends and the key service restarts." }
                (general_errors(errors, &["backup_file"]))
                form method="post" action="/system/backup/restore" enctype="multipart/form-data" novalidate {
                    input type="hidden" name="csrf" value=(ctx.session.csrf);
                    div.field.check {
                        input type="checkbox" id="include_users" name="include_users" value="on";
                        label for="include_users" { "Include User(s)" }
                        p.hint { "Replace the administrators with the backup's. Off: this appliance's administrators are kept." }
                    }
                    div.field.invalid[errors.field("backup_file").is_some()] {
                        label for="backup_file" { "Backup File" }
                        input type="file" id="backup_file" name="backup_file" accept=".tar,application/x-tar"
                            aria-describedby=[errors.field("backup_file").map(|_| "backup_file-error")];
                        @if let Some(m) = errors.field("backup_file") { p.field-error id="backup_file-error" role="alert" { (m) } }
                    }
                    div.actions { button.danger type="submit" { "Restore" } }
                }
            }
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
    Ok(page(&ctx, &Errors::none()).await?.into_response())
}

pub async fn download_backup(Posted(ctx, _): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    match make_backup(&ctx.st, ctx.actor.clone()).await {
        Ok((info, file)) => Ok(download(&info, file)),
        Err(e) => {
            let msg = Errors::from_web(e.into())?.summary();
            Ok(layout::refused(&ctx, "/system/backup", &msg))
        }
    }
}

/// The restore form: multipart with the token, the option and the file.
pub async fn restore(State(st): State<Arc<AppState>>, req: Request) -> WebResult<Response> {
    let (mut parts, body) = req.into_parts();
    if !same_origin(&parts) {
        return Err(WebError::Csrf);
    }
    let ctx = Ctx::from_request_parts(&mut parts, &st).await?;
    ctx.require(Page::System)?;
    // Before a byte of the upload is read: may restore, and it can fit.
    ctx.actor
        .require_system(appliance::access::Access::Write)
        .map_err(WebError::from)?;
    let limit = crate::backup_api::spool_limit(&st);
    let announced = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit) {
        return Err(WebError::BadRequest(format!(
            "backup_file: larger than the {limit} bytes the data partition can take now"
        )));
    }
    let mut mp = Multipart::from_request(Request::from_parts(parts, body), &())
        .await
        .map_err(|e| WebError::BadRequest(format!("form: {}", e.body_text())))?;
    let (mut csrf, mut include_users, mut file, mut size) = (String::new(), false, None, 0u64);
    while let Some(mut field) = mp
        .next_field()
        .await
        .map_err(|e| WebError::BadRequest(format!("form: {}", e.body_text())))?
    {
        match field.name().unwrap_or("") {
            "csrf" => {
                csrf = field
                    .text()
                    .await
                    .map_err(|e| WebError::BadRequest(format!("form: {}", e.body_text())))?
            }
            "include_users" => include_users = true,
            "backup_file" => {
                // The token comes first in the form: nothing is written for
                // a forged one.
                if !csrf_matches(&ctx.session.csrf, Some(&csrf)) {
                    break;
                }
                let mut f = crate::backup_api::anonymous_spool(&st)?;
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|e| WebError::BadRequest(format!("backup_file: {}", e.body_text())))?
                {
                    size += chunk.len() as u64;
                    if size > limit {
                        return Err(WebError::BadRequest(format!(
                            "backup_file: larger than the {limit} bytes the data partition can take now"
                        )));
                    }
                    f.write_all(&chunk)
                        .map_err(|e| WebError::Internal(format!("spooling a backup: {e}")))?;
                }
                file = Some(f);
            }
            _ => {}
        }
    }
    if !csrf_matches(&ctx.session.csrf, Some(&csrf)) {
        let what = "web form refused: CSRF token missing or wrong (POST /system/backup/restore)"
            .to_owned();
        ctx.store(move |s, a| s.log_action(a, appliance::model::Severity::Warn, &what))
            .await?;
        return Err(WebError::Csrf);
    }
    let Some(mut file) = file.filter(|_| size > 0) else {
        let mut errors = Errors::none();
        errors.add("backup_file", "choose the backup file to restore");
        return Ok((StatusCode::BAD_REQUEST, page(&ctx, &errors).await?).into_response());
    };
    std::io::Seek::rewind(&mut file)
        .map_err(|e| WebError::Internal(format!("spooling a backup: {e}")))?;
    match restore_from(&st, ctx.actor.clone(), file, include_users).await {
        Ok(r) => Ok(layout::bare(
            "Restore Complete",
            html! {
                p.notice.ok role="status" {
                    "The configuration of " (r.file_host) " from " (r.file_created_at) " was restored ("
                    (r.key_versions) " key versions; administrators " @if r.users_included { "restored" } @else { "kept" } ")."
                }
                p { "Every session has ended and the key service is restarting with the restored certificates. Sign in again in a few seconds." }
                p { a href="/login" { "Sign in" } }
            },
        )
        .into_response()),
        Err(e) => {
            let mut errors = Errors::none();
            errors.add("backup_file", Errors::from_web(e.into())?.summary());
            Ok((StatusCode::BAD_REQUEST, page(&ctx, &errors).await?).into_response())
        }
    }
}
