//! The local socket (issue 12, item 10): the store operations
//! `custos-snmpd`, `custos-notifyd` and `custos-backupd` need, served to
//! them so that they never open the store or read the master key.
//!
//! A peer is identified by its uid (SO_PEERCRED) and says its role in the
//! first line. keyd's own uid may take any role (it could open the store
//! anyway: tests and `cargo xtask run`); any other uid must be the system
//! user of the role (`custos-snmp`, `custos-notify`, `custos-backup`),
//! looked up at start. Everything else, and a request of another role, is
//! refused, the connection closed, and the refusal aggregated in the audit
//! log (`Store::log_local_refusal`). The message types and the client are
//! `appliance::local`.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use appliance::Store;
use appliance::local::{
    CHUNK, CommunityCheck, ErrorKind, Hello, LicenceFacts, MAX_EVENT_TEXT, Reply, Request, Role,
    SnmpAgentView, WireAutomaticBackup, WireError, WireHostKeyCheck, WireNotice, WireSmtp,
    WireSshKey, encode_line,
};
use appliance::model::Severity;
use appliance::secret::SecretBytes;
use base64::Engine;
use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use zeroize::Zeroize;

/// The hello must come within this.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request for this long is closed (the client
/// reconnects on its next request).
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;

/// Which uid may take which role.
#[derive(Debug, Clone)]
pub struct Peers {
    own: u32,
    users: HashMap<Role, u32>,
}

impl Peers {
    /// keyd's uid and the system users of the roles that exist here.
    pub fn lookup() -> Peers {
        let own = nix::unistd::geteuid().as_raw();
        let mut users = HashMap::new();
        for role in Role::ALL {
            match nix::unistd::User::from_name(role.system_user()) {
                Ok(Some(u)) => {
                    users.insert(role, u.uid.as_raw());
                }
                Ok(None) => tracing::debug!(
                    user = role.system_user(),
                    "no such user: the {} role is open to keyd's own uid only",
                    role.as_str()
                ),
                Err(e) => {
                    tracing::warn!(user = role.system_user(), error = %e, "looking up a system user")
                }
            }
        }
        Peers { own, users }
    }

    fn allows(&self, uid: u32, role: Role) -> bool {
        uid == self.own || self.users.get(&role) == Some(&uid)
    }
}

/// Binds the socket (a stale one removed first), mode 0666: who may talk
/// is decided by the peer's uid, not by the file.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
}

struct Ctx {
    store: Arc<Store>,
    peers: Peers,
    /// Salt of the community digest the SNMP agent gets.
    salt: SecretBytes,
}

/// Serves until `stop` turns true, then removes the socket file.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    store: Arc<Store>,
    peers: Peers,
    mut stop: watch::Receiver<bool>,
) {
    let ctx = Arc::new(Ctx {
        store,
        peers,
        salt: appliance::crypto::random_secret(16),
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting on the local socket");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            _ = stop.changed() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("too many connections on the local socket; closing one");
            continue;
        };
        let (ctx, stop) = (ctx.clone(), stop.clone());
        conns.spawn(async move {
            connection(stream, ctx, stop).await;
            drop(slot);
        });
    }
    // Requests in progress finish; idle connections end with `stop`.
    while conns.join_next().await.is_some() {}
    let _ = std::fs::remove_file(&path);
}

async fn send(w: &mut (impl AsyncWriteExt + Unpin), reply: &Reply) -> std::io::Result<()> {
    let mut line = encode_line(reply);
    let r = w.write_all(&line).await;
    line.zeroize();
    r
}

/// Reads one line (at most `MAX_MESSAGE` bytes); `None` at EOF.
async fn read_line(
    r: &mut (impl AsyncBufReadExt + Unpin),
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<()>> {
    buf.zeroize();
    buf.clear();
    let n = r
        .take(appliance::local::MAX_MESSAGE as u64 + 1)
        .read_until(b'\n', buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a message longer than the limit, or cut",
        ));
    }
    buf.pop();
    Ok(Some(()))
}

async fn refuse(ctx: &Ctx, w: &mut (impl AsyncWriteExt + Unpin), uid: Option<u32>, what: String) {
    let source = uid.map_or_else(|| "unknown uid".to_owned(), |u| format!("uid {u}"));
    tracing::warn!(peer = %source, "local socket: {what}");
    let store = ctx.store.clone();
    let text = format!("refused on the local socket: {what}");
    let src = source.clone();
    match tokio::task::spawn_blocking(move || store.log_local_refusal(&src, &text)).await {
        Ok(Err(e)) => tracing::error!(error = %e, "writing the audit log"),
        Err(e) => tracing::error!(error = %e, "writing the audit log"),
        Ok(Ok(())) => {}
    }
    let _ = send(w, &Reply::Error(WireError::refused(what))).await;
}

async fn connection(stream: UnixStream, ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let uid = stream.peer_cred().ok().map(|c| c.uid());
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, read_line(&mut r, &mut buf)).await {
        Ok(Ok(Some(()))) => serde_json::from_slice::<Hello>(&buf).ok(),
        _ => return,
    };
    let Some(Hello { hello: role }) = hello else {
        refuse(
            &ctx,
            &mut w,
            uid,
            "the first message is not a hello naming a role".into(),
        )
        .await;
        return;
    };
    let Some(uid) = uid.filter(|u| ctx.peers.allows(*u, role)) else {
        let who = uid.map_or_else(|| "an unknown uid".to_owned(), |u| format!("uid {u}"));
        refuse(
            &ctx,
            &mut w,
            uid,
            format!(
                "{who} may not take the {} role (only keyd's own uid or the user {})",
                role.as_str(),
                role.system_user()
            ),
        )
        .await;
        return;
    };
    if send(&mut w, &Reply::Ok(serde_json::Value::Null))
        .await
        .is_err()
    {
        return;
    }
    tracing::debug!(uid, role = role.as_str(), "local socket: connected");
    loop {
        let got = tokio::select! {
            r = tokio::time::timeout(IDLE_TIMEOUT, read_line(&mut r, &mut buf)) => r,
            _ = stop.changed() => return,
        };
        match got {
            Ok(Ok(Some(()))) => {}
            _ => return,
        }
        let req = match serde_json::from_slice::<Request>(&buf) {
            Ok(req) => req,
            Err(e) => {
                refuse(
                    &ctx,
                    &mut w,
                    Some(uid),
                    format!("a malformed request from the {} role: {e}", role.as_str()),
                )
                .await;
                return;
            }
        };
        buf.zeroize();
        if req.role() != role {
            refuse(
                &ctx,
                &mut w,
                Some(uid),
                format!("the {} role may not ask for {}", role.as_str(), req.name()),
            )
            .await;
            return;
        }
        let ok = match req {
            Request::WriteBackup { host_name } => write_backup(&ctx, &mut w, host_name).await,
            req => {
                let c = ctx.clone();
                let reply = match tokio::task::spawn_blocking(move || handle(&c, role, req)).await {
                    Ok(Ok(v)) => Reply::Ok(v),
                    Ok(Err(e)) => Reply::Error(e),
                    Err(e) => {
                        tracing::error!(error = %e, "a local socket request failed");
                        Reply::Error(internal())
                    }
                };
                send(&mut w, &reply).await.is_ok()
            }
        };
        if !ok {
            return;
        }
    }
}

fn internal() -> WireError {
    WireError {
        kind: ErrorKind::Internal,
        field: "custos-keyd".into(),
        message: "the key service failed; see its log".into(),
    }
}

fn store_err(op: &str) -> impl Fn(appliance::Error) -> WireError + '_ {
    move |e| {
        let w = WireError::from(&e);
        if w.kind == ErrorKind::Internal {
            tracing::error!(op, error = %e, "a local socket request failed");
        }
        w
    }
}

fn time_of(field: &str, secs: i64) -> Result<OffsetDateTime, WireError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|_| WireError {
        kind: ErrorKind::Invalid,
        field: field.to_owned(),
        message: "must be a time in Unix seconds".into(),
    })
}

fn json<T: serde::Serialize>(v: T) -> Result<serde_json::Value, WireError> {
    serde_json::to_value(v).map_err(|e| {
        tracing::error!(error = %e, "encoding a local socket answer");
        internal()
    })
}

/// One request of `role` (already checked), on a blocking thread.
fn handle(ctx: &Ctx, role: Role, req: Request) -> Result<serde_json::Value, WireError> {
    let s = &ctx.store;
    let op = req.name();
    let err = store_err(&op);
    match req {
        Request::SnmpConfig => {
            let c = s.snmp_agent_config_unchecked().map_err(&err)?;
            json(SnmpAgentView {
                enabled: c.enabled,
                community_is_default: c.community.ct_eq(appliance::store::COMMUNITY_DEFAULT),
                community: CommunityCheck::new(ctx.salt.expose(), &c.community),
                acl: c.acl.iter().map(ToString::to_string).collect(),
                sys_contact: c.sys_contact,
                sys_location: c.sys_location,
                ca_fingerprint: c.ca_fingerprint,
                ha: s.ha_role().map_err(&err)?,
            })
        }
        Request::Licence => {
            let l = s.licence_unchecked().map_err(&err)?;
            json(l.as_ref().map(LicenceFacts::from))
        }
        Request::SnmpRefusal { source, refusal } => {
            let what = refusal.text(source);
            s.log_event(
                role.daemon(),
                &source.to_string(),
                "snmp",
                Severity::Warn,
                &what,
            )
            .map_err(&err)?;
            json(())
        }
        Request::NotifyQueueLog { now, limit } => json(
            s.notify_queue_log(time_of("now", now)?, limit)
                .map_err(&err)?,
        ),
        Request::NotifyQueueExpiries { now } => json(
            s.notify_queue_expiries(time_of("now", now)?)
                .map_err(&err)?,
        ),
        Request::NotifyDue { now, limit } => {
            let due = s.notify_due(time_of("now", now)?, limit).map_err(&err)?;
            json(due.iter().map(WireNotice::from).collect::<Vec<_>>())
        }
        Request::NotifySent { id, now } => {
            json(s.notify_sent(id, time_of("now", now)?).map_err(&err)?)
        }
        Request::NotifyRetry {
            id,
            error,
            retry_at,
        } => json(
            s.notify_retry(id, &error, time_of("retry_at", retry_at)?)
                .map_err(&err)?,
        ),
        Request::NotifyAbandon { id, error, now } => json(
            s.notify_abandon(id, &error, time_of("now", now)?)
                .map_err(&err)?,
        ),
        Request::NotifyLog { severity, what } => {
            // The notifier's own entries: delivery trouble and its end.
            if severity == Severity::Fatal {
                return Err(WireError {
                    kind: ErrorKind::Invalid,
                    field: "severity".into(),
                    message: "the notifier writes INFO, WARN or ERROR entries".into(),
                });
            }
            if what.is_empty() || what.chars().count() > MAX_EVENT_TEXT {
                return Err(WireError {
                    kind: ErrorKind::Invalid,
                    field: "what".into(),
                    message: format!("must be 1 to {MAX_EVENT_TEXT} characters"),
                });
            }
            json(s.notify_log(severity, &what).map_err(&err)?)
        }
        Request::SmtpConfig => {
            let c = s.smtp_config_unchecked().map_err(&err)?;
            json(c.as_ref().map(WireSmtp::from))
        }
        Request::AutomaticBackup => {
            let a = s.automatic_backup_unchecked().map_err(&err)?;
            json(WireAutomaticBackup::from(&a))
        }
        Request::TakeBackupNowRequest => json(s.take_backup_now_request_unchecked().map_err(&err)?),
        Request::BackupSshKey { host_name } => {
            appliance::model::check_host_name("host_name", &host_name).map_err(&err)?;
            let k = s.backup_ssh_key_unchecked(&host_name).map_err(&err)?;
            json(WireSshKey {
                public_key: k.public_key.clone(),
                private_key_pem: k.private_key_pem.expose().to_owned(),
            })
        }
        Request::CheckBackupHostKey { target, presented } => {
            let t = target.to_target().map_err(&err)?;
            let c = s
                .check_backup_host_key_unchecked(&t, &presented)
                .map_err(&err)?;
            json(WireHostKeyCheck::from(c))
        }
        Request::RecordBackupRun { run } => {
            let run = run.to_run().map_err(&err)?;
            json(s.record_backup_run_unchecked(&run).map_err(&err)?)
        }
        Request::HostName => {
            let os = s.os_settings().map_err(&err)?;
            json(os.host_name.map(|h| h.to_string()))
        }
        Request::WriteBackup { .. } => Err(internal()),
    }
}

/// Buffers the backup into chunks handed to the connection's task.
struct ChunkWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn ship(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(chunk).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the pusher closed the connection",
            )
        })
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.ship()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.ship()
    }
}

/// Streams the encrypted backup: chunks, then the trailer. `false` when
/// the connection is unusable afterwards.
async fn write_backup(
    ctx: &Arc<Ctx>,
    w: &mut (impl AsyncWriteExt + Unpin),
    host_name: String,
) -> bool {
    if let Err(e) = appliance::model::check_host_name("host_name", &host_name) {
        return send(w, &Reply::Error(WireError::from(&e))).await.is_ok();
    }
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    let store = ctx.store.clone();
    let job = tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let r = store.write_backup_unchecked(&host_name, &mut out);
        r.and_then(|info| {
            std::io::Write::flush(&mut out)
                .map_err(|e| appliance::Error::Io {
                    path: PathBuf::from("local socket"),
                    source: e,
                })
                .map(|()| info)
        })
    });
    let mut broken = false;
    while let Some(chunk) = rx.recv().await {
        if broken {
            continue;
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(&chunk);
        if send(w, &Reply::Chunk(b64)).await.is_err() {
            // Stop the writer: it fails at its next chunk.
            broken = true;
            rx.close();
        }
    }
    let result = job.await;
    if broken {
        return false;
    }
    let reply = match result {
        Ok(Ok(info)) => match json(info) {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Error(e),
        },
        Ok(Err(e)) => Reply::Error(store_err("write_backup")(e)),
        Err(e) => {
            tracing::error!(error = %e, "writing the backup failed");
            Reply::Error(internal())
        }
    };
    send(w, &reply).await.is_ok()
}
