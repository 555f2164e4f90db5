//! Hosts (§4, §8): the protected hosts of the domain with their
//! registration state, last contact and certificate fingerprint (add, delete,
//! allow or stop registration), and Registration Shared Secret with its
//! creation method, validity, "hosts must be added first", Show and Expire.

use appliance::model::{CreationMethod, parse_datetime};
use appliance::store::NewSecret;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::form::{Errors, Form, Posted};
use super::layout::{self, Input, Listing, checkbox, field, general_errors, or_dash, radios};
use super::{Ctx, Page, WebResult};

fn submenu(current: &str) -> Markup {
    layout::submenu(&[
        ("Hosts", "/hosts", current == "hosts"),
        (
            "Registration Shared Secret",
            "/hosts/secret",
            current == "secret",
        ),
    ])
}

async fn hosts_page(
    ctx: &Ctx,
    listing: &Listing,
    values: &Form,
    errors: &Errors,
) -> WebResult<Markup> {
    let domain = ctx.require_domain(Page::Hosts)?;
    let d = domain.clone();
    let all = ctx.store(move |s, a| s.list_hosts(a, &d)).await?;
    let shown: Vec<_> = all
        .into_iter()
        .filter(|h| listing.matches(&h.host_name))
        .collect();
    let page = listing.slice(&shown);
    let write = ctx.can_write();
    let body = html! {
        (listing.controls("/hosts", "Search by host name", &[]))
        (layout::form(ctx, "/hosts/change", html! {
            table.list {
                caption.visually-hidden { "Protected hosts" }
                thead { tr {
                    @if write { th scope="col" { input type="checkbox" data-select-all aria-label="Select all on this page"; } }
                    th scope="col" { "Host Name" } th scope="col" { "Registration" } th scope="col" { "Registration Allowed" }
                    th scope="col" { "Registered" } th scope="col" { "Last Contact" } th scope="col" { "Certificate Fingerprint (SHA-256)" }
                } }
                tbody {
                    @for h in page {
                        tr {
                            @if write { td { input type="checkbox" name="host" value=(h.host_name) aria-label=(format!("Select {}", h.host_name)); } }
                            td { (h.host_name) }
                            td { @if h.registered { span.badge.ok { "registered" } } @else { span.badge { "not registered" } } }
                            td { (layout::yes_no(h.registration_allowed)) }
                            td { (or_dash(h.registered_at.as_deref())) }
                            td { (or_dash(h.last_contact.as_deref())) }
                            td { @if let Some(fp) = &h.certificate_fingerprint { code.fp { (fp) } } @else { span.muted { "—" } } }
                        }
                    }
                    @if page.is_empty() { tr { td colspan="7" .muted { "No hosts match." } } }
                }
            }
            @if write {
                div.actions {
                    button type="submit" name="action" value="allow" { "Allow Registration" }
                    button type="submit" name="action" value="disallow" { "Stop Registration" }
                    button.danger type="submit" name="action" value="delete" { "Delete" }
                }
            }
        }))
        (listing.pager("/hosts", shown.len(), &[]))
        @if write {
            section aria-labelledby="h-add-host" {
                h2 #h-add-host { "Add Host" }
                p.hint { "Needed when the shared secret requires hosts to be added first." }
                (general_errors(errors, &["host_name", "registration_allowed"]))
                (layout::form(ctx, "/hosts/add", html! {
                    (field(Input::Text, "Host Name", "host_name", values, errors, Some("The name the host registers with."), true))
                    (checkbox("Registration Allowed", "registration_allowed", values, errors, None))
                    div.actions { button.primary type="submit" { "Add" } }
                }))
            }
        }
    };
    Ok(layout::page(
        ctx,
        Page::Hosts,
        &format!("Hosts of {domain}"),
        submenu("hosts"),
        body,
    ))
}

pub async fn list(ctx: Ctx, Query(q): Query<Vec<(String, String)>>) -> WebResult<Response> {
    let listing = Listing::from_query(&Form::from_pairs(q));
    let values = Form::default().with("registration_allowed", "on");
    Ok(hosts_page(&ctx, &listing, &values, &Errors::none())
        .await?
        .into_response())
}

pub async fn add(Posted(ctx, form): Posted) -> WebResult<Response> {
    let domain = ctx.require_domain(Page::Hosts)?;
    let (d, name, allowed) = (
        domain,
        form.get("host_name").trim().to_owned(),
        form.checked("registration_allowed"),
    );
    let n = name.clone();
    match ctx.store(move |s, a| s.add_host(a, &d, &n, allowed)).await {
        Ok(_) => Ok(layout::done(&ctx, "/hosts", &format!("Host {name} added."))),
        Err(e) => {
            let errors = Errors::from_web(e)?;
            let listing = Listing::from_query(&Form::default());
            Ok((
                StatusCode::BAD_REQUEST,
                hosts_page(&ctx, &listing, &form, &errors).await?,
            )
                .into_response())
        }
    }
}

pub async fn change(Posted(ctx, form): Posted) -> WebResult<Response> {
    let domain = ctx.require_domain(Page::Hosts)?;
    let hosts: Vec<String> = form.all("host").into_iter().map(str::to_owned).collect();
    if hosts.is_empty() {
        return Ok(layout::refused(&ctx, "/hosts", "Select the hosts first."));
    }
    let action = form.get("action").to_owned();
    for host in &hosts {
        let (d, h) = (domain.clone(), host.clone());
        let outcome = match action.as_str() {
            "allow" => ctx
                .store(move |s, a| s.set_host_registration(a, &d, &h, true))
                .await
                .map(drop),
            "disallow" => ctx
                .store(move |s, a| s.set_host_registration(a, &d, &h, false))
                .await
                .map(drop),
            "delete" => ctx.store(move |s, a| s.delete_host(a, &d, &h)).await,
            _ => {
                Err(appliance::Error::invalid("action", "must be allow, disallow or delete").into())
            }
        };
        if let Err(e) = outcome {
            let msg = Errors::from_web(e)?.summary();
            return Ok(layout::refused(&ctx, "/hosts", &format!("{host}: {msg}")));
        }
    }
    let what = match action.as_str() {
        "allow" => "Registration allowed for",
        "disallow" => "Registration stopped for",
        _ => "Deleted",
    };
    Ok(layout::done(
        &ctx,
        "/hosts",
        &format!("{what} {}.", hosts.join(", ")),
    ))
}

const SECRET_FIELDS: [&str; 4] = [
    "creation_method",
    "shared_secret",
    "valid_until",
    "require_hosts_first_added",
];

async fn secret_form(ctx: &Ctx, show: bool, values: &Form, errors: &Errors) -> WebResult<Markup> {
    let domain = ctx.require_domain(Page::Hosts)?;
    let d = domain.clone();
    let current = match ctx.store(move |s, a| s.get_secret(a, &d, show)).await {
        Ok(v) => Some(v),
        Err(super::WebError::Core(appliance::Error::NotFound { .. })) => None,
        Err(e) => return Err(e),
    };
    let row =
        |label: &str, value: Markup| html! { tr { th scope="row" { (label) } td { (value) } } };
    let body = html! {
        section aria-labelledby="h-current" {
            h2 #h-current { "Current Secret" }
            @match &current {
                None => p.notice.warn { "No registration shared secret is set: hosts cannot register in this domain yet." },
                Some(v) => {
                    table.facts { tbody {
                        (row("Creation Method", html! { @if v.creation_method == CreationMethod::Manual { "Manual" } @else { "Generate" } }))
                        (row("Valid Until", html! { (v.valid_until) }))
                        (row("Require That Hosts Are First Added", html! { (layout::yes_no(v.require_hosts_first_added)) }))
                        (row("State", html! { @if v.expired { span.badge.bad { "expired" } } @else { span.badge.ok { "valid" } } }))
                        (row("Set", html! { (v.created_at) }))
                        (row("Shared Secret", html! {
                            @if let Some(s) = &v.shared_secret { code #shared-secret { (s) } " " a href="/hosts/secret" { "Hide" } }
                            @else { span.muted { "hidden" } @if ctx.can_write() { " " a href="/hosts/secret?show=yes" { "Show" } } }
                        }))
                    } }
                    @if ctx.can_write() && !v.expired {
                        (layout::form(ctx, "/hosts/secret/expire", html! {
                            div.actions { button.danger type="submit" { "Expire" } span.hint { "Hosts can no longer register with it." } }
                        }))
                    }
                }
            }
        }
        @if ctx.can_write() {
            section aria-labelledby="h-set" {
                h2 #h-set { "Set the Secret" }
                (general_errors(errors, &SECRET_FIELDS))
                (layout::form(ctx, "/hosts/secret", html! {
                    (radios("Creation Method", "creation_method", &[("manual", "Manual"), ("generate", "Generate")], values, errors))
                    (field(Input::Password, "Shared Secret (Manual)", "shared_secret", values, errors,
                        Some("No repeating characters; at least one upper and one lower case letter and one special character."), false))
                    (field(Input::Date, "Valid Until", "valid_until", values, errors, Some("YYYY-MM-DD; empty: far in the future."), false))
                    (checkbox("Require that hosts are first added", "require_hosts_first_added", values, errors,
                        Some("On (recommended): a host must be added under Hosts with Registration Allowed before it registers. Off: anyone holding the secret registers a host.")))
                    div.actions { button.primary type="submit" { "Apply" } }
                }))
            }
        }
    };
    Ok(layout::page(
        ctx,
        Page::Hosts,
        &format!("Registration Shared Secret of {domain}"),
        submenu("secret"),
        body,
    ))
}

pub async fn secret_page(ctx: Ctx, Query(q): Query<Vec<(String, String)>>) -> WebResult<Response> {
    let q = Form::from_pairs(q);
    let show = q.get("show") == "yes";
    let values = Form::default()
        .with("creation_method", "manual")
        .with("require_hosts_first_added", "on");
    Ok(secret_form(&ctx, show, &values, &Errors::none())
        .await?
        .into_response())
}

fn new_secret(form: &Form) -> appliance::Result<NewSecret> {
    let creation_method = CreationMethod::parse("creation_method", form.get("creation_method"))?;
    let shared_secret = match creation_method {
        CreationMethod::Manual => {
            Some(form.secret("shared_secret")).filter(|s| !s.expose().is_empty())
        }
        CreationMethod::Generate => form
            .opt("shared_secret")
            .map(|_| form.secret("shared_secret")),
    };
    Ok(NewSecret {
        creation_method,
        shared_secret,
        valid_until: form
            .opt("valid_until")
            .map(|d| parse_datetime("valid_until", &d))
            .transpose()?,
        require_hosts_first_added: form.checked("require_hosts_first_added"),
    })
}

pub async fn set_secret(Posted(ctx, form): Posted) -> WebResult<Response> {
    let domain = ctx.require_domain(Page::Hosts)?;
    let outcome = match new_secret(&form) {
        Ok(new) => ctx.store(move |s, a| s.set_secret(a, &domain, new)).await,
        Err(e) => Err(e.into()),
    };
    match outcome {
        Ok(_) => Ok(layout::done(
            &ctx,
            "/hosts/secret",
            "The registration shared secret was set.",
        )),
        Err(e) => {
            let errors = Errors::from_web(e)?;
            let values = form.clone().with("shared_secret", "");
            Ok((
                StatusCode::BAD_REQUEST,
                secret_form(&ctx, false, &values, &errors).await?,
            )
                .into_response())
        }
    }
}

pub async fn expire_secret(Posted(ctx, _): Posted) -> WebResult<Response> {
    let domain = ctx.require_domain(Page::Hosts)?;
    match ctx.store(move |s, a| s.expire_secret(a, &domain)).await {
        Ok(_) => Ok(layout::done(
            &ctx,
            "/hosts/secret",
            "The registration shared secret expired.",
        )),
        Err(e) => {
            let msg = Errors::from_web(e)?.summary();
            Ok(layout::refused(&ctx, "/hosts/secret", &msg))
        }
    }
}
