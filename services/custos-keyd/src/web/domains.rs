//! Domains (§4): Manage Domains (search, list, Add with its General, Assign
//! Admin and License parts, Delete, Assign Admin), Switch Domains, and
//! inside a domain Administrators → Domain (add with roles, remove, enable,
//! disable, set roles).

use appliance::model::{DomainKind, HELP_DESK_DEFAULT, Role, UserType};
use appliance::store::NewDomain;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::form::{Errors, Form, Posted};
use super::layout::{self, Input, Listing, field, general_errors, radios, select, textarea};
use super::{Ctx, Page, WebResult};

fn submenu(ctx: &Ctx, current: &str) -> Markup {
    let mut items = Vec::new();
    if ctx.may_open(Page::ManageDomains) {
        items.push(("Manage Domains", "/domains", current == "manage"));
        items.push(("Add Domain", "/domains/add", current == "add"));
    }
    if ctx.may_open(Page::SwitchDomains) {
        items.push(("Switch Domains", "/domains/switch", current == "switch"));
    }
    layout::submenu(&items)
}

/// Domain Administrators not yet in any domain's Assign Admin list.
async fn domain_admins(ctx: &Ctx) -> WebResult<Vec<(String, String)>> {
    let admins = ctx.store(|s, a| s.list_admins(a)).await?;
    Ok(admins
        .into_iter()
        .filter(|a| a.user_type == UserType::Domain)
        .map(|a| (a.login.clone(), a.login))
        .collect())
}

pub async fn list(ctx: Ctx, Query(q): Query<Vec<(String, String)>>) -> WebResult<Response> {
    ctx.require(Page::ManageDomains)?;
    let listing = Listing::from_query(&Form::from_pairs(q));
    let all = ctx.store(|s, a| s.list_domains(a)).await?;
    let shown: Vec<_> = all
        .into_iter()
        .filter(|d| listing.matches(&d.name))
        .collect();
    let page = listing.slice(&shown);
    let write = ctx.can_write();
    let mut candidates = vec![(String::new(), "(choose)".to_owned())];
    candidates.extend(domain_admins(&ctx).await?);
    let body = html! {
        (listing.controls("/domains", "Search by name", &[]))
        (layout::form(&ctx, "/domains/delete", html! {
            table.list {
                caption.visually-hidden { "Domains" }
                thead { tr {
                    @if write { th scope="col" { input type="checkbox" data-select-all aria-label="Select all on this page"; } }
                    th scope="col" { "Name" }
                    th scope="col" { "Kind" }
                    th scope="col" { "Organization" }
                    th scope="col" { "Description" }
                    th scope="col" { "Domain Administrators" }
                    th scope="col" { "Created" }
                } }
                tbody {
                    @for d in page {
                        tr {
                            @if write { td { input type="checkbox" name="name" value=(d.name) aria-label=(format!("Select {}", d.name)); } }
                            td { (d.name) }
                            td { @if d.kind == DomainKind::Global { "Global" } @else { "Restricted" } }
                            td { (d.organization) }
                            td { (d.description) }
                            td {
                                @if d.domain_administrators.is_empty() { span.badge.warn { "none assigned" } }
                                @else { (d.domain_administrators.join(", ")) }
                            }
                            td { (d.created_at) }
                        }
                    }
                    @if page.is_empty() { tr { td colspan="7" .muted { "No domains match." } } }
                }
            }
            @if write {
                div.actions {
                    a.button href="/domains/add" { "Add" }
                    button.danger type="submit" { "Delete" }
                }
            }
        }))
        (listing.pager("/domains", shown.len(), &[]))
        @let unassigned: Vec<_> = shown.iter().filter(|d| d.domain_administrators.is_empty()).collect();
        @if write && !unassigned.is_empty() {
            section aria-labelledby="h-assign" {
                h2 #h-assign { "Assign Admin" }
                p.hint { "Each domain gets one first Domain Administrator; further administrators are added by them." }
                (layout::form(&ctx, "/domains/assign", html! {
                    div.row {
                        (select("Domain", "domain", &unassigned.iter().map(|d| (d.name.clone(), d.name.clone())).collect::<Vec<_>>(), &Form::default(), &Errors::none(), None))
                        (select("Domain Administrator", "login", &candidates, &Form::default(), &Errors::none(), None))
                    }
                    div.actions { button type="submit" { "Assign" } }
                }))
            }
        }
    };
    Ok(layout::page(
        &ctx,
        Page::ManageDomains,
        "Manage Domains",
        submenu(&ctx, "manage"),
        body,
    )
    .into_response())
}

const FIELDS: [&str; 6] = [
    "name",
    "kind",
    "organization",
    "description",
    "help_desk_information",
    "domain_administrator",
];

async fn add_form(ctx: &Ctx, values: &Form, errors: &Errors) -> WebResult<Markup> {
    let mut candidates = vec![(String::new(), "(assign later)".to_owned())];
    candidates.extend(domain_admins(ctx).await?);
    let licence = ctx.store(|s, a| s.licence(a)).await?;
    let body = html! {
        nav.tabs aria-label="Parts of the form" {
            a href="#general" { "General" } a href="#assign-admin" { "Assign Admin" } a href="#license" { "License" }
        }
        (general_errors(errors, &FIELDS))
        (layout::form(ctx, "/domains/add", html! {
            fieldset #general {
                legend { "General" }
                (field(Input::Text, "Name", "name", values, errors, Some("Up to 64 characters, unique."), true))
                (radios("Kind", "kind", &[("global", "Global: its administrators may belong to other domains too"), ("restricted", "Restricted: its administrators belong to this domain only")], values, errors))
                (field(Input::Text, "Organization", "organization", values, errors, None, false))
                (textarea("Description", "description", values, errors, Some("Up to 256 characters.")))
                (textarea("Help Desk Information", "help_desk_information", values, errors, None))
            }
            fieldset #assign-admin {
                legend { "Assign Admin" }
                (select("Domain Administrator", "domain_administrator", &candidates, values, errors,
                    Some("The domain's first Domain Administrator; they add the others.")))
            }
            fieldset #license {
                legend { "License" }
                @match &licence {
                    Some(l) => p { "Domains in use: " (l.domains_in_use) " of "
                        @if l.terms.multiple_domains { (l.terms.max_domains) } @else { "1 (multiple domains not licensed)" } "." },
                    None => p.notice.warn { "License not found." },
                }
            }
            div.actions {
                button.primary type="submit" { "OK" }
                a.button href="/domains" { "Cancel" }
            }
        }))
    };
    Ok(layout::page(
        ctx,
        Page::ManageDomains,
        "Add Domain",
        submenu(ctx, "add"),
        body,
    ))
}

pub async fn add_page(ctx: Ctx) -> WebResult<Response> {
    ctx.require(Page::ManageDomains)?;
    let values = Form::default()
        .with("kind", "global")
        .with("help_desk_information", HELP_DESK_DEFAULT);
    Ok(add_form(&ctx, &values, &Errors::none())
        .await?
        .into_response())
}

pub async fn add(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::ManageDomains)?;
    let outcome = match DomainKind::parse(form.get("kind")) {
        Ok(kind) => {
            let new = NewDomain {
                name: form.get("name").trim().to_owned(),
                kind,
                organization: form.get("organization").to_owned(),
                description: form.get("description").to_owned(),
                help_desk_information: Some(form.get("help_desk_information").to_owned()),
                domain_administrator: form.opt("domain_administrator"),
            };
            ctx.store(move |s, a| s.create_domain(a, new)).await
        }
        Err(e) => Err(e.into()),
    };
    match outcome {
        Ok(d) => Ok(layout::done(
            &ctx,
            "/domains",
            &format!("Domain {} added.", d.name),
        )),
        Err(e) => {
            let errors = Errors::from_web(e)?;
            Ok((
                StatusCode::BAD_REQUEST,
                add_form(&ctx, &form, &errors).await?,
            )
                .into_response())
        }
    }
}

pub async fn assign(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::ManageDomains)?;
    let (domain, login) = (form.get("domain").to_owned(), form.get("login").to_owned());
    if login.is_empty() {
        return Ok(layout::refused(
            &ctx,
            "/domains",
            "Domain Administrator: choose one to assign.",
        ));
    }
    let (d, l) = (domain.clone(), login.clone());
    match ctx.store(move |s, a| s.add_member(a, &d, &l, &[])).await {
        Ok(_) => Ok(layout::done(
            &ctx,
            "/domains",
            &format!("{login} is the Domain Administrator of {domain}."),
        )),
        Err(e) => {
            let msg = Errors::from_web(e)?.summary();
            Ok(layout::refused(
                &ctx,
                "/domains",
                &format!("Could not assign {login} to {domain}: {msg}"),
            ))
        }
    }
}

pub async fn delete(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::ManageDomains)?;
    let names: Vec<String> = form.all("name").into_iter().map(str::to_owned).collect();
    if names.is_empty() {
        return Ok(layout::refused(
            &ctx,
            "/domains",
            "Select the domains to delete first.",
        ));
    }
    let mut deleted = Vec::new();
    for name in names {
        let n = name.clone();
        if let Err(e) = ctx.store(move |s, a| s.delete_domain(a, &n)).await {
            let msg = Errors::from_web(e)?.summary();
            let prefix = if deleted.is_empty() {
                String::new()
            } else {
                format!("Deleted {}. ", deleted.join(", "))
            };
            return Ok(layout::refused(
                &ctx,
                "/domains",
                &format!("{prefix}Could not delete {name}: {msg}"),
            ));
        }
        deleted.push(name);
    }
    Ok(layout::done(
        &ctx,
        "/domains",
        &format!("Deleted {}.", deleted.join(", ")),
    ))
}

pub async fn switch_page(ctx: Ctx) -> WebResult<Response> {
    ctx.require(Page::SwitchDomains)?;
    let domains = ctx.store(|s, a| s.list_domains(a)).await?;
    let body = html! {
        p { "Choose the domain to work in. Hosts, keys and the domain's administrators are managed inside a domain." }
        table.list {
            caption.visually-hidden { "Your domains" }
            thead { tr { th scope="col" { "Name" } th scope="col" { "Description" } th scope="col" { "Help Desk Information" } th scope="col" { span.visually-hidden { "Action" } } } }
            tbody {
                @for d in &domains {
                    tr {
                        td { (d.name) }
                        td { (d.description) }
                        td { (d.help_desk_information) }
                        td {
                            @if ctx.domain() == Some(d.name.as_str()) { span.badge.ok { "current" } }
                            @else {
                                (layout::form(&ctx, "/domains/switch", html! {
                                    input type="hidden" name="domain" value=(d.name);
                                    button type="submit" aria-label=(format!("Switch to {}", d.name)) { "Switch" }
                                }))
                            }
                        }
                    }
                }
                @if domains.is_empty() { tr { td colspan="4" .muted { "You are not an administrator of any domain yet." } } }
            }
        }
        @if ctx.domain().is_some() {
            (layout::form(&ctx, "/domains/switch", html! {
                input type="hidden" name="domain" value="";
                div.actions { button type="submit" { "Leave the Domain" } }
            }))
        }
    };
    Ok(layout::page(
        &ctx,
        Page::SwitchDomains,
        "Switch Domains",
        submenu(&ctx, "switch"),
        body,
    )
    .into_response())
}

pub async fn switch(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::SwitchDomains)?;
    let Some(domain) = form.opt("domain") else {
        ctx.st.web_sessions.set_domain(&ctx.token, None);
        return Ok(layout::done(&ctx, "/dashboard", "You left the domain."));
    };
    let d = domain.clone();
    match ctx.store(move |s, a| s.my_membership(a, &d)).await {
        Ok(Some(m)) if m.enabled => {
            ctx.st
                .web_sessions
                .set_domain(&ctx.token, Some(domain.clone()));
            Ok(layout::done(
                &ctx,
                "/dashboard",
                &format!("You are working in domain {domain}."),
            ))
        }
        Ok(Some(_)) => Ok(layout::refused(
            &ctx,
            "/domains/switch",
            &format!("Your membership of {domain} is disabled."),
        )),
        Ok(None) | Err(_) => Ok(layout::refused(
            &ctx,
            "/domains/switch",
            &format!("domain '{domain}' does not exist"),
        )),
    }
}

const ROLE_TITLES: [(Role, &str); 5] = [
    (Role::Audit, "Audit"),
    (Role::Key, "Key"),
    (Role::Policy, "Policy"),
    (Role::Host, "Host"),
    (Role::ChallengeResponse, "Challenge & Response"),
];

fn role_title(r: Role) -> &'static str {
    ROLE_TITLES
        .iter()
        .find(|(x, _)| *x == r)
        .map(|(_, t)| *t)
        .unwrap_or("")
}

/// The role check boxes; `id` keeps the two sets on the page apart.
fn role_boxes(id: &str, values: &Form) -> Markup {
    let chosen = values.all("roles");
    html! {
        fieldset.field.radios {
            legend { "Roles (Security Administrators)" }
            @for (r, t) in ROLE_TITLES {
                @let id = format!("{id}-{}", r.as_str());
                span.radio {
                    input type="checkbox" id=(id) name="roles" value=(r.as_str()) checked[chosen.contains(&r.as_str())];
                    label for=(id) { (t) }
                }
            }
        }
    }
}

async fn members_page(ctx: &Ctx, values: &Form, errors: &Errors) -> WebResult<Markup> {
    let domain = ctx.require_domain(Page::DomainAdministrators)?;
    let d = domain.clone();
    let members = ctx.store(move |s, a| s.list_members(a, &d)).await?;
    let admins = ctx.store(|s, a| s.list_admins(a)).await?;
    let mut candidates = vec![(String::new(), "(choose)".to_owned())];
    candidates.extend(
        admins
            .into_iter()
            .filter(|a| {
                a.user_type != UserType::System && !members.iter().any(|m| m.login == a.login)
            })
            .map(|a| {
                (
                    a.login.clone(),
                    format!("{} ({})", a.login, a.user_type.title()),
                )
            }),
    );
    let write = ctx.can_write();
    let body = html! {
        (layout::form(ctx, "/domain/administrators/change", html! {
            table.list {
                caption.visually-hidden { "Administrators of this domain" }
                thead { tr {
                    @if write { th scope="col" { input type="checkbox" data-select-all aria-label="Select all"; } }
                    th scope="col" { "Login" } th scope="col" { "User Type" } th scope="col" { "Roles" } th scope="col" { "Enabled" }
                } }
                tbody {
                    @for m in &members {
                        tr {
                            @if write { td { input type="checkbox" name="login" value=(m.login) aria-label=(format!("Select {}", m.login)); } }
                            td { (m.login) }
                            td { (m.user_type.title()) }
                            td { (m.roles.iter().map(|r| role_title(*r)).collect::<Vec<_>>().join(", ")) }
                            td { (layout::yes_no(m.enabled)) }
                        }
                    }
                }
            }
            p.total { "Total: " (members.len()) }
            @if write {
                div.actions {
                    button type="submit" name="action" value="enable" { "Enable" }
                    button type="submit" name="action" value="disable" { "Disable" }
                    button.danger type="submit" name="action" value="remove" { "Remove from Domain" }
                }
                details {
                    summary { "Set the roles of the selected Security Administrators" }
                    (role_boxes("set-role", &Form::default()))
                    div.actions { button type="submit" name="action" value="roles" { "Set Roles" } }
                }
            }
        }))
        @if write {
            section aria-labelledby="h-add" {
                h2 #h-add { "Add to Domain" }
                (general_errors(errors, &["login", "roles"]))
                (layout::form(ctx, "/domain/administrators/add", html! {
                    (select("Administrator", "login", &candidates, values, errors,
                        Some("The list holds administrators of your domains and those in no domain yet.")))
                    (field(Input::Text, "Or Another Administrator's Login", "other_login", values, errors,
                        Some("An administrator of another global domain is added by typing their login."), false))
                    (role_boxes("role", values))
                    div.actions { button.primary type="submit" { "Add" } }
                }))
            }
        }
    };
    Ok(layout::page(
        ctx,
        Page::DomainAdministrators,
        &format!("Administrators of {domain}"),
        html! {},
        body,
    ))
}

pub async fn members(ctx: Ctx) -> WebResult<Response> {
    Ok(members_page(&ctx, &Form::default(), &Errors::none())
        .await?
        .into_response())
}

fn roles_of(form: &Form) -> appliance::Result<Vec<Role>> {
    form.all("roles").into_iter().map(Role::parse).collect()
}

pub async fn add_member(Posted(ctx, form): Posted) -> WebResult<Response> {
    let domain = ctx.require_domain(Page::DomainAdministrators)?;
    let typed = form.get("other_login").trim();
    let login = if typed.is_empty() {
        form.get("login").to_owned()
    } else {
        typed.to_owned()
    };
    let outcome = if login.is_empty() {
        Err(appliance::Error::invalid("login", "choose the administrator to add").into())
    } else {
        match roles_of(&form) {
            Ok(roles) => {
                let (d, l) = (domain.clone(), login.clone());
                ctx.store(move |s, a| s.add_member(a, &d, &l, &roles)).await
            }
            Err(e) => Err(e.into()),
        }
    };
    match outcome {
        Ok(_) => Ok(layout::done(
            &ctx,
            "/domain/administrators",
            &format!("{login} added to {domain}."),
        )),
        Err(e) => {
            let errors = Errors::from_web(e)?;
            Ok((
                StatusCode::BAD_REQUEST,
                members_page(&ctx, &form, &errors).await?,
            )
                .into_response())
        }
    }
}

pub async fn change_members(Posted(ctx, form): Posted) -> WebResult<Response> {
    let domain = ctx.require_domain(Page::DomainAdministrators)?;
    let logins: Vec<String> = form.all("login").into_iter().map(str::to_owned).collect();
    let action = form.get("action").to_owned();
    if logins.is_empty() {
        return Ok(layout::refused(
            &ctx,
            "/domain/administrators",
            "Select the administrators first.",
        ));
    }
    let roles = match roles_of(&form) {
        Ok(r) => r,
        Err(e) => {
            return Ok(layout::refused(
                &ctx,
                "/domain/administrators",
                &e.to_string(),
            ));
        }
    };
    for login in &logins {
        let (d, l, r) = (domain.clone(), login.clone(), roles.clone());
        let outcome = match action.as_str() {
            "enable" => ctx
                .store(move |s, a| s.update_member(a, &d, &l, None, Some(true)))
                .await
                .map(drop),
            "disable" => ctx
                .store(move |s, a| s.update_member(a, &d, &l, None, Some(false)))
                .await
                .map(drop),
            "remove" => ctx.store(move |s, a| s.remove_member(a, &d, &l)).await,
            "roles" => ctx
                .store(move |s, a| s.update_member(a, &d, &l, Some(&r), None))
                .await
                .map(drop),
            _ => Err(appliance::Error::invalid(
                "action",
                "must be enable, disable, remove or roles",
            )
            .into()),
        };
        if let Err(e) = outcome {
            let msg = Errors::from_web(e)?.summary();
            return Ok(layout::refused(
                &ctx,
                "/domain/administrators",
                &format!("{login}: {msg}"),
            ));
        }
    }
    let what = match action.as_str() {
        "enable" => "Enabled",
        "disable" => "Disabled",
        "remove" => "Removed from the domain:",
        _ => "Set the roles of",
    };
    Ok(layout::done(
        &ctx,
        "/domain/administrators",
        &format!("{what} {}.", logins.join(", ")),
    ))
}
