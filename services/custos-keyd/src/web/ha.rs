//! System → High Availability (§11): the group's nodes with their role,
//! registration, configuration and the replication's own view of each
//! (last synchronised, in sync or not), and the Add and Delete actions of
//! the primary. A failover shows the same list, read-only.

use appliance::store::{HaRole, HaStatus};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::form::{Errors, Form, Posted};
use super::layout::{self, Input, field, general_errors};
use super::{Ctx, Page, WebResult};

fn yes_no(b: bool) -> &'static str {
    if b { "Yes" } else { "No" }
}

fn page(ctx: &Ctx, st: &HaStatus, values: &Form, errors: &Errors) -> Markup {
    let write =
        ctx.can_write() && !matches!(st.role, HaRole::Failover { .. } | HaRole::Fenced { .. });
    let body = html! {
        p.notice role="status" { (st.role.summary()) }
        p.hint {
            "Setup: Add the failover's host name here, exactly as its " code { "setinfo show" } " prints it; on the failover run "
            code { "ha convert2failover" } " and compare the CA fingerprint it prints with this appliance's dashboard. "
            "Then select it here and Config Replication: this appliance's store moves into its PostgreSQL, and the failover "
            "replaces its own with a base backup of it and streams every change from then on. "
            "Failovers are read-only: every change is made on the primary."
        }
        @if write {
            section aria-labelledby="h-mode" {
                h2 #h-mode { "Replication Mode" }
                @let current = Form::from_pairs(vec![(
                    "mode".to_owned(),
                    (if st.synchronous { "synchronous" } else { "asynchronous" }).to_owned(),
                )]);
                (layout::form(ctx, "/system/ha/mode", html! {
                    (layout::radios("Mode", "mode", &[("asynchronous", "Asynchronous"), ("synchronous", "Synchronous")], &current, &Errors::none()))
                    p.hint {
                        "Asynchronous (the default): a change is acknowledged once it is durable on this appliance, and reaches the failovers "
                        "within moments; if this appliance is lost in between, a failover made primary has the data of its last synchronisation. "
                        "Synchronous: a change is acknowledged only once a failover has it too, so no acknowledged change is lost with the primary; "
                        "but while no failover is reachable, this appliance waits and acknowledges no change at all."
                    }
                    div.actions { button.primary type="submit" { "Save Mode" } }
                }))
            }
        } @else {
            p.hint { "Replication mode: " (if st.synchronous { "synchronous" } else { "asynchronous" }) "." }
        }
        (layout::form(ctx, "/system/ha/delete", html! {
            table.list {
                caption.visually-hidden { "High availability nodes" }
                thead { tr {
                    @if write { th scope="col" { span.visually-hidden { "Select" } } }
                    th scope="col" { "Name" }
                    th scope="col" { "Role" }
                    th scope="col" { "Registered" }
                    th scope="col" { "Configured" }
                    th scope="col" { "Last Synchronized" }
                    th scope="col" { "Synchronization Status" }
                } }
                tbody {
                    @for n in &st.nodes {
                        @let line = st.replication.iter().find(|l| l.name == n.name);
                        @let last = match (&st.role, line) {
                            (_, Some(l)) => l.last_reply.clone(),
                            (HaRole::Failover { .. }, None) if n.role == "primary" => st.last_synchronised.clone(),
                            _ => None,
                        };
                        @let in_sync = line.is_some_and(|l| l.state == "streaming" && l.lag_bytes == 0);
                        tr {
                            @if write {
                                td { @if n.role == "failover" {
                                    input type="checkbox" name="name" value=(n.name) aria-label=(format!("Select {}", n.name));
                                } }
                            }
                            td { (n.name) }
                            td { (if n.role == "primary" { "Primary" } else { "Failover" }) }
                            td { (yes_no(n.registered)) }
                            td { (yes_no(n.configured)) }
                            td { (last.as_deref().unwrap_or("—")) }
                            td {
                                @if n.role == "primary" { "—" }
                                @else if let Some(l) = line {
                                    span.ok[in_sync].warn[!in_sync] { (if in_sync { "In sync" } else { l.state.as_str() }) }
                                    @if !in_sync { " (" (l.lag_bytes) " bytes behind)" }
                                } @else { span.warn { "Not replicating" } }
                            }
                        }
                    }
                    @if st.nodes.is_empty() {
                        tr { td colspan="7" .muted { "No failover: this appliance is standalone." } }
                    }
                }
            }
            @if write && st.nodes.iter().any(|n| n.role == "failover") {
                div.actions {
                    button.primary type="submit" formaction="/system/ha/replicate" { "Config Replication" }
                    button.danger type="submit" { "Delete" }
                }
            }
        }))
        @if write && st.nodes.iter().any(|n| n.role == "failover" && n.configured) {
            (layout::form(ctx, "/system/ha/notify", html! {
                p.hint { "Notify All Hosts: every key answer from now on names the failovers, and the agent keeps them for when this appliance does not answer." }
                div.actions { button type="submit" { "Notify All Hosts" } }
            }))
        }
        @if write {
            section aria-labelledby="h-add-node" {
                h2 #h-add-node { "Add" }
                (general_errors(errors, &["name"]))
                (layout::form(ctx, "/system/ha/add", html! {
                    (field(Input::Text, "Failover Host Name", "name", values, errors,
                        Some("The failover's fully qualified host name as its `setinfo show` prints it (case-sensitive)."), true))
                    div.actions { button.primary type="submit" { "Add" } }
                }))
            }
        }
    };
    layout::page(
        ctx,
        Page::System,
        "High Availability",
        super::system::submenu("ha"),
        body,
    )
}

pub async fn show(ctx: Ctx) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let st = ctx.store(|s, a| s.ha_status(a)).await?;
    Ok(page(&ctx, &st, &Form::default(), &Errors::none()).into_response())
}

pub async fn add(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let name = form.get("name").trim().to_owned();
    let (n, fallback) = (name.clone(), ctx.st.host_name.clone());
    let added = ctx
        .store(move |s, a| {
            let own = s
                .os_settings()?
                .host_name
                .map_or(fallback, |h| h.as_str().to_owned());
            let node = s.add_ha_node(a, &n, &own)?;
            let kind = appliance::pki::CaKind::for_mode(s.preferences_unchecked()?.security_mode);
            s.ensure_own_node_identity(&own, kind)?;
            Ok(node)
        })
        .await;
    match added {
        Ok(_) => {
            crate::ha::refresh_once(&ctx.st).await;
            Ok(layout::done(
                &ctx,
                "/system/ha",
                &format!(
                    "{name} added. On it, run ha convert2failover and give this appliance as its primary."
                ),
            ))
        }
        Err(e) => {
            let errors = Errors::from_web(e)?;
            let st = ctx.store(|s, a| s.ha_status(a)).await?;
            Ok((StatusCode::BAD_REQUEST, page(&ctx, &st, &form, &errors)).into_response())
        }
    }
}

pub async fn delete(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let names: Vec<String> = form.all("name").into_iter().map(str::to_owned).collect();
    if names.is_empty() {
        return Ok(layout::refused(
            &ctx,
            "/system/ha",
            "Select the failovers to delete first.",
        ));
    }
    let list = names.join(", ");
    let deleted = ctx
        .store(move |s, a| {
            for n in &names {
                s.delete_ha_node(a, n)?;
            }
            Ok(())
        })
        .await;
    crate::ha::refresh_once(&ctx.st).await;
    match deleted {
        Ok(()) => Ok(layout::done(
            &ctx,
            "/system/ha",
            &format!("Deleted {list} from the group."),
        )),
        Err(e) => {
            let msg = Errors::from_web(e)?.summary();
            Ok(layout::refused(&ctx, "/system/ha", &msg))
        }
    }
}

/// Config Replication for the selected failovers, one after the other.
pub async fn replicate(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let names: Vec<String> = form.all("name").into_iter().map(str::to_owned).collect();
    if names.is_empty() {
        return Ok(layout::refused(
            &ctx,
            "/system/ha",
            "Select the failovers to configure first.",
        ));
    }
    for n in &names {
        if let Err(e) =
            crate::ha_setup::configure_replication(&ctx.st, ctx.actor.clone(), n.clone()).await
        {
            let msg = Errors::from_web(e.into())?.summary();
            return Ok(layout::refused(&ctx, "/system/ha", &format!("{n}: {msg}")));
        }
    }
    Ok(layout::done(
        &ctx,
        "/system/ha",
        &format!(
            "Replication configured: {} now streams from this appliance.",
            names.join(", ")
        ),
    ))
}

/// The replication mode (asynchronous or synchronous), applied at once.
pub async fn mode(Posted(ctx, form): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    let mode = form.get("mode").to_owned();
    let pg = ctx.st.pg.clone();
    let set = ctx
        .store(move |s, a| {
            let sync = s.set_ha_replication_mode(a, &mode)?;
            if pg.exists() && !s.is_failover()? {
                pg.set_synchronous(sync)?;
            }
            Ok(sync)
        })
        .await;
    match set {
        Ok(sync) => Ok(layout::done(
            &ctx,
            "/system/ha",
            if sync {
                "Replication is synchronous: a change is acknowledged once a failover has it too."
            } else {
                "Replication is asynchronous."
            },
        )),
        Err(e) => {
            let msg = Errors::from_web(e)?.summary();
            Ok(layout::refused(&ctx, "/system/ha", &msg))
        }
    }
}

/// Notify All Hosts: the key answers name the failovers from now on.
pub async fn notify(Posted(ctx, _form): Posted) -> WebResult<Response> {
    ctx.require(Page::System)?;
    match ctx.store(|s, a| s.notify_hosts(a)).await {
        Ok(list) => {
            crate::ha::refresh_once(&ctx.st).await;
            let names: Vec<String> = list.into_iter().map(|f| f.name).collect();
            Ok(layout::done(
                &ctx,
                "/system/ha",
                &format!(
                    "Hosts are told of {} in their next key answer.",
                    names.join(", ")
                ),
            ))
        }
        Err(e) => {
            let msg = Errors::from_web(e)?.summary();
            Ok(layout::refused(&ctx, "/system/ha", &msg))
        }
    }
}
