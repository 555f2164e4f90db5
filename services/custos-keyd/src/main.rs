//! `custos-keyd`, the key service: the web console and the admin REST API
//! on 8445/443, agent enrolment on 8443/8446 and key
//! retrieval over mutual TLS on 8444/8447, and the key rotation scheduler.
//! The security mode (§9) in the store is applied when it starts.

mod agent;
mod api;
mod backup_api;
mod config;
mod enrol_guard;
mod error;
mod guard;
mod ha;
mod ha_setup;
mod json;
mod local;
mod openapi;
mod serve;
mod state;
mod tls;
mod web;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use appliance::Store;
use appliance::model::SecurityMode;
use appliance::pki::{CaKind, Identity};
use appliance::secret::SecretString;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::config::{Config, Flags};
use crate::state::{AppState, Ports, Sessions};
use crate::tls::Suites;

/// Every request runs in a span with its method and matched route.
async fn request_span(req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "(unmatched)".into());
    let span = tracing::info_span!("request", method = %req.method(), path = %path);
    async move {
        let started = std::time::Instant::now();
        let resp = next.run(req).await;
        tracing::debug!(
            status = resp.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            "handled"
        );
        resp
    }
    .instrument(span)
    .await
}

pub fn with_tracing(r: Router) -> Router {
    r.layer(axum::middleware::from_fn(request_span))
}

struct Listener {
    name: &'static str,
    ready_name: Option<&'static str>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
}

async fn bind(cfg: &Config, port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(cfg.listen, port)).await
}

fn url_host(cfg: &Config) -> String {
    if cfg.listen.is_unspecified() {
        "127.0.0.1".into()
    } else if cfg.listen.is_ipv6() {
        format!("[{}]", cfg.listen)
    } else {
        cfg.listen.to_string()
    }
}

async fn run(cfg: Config, bulk: tokio::runtime::Handle) -> anyhow::Result<Stopped> {
    // HA: this node's PostgreSQL first, when it has one (the store may be
    // there).
    let (data, pg) = (cfg.data.clone(), cfg.pg.clone());
    tokio::task::spawn_blocking(move || ha_setup::start_node_engine(&data, &pg))
        .await?
        .context("starting this node's PostgreSQL")?;
    let data = cfg.data.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&data))
        .await?
        .with_context(|| format!("opening the store in {}", cfg.data.display()))?;
    let store = Arc::new(store);
    // A failover's refusals name its primary.
    let s2 = store.clone();
    if let appliance::store::HaRole::Failover { primary } =
        tokio::task::spawn_blocking(move || s2.ha_role()).await??
    {
        tracing::info!(%primary, "this appliance is a failover (read-only)");
        store.set_primary_name(&primary);
    }
    store.set_refusal_window(cfg.refusal_window);
    store.set_disk_reserve(cfg.disk_reserve_bytes);
    let (host, names) = (cfg.host_name.clone(), cfg.server_names());
    let s2 = store.clone();
    let identities = tokio::task::spawn_blocking(move || s2.ensure_identities(&host, &names))
        .await?
        .context("creating or loading the certificate authorities")?;
    let s2 = store.clone();
    let prefs = tokio::task::spawn_blocking(move || s2.preferences_unchecked()).await??;
    let mode = prefs.security_mode;
    // One back-off for both enrolment ports.
    let enrol_guard = enrol_guard::EnrolGuard::new(cfg.enrol_guard.clone());
    tracing::info!(mode = mode.as_str(), "security mode");
    let state = Arc::new(AppState {
        store: store.clone(),
        sessions: Sessions::with_lifetime(cfg.session_lifetime),
        web_sessions: web::session::WebSessions::with_lifetime(cfg.session_lifetime),
        guard: Default::default(),
        restart: Default::default(),
        identities: identities.clone(),
        mode,
        ports: Default::default(),
        host_name: cfg.host_name.clone(),
        nodes: Default::default(),
        pg: cfg.pg.clone(),
        ha_port: cfg.ha_port.into(),
        host_failovers: Default::default(),
    });

    // Bind everything first: key ports are told to hosts at enrolment.
    let keys_ec = bind(&cfg, cfg.keys_ec_port)
        .await
        .with_context(|| format!("binding keys-ec port {}", cfg.keys_ec_port))?;
    let enrol_ec = bind(&cfg, cfg.enrol_ec_port)
        .await
        .with_context(|| format!("binding enrol-ec port {}", cfg.enrol_ec_port))?;
    let web = bind(&cfg, cfg.web_port)
        .await
        .with_context(|| format!("binding web port {}", cfg.web_port))?;
    let ha_listener = bind(&cfg, cfg.ha_port)
        .await
        .with_context(|| format!("binding the HA control port {}", cfg.ha_port))?;
    state.ha_port.store(
        ha_listener.local_addr()?.port(),
        std::sync::atomic::Ordering::Relaxed,
    );
    // This node's HA identity: a failover's came with its registration; a
    // primary (or standalone appliance) makes its own from its CA.
    let (s2, own) = (store.clone(), cfg.host_name.clone());
    let node_kind = CaKind::for_mode(mode);
    let node = tokio::task::spawn_blocking(move || -> appliance::Result<_> {
        if s2.is_failover()? {
            s2.node_identity(node_kind)
        } else {
            let own = s2
                .os_settings()?
                .host_name
                .map_or(own, |h| h.as_str().to_owned());
            s2.ensure_own_node_identity(&own, node_kind).map(Some)
        }
    })
    .await?
    .context("this node's HA identity")?;
    let (keys, enrol) = if mode == SecurityMode::Compatible {
        (
            Some(
                bind(&cfg, cfg.keys_port)
                    .await
                    .with_context(|| format!("binding keys port {}", cfg.keys_port))?,
            ),
            Some(
                bind(&cfg, cfg.enrol_port)
                    .await
                    .with_context(|| format!("binding enrol port {}", cfg.enrol_port))?,
            ),
        )
    } else {
        tracing::info!(
            "Suite B mode: the RSA agent ports {} and {} are closed",
            cfg.enrol_port,
            cfg.keys_port
        );
        (None, None)
    };
    let web_alt = match cfg.web_alt_port {
        None => {
            tracing::info!(
                "local run: the privileged HTTPS port 443 is skipped; the console is on {}",
                cfg.web_port
            );
            None
        }
        Some(p) => match bind(&cfg, p).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(port = p, error = %e, "HTTPS port not bound; the console stays reachable on {}", cfg.web_port);
                None
            }
        },
    };
    let port = |l: &TcpListener| l.local_addr().map(|a| a.port());
    let ports = Ports {
        web: port(&web)?,
        enrol: enrol.as_ref().map(port).transpose()?,
        keys: keys.as_ref().map(port).transpose()?,
        enrol_ec: port(&enrol_ec)?,
        keys_ec: port(&keys_ec)?,
    };
    state.ports.set(ports.clone()).ok();

    let web_suites = if mode == SecurityMode::SuiteB {
        Suites::SuiteB
    } else {
        Suites::Compatible
    };
    let web_kind = CaKind::for_mode(mode);
    // The web server sends its CA in the chain: a failover joining checks
    // it against the fingerprint the operator copied from the dashboard.
    let web_chain = Identity {
        cert_pem: format!(
            "{}\n{}",
            identities.server(web_kind).cert_pem.trim_end(),
            identities.ca(web_kind).cert_pem
        ),
        key_pem: identities.server(web_kind).key_pem.clone(),
    };
    let web_tls = tls::server_config(web_suites, &web_chain, None)?;
    let api = with_tracing(web::router(state.clone()).merge(api::router(state.clone())));
    let mut listeners = vec![Listener {
        name: "web",
        ready_name: Some("web"),
        listener: web,
        tls: web_tls.clone(),
        app: api.clone(),
    }];
    if let Some(l) = web_alt {
        listeners.push(Listener {
            name: "web-443",
            ready_name: None,
            listener: l,
            tls: web_tls,
            app: api,
        });
    }
    if let (Some(enrol), Some(keys)) = (enrol, keys) {
        listeners.push(Listener {
            name: "enrol",
            ready_name: Some("enrol"),
            listener: enrol,
            tls: tls::server_config(Suites::Compatible, &identities.server_rsa, None)?,
            app: with_tracing(agent::enrol_router(
                state.clone(),
                enrol_guard.clone(),
                CaKind::Rsa,
                ports.keys.unwrap_or_default(),
            )),
        });
        listeners.push(Listener {
            name: "keys",
            ready_name: Some("keys"),
            listener: keys,
            tls: tls::server_config(
                Suites::Compatible,
                &identities.server_rsa,
                Some(&identities.ca_rsa),
            )?,
            app: with_tracing(agent::keys_router(state.clone(), CaKind::Rsa)),
        });
    }
    listeners.push(Listener {
        name: "enrol-ec",
        ready_name: Some("enrol-ec"),
        listener: enrol_ec,
        tls: tls::server_config(Suites::SuiteB, &identities.server_ec, None)?,
        app: with_tracing(agent::enrol_router(
            state.clone(),
            enrol_guard.clone(),
            CaKind::Ec,
            ports.keys_ec,
        )),
    });
    listeners.push(Listener {
        name: "keys-ec",
        ready_name: Some("keys-ec"),
        listener: keys_ec,
        tls: tls::server_config(
            Suites::SuiteB,
            &identities.server_ec,
            Some(&identities.ca_ec),
        )?,
        app: with_tracing(agent::keys_router(state.clone(), CaKind::Ec)),
    });

    // A node that joined a group and is not yet its replica trusts the
    // group's CA, not its own.
    let (data, s2) = (cfg.data.clone(), store.clone());
    let (joined, failover) = tokio::task::spawn_blocking(move || -> appliance::Result<_> {
        Ok((appliance::store::joined_primary(&data)?, s2.is_failover()?))
    })
    .await??;
    let node_ca = match (&joined, failover) {
        (Some(j), false) => Identity {
            cert_pem: j.ca_pem.clone(),
            key_pem: SecretString::new(String::new()),
        },
        _ => identities.ca(node_kind).clone(),
    };
    match &node {
        Some(node) => listeners.push(Listener {
            name: "ha",
            ready_name: Some("ha"),
            listener: ha_listener,
            tls: ha::server_config(web_suites, node, &node_ca, state.nodes.clone())?,
            app: with_tracing(ha::router(state.clone())),
        }),
        None => tracing::warn!(
            "this failover has no node certificate: the HA control port {} stays closed",
            cfg.ha_port
        ),
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn_on(ha::refresh(state.clone(), stop_rx.clone()), &bulk);
    let mut ready = String::new();
    for l in listeners {
        let addr = l.listener.local_addr()?;
        tracing::info!(listener = l.name, %addr, "listening");
        if let Some(n) = l.ready_name {
            ready.push_str(&format!(
                "ready {n} https://{}:{}\n",
                url_host(&cfg),
                addr.port()
            ));
        }
        let limits = if l.name.starts_with("keys") {
            cfg.key_limits
        } else {
            cfg.limits
        };
        let served = serve::serve(l.name, l.listener, l.tls, l.app, limits, stop_rx.clone());
        // The key ports on the main runtime; everything else, password
        // checks and registrations included, on the lower-priority one.
        if l.name.starts_with("keys") {
            tasks.spawn(served);
        } else {
            tasks.spawn_on(served, &bulk);
        }
    }
    tasks.spawn(rotation_scheduler(
        store.clone(),
        cfg.rotation_interval,
        cfg.audit_max_rows,
        stop_rx.clone(),
    ));

    let local_listener = local::bind(&cfg.local_socket)?;
    // The daemons' socket is background work: on the console runtime.
    tasks.spawn_on(
        local::serve(
            local_listener,
            cfg.local_socket.clone(),
            store.clone(),
            local::Peers::lookup(),
            stop_rx.clone(),
        ),
        &bulk,
    );

    // A primary that comes back asks its group before it is ready: if
    // another node was made primary meanwhile, it is fenced (read-only).
    refresh_nodes_and_fence(&state).await;
    let s2 = store.clone();
    let admin =
        tokio::task::spawn_blocking(move || s2.actor("admin", "console", "system").ok()).await?;
    let mut out = std::io::stdout().lock();
    out.write_all(ready.as_bytes())?;
    writeln!(
        out,
        "web console: https://{}:{}/ (REST API under /api/v1)",
        url_host(&cfg),
        ports.web
    )?;
    match admin {
        Some(a) if a.must_change_password => writeln!(
            out,
            "default web login: admin / admin123 (a new password is required at first login)"
        )?,
        Some(_) => writeln!(
            out,
            "web login: admin (its password was changed from the default)"
        )?,
        None => writeln!(out, "web login: the built-in admin was removed")?,
    }
    out.flush()?;
    drop(out);
    appliance::daemon::notify_ready();

    let restart = tokio::select! {
        _ = appliance::daemon::shutdown_signal() => false,
        _ = state.restart.notified() => true,
    };
    if restart {
        tracing::info!("restarting to apply the restored configuration");
    }
    tracing::info!("stopping");
    appliance::daemon::notify_stopping();
    stop_tx.send(true).ok();
    while tasks.join_next().await.is_some() {}
    tracing::info!("stopped");
    Ok(if restart {
        Stopped::Restart
    } else {
        Stopped::Signal
    })
}

async fn refresh_nodes_and_fence(state: &Arc<AppState>) {
    ha::refresh_once(state).await;
    ha_setup::check_fencing(state).await;
}

/// Why the service stopped.
enum Stopped {
    Signal,
    /// A restore replaced the certificates and settings read at start; the
    /// unit restarts on this exit status (`RestartForceExitStatus`).
    Restart,
}

/// The exit status that asks systemd (and `cargo xtask run`) to start the
/// service again.
pub const EXIT_RESTART: u8 = 75;

/// §7 automatic rotation: runs at start and then every `interval`; also
/// writes the summaries of repeated refusals whose window closed, and
/// archives the audit rows beyond `audit_max_rows`.
async fn rotation_scheduler(
    store: Arc<Store>,
    interval: std::time::Duration,
    audit_max_rows: i64,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        // The schedulers run on the primary only (§11): a failover's store
        // is the primary's, which does this work for the group.
        let s = store.clone();
        if let Ok(Ok(true)) = tokio::task::spawn_blocking(move || s.is_failover()).await {
            continue;
        }
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.rotate_due(time::OffsetDateTime::now_utc()))
            .await
        {
            Ok(Ok(rotated)) => {
                for r in rotated {
                    tracing::info!(domain = %r.domain, key = %r.name, version = r.version, "key rotated automatically");
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "rotation scheduler failed"),
            Err(e) => tracing::error!(error = %e, "rotation scheduler task died"),
        }
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.flush_refusals(false)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "writing the refusal summaries failed"),
            Err(e) => tracing::error!(error = %e, "refusal summaries task died"),
        }
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.archive_audit(audit_max_rows)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(rows = n, "archived old audit entries"),
            Ok(Err(e)) => tracing::error!(error = %e, "archiving the audit log failed"),
            Err(e) => tracing::error!(error = %e, "audit archive task died"),
        }
    }
}

/// The runtime of the web console, the REST API and the enrolment ports,
/// with its blocking pool (password checks, certificate signing): its
/// threads run at a lower CPU priority (nice 9) than the key ports', so a
/// flood of sign-ins or registrations takes only the CPU key release leaves
/// (issue 12: the key port must keep serving). Without a flood the
/// priority changes nothing: idle CPU goes to whoever asks.
fn bulk_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    static WARNED: std::sync::Once = std::sync::Once::new();
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("custos-bulk")
        .on_thread_start(|| {
            use thread_priority::{
                NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue,
                ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
            };
            let lowered = ThreadPriorityValue::try_from(BULK_PRIORITY)
                .map_err(|e| e.to_string())
                .and_then(|p| {
                    set_thread_priority_and_policy(
                        thread_native_id(),
                        ThreadPriority::Crossplatform(p),
                        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
                    )
                    .map_err(|e| format!("{e:?}"))
                });
            if let Err(e) = lowered {
                WARNED.call_once(
                    || tracing::warn!(error = %e, "could not lower the console threads' priority"),
                );
            }
        })
        .enable_all()
        .build()
        .context("starting the console runtime")
}

/// thread-priority's cross-platform scale (0..99) for the console threads:
/// 25 is nice 9 on Linux (CFS weight 137 against the key ports' 1024).
const BULK_PRIORITY: u8 = 25;

fn main() -> std::process::ExitCode {
    appliance::daemon::init_logging();
    let flags = Flags::parse();
    let result = Config::load(flags).and_then(|cfg| {
        let bulk = bulk_runtime()?;
        let stopped = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?
            .block_on(run(cfg, bulk.handle().clone()));
        bulk.shutdown_timeout(std::time::Duration::from_secs(5));
        stopped
    });
    match result {
        Ok(Stopped::Signal) => std::process::ExitCode::SUCCESS,
        Ok(Stopped::Restart) => std::process::ExitCode::from(EXIT_RESTART),
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("custos-keyd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
