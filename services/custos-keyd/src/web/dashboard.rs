//! The Dashboard (§4): the server, the signed-in administrator, security
//! mode and CA fingerprints, the machine's network and disk, the licence.

use appliance::model::{SecurityMode, UserType, fmt_time};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use appliance::crypto::KeyProtection;
use appliance::store::ShareState;

use super::form::Posted;
use super::layout::{self, or_dash};
use super::{Ctx, Page, WebResult, sysinfo};

fn row(label: &str, value: Markup) -> Markup {
    html! { tr { th scope="row" { (label) } td { (value) } } }
}

fn list(items: &[String]) -> Markup {
    html! {
        @if items.is_empty() { span.muted { "none" } }
        @else { @for (i, v) in items.iter().enumerate() { @if i > 0 { br; } (v) } }
    }
}

/// The licence summary shown on the dashboard and the License page.
pub fn licence_summary(l: Option<&appliance::store::LicenceView>) -> Markup {
    html! {
        @match l {
            None => p.notice.warn role="status" { strong { "License not found." } " Upload a licence file under System → License." },
            Some(l) => table.facts {
                tbody {
                    (row("Issued To", html! { (l.terms.issued_to) }))
                    (row("Licence ID", html! { (l.terms.licence_id) }))
                    (row("Key Agents", html! {
                        @if l.terms.key_agent.installed {
                            (l.agents_in_use) " of " (l.terms.key_agent.max_agents) " registered · expires " (l.terms.key_agent.expires)
                            @if l.key_agent_expired { " " span.badge.bad { "expired" } }
                        } @else { "not licensed" }
                    }))
                    (row("FS Agents", html! {
                        @if l.terms.fs_agent.installed {
                            "up to " (l.terms.fs_agent.max_agents) " · expires " (l.terms.fs_agent.expires)
                        } @else { "not licensed" }
                    }))
                    (row("Key Vault", html! { (layout::yes_no(l.terms.key_vault)) }))
                    (row("Domains", html! {
                        (l.domains_in_use) " of "
                        @if l.terms.multiple_domains { (l.terms.max_domains) } @else { "1 (multiple domains not licensed)" }
                    }))
                    (row("Installed", html! { (l.installed_at) " by " (l.installed_by) }))
                    @if l.development_key {
                        (row("Signed By", html! { span.badge.warn { "development key" } " — not for production use" }))
                    }
                }
            }
        }
    }
}

pub async fn page(
    ctx: Ctx,
    axum::extract::Query(q): axum::extract::Query<Vec<(String, String)>>,
) -> WebResult<Response> {
    ctx.require(Page::Dashboard)?;
    // §12: a wrapper-key custodian sees their own share behind Show/Hide
    // until they confirm they stored it.
    let share_state = ctx.store(|s, a| s.my_share_state(a)).await?;
    let custodian = share_state.is_some();
    let held = matches!(share_state, Some(ShareState::Held { .. }));
    let share = if held && q.iter().any(|(k, v)| k == "share" && v == "show") {
        Some(ctx.store(|s, a| s.my_wrapper_share(a)).await?)
    } else {
        None
    };
    let shown = share.is_some() || matches!(share_state, Some(ShareState::Held { shown: true }));
    let st = ctx.st.clone();
    let fp = |id: &appliance::pki::Identity| id.fingerprint().unwrap_or_default();
    let prefs = ctx.store(|s, a| s.preferences(a)).await?;
    let os = ctx.st.store(|s| s.os_settings()).await?;
    let ha = ctx.st.store(|s| s.ha_role()).await?;
    let licence = ctx.store(|s, a| s.licence(a)).await?;
    let timeout = time::Duration::minutes(prefs.session_timeout);
    let signed_in = st.web_sessions.signed_in(timeout);
    let others: Vec<String> = match ctx.domain() {
        Some(d) => {
            let d = d.to_owned();
            let members = ctx.store(move |s, a| s.member_logins(a, &d)).await?;
            signed_in
                .into_iter()
                .filter(|l| *l != ctx.actor.login && members.contains(l))
                .collect()
        }
        None => signed_in
            .into_iter()
            .filter(|l| *l != ctx.actor.login)
            .collect(),
    };
    let mut others_unique = others.clone();
    others_unique.sort();
    others_unique.dedup();
    let data_dir = st.store.dir().to_path_buf();
    let (addresses, route, dns, synced, disk) = tokio::task::spawn_blocking(move || {
        (
            sysinfo::addresses(),
            sysinfo::default_route(),
            sysinfo::dns_servers(),
            sysinfo::ntp_synchronised(),
            sysinfo::disk(&data_dir),
        )
    })
    .await
    .map_err(|e| super::WebError::Internal(format!("dashboard facts: {e}")))?;
    let ntp_servers: Vec<String> = os
        .ntp
        .servers
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    let ntp_status = match (os.ntp.enabled, synced) {
        (false, _) => "NTP off",
        (true, true) => "synchronised",
        (true, false) => "not synchronised",
    };
    let mode = |m: SecurityMode| match m {
        SecurityMode::Compatible => "Compatible (RSA)",
        SecurityMode::SuiteB => "Suite B (ECC P-384)",
    };
    let body = html! {
        div.cards {
            section.card aria-labelledby="h-server" {
                h2 #h-server { "Server" }
                table.facts { tbody {
                    (row("Server Name", html! { (st.host_name) }))
                    (row("Software Version", html! { (appliance::VERSION) }))
                    (row("Server Time", html! { (fmt_time(time::OffsetDateTime::now_utc())) }))
                    (row("Your Last Login", or_dash(ctx.session.previous_login.as_deref())))
                    (row(if ctx.domain().is_some() { "Other Administrators of This Domain Signed In" } else { "Other Administrators Signed In" },
                        html! { (others_unique.len()) @if !others_unique.is_empty() { " (" (others_unique.join(", ")) ")" } }))
                    (row("High Availability", html! { (ha.summary()) }))
                } }
            }
            section.card aria-labelledby="h-security" {
                h2 #h-security { "Security" }
                table.facts { tbody {
                    (row("Security Mode", html! {
                        (mode(st.mode))
                        @if prefs.security_mode != st.mode { " " span.badge.warn { "changes to " (mode(prefs.security_mode)) " at the next restart" } }
                    }))
                    (row("RSA CA Fingerprint (SHA-256)", html! { code.fp { (fp(&st.identities.ca_rsa)) } }))
                    (row("EC CA Fingerprint (SHA-256)", html! { code.fp { (fp(&st.identities.ca_ec)) } }))
                    (row("Master Key", match st.store.master_key_protection() {
                        KeyProtection::Tpm => html! { "Sealed to this VM's TPM" },
                        KeyProtection::Disk => html! {
                            span.badge.warn { "Unsealed on disk" }
                            " no TPM: a copy of the data disk holds every key"
                        },
                    }))
                } }
            }
            section.card aria-labelledby="h-network" {
                h2 #h-network { "Network and Time" }
                table.facts { tbody {
                    (row("IP Addresses", list(&addresses)))
                    (row("Default Route", or_dash(route.as_deref())))
                    (row("DNS Servers", list(&dns)))
                    (row("NTP Servers", html! {
                        @if ntp_servers.is_empty() { span.muted { "system defaults" } } @else { (ntp_servers.join(", ")) }
                        " · " (ntp_status)
                    }))
                } }
            }
            section.card aria-labelledby="h-disk" {
                h2 #h-disk { "Disk" }
                @match &disk {
                    Some(d) => table.facts { tbody {
                        (row("Total", html! { (sysinfo::human(d.total)) }))
                        (row("Free", html! { (sysinfo::human(d.free)) }))
                        (row("Use", html! {
                            (d.used_percent()) "%"
                            meter min="0" max="100" low="70" high="90" optimum="10" value=(d.used_percent()) aria-label="Disk use" {}
                        }))
                    } },
                    None => p.muted { "Not available." },
                }
            }
            @if custodian {
                section.card aria-labelledby="h-share" {
                    h2 #h-share { "Wrapper Key Share" }
                    p { "You are a custodian of the wrapper key that encrypts this appliance's backups. Keep your share somewhere safe, away from the appliance." }
                    @if let Some(ShareState::Collected { at }) = &share_state {
                        p #share-collected { "You confirmed on " (at) " that you stored your share; the appliance holds no copy of it any more." }
                    } @else {
                        @match &share {
                            Some(s) => {
                                p { code #wrapper-share .fp { (s.expose()) } }
                                p { a href="/dashboard" { "Hide" } }
                            }
                            None => p { a href="/dashboard?share=show" { "Show" } },
                        }
                        @if shown {
                            (layout::form(&ctx, "/dashboard/share/stored", html! {
                                p.hint { "Once you have stored your share safely, confirm it: the appliance then deletes its copy, and nobody can show it here again." }
                                div.actions { button.primary type="submit" { "I Have Stored My Share" } }
                            }))
                        }
                    }
                }
            }
            section.card aria-labelledby="h-licence" {
                h2 #h-licence { "License" }
                (licence_summary(licence.as_ref()))
            }
            @if ctx.actor.user_type != UserType::System {
                section.card aria-labelledby="h-prefs" {
                    h2 #h-prefs { "Preferences" }
                    table.facts { tbody {
                        (row("Key Refresh Period", html! { (prefs.key_refresh_period) " minutes" }))
                        (row("Session Timeout", html! { (prefs.session_timeout) " minutes" }))
                    } }
                }
            }
        }
    };
    Ok(layout::page(&ctx, Page::Dashboard, "Dashboard", html! {}, body).into_response())
}

/// The custodian confirms they stored their share; the appliance deletes it.
pub async fn share_stored(Posted(ctx, _form): Posted) -> WebResult<Response> {
    ctx.require(Page::Dashboard)?;
    match ctx.store(|s, a| s.confirm_share_stored(a)).await {
        Ok(_) => Ok(layout::done(
            &ctx,
            "/dashboard",
            "Your wrapper-key share is stored by you alone: the appliance deleted its copy.",
        )),
        Err(super::WebError::Core(e @ appliance::Error::Conflict { .. })) => {
            ctx.st
                .web_sessions
                .set_flash(&ctx.token, true, &e.to_string());
            Ok(axum::response::Redirect::to("/dashboard").into_response())
        }
        Err(e) => Err(e),
    }
}
