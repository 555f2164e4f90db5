//! Keys → Agent Keys (§4, §7): the list with search and paging, Add with
//! the symmetric fields of §7 and their defaults, a key's versions, Rotate
//! and Delete. Key material is never shown.

use appliance::model::{Algorithm, CreationMethod, KeyType, TEMPLATE_DEFAULT, parse_datetime};
use appliance::secret::SecretBytes;
use appliance::store::NewKey;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use maud::{Markup, html};

use super::form::{Errors, Form, Posted};
use super::layout::{
    self, Input, Listing, checkbox, field, general_errors, or_dash, radios, select, textarea,
};
use super::{Ctx, Page, WebResult};

fn submenu(current: &str) -> Markup {
    layout::submenu(&[
        ("Agent Keys", "/keys", current == "list"),
        ("Add Key", "/keys/add", current == "add"),
    ])
}

fn key_type_title(t: KeyType) -> &'static str {
    match t {
        KeyType::StoredOnServer => "Stored on Server",
        KeyType::CachedOnHost => "Cached on Host",
    }
}

pub async fn list(ctx: Ctx, Query(q): Query<Vec<(String, String)>>) -> WebResult<Response> {
    let domain = ctx.require_domain(Page::Keys)?;
    let listing = Listing::from_query(&Form::from_pairs(q));
    let d = domain.clone();
    let all = ctx.store(move |s, a| s.list_keys(a, &d)).await?;
    let shown: Vec<_> = all
        .into_iter()
        .filter(|k| listing.matches(&k.name))
        .collect();
    let page = listing.slice(&shown);
    let write = ctx.can_write();
    let body = html! {
        (listing.controls("/keys", "Search by name", &[]))
        (layout::form(&ctx, "/keys/delete", html! {
            table.list {
                caption.visually-hidden { "Agent keys" }
                thead { tr {
                    @if write { th scope="col" { input type="checkbox" data-select-all aria-label="Select all on this page"; } }
                    th scope="col" { "Name" } th scope="col" { "Algorithm" } th scope="col" { "Key Type" }
                    th scope="col" { "Current Version" } th scope="col" { "Automatic Rotation" }
                    th scope="col" { "Refresh Period (min)" } th scope="col" { "Expiration Date" } th scope="col" { "Created" }
                } }
                tbody {
                    @for k in page {
                        tr {
                            @if write { td { input type="checkbox" name="name" value=(k.name) aria-label=(format!("Select {}", k.name)); } }
                            td { a href=(format!("/keys/view/{}", urlencode(&k.name))) { (k.name) } }
                            td { (k.algorithm.as_str()) }
                            td { (key_type_title(k.key_type)) }
                            td { (k.current_version) }
                            td {
                                @if k.automatic_key_rotation {
                                    "every " (k.key_version_life_span.unwrap_or_default()) " days"
                                } @else { "off" }
                            }
                            td { (k.effective_key_refresh_period) @if k.key_refresh_period.is_none() { " " span.muted { "(global)" } } }
                            td { (or_dash(k.expiration_date.as_deref())) }
                            td { (k.created_at) }
                        }
                    }
                    @if page.is_empty() { tr { td colspan="9" .muted { "No keys match." } } }
                }
            }
            @if write {
                div.actions {
                    a.button href="/keys/add" { "Add" }
                    button.danger type="submit" { "Delete" }
                }
            }
        }))
        (listing.pager("/keys", shown.len(), &[]))
    };
    Ok(layout::page(
        &ctx,
        Page::Keys,
        &format!("Agent Keys of {domain}"),
        submenu("list"),
        body,
    )
    .into_response())
}

pub fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

const FIELDS: [&str; 12] = [
    "name",
    "description",
    "template",
    "expiration_date",
    "algorithm",
    "key_type",
    "unique_to_host",
    "key_creation_method",
    "key_material",
    "key_refresh_period",
    "automatic_key_rotation",
    "key_version_life_span",
];

fn add_form(ctx: &Ctx, domain: &str, values: &Form, errors: &Errors) -> Markup {
    let algorithms: Vec<(String, String)> =
        [Algorithm::Aes256, Algorithm::Aes128, Algorithm::Aria256]
            .iter()
            .map(|a| (a.as_str().to_owned(), a.as_str().to_owned()))
            .collect();
    let body = html! {
        nav.tabs aria-label="Key kinds" { span.tab.current { "Symmetric" } }
        (general_errors(errors, &FIELDS))
        (layout::form(ctx, "/keys/add", html! {
            fieldset {
                legend { "Symmetric Key" }
                (field(Input::Text, "Name", "name", values, errors, Some("Unique in the domain; call-recording hosts use recorder."), true))
                (textarea("Description", "description", values, errors, None))
                (field(Input::Text, "Template", "template", values, errors, None, false))
                (field(Input::Date, "Expiration Date", "expiration_date", values, errors, Some("When the first version expires (YYYY-MM-DD). Optional."), false))
                (select("Algorithm", "algorithm", &algorithms, values, errors, None))
                (radios("Key Type", "key_type", &[("stored_on_server", "Stored on Server: hosts fetch it into memory each time"), ("cached_on_host", "Cached on Host")], values, errors))
                (checkbox("Unique to Host", "unique_to_host", values, errors, None))
                (radios("Key Creation Method", "key_creation_method", &[("generate", "Generate (random from the appliance)"), ("manual", "Manual Input")], values, errors))
                (field(Input::Password, "Key Material (Manual Input)", "key_material", values, errors, Some("Base64 of exactly the algorithm's key length (32 bytes for AES256 and ARIA256, 16 for AES128)."), false))
                (field(Input::Number, "Key Refresh Period (minutes)", "key_refresh_period", values, errors, Some("1 to 44640; empty uses the global value of General Preferences (recommended 5)."), false))
                (checkbox("Automatic Key Rotation", "automatic_key_rotation", values, errors, Some("A new version at expiry, then every Key Version Life Span days.")))
                (field(Input::Number, "Key Version Life Span (days)", "key_version_life_span", values, errors, Some("Recommended 7."), false))
            }
            div.actions {
                button.primary type="submit" { "OK" }
                a.button href="/keys" { "Cancel" }
            }
        }))
    };
    layout::page(
        ctx,
        Page::Keys,
        &format!("Add Agent Key to {domain}"),
        submenu("add"),
        body,
    )
}

pub async fn add_page(ctx: Ctx) -> WebResult<Response> {
    let domain = ctx.require_domain(Page::Keys)?;
    let values = Form::default()
        .with("template", TEMPLATE_DEFAULT)
        .with("algorithm", "AES256")
        .with("key_type", "stored_on_server")
        .with("key_creation_method", "generate");
    Ok(add_form(&ctx, &domain, &values, &Errors::none()).into_response())
}

fn new_key(form: &Form) -> appliance::Result<NewKey> {
    let method = CreationMethod::parse("key_creation_method", form.get("key_creation_method"))?;
    let key_material = match (method, form.opt("key_material")) {
        (CreationMethod::Manual, Some(m)) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(m.as_bytes())
                .map(SecretBytes::new)
                .map_err(|_| appliance::Error::invalid("key_material", "must be base64"))?,
        ),
        (CreationMethod::Manual, None) => {
            return Err(appliance::Error::invalid(
                "key_material",
                "is required for Manual Input",
            ));
        }
        (CreationMethod::Generate, Some(_)) => {
            return Err(appliance::Error::invalid(
                "key_material",
                "is only for Manual Input; leave it empty to generate the key",
            ));
        }
        (CreationMethod::Generate, None) => None,
    };
    Ok(NewKey {
        name: form.get("name").trim().to_owned(),
        description: form.get("description").to_owned(),
        template: form.opt("template"),
        expiration_date: form
            .opt("expiration_date")
            .map(|d| parse_datetime("expiration_date", &d))
            .transpose()?,
        algorithm: Algorithm::parse(form.get("algorithm"))?,
        key_type: KeyType::parse(form.get("key_type"))?,
        unique_to_host: form.checked("unique_to_host"),
        key_creation_method: method,
        key_material,
        key_refresh_period: form.int("key_refresh_period", "the Key Refresh Period")?,
        automatic_key_rotation: form.checked("automatic_key_rotation"),
        key_version_life_span: form.int("key_version_life_span", "the Key Version Life Span")?,
    })
}

pub async fn add(Posted(ctx, form): Posted) -> WebResult<Response> {
    let domain = ctx.require_domain(Page::Keys)?;
    let outcome = match new_key(&form) {
        Ok(new) => {
            let d = domain.clone();
            ctx.store(move |s, a| s.create_key(a, &d, new)).await
        }
        Err(e) => Err(e.into()),
    };
    match outcome {
        Ok(k) => Ok(layout::done(
            &ctx,
            "/keys",
            &format!("Key {} created (version {}).", k.name, k.current_version),
        )),
        Err(e) => {
            let errors = Errors::from_web(e)?;
            let values = form.clone().with("key_material", "");
            Ok((
                StatusCode::BAD_REQUEST,
                add_form(&ctx, &domain, &values, &errors),
            )
                .into_response())
        }
    }
}

pub async fn detail(ctx: Ctx, Path(name): Path<String>) -> WebResult<Response> {
    let domain = ctx.require_domain(Page::Keys)?;
    let (d, n) = (domain.clone(), name.clone());
    let k = ctx.store(move |s, a| s.get_key(a, &d, &n)).await?;
    let row =
        |label: &str, value: Markup| html! { tr { th scope="row" { (label) } td { (value) } } };
    let body = html! {
        table.facts { tbody {
            (row("Name", html! { (k.name) }))
            (row("Description", html! { (k.description) }))
            (row("Template", html! { (k.template) }))
            (row("Algorithm", html! { (k.algorithm.as_str()) }))
            (row("Key Type", html! { (key_type_title(k.key_type)) }))
            (row("Unique to Host", html! { (layout::yes_no(k.unique_to_host)) }))
            (row("Key Creation Method", html! { @if k.key_creation_method == CreationMethod::Generate { "Generate" } @else { "Manual Input" } }))
            (row("Key Refresh Period", html! { (k.effective_key_refresh_period) " minutes" @if k.key_refresh_period.is_none() { " (global)" } }))
            (row("Automatic Key Rotation", html! { @if k.automatic_key_rotation { "on, every " (k.key_version_life_span.unwrap_or_default()) " days" } @else { "off" } }))
            (row("Expiration Date", or_dash(k.expiration_date.as_deref())))
            (row("Current Version", html! { (k.current_version) }))
        } }
        h2 { "Versions" }
        table.list {
            thead { tr { th scope="col" { "Version" } th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "State" } } }
            tbody {
                @for v in k.versions.iter().rev() {
                    tr {
                        td { (v.version) }
                        td { (v.created_at) }
                        td { (or_dash(v.expires_at.as_deref())) }
                        td {
                            @if v.version == k.current_version { span.badge.ok { "current" } " " }
                            @if v.expired { span.badge { "expired (still readable)" } }
                        }
                    }
                }
            }
        }
        @if ctx.can_write() {
            (layout::form(&ctx, &format!("/keys/view/{}/rotate", urlencode(&k.name)), html! {
                div.actions {
                    button.primary type="submit" { "Rotate Now" }
                    span.hint { "Creates version " (k.current_version + 1) "; older versions stay readable." }
                }
            }))
        }
    };
    Ok(layout::page(
        &ctx,
        Page::Keys,
        &format!("Key {}", k.name),
        submenu(""),
        body,
    )
    .into_response())
}

pub async fn rotate(Path(name): Path<String>, Posted(ctx, _): Posted) -> WebResult<Response> {
    let domain = ctx.require_domain(Page::Keys)?;
    let back = format!("/keys/view/{}", urlencode(&name));
    let (d, n) = (domain, name.clone());
    match ctx.store(move |s, a| s.rotate_key(a, &d, &n)).await {
        Ok(k) => Ok(layout::done(
            &ctx,
            &back,
            &format!(
                "Key {} rotated: version {} is current.",
                k.name, k.current_version
            ),
        )),
        Err(e) => {
            let msg = Errors::from_web(e)?.summary();
            Ok(layout::refused(&ctx, &back, &msg))
        }
    }
}

pub async fn delete(Posted(ctx, form): Posted) -> WebResult<Response> {
    let domain = ctx.require_domain(Page::Keys)?;
    let names: Vec<String> = form.all("name").into_iter().map(str::to_owned).collect();
    if names.is_empty() {
        return Ok(layout::refused(
            &ctx,
            "/keys",
            "Select the keys to delete first.",
        ));
    }
    let mut deleted = Vec::new();
    for name in names {
        let (d, n) = (domain.clone(), name.clone());
        if let Err(e) = ctx.store(move |s, a| s.delete_key(a, &d, &n)).await {
            let msg = Errors::from_web(e)?.summary();
            let prefix = if deleted.is_empty() {
                String::new()
            } else {
                format!("Deleted {}. ", deleted.join(", "))
            };
            return Ok(layout::refused(
                &ctx,
                "/keys",
                &format!("{prefix}Could not delete {name}: {msg}"),
            ));
        }
        deleted.push(name);
    }
    Ok(layout::done(
        &ctx,
        "/keys",
        &format!("Deleted {}.", deleted.join(", ")),
    ))
}
