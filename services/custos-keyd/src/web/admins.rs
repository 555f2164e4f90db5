//! Administrators (§4): the paged list with search and select-all, Add with
//! every field of §4, and Delete. A new administrator must change the
//! password at first sign-in (the store sets it).

use appliance::model::UserType;
use appliance::store::NewAdmin;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::form::{Errors, Form, Posted};
use super::layout::{
    self, Input, Listing, checkbox, field, general_errors, or_dash, select, textarea,
};
use super::{Ctx, Page, WebResult};

pub fn submenu(current: &str) -> Markup {
    layout::submenu(&[
        ("Administrators", "/administrators", current == "list"),
        ("Add Administrator", "/administrators/add", current == "add"),
    ])
}

pub async fn list(ctx: Ctx, Query(q): Query<Vec<(String, String)>>) -> WebResult<Response> {
    ctx.require(Page::Administrators)?;
    let listing = Listing::from_query(&Form::from_pairs(q));
    let all = ctx.store(|s, a| s.list_admins(a)).await?;
    let shown: Vec<_> = all
        .into_iter()
        .filter(|a| listing.matches(&a.login) || listing.matches(&a.description))
        .collect();
    let page = listing.slice(&shown);
    let write = ctx.can_write();
    let body = html! {
        (listing.controls("/administrators", "Search by login", &[]))
        (layout::form(&ctx, "/administrators/delete", html! {
            table.list {
                caption.visually-hidden { "Administrators" }
                thead { tr {
                    @if write { th scope="col" { input type="checkbox" data-select-all aria-label="Select all on this page"; } }
                    th scope="col" { "Login" }
                    th scope="col" { "Description" }
                    th scope="col" { "User Type" }
                    th scope="col" { "Read-Only" }
                    th scope="col" { "Domains" }
                    th scope="col" { "Last Login" }
                    th scope="col" { "Status" }
                } }
                tbody {
                    @for a in page {
                        tr {
                            @if write { td { input type="checkbox" name="login" value=(a.login) aria-label=(format!("Select {}", a.login)); } }
                            td { (a.login) }
                            td { (a.description) }
                            td { (a.user_type.title()) }
                            td { (layout::yes_no(a.read_only)) }
                            td { (a.domains.join(", ")) }
                            td { (or_dash(a.last_login.as_deref())) }
                            td {
                                @if a.locked { span.badge.bad { "locked" } " " }
                                @if a.must_change_password { span.badge { "must change password" } }
                            }
                        }
                    }
                    @if page.is_empty() { tr { td colspan="8" .muted { "No administrators match." } } }
                }
            }
            @if write {
                div.actions {
                    a.button href="/administrators/add" { "Add" }
                    button.danger type="submit" { "Delete" }
                }
            }
        }))
        (listing.pager("/administrators", shown.len(), &[]))
    };
    Ok(layout::page(
        &ctx,
        Page::Administrators,
        "Administrators",
        submenu("list"),
        body,
    )
    .into_response())
}

const FIELDS: [&str; 8] = [
    "login",
    "description",
    "rsa_user_id",
    "password",
    "confirm_password",
    "user_type",
    "restrict_to_domain",
    "read_only",
];

async fn add_form(ctx: &Ctx, values: &Form, errors: &Errors) -> WebResult<Markup> {
    let domains = ctx.store(|s, a| s.list_domains(a)).await?;
    let mut domain_options = vec![(String::new(), "(not restricted)".to_owned())];
    domain_options.extend(domains.iter().map(|d| (d.name.clone(), d.name.clone())));
    let types: Vec<(String, String)> = [UserType::System, UserType::Domain, UserType::Security]
        .iter()
        .map(|t| (t.as_str().to_owned(), t.title().to_owned()))
        .collect();
    let body = html! {
        (general_errors(errors, &FIELDS))
        (layout::form(ctx, "/administrators/add", html! {
            (field(Input::Text, "Login", "login", values, errors, Some("Unique; letters, digits, '.', '_' and '-'."), true))
            (textarea("Description", "description", values, errors, Some("Up to 256 characters.")))
            (field(Input::Text, "RSA User ID", "rsa_user_id", values, errors, Some("Optional."), false))
            (field(Input::Password, "Password", "password", values, errors,
                Some("At least 8 characters with upper and lower case letters, a digit and a special character; not the login."), true))
            (field(Input::Password, "Confirm Password", "confirm_password", values, errors, None, true))
            (select("User Type", "user_type", &types, values, errors, None))
            (select("Restrict to Domain", "restrict_to_domain", &domain_options, values, errors, Some("Domain Administrators only.")))
            (checkbox("Read-Only User", "read_only", values, errors, Some("Sees everything of its type; can change only its own password.")))
            div.actions {
                button.primary type="submit" { "OK" }
                a.button href="/administrators" { "Cancel" }
            }
        }))
    };
    Ok(layout::page(
        ctx,
        Page::Administrators,
        "Add Administrator",
        submenu("add"),
        body,
    ))
}

pub async fn add_page(ctx: Ctx) -> WebResult<Response> {
    ctx.require(Page::Administrators)?;
    let values = Form::default().with("user_type", "system");
    Ok(add_form(&ctx, &values, &Errors::none())
        .await?
        .into_response())
}

pub async fn add(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::Administrators)?;
    let result = async {
        let user_type = UserType::parse(form.get("user_type"))?;
        Ok::<_, appliance::Error>(NewAdmin {
            login: form.get("login").trim().to_owned(),
            description: form.get("description").to_owned(),
            rsa_user_id: form.opt("rsa_user_id"),
            password: form.secret("password"),
            confirm_password: Some(form.secret("confirm_password")),
            user_type,
            restrict_to_domain: form.opt("restrict_to_domain"),
            read_only: form.checked("read_only"),
        })
    }
    .await;
    let outcome = match result {
        Ok(new) => ctx.store(move |s, a| s.create_admin(a, new)).await,
        Err(e) => Err(e.into()),
    };
    match outcome {
        Ok(v) => Ok(layout::done(
            &ctx,
            "/administrators",
            &format!(
                "Administrator {} added; they must change the password at first sign-in.",
                v.login
            ),
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

pub async fn delete(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::Administrators)?;
    let logins: Vec<String> = form.all("login").into_iter().map(str::to_owned).collect();
    if logins.is_empty() {
        return Ok(layout::refused(
            &ctx,
            "/administrators",
            "Select the administrators to delete first.",
        ));
    }
    let mut deleted = Vec::new();
    for login in logins {
        let l = login.clone();
        if let Err(e) = ctx.store(move |s, a| s.delete_admin(a, &l)).await {
            let errors = Errors::from_web(e)?;
            let msg = errors.summary();
            let prefix = if deleted.is_empty() {
                String::new()
            } else {
                format!("Deleted {}. ", deleted.join(", "))
            };
            return Ok(layout::refused(
                &ctx,
                "/administrators",
                &format!("{prefix}Could not delete {login}: {msg}"),
            ));
        }
        ctx.st.end_sessions_of(&login);
        deleted.push(login);
    }
    Ok(layout::done(
        &ctx,
        "/administrators",
        &format!("Deleted {}.", deleted.join(", ")),
    ))
}
