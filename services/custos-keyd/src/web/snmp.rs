//! System → SNMP (§13): the Configuration tab (enabled, community string,
//! sysContact, sysLocation), the Access Control List tab (list, add,
//! delete) and the MIB tab (the objects the agent serves, with the MIB file
//! to download). The agent, `custos-snmpd`, picks changes up within seconds.

use appliance::store::{COMMUNITY_DEFAULT, SNMP_OBJECTS, SnmpSettings, SnmpUpdate};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::form::{Errors, Form, Posted};
use super::layout::{self, Input, checkbox, field, general_errors};
use super::{Ctx, Page, WebResult};

/// The MIB module that ships in the image at /usr/share/snmp/mibs.
const MIB_FILE: &str =
    include_str!("../../../../image/mkosi.extra/usr/share/snmp/mibs/CUSTOS-MIB.txt");

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tab {
    Configuration,
    Acl,
    Mib,
}

fn tabs(current: Tab) -> Markup {
    let items = [
        (Tab::Configuration, "Configuration", "/system/snmp"),
        (Tab::Acl, "Access Control List", "/system/snmp/acl"),
        (Tab::Mib, "MIB", "/system/snmp/mib"),
    ];
    html! {
        nav.tabs aria-label="SNMP" {
            @for (tab, label, link) in items {
                @if tab == current {
                    span.tab.current aria-current="page" { (label) }
                } @else {
                    a href=(link) { (label) }
                }
            }
        }
    }
}

fn page(ctx: &Ctx, tab: Tab, body: Markup) -> Markup {
    layout::page(
        ctx,
        Page::System,
        "SNMP",
        super::system::submenu("snmp"),
        html! { (tabs(tab)) (body) },
    )
}

fn status(s: &SnmpSettings) -> Markup {
    html! {
        p.notice.ok[s.enabled].warn[!s.enabled] role="status" {
            @if s.enabled {
                "The SNMP agent is enabled: it answers SNMP v1 and v2c on UDP and TCP ports 161 and 7025"
                @if s.acl.is_empty() { " from any address." } @else { " from the addresses of the access control list." }
            } @else {
                "The SNMP agent is disabled: its ports are closed."
            }
        }
        @if s.community_is_default {
            p.notice.warn role="status" {
                "The community string is still the default (" code { (COMMUNITY_DEFAULT) } "). Change it before enabling the agent on a shared network."
            }
        }
    }
}

const CONFIG_FIELDS: [&str; 4] = ["enabled", "community", "sys_contact", "sys_location"];

fn config_form(ctx: &Ctx, s: &SnmpSettings, values: &Form, errors: &Errors) -> Markup {
    let write = ctx.can_write();
    let community_hint = if s.community_is_default {
        "Printable characters without spaces, up to 64. Leave empty to keep the default community string."
    } else {
        "Printable characters without spaces, up to 64. Leave empty to keep the current community string (it is never shown)."
    };
    page(
        ctx,
        Tab::Configuration,
        html! {
            (status(s))
            (general_errors(errors, &CONFIG_FIELDS))
            (layout::form(ctx, "/system/snmp", html! {
                fieldset disabled[!write] {
                    legend { "Agent" }
                    (checkbox("Enable SNMP", "enabled", values, errors,
                        Some("SNMP v1 and v2c, GET, GETNEXT and GETBULK; read-only, no traps.")))
                    (field(Input::Password, "Community String", "community", values, errors, Some(community_hint), false))
                    (field(Input::Text, "System Contact (sysContact)", "sys_contact", values, errors,
                        Some("Up to 256 characters; served as sysContact.0 (1.3.6.1.2.1.1.4.0)."), false))
                    (field(Input::Text, "System Location (sysLocation)", "sys_location", values, errors,
                        Some("Up to 256 characters; served as sysLocation.0 (1.3.6.1.2.1.1.6.0)."), false))
                }
                @if write {
                    div.actions { button.primary type="submit" { "Apply" } }
                }
            }))
        },
    )
}

fn values_of(s: &SnmpSettings) -> Form {
    let mut f = Form::default()
        .with("sys_contact", s.sys_contact.clone())
        .with("sys_location", s.sys_location.clone());
    if s.enabled {
        f = f.with("enabled", "on");
    }
    f
}

pub async fn config_page(ctx: Ctx) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let s = ctx.store(|s, a| s.snmp_settings(a)).await?;
    Ok(config_form(&ctx, &s, &values_of(&s), &Errors::none()).into_response())
}

pub async fn update_config(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let up = SnmpUpdate {
        enabled: Some(form.checked("enabled")),
        community: Some(form.secret("community")).filter(|c| !c.expose().is_empty()),
        acl: None,
        sys_contact: Some(form.get("sys_contact").trim().to_owned()),
        sys_location: Some(form.get("sys_location").trim().to_owned()),
    };
    match ctx.store(move |s, a| s.update_snmp_settings(a, up)).await {
        Ok(s) => Ok(layout::done(
            &ctx,
            "/system/snmp",
            if s.enabled {
                "SNMP settings saved. The agent answers with them within seconds."
            } else {
                "SNMP settings saved. The agent is disabled."
            },
        )),
        Err(e) => {
            let errors = Errors::from_web(e)?;
            let s = ctx.store(|s, a| s.snmp_settings(a)).await?;
            Ok((
                StatusCode::BAD_REQUEST,
                config_form(&ctx, &s, &form, &errors),
            )
                .into_response())
        }
    }
}

fn acl_form(ctx: &Ctx, s: &SnmpSettings, values: &Form, errors: &Errors) -> Markup {
    let write = ctx.can_write();
    page(
        ctx,
        Tab::Acl,
        html! {
            (status(s))
            p.hint { "IPv4 addresses allowed to ask; the fourth octet may be " code { "*" } " (for example "
                code { "10.1.2.*" } "). Host names are not accepted. With an empty list any address may ask. "
                "Requests from other addresses, and requests with a wrong community string, get no answer and are logged." }
            (layout::form(ctx, "/system/snmp/acl/delete", html! {
                table.list.narrow-table {
                    caption.visually-hidden { "Access control list" }
                    thead { tr {
                        @if write { th scope="col" { input type="checkbox" data-select-all aria-label="Select all"; } }
                        th scope="col" { "IP Address" }
                    } }
                    tbody {
                        @for e in &s.acl {
                            tr {
                                @if write { td { input type="checkbox" name="entry" value=(e) aria-label=(format!("Select {e}")); } }
                                td { code { (e) } }
                            }
                        }
                        @if s.acl.is_empty() {
                            tr { td colspan="2" .muted { "The list is empty: any address may ask." } }
                        }
                    }
                }
                @if write && !s.acl.is_empty() {
                    div.actions { button.danger type="submit" { "Delete" } }
                }
            }))
            @if write {
                section aria-labelledby="h-add-acl" {
                    h2 #h-add-acl { "Add" }
                    (general_errors(errors, &["acl"]))
                    (layout::form(ctx, "/system/snmp/acl/add", html! {
                        (field(Input::Text, "IP Address", "acl", values, errors,
                            Some("An IPv4 address such as 10.1.2.3, or 10.1.2.* for the whole 10.1.2.0/24."), true))
                        div.actions { button.primary type="submit" { "Add" } }
                    }))
                }
            }
        },
    )
}

pub async fn acl_page(ctx: Ctx) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let s = ctx.store(|s, a| s.snmp_settings(a)).await?;
    Ok(acl_form(&ctx, &s, &Form::default(), &Errors::none()).into_response())
}

pub async fn add_acl(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let entry = form.get("acl").trim().to_owned();
    let e = entry.clone();
    match ctx.store(move |s, a| s.add_snmp_acl_entry(a, &e)).await {
        Ok(_) => Ok(layout::done(
            &ctx,
            "/system/snmp/acl",
            &format!("{entry} added to the access control list."),
        )),
        Err(e) => {
            let errors = Errors::from_web(e)?;
            let s = ctx.store(|s, a| s.snmp_settings(a)).await?;
            Ok((StatusCode::BAD_REQUEST, acl_form(&ctx, &s, &form, &errors)).into_response())
        }
    }
}

pub async fn delete_acl(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let entries: Vec<String> = form.all("entry").into_iter().map(str::to_owned).collect();
    if entries.is_empty() {
        return Ok(layout::refused(
            &ctx,
            "/system/snmp/acl",
            "Select the entries to delete first.",
        ));
    }
    let list = entries.join(", ");
    match ctx
        .store(move |s, a| s.delete_snmp_acl_entries(a, &entries))
        .await
    {
        Ok(_) => Ok(layout::done(
            &ctx,
            "/system/snmp/acl",
            &format!("Deleted {list} from the access control list."),
        )),
        Err(e) => {
            let msg = Errors::from_web(e)?.summary();
            Ok(layout::refused(&ctx, "/system/snmp/acl", &msg))
        }
    }
}

pub async fn mib_page(ctx: Ctx) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let body = html! {
        p.hint {
            "The objects the agent serves. The appliance's own objects are read-only OCTET STRINGs computed when asked; "
            "their MIB module is " a href="/system/snmp/CUSTOS-MIB.txt" download { "CUSTOS-MIB.txt" }
            " (load it with " code { "snmpget -M +DIR -m +CUSTOS-MIB" } ")."
        }
        table.list {
            caption.visually-hidden { "Objects served by the SNMP agent" }
            thead { tr {
                th scope="col" { "OID" } th scope="col" { "Name" } th scope="col" { "Syntax" } th scope="col" { "Description" }
            } }
            tbody {
                @for o in SNMP_OBJECTS {
                    tr {
                        td { code { (o.oid) } }
                        td { (o.module) "::" (o.name) ".0" }
                        td { (o.syntax) }
                        td { (o.description) }
                    }
                }
            }
        }
    };
    Ok(page(&ctx, Tab::Mib, body).into_response())
}

pub async fn mib_file(ctx: Ctx) -> WebResult<Response> {
    ctx.require(Page::System)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"CUSTOS-MIB.txt\"",
            ),
        ],
        MIB_FILE,
    )
        .into_response())
}
