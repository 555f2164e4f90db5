//! System → Wrapper Keys (§12): create the key, export it as M-of-N shares
//! (M at least 2) to System Administrators (never `admin`), import it from
//! pasted shares. Once the key was exported, exporting it again or putting
//! another key in its place needs a quorum of its shares pasted with the
//! request. The key and the shares are never shown here (pasted shares are
//! never echoed back); a custodian sees their own share on their dashboard
//! until they confirm they stored it.

use appliance::model::UserType;
use appliance::secret::SecretString;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::form::{Errors, Form, Posted};
use super::layout::{self, Input, checkbox, field, general_errors, or_dash, textarea};
use super::{Ctx, Page, WebResult};

const EXPORT_FIELDS: [&str; 4] = [
    "minimum_custodians",
    "total_custodians",
    "custodians",
    "shares",
];
const QUORUM_HINT: &str = "The current wrapper key has been exported: paste at least the minimum number of its custodians' shares, one per line.";

/// The pasted shares of a text area, one per line.
fn pasted(form: &Form, name: &str) -> Vec<SecretString> {
    form.get(name)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(SecretString::new)
        .collect()
}

async fn page(ctx: &Ctx, values: &Form, errors: &Errors, part: &str) -> WebResult<Markup> {
    let status = ctx.store(|s, a| s.wrapper_key_status(a)).await?;
    let admins = ctx.store(|s, a| s.list_admins(a)).await?;
    let candidates: Vec<String> = admins
        .into_iter()
        .filter(|a| a.user_type == UserType::System && a.login != "admin")
        .map(|a| a.login)
        .collect();
    let write = ctx.can_write();
    let row =
        |label: &str, value: Markup| html! { tr { th scope="row" { (label) } td { (value) } } };
    let errs = |p: &str| if p == part { errors } else { &EMPTY };
    let chosen = values.all("custodians");
    let body = html! {
        section aria-labelledby="h-key" {
            h2 #h-key { "Wrapper Key" }
            @if status.exists {
                table.facts { tbody {
                    (row("Key ID", html! { code #wrapper-key-id { (status.key_id.clone().unwrap_or_default()) } }))
                    (row("Origin", html! { @if status.origin.as_deref() == Some("imported") { "Imported from shares" } @else { "Created on this appliance" } }))
                    (row("Since", html! { (status.created_at.clone().unwrap_or_default()) }))
                    (row("Custodians", html! {
                        @if status.custodians.is_empty() { span.badge.warn { "not exported yet" } }
                        @else {
                            (status.minimum_custodians.unwrap_or_default()) " of " (status.total_custodians.unwrap_or_default())
                            " needed: " (status.custodians.join(", "))
                            @if !status.collected.is_empty() { br; "Stored by their custodians (no copy here): " (status.collected.join(", ")) }
                        }
                    }))
                    (row("Exported", or_dash(status.exported_at.as_deref())))
                } }
            } @else {
                p.notice.warn { "No wrapper key: backups cannot be made until one is created or imported." }
            }
            @if write {
                (general_errors(errs("create"), &["replace", "shares"]))
                (layout::form(ctx, "/system/wrapper-keys/create", html! {
                    @if status.exists {
                        (checkbox("Replace the current wrapper key", "replace", values, errs("create"),
                            Some("Backups made with the current key can then be restored only after importing its shares.")))
                    }
                    @if status.quorum_required {
                        (textarea("Shares of the Current Key", "shares", &Form::default(), errs("create"), Some(QUORUM_HINT)))
                    }
                    div.actions { button.primary type="submit" { @if status.exists { "Create a New Key" } @else { "Create" } } }
                }))
            }
        }
        @if status.exists && write {
            section aria-labelledby="h-export" {
                h2 #h-export { "Export" }
                p.hint { "Each custodian sees their share on their dashboard until they confirm they stored it; then the appliance deletes its copy. At least 2 custodians are needed, so that no single administrator holds the wrapper key: 2 of 3 is recommended. The first export is the installation ceremony: the custodians should be present, each collecting their own share." }
                (general_errors(errs("export"), &EXPORT_FIELDS))
                (layout::form(ctx, "/system/wrapper-keys/export", html! {
                    div.row {
                        (field(Input::Number, "Minimum Custodians Needed", "minimum_custodians", values, errs("export"), None, true))
                        (field(Input::Number, "Total Number of Custodians", "total_custodians", values, errs("export"), None, true))
                    }
                    fieldset.field.radios.invalid[errs("export").field("custodians").is_some()] {
                        legend { "Custodians (System Administrators)" }
                        @for c in &candidates {
                            @let id = format!("custodian-{c}");
                            span.radio {
                                input type="checkbox" id=(id) name="custodians" value=(c) checked[chosen.contains(&c.as_str())];
                                label for=(id) { (c) }
                            }
                        }
                        @if candidates.is_empty() { p.muted { "Add a System Administrator other than admin first." } }
                        @if let Some(m) = errs("export").field("custodians") { p.field-error id="custodians-error" role="alert" { (m) } }
                    }
                    @if status.quorum_required {
                        (textarea("Shares of the Current Key", "shares", &Form::default(), errs("export"), Some(QUORUM_HINT)))
                    }
                    div.actions { button.primary type="submit" { "Export" } }
                }))
            }
        }
        @if write {
            section aria-labelledby="h-import" {
                h2 #h-import { "Import" }
                p.hint { "Paste at least the minimum number of shares, one per line, to rebuild a wrapper key (for example to restore another appliance's backup)." }
                (general_errors(errs("import"), &["shares", "current_shares"]))
                (layout::form(ctx, "/system/wrapper-keys/import", html! {
                    (textarea("Shares", "shares", &Form::default(), errs("import"), None))
                    @if status.quorum_required {
                        (textarea("Shares of the Current Key", "current_shares", &Form::default(), errs("import"),
                            Some("Needed only to put another key in place of the current one, which has been exported.")))
                    }
                    div.actions { button.primary type="submit" { "Apply" } }
                }))
            }
        }
    };
    Ok(layout::page(
        ctx,
        Page::System,
        "Wrapper Keys",
        super::system::submenu("wrapper"),
        body,
    ))
}

static EMPTY: std::sync::LazyLock<Errors> = std::sync::LazyLock::new(Errors::none);

pub async fn show(ctx: Ctx) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let values = Form::default()
        .with("minimum_custodians", "2")
        .with("total_custodians", "3");
    Ok(page(&ctx, &values, &Errors::none(), "")
        .await?
        .into_response())
}

async fn refused(ctx: &Ctx, form: &Form, e: super::WebError, part: &str) -> WebResult<Response> {
    let errors = Errors::from_web(e)?;
    Ok((
        StatusCode::BAD_REQUEST,
        page(ctx, form, &errors, part).await?,
    )
        .into_response())
}

pub async fn create(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let replace = form.checked("replace");
    let quorum = pasted(&form, "shares");
    match ctx
        .store(move |s, a| s.create_wrapper_key(a, replace, &quorum))
        .await
    {
        Ok(v) => Ok(layout::done(
            &ctx,
            "/system/wrapper-keys",
            &format!(
                "Wrapper key {} created. Export it to its custodians next.",
                v.key_id.unwrap_or_default()
            ),
        )),
        Err(e) => refused(&ctx, &form, e, "create").await,
    }
}

pub async fn export(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let parsed = (|| {
        let m = form
            .int("minimum_custodians", "the minimum number of custodians")?
            .ok_or_else(|| appliance::Error::invalid("minimum_custodians", "is required"))?;
        let n = form
            .int("total_custodians", "the total number of custodians")?
            .ok_or_else(|| appliance::Error::invalid("total_custodians", "is required"))?;
        Ok::<_, appliance::Error>((m, n))
    })();
    let custodians: Vec<String> = form
        .all("custodians")
        .into_iter()
        .map(str::to_owned)
        .collect();
    let quorum = pasted(&form, "shares");
    let outcome = match parsed {
        Ok((m, n)) => {
            ctx.store(move |s, a| s.export_wrapper_key(a, m, n, &custodians, &quorum))
                .await
        }
        Err(e) => Err(e.into()),
    };
    match outcome {
        Ok(v) => Ok(layout::done(
            &ctx,
            "/system/wrapper-keys",
            &format!(
                "Wrapper key exported: {} of {} custodians ({}) needed.",
                v.minimum_custodians.unwrap_or_default(),
                v.total_custodians.unwrap_or_default(),
                v.custodians.join(", ")
            ),
        )),
        Err(e) => refused(&ctx, &form, e, "export").await,
    }
}

pub async fn import(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let shares = pasted(&form, "shares");
    let quorum = pasted(&form, "current_shares");
    match ctx
        .store(move |s, a| s.import_wrapper_key(a, &shares, &quorum))
        .await
    {
        Ok(v) => Ok(layout::done(
            &ctx,
            "/system/wrapper-keys",
            &format!("Wrapper key {} imported.", v.key_id.unwrap_or_default()),
        )),
        Err(e) => refused(&ctx, &Form::default(), e, "import").await,
    }
}
