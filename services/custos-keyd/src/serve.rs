//! The accept loop shared by every HTTPS listener: TLS handshake, the peer's
//! address and client certificate put on each request, HTTP/1.1 keep-alive,
//! and a graceful stop.
//!
//! Every listener has its own connection budget (`Limits`): a cap on open
//! connections for the listener and a smaller one per client address, so
//! sockets opened against the console cannot take the key ports' share.
//! Slow clients are cut: a TLS handshake, a request header (also the wait
//! for the next request on a kept-alive connection) and a request body each
//! have a deadline. Accept errors (out of descriptors) back off.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// SHA-256 fingerprint of the verified client certificate (mutual TLS).
    pub cert_fingerprint: Option<String>,
}

/// The connection budget and deadlines of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections on this listener; more are closed at once.
    pub max_connections: usize,
    /// Open connections from one client address on this listener.
    pub max_per_address: usize,
    /// From accept to the end of the TLS handshake.
    pub handshake: Duration,
    /// From waiting for a request (the first, or the next one on a kept-alive
    /// connection) to having its whole header: also the idle keep-alive
    /// timeout, since hyper starts this timer as soon as it waits.
    pub header: Duration,
    /// From the header to the end of the request body, plus what the bytes
    /// received earn at [`MIN_BODY_RATE`].
    pub body: Duration,
}

const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause after repeated accept errors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Open connections per client address of one listener.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One connection counted against its address; uncounted when dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// The slowest upload kept open: past the body timeout, a request body must
/// have come at this rate on average (a backup of 100 MiB may take 100 min).
pub const MIN_BODY_RATE: u64 = 16 * 1024;

/// A request body that fails once its deadline has passed, so a client
/// trickling a body cannot hold a connection (and a handler) open. The
/// deadline is the body timeout plus the time the bytes received so far
/// earn at [`MIN_BODY_RATE`], so large uploads at a sane speed go through.
struct TimedBody {
    inner: Incoming,
    started: tokio::time::Instant,
    allowed: Duration,
    received: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl TimedBody {
    fn new(inner: Incoming, allowed: Duration) -> Self {
        let started = tokio::time::Instant::now();
        TimedBody {
            inner,
            started,
            allowed,
            received: 0,
            deadline: Box::pin(tokio::time::sleep_until(started + allowed)),
        }
    }
}

#[derive(Debug)]
struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body was not received in time")
    }
}

impl std::error::Error for BodyTimeout {}

impl Body for TimedBody {
    type Data = hyper::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(r) = Pin::new(&mut self.inner).poll_frame(cx) {
            if let Some(Ok(frame)) = &r
                && let Some(data) = frame.data_ref()
            {
                self.received += data.len() as u64;
                let earned = Duration::from_secs_f64(self.received as f64 / MIN_BODY_RATE as f64);
                let until = self.started + self.allowed + earned;
                self.deadline.as_mut().reset(until);
            }
            return Poll::Ready(r.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` until `stop` turns true, then lets open
/// requests finish (up to ten seconds).
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let budget = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let mut backoff = Duration::from_millis(10);
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS: wait for descriptors to free
                    // up instead of spinning on the error.
                    tracing::warn!(listener = name, error = %e, pause_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => break,
                    }
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        backoff = Duration::from_millis(10);
        // Over budget: close at once (the client sees the connection reset
        // or closed), which keeps the accept queue moving.
        let Ok(permit) = budget.clone().try_acquire_owned() else {
            tracing::debug!(listener = name, peer = %addr, "connection refused: listener at its cap");
            drop(tcp);
            continue;
        };
        let Some(slot) = per_address.take(addr.ip(), limits.max_per_address) else {
            tracing::debug!(listener = name, peer = %addr, "connection refused: address at its cap");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(connection(
            name, tcp, addr, acceptor, app, limits, watcher, permit, slot,
        ));
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "connections still open after the drain timeout; closing them"
        );
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    name: &'static str,
    tcp: tokio::net::TcpStream,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    limits: Limits,
    watcher: hyper_util::server::graceful::Watcher,
    _permit: OwnedSemaphorePermit,
    _slot: AddressSlot,
) {
    let tls = match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(listener = name, peer = %addr, error = %e, "TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::info!(listener = name, peer = %addr, "TLS handshake timed out");
            return;
        }
    };
    let cert_fingerprint = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| appliance::crypto::fingerprint(c));
    let peer = Peer {
        addr,
        cert_fingerprint,
    };
    let body_timeout = limits.body;
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(peer.clone());
        let req = req.map(|inner| axum::body::Body::new(TimedBody::new(inner, body_timeout)));
        app.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header)
        .serve_connection(TokioIo::new(tls), svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(listener = name, peer = %addr, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_slots_are_counted_and_returned() {
        let t = Arc::new(PerAddress::default());
        let ip: IpAddr = [127, 0, 0, 1].into();
        let a = t.take(ip, 2).expect("first");
        let b = t.take(ip, 2).expect("second");
        assert!(t.take(ip, 2).is_none(), "third over the cap");
        assert!(
            t.take([127, 0, 0, 2].into(), 2).is_some(),
            "another address"
        );
        drop(a);
        let _c = t.take(ip, 2).expect("a slot freed");
        drop(b);
        drop(_c);
        assert!(t.0.lock().expect("lock").is_empty(), "no entry left behind");
    }
}
