//! `custos-snmpd`, the SNMP agent of §13: v1 and v2c GET, GETNEXT and
//! GETBULK on UDP and TCP, on port 161 and 7025, read-only, no traps.
//!
//! It reads its settings from custos-keyd over its local socket every few
//! seconds (it never opens the store nor reads the master key; it gets a
//! salted digest of the community string, not the string): disabled, its ports are closed; enabled,
//! it answers requests from the access list (any address when the list is
//! empty) that carry the community string. Every other request gets no
//! answer; it is counted (snmpInBadCommunityNames, snmpInBadCommunityUses)
//! and logged, at most once a minute per source address.
//!
//! So that it cannot be used to amplify a spoofed flood, a UDP answer fits
//! in one datagram ([`wire::MAX_UDP_ANSWER`]) and each source address gets
//! at most [`RATE_PER_SEC`] answers a second over UDP (a token bucket of
//! [`BURST`]); the requests beyond are dropped, counted and logged like the
//! refusals. It never answers to the default community `public`: the store
//! refuses to enable it so, and a store enabled so before is not served.

mod config;
mod facts;

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use appliance::local::{
    Client, Role, SNMP_OTHER_SOURCES, SNMP_RATE_PER_SEC, SnmpAgentView, SnmpReason, SnmpRefusal,
};
use appliance::store::{AclEntry, ENTERPRISE_OID};
use clap::Parser;
use custos_snmpd::agent::{self, Values};
use custos_snmpd::mib::{Mib, Object, parse_oid};
use custos_snmpd::wire::{self, MAX_MESSAGE, MAX_UDP_ANSWER, Refusal, Reply, TOO_BIG, Value};
use rasn::types::ObjectIdentifier;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{Config, Flags};

/// A TCP connection without a complete message for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(30);
/// Concurrent TCP connections per port.
const TCP_CONNECTIONS: usize = 64;
/// Refusals are logged at most this often per source address.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Source addresses whose refusals are tracked one by one; beyond, they
/// are counted together.
const TRACKED_SOURCES: usize = 1024;
/// Answers a second one source address gets over UDP, on average…
const RATE_PER_SEC: f64 = SNMP_RATE_PER_SEC as f64;
/// …and at most in a burst.
const BURST: f64 = 100.0;
/// Source addresses with a token bucket of their own; beyond, new ones
/// share one bucket until idle ones are forgotten.
const RATE_SOURCES: usize = 4096;

/// The SNMP group's counters (RFC 3418), wrapping like Counter32.
#[derive(Debug, Default)]
struct Counters {
    in_pkts: AtomicU32,
    bad_versions: AtomicU32,
    bad_community_names: AtomicU32,
    bad_community_uses: AtomicU32,
    asn_parse_errs: AtomicU32,
    silent_drops: AtomicU32,
}

fn bump(c: &AtomicU32) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What keyd says, read every poll.
struct Snapshot {
    config: SnmpAgentView,
    /// The access list, parsed.
    acl: Vec<AclEntry>,
    /// Enabled in the store with the community still `public`: the agent
    /// stays closed.
    refused_public: bool,
    licences: String,
    ha_nodes: String,
    host_name: String,
}

use SnmpReason as Reason;

#[derive(Debug)]
struct Pending {
    last_logged: Instant,
    community: u64,
    acl: u64,
    rate: u64,
}

/// The way a request came: it decides the answer's size limit and whether
/// the rate limit applies (TCP cannot be spoofed, and has its own cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn limit(self) -> usize {
        match self {
            Transport::Udp => MAX_UDP_ANSWER,
            Transport::Tcp => MAX_MESSAGE,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * RATE_PER_SEC;
        self.tokens = (self.tokens + earned).min(BURST);
        self.at = now;
    }
}

/// A token bucket per source address, in a bounded table.
#[derive(Default)]
struct RateLimit {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimit {
    /// Whether `source` may have one more answer now (takes a token).
    fn allow(&self, source: IpAddr, now: Instant) -> bool {
        let mut map = self.buckets.lock().expect("rate limit mutex poisoned");
        if map.len() >= RATE_SOURCES && !map.contains_key(&source) {
            Self::forget_idle(&mut map, now);
        }
        let key = if map.len() >= RATE_SOURCES && !map.contains_key(&source) {
            OTHER_SOURCES
        } else {
            source
        };
        let b = map.entry(key).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        b.refill(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets the sources whose bucket is full again (quiet for a while).
    fn forget_idle(map: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        map.retain(|_, b| {
            b.refill(now);
            b.tokens < BURST
        });
    }

    fn tidy(&self) {
        let mut map = self.buckets.lock().expect("rate limit mutex poisoned");
        Self::forget_idle(&mut map, Instant::now());
    }
}

/// Rate-limited logging of refused requests: the first refusal from an
/// address is logged at once, the next ones a minute later as a count.
struct Refusals {
    pending: Mutex<HashMap<IpAddr, Pending>>,
    log: mpsc::Sender<(IpAddr, SnmpRefusal)>,
}

/// The key under which sources beyond [`TRACKED_SOURCES`] are counted.
const OTHER_SOURCES: IpAddr = SNMP_OTHER_SOURCES;

impl Refusals {
    fn note(&self, source: IpAddr, reason: Reason) {
        let mut map = self.pending.lock().expect("refusals mutex poisoned");
        let key = if map.len() >= TRACKED_SOURCES && !map.contains_key(&source) {
            OTHER_SOURCES
        } else {
            source
        };
        let now = Instant::now();
        match map.get_mut(&key) {
            Some(p) if now.duration_since(p.last_logged) < LOG_EVERY => match reason {
                Reason::Community => p.community += 1,
                Reason::Acl => p.acl += 1,
                Reason::Rate => p.rate += 1,
            },
            _ => {
                self.send(key, SnmpRefusal::First(reason));
                map.insert(
                    key,
                    Pending {
                        last_logged: now,
                        community: 0,
                        acl: 0,
                        rate: 0,
                    },
                );
            }
        }
    }

    /// Logs the counts of addresses whose minute is over, and forgets the
    /// quiet ones. `all`: every count now (at shutdown).
    fn flush(&self, all: bool) {
        let mut map = self.pending.lock().expect("refusals mutex poisoned");
        let now = Instant::now();
        let mut out = vec![];
        map.retain(|ip, p| {
            let due = all || now.duration_since(p.last_logged) >= LOG_EVERY;
            let total = p.community + p.acl + p.rate;
            if due && total > 0 {
                out.push((
                    *ip,
                    SnmpRefusal::Since {
                        community: p.community,
                        acl: p.acl,
                        rate: p.rate,
                    },
                ));
                p.community = 0;
                p.acl = 0;
                p.rate = 0;
                p.last_logged = now;
                return true;
            }
            !due
        });
        drop(map);
        for (ip, what) in out {
            self.send(ip, what);
        }
    }

    fn send(&self, ip: IpAddr, what: SnmpRefusal) {
        // A full queue (a flood) drops the line; the counters still count.
        let _ = self.log.try_send((ip, what));
    }
}

struct Shared {
    mib: Mib,
    snapshot: RwLock<Arc<Snapshot>>,
    counters: Counters,
    refusals: Refusals,
    rate: RateLimit,
    started: Instant,
    sys_descr: String,
    enterprise: ObjectIdentifier,
}

impl Shared {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .expect("snapshot lock poisoned")
            .clone()
    }
}

/// The values of one request's moment.
struct Live<'a> {
    shared: &'a Shared,
    snap: &'a Snapshot,
}

fn text(s: impl Into<String>) -> Value {
    Value::String(s.into().into_bytes())
}

impl Values for Live<'_> {
    fn value(&self, object: Object) -> Value {
        let c = &self.shared.counters;
        let counter = |a: &AtomicU32| Value::Counter32(a.load(Ordering::Relaxed));
        let cfg = &self.snap.config;
        match object {
            Object::SysDescr => text(self.shared.sys_descr.as_str()),
            Object::SysObjectId => Value::ObjectId(self.shared.enterprise.clone()),
            Object::SysUpTime => {
                Value::TimeTicks((self.shared.started.elapsed().as_millis() / 10) as u32)
            }
            Object::SysContact => text(cfg.sys_contact.as_str()),
            Object::SysName => text(self.snap.host_name.as_str()),
            Object::SysLocation => text(cfg.sys_location.as_str()),
            // Application (64) and end-to-end (8) services.
            Object::SysServices => Value::Integer(72),
            Object::InPkts => counter(&c.in_pkts),
            Object::InBadVersions => counter(&c.bad_versions),
            Object::InBadCommunityNames => counter(&c.bad_community_names),
            Object::InBadCommunityUses => counter(&c.bad_community_uses),
            Object::InAsnParseErrs => counter(&c.asn_parse_errs),
            // disabled(2): no traps (§13).
            Object::EnableAuthenTraps => Value::Integer(2),
            Object::SilentDrops => counter(&c.silent_drops),
            Object::ProxyDrops => Value::Counter32(0),
            Object::Version => text(appliance::VERSION),
            Object::CaFingerprint => text(cfg.ca_fingerprint.clone().unwrap_or_default()),
            Object::ServerTime => text(facts::server_time()),
            Object::Licences => text(self.snap.licences.as_str()),
            Object::HaNodes => text(self.snap.ha_nodes.as_str()),
            Object::DiskUsage => text(facts::disk_usage()),
            Object::SystemStats => text(facts::system_stats()),
        }
    }
}

fn acl_allows(acl: &[AclEntry], source: IpAddr) -> bool {
    if acl.is_empty() {
        return true;
    }
    let v4 = match source {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    v4.is_some_and(|ip| acl.iter().any(|e| e.allows(ip)))
}

/// One message in, at most one message out.
fn process(shared: &Shared, source: IpAddr, bytes: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let c = &shared.counters;
    bump(&c.in_pkts);
    let snap = shared.snapshot();
    if !snap.config.enabled {
        return None;
    }
    if !acl_allows(&snap.acl, source) {
        bump(&c.bad_community_uses);
        shared.refusals.note(source, Reason::Acl);
        return None;
    }
    let req = match wire::decode(bytes) {
        Ok(r) => r,
        Err(Refusal::Malformed) => {
            bump(&c.asn_parse_errs);
            return None;
        }
        Err(Refusal::BadVersion) => {
            bump(&c.bad_versions);
            return None;
        }
        Err(Refusal::NotARequest) => return None,
    };
    if !snap.config.community.matches(&req.community) {
        bump(&c.bad_community_names);
        shared.refusals.note(source, Reason::Community);
        return None;
    }
    if transport == Transport::Udp && !shared.rate.allow(source, Instant::now()) {
        shared.refusals.note(source, Reason::Rate);
        return None;
    }
    let limit = transport.limit();
    let reply = agent::answer(
        &shared.mib,
        &req,
        &Live {
            shared,
            snap: &snap,
        },
        limit,
    );
    // Too large after all (v1's tooBig echoes the request): tooBig without
    // bindings, or nothing.
    let encoded = wire::encode(&req, &reply, limit)
        .or_else(|| wire::encode(&req, &agent::too_big(&req), limit))
        .or_else(|| {
            let too_big = Reply {
                error_status: TOO_BIG,
                error_index: 0,
                bindings: vec![],
            };
            wire::encode(&req, &too_big, limit)
        });
    if encoded.is_none() {
        bump(&c.silent_drops);
    }
    encoded
}

async fn serve_udp(socket: UdpSocket, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // One byte more than the largest message: a datagram that fills it is
    // too large and is not decoded.
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    loop {
        let (n, peer) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "udp receive");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        if n > MAX_MESSAGE {
            bump(&shared.counters.in_pkts);
            bump(&shared.counters.asn_parse_errs);
            continue;
        }
        if let Some(out) = process(&shared, peer.ip(), &buf[..n], Transport::Udp)
            && let Err(e) = socket.send_to(&out, peer).await
        {
            tracing::debug!(error = %e, %peer, "udp send");
        }
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(TCP_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "tcp accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            _ = stop.changed() => break,
        };
        let snap = shared.snapshot();
        if !acl_allows(&snap.acl, peer.ip()) {
            bump(&shared.counters.bad_community_uses);
            shared.refusals.note(peer.ip(), Reason::Acl);
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many SNMP TCP connections; closing");
            continue;
        };
        conns.spawn(serve_conn(stream, peer, shared.clone(), stop.clone(), slot));
    }
    conns.shutdown().await;
}

/// SNMP over TCP (RFC 3430): BER messages back to back on the stream.
async fn serve_conn(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    // A message must arrive whole within TCP_IDLE of its first byte, and
    // an answer be taken within TCP_IDLE: a slow peer does not keep a slot.
    let mut partial_since: Option<tokio::time::Instant> = None;
    loop {
        match wire::message_len(&buf) {
            Err(_) => {
                bump(&shared.counters.in_pkts);
                bump(&shared.counters.asn_parse_errs);
                return;
            }
            Ok(Some(len)) if buf.len() >= len => {
                let message: Vec<u8> = buf.drain(..len).collect();
                partial_since = (!buf.is_empty()).then(tokio::time::Instant::now);
                if let Some(out) = process(&shared, peer.ip(), &message, Transport::Tcp) {
                    match tokio::time::timeout(TCP_IDLE, stream.write_all(&out)).await {
                        Ok(Ok(())) => {}
                        _ => return,
                    }
                }
                continue;
            }
            Ok(_) => {}
        }
        let deadline = partial_since.unwrap_or_else(tokio::time::Instant::now) + TCP_IDLE;
        let n = tokio::select! {
            r = tokio::time::timeout_at(deadline, stream.read(&mut chunk)) => match r {
                Ok(Ok(n)) if n > 0 => n,
                _ => return,
            },
            _ = stop.changed() => return,
        };
        if buf.is_empty() {
            partial_since = Some(tokio::time::Instant::now());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The four listeners while the agent is enabled.
struct Bound {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Bound {
    async fn close(mut self) {
        self.stop.send(true).ok();
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn bind_all(cfg: &Config, shared: &Arc<Shared>) -> anyhow::Result<Bound> {
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for port in [cfg.port, cfg.alt_port] {
        let addr = SocketAddr::new(cfg.listen, port);
        let udp = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding udp {addr}"))?;
        let tcp = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding tcp {addr}"))?;
        tasks.spawn(serve_udp(udp, shared.clone(), stop_rx.clone()));
        tasks.spawn(serve_tcp(tcp, shared.clone(), stop_rx.clone()));
    }
    Ok(Bound { stop, tasks })
}

fn load_snapshot(keyd: &Client, host_name: Option<&str>) -> anyhow::Result<Snapshot> {
    let mut config = keyd.snmp_agent_config()?;
    // The store refuses to enable the agent with `public`; a store enabled
    // so by an older version is not served either.
    let refused_public = config.enabled && config.community_is_default;
    config.enabled &= !refused_public;
    let acl = config.acl_entries()?;
    let licence = keyd.licence()?;
    let host_name = host_name
        .map(str::to_owned)
        .unwrap_or_else(facts::kernel_host_name);
    Ok(Snapshot {
        refused_public,
        acl,
        licences: facts::licences(licence.as_ref()),
        ha_nodes: facts::ha_nodes(&config.ha, &host_name),
        host_name,
        config,
    })
}

/// Before keyd first answers: closed, as if disabled.
fn closed_snapshot(host_name: Option<&str>) -> Snapshot {
    let host_name = host_name
        .map(str::to_owned)
        .unwrap_or_else(facts::kernel_host_name);
    Snapshot {
        config: SnmpAgentView {
            enabled: false,
            community_is_default: true,
            community: appliance::local::CommunityCheck {
                salt: String::new(),
                digest: String::new(),
            },
            acl: vec![],
            sys_contact: String::new(),
            sys_location: String::new(),
            ca_fingerprint: None,
            ha: appliance::store::HaRole::Standalone,
        },
        refused_public: false,
        acl: vec![],
        licences: facts::licences(None),
        ha_nodes: facts::ha_nodes(&appliance::store::HaRole::Standalone, &host_name),
        host_name,
    }
}

/// Whether a failure is keyd being down (the client logged it once).
fn keyd_down(e: &anyhow::Error) -> bool {
    e.downcast_ref::<appliance::local::Error>()
        .is_some_and(|e| e.is_unavailable())
}

fn warn_public() {
    tracing::warn!(
        "SNMP is enabled in the store with the default community string; the agent stays closed until the community is changed (System → SNMP)"
    );
}

/// Whether an operator's change is worth a log line (never its values).
fn settings_changed(a: &SnmpAgentView, b: &SnmpAgentView) -> bool {
    a.enabled != b.enabled
        || a.acl != b.acl
        || a.sys_contact != b.sys_contact
        || a.sys_location != b.sys_location
        || a.community != b.community
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let store = Arc::new(Client::new(&cfg.keyd_socket, Role::Snmp));
    let host = cfg.host_name.clone();
    let s = store.clone();
    // keyd may start after the agent: closed until it answers.
    let first = match tokio::task::spawn_blocking(move || load_snapshot(&s, host.as_deref()))
        .await?
    {
        Ok(snap) => snap,
        Err(e) => {
            if !keyd_down(&e) {
                tracing::error!("reading the SNMP settings: {e:#}; closed until they can be read");
            }
            closed_snapshot(cfg.host_name.as_deref())
        }
    };

    let (log_tx, mut log_rx) = mpsc::channel::<(IpAddr, SnmpRefusal)>(256);
    let shared = Arc::new(Shared {
        mib: Mib::new(),
        snapshot: RwLock::new(Arc::new(first)),
        counters: Counters::default(),
        refusals: Refusals {
            pending: Mutex::new(HashMap::new()),
            log: log_tx,
        },
        rate: RateLimit::default(),
        started: Instant::now(),
        sys_descr: facts::sys_descr(),
        enterprise: ObjectIdentifier::new(parse_oid(ENTERPRISE_OID).context("the enterprise OID")?)
            .context("the enterprise OID")?,
    });
    let log_store = store.clone();
    let logger = tokio::spawn(async move {
        while let Some((ip, refusal)) = log_rx.recv().await {
            tracing::warn!(source = %ip, "{}", refusal.text(ip));
            let s = log_store.clone();
            let written = tokio::task::spawn_blocking(move || s.snmp_refusal(ip, refusal)).await;
            if let Ok(Err(e)) = written
                && !e.is_unavailable()
            {
                tracing::error!(error = %e, "writing the audit log");
            }
        }
    });

    if cfg.local && cfg.port != 161 {
        tracing::info!(
            "local run: the privileged SNMP port 161 is remapped to {}",
            cfg.port
        );
    }
    let mut bound = None;
    if shared.snapshot().refused_public {
        warn_public();
    }
    let enabled = shared.snapshot().config.enabled;
    if enabled {
        bound = Some(bind_all(&cfg, &shared).await?);
    }
    let host = cfg.url_host();
    let mut out = std::io::stdout().lock();
    for (name, port) in [("snmp", cfg.port), ("snmp-alt", cfg.alt_port)] {
        writeln!(out, "ready {name} udp://{host}:{port}")?;
        writeln!(out, "ready {name} tcp://{host}:{port}")?;
    }
    if enabled {
        writeln!(out, "snmp: enabled")?;
    } else {
        writeln!(
            out,
            "snmp: disabled; the ports open when it is enabled (System → SNMP, PUT /api/v1/snmp)"
        )?;
    }
    out.flush()?;
    drop(out);
    appliance::daemon::notify_ready();
    tracing::info!(
        enabled,
        port = cfg.port,
        alt_port = cfg.alt_port,
        "SNMP agent started"
    );

    let mut tick = tokio::time::interval(cfg.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = appliance::daemon::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut shutdown => break,
        }
        let s = store.clone();
        let host = cfg.host_name.clone();
        match tokio::task::spawn_blocking(move || load_snapshot(&s, host.as_deref())).await {
            Ok(Ok(snap)) => {
                let before = shared.snapshot();
                if snap.refused_public && !before.refused_public {
                    warn_public();
                }
                if settings_changed(&before.config, &snap.config) {
                    tracing::info!(
                        enabled = snap.config.enabled,
                        acl_entries = snap.config.acl.len(),
                        "SNMP settings changed"
                    );
                }
                *shared.snapshot.write().expect("snapshot lock poisoned") = Arc::new(snap);
            }
            Ok(Err(e)) if keyd_down(&e) => {}
            Ok(Err(e)) => {
                tracing::error!("reading the SNMP settings: {e:#}; keeping the last ones")
            }
            Err(e) => tracing::error!(error = %e, "reading the SNMP settings"),
        }
        let want = shared.snapshot().config.enabled;
        match (want, bound.is_some()) {
            (true, false) => match bind_all(&cfg, &shared).await {
                Ok(b) => {
                    tracing::info!(
                        port = cfg.port,
                        alt_port = cfg.alt_port,
                        "SNMP agent enabled: listening"
                    );
                    bound = Some(b);
                }
                Err(e) => tracing::error!("{e:#}; retrying at the next poll"),
            },
            (false, true) => {
                if let Some(b) = bound.take() {
                    b.close().await;
                }
                tracing::info!("SNMP agent disabled: its ports are closed");
            }
            _ => {}
        }
        shared.refusals.flush(false);
        shared.rate.tidy();
    }

    tracing::info!("stopping");
    appliance::daemon::notify_stopping();
    if let Some(b) = bound.take() {
        b.close().await;
    }
    shared.refusals.flush(true);
    // The logger ends when the last sender is gone.
    drop(shared);
    let _ = tokio::time::timeout(Duration::from_secs(5), logger).await;
    tracing::info!("stopped");
    Ok(())
}

fn main() -> std::process::ExitCode {
    appliance::daemon::init_logging();
    let flags = Flags::parse();
    let result = Config::load(flags).and_then(|cfg| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?
            .block_on(run(cfg))
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("custos-snmpd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// The console's MIB tab (appliance::store::SNMP_OBJECTS) lists exactly
    /// the objects the agent serves, with the same OIDs.
    #[test]
    fn the_console_lists_what_the_agent_serves() {
        let served: Vec<(&str, &str)> = Object::ALL.iter().map(|o| o.oid_and_name()).collect();
        let listed: Vec<(&str, &str)> = appliance::store::SNMP_OBJECTS
            .iter()
            .map(|o| (o.oid, o.name))
            .collect();
        assert_eq!(served, listed);
    }

    #[test]
    fn the_access_list_matches_ipv4_and_mapped_addresses() {
        let acl = vec![AclEntry::parse("127.0.0.*").expect("entry")];
        assert!(acl_allows(&[], "10.0.0.1".parse().expect("ip")));
        assert!(acl_allows(&acl, "127.0.0.9".parse().expect("ip")));
        assert!(acl_allows(&acl, "::ffff:127.0.0.9".parse().expect("ip")));
        assert!(!acl_allows(&acl, "127.0.1.9".parse().expect("ip")));
        assert!(!acl_allows(&acl, "::1".parse().expect("ip")));
    }

    #[test]
    fn refusals_are_logged_once_then_counted() {
        let (tx, mut rx) = mpsc::channel(16);
        let r = Refusals {
            pending: Mutex::new(HashMap::new()),
            log: tx,
        };
        let ip: IpAddr = "10.0.0.5".parse().expect("ip");
        for _ in 0..5 {
            r.note(ip, Reason::Community);
        }
        r.note(ip, Reason::Acl);
        let (ip0, first) = rx.try_recv().expect("first refusal logged");
        let first = first.text(ip0);
        assert!(first.contains("wrong community string"), "{first}");
        assert!(rx.try_recv().is_err(), "the next ones wait for the minute");
        r.flush(false);
        assert!(rx.try_recv().is_err());
        r.flush(true);
        let (ip1, later) = rx.try_recv().expect("counts logged");
        let later = later.text(ip1);
        assert!(
            later.contains("refused 5 more")
                && later.contains("4 with a wrong community string")
                && later.contains("1 from outside the access control list"),
            "{later}"
        );
        // Beyond the tracked sources, refusals are counted together.
        for i in 0..(TRACKED_SOURCES as u32 + 10) {
            r.note(IpAddr::V4(Ipv4Addr::from(i)), Reason::Acl);
        }
        assert!(r.pending.lock().expect("lock").len() <= TRACKED_SOURCES + 1);
    }

    #[test]
    fn the_rate_limit_is_per_source_and_bounded() {
        let r = RateLimit::default();
        let now = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let allowed = (0..1000).filter(|_| r.allow(a, now)).count();
        assert_eq!(allowed, BURST as usize);
        assert!(r.allow(b, now), "another source is still answered");
        // Tokens come back with time, at the rate.
        let later = now + Duration::from_millis(100);
        let refilled = (0..1000).filter(|_| r.allow(a, later)).count();
        assert_eq!(refilled, (RATE_PER_SEC / 10.0) as usize);
        // Many sources: the table stays bounded.
        for i in 0..(RATE_SOURCES as u32 * 2) {
            r.allow(IpAddr::V4(Ipv4Addr::from(i)), later);
        }
        assert!(r.buckets.lock().expect("lock").len() <= RATE_SOURCES + 1);
    }
}
