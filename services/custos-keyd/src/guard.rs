//! Bounds on password checking (§6 sign-in under abuse).
//!
//! Each argon2id check takes 19 MiB and a core for a while; run unbounded on
//! the blocking pool, a few hundred parallel sign-ins exhaust the VM's
//! memory. [`PasswordGate`] lets a few checks run at once and a short queue
//! wait; past that the request is refused at once with 429 and
//! `Retry-After`. [`Throttle`] counts failed sign-ins per source address
//! (an IPv6 /64 counts as one) and, past a few, refuses that source for a
//! doubling pause, in a table of bounded size.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Password checks running at once (4 × 19 MiB).
pub const CONCURRENT_CHECKS: usize = 4;
/// Checks that may wait for a slot; more are refused at once.
pub const QUEUED_CHECKS: usize = 12;
/// Failed sign-ins from one source before it must pause.
pub const FREE_FAILURES: u32 = 10;
/// The longest pause a source is given.
pub const MAX_PAUSE: Duration = Duration::from_secs(300);
/// A source's failures are forgotten after this long without one.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Sources remembered at once; the stalest is dropped beyond.
pub const MAX_SOURCES: usize = 4096;

/// Why a password check was not run: retry after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy(pub u64);

#[derive(Debug)]
pub struct PasswordGate {
    running: Arc<Semaphore>,
    admitted: Arc<AtomicUsize>,
    max_admitted: usize,
}

impl Default for PasswordGate {
    fn default() -> Self {
        PasswordGate::new(CONCURRENT_CHECKS, QUEUED_CHECKS)
    }
}

/// A slot to run one password check; frees itself when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    admitted: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PasswordGate {
    pub fn new(running: usize, queued: usize) -> Self {
        PasswordGate {
            running: Arc::new(Semaphore::new(running)),
            admitted: Arc::new(AtomicUsize::new(0)),
            max_admitted: running + queued,
        }
    }

    /// Waits for a slot when the queue has room; `Busy` at once otherwise.
    pub async fn enter(&self) -> Result<Slot, Busy> {
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.max_admitted {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy(1));
        }
        // Counted before waiting: a cancelled wait must give its place back.
        struct Admitted(Option<Arc<AtomicUsize>>);
        impl Drop for Admitted {
            fn drop(&mut self) {
                if let Some(a) = self.0.take() {
                    a.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        let mut admitted = Admitted(Some(self.admitted.clone()));
        match self.running.clone().acquire_owned().await {
            Ok(permit) => Ok(Slot {
                _permit: permit,
                admitted: admitted.0.take().unwrap_or_else(|| self.admitted.clone()),
            }),
            Err(_) => Err(Busy(1)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    paused_until: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct Throttle {
    by_source: Mutex<HashMap<IpAddr, Failures>>,
}

/// The key a source is counted under: the address, or its /64 for IPv6
/// (one host usually holds a whole /64).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

fn secs_until(t: Instant, now: Instant) -> u64 {
    t.saturating_duration_since(now)
        .as_secs_f64()
        .ceil()
        .max(1.0) as u64
}

impl Throttle {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.by_source.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Busy` while `ip` must pause.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Busy> {
        match self.map().get(&source_key(ip)).and_then(|f| f.paused_until) {
            Some(t) if t > now => Err(Busy(secs_until(t, now))),
            _ => Ok(()),
        }
    }

    /// Counts a failed sign-in of `ip`; past [`FREE_FAILURES`] the source
    /// pauses 1 s, 2 s, 4 s … up to [`MAX_PAUSE`].
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut map = self.map();
        if map.len() >= MAX_SOURCES && !map.contains_key(&source_key(ip)) {
            map.retain(|_, f| now.saturating_duration_since(f.last) < FORGET_AFTER);
            if map.len() >= MAX_SOURCES
                && let Some(stalest) = map.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k)
            {
                map.remove(&stalest);
            }
        }
        let f = map.entry(source_key(ip)).or_insert(Failures {
            count: 0,
            last: now,
            paused_until: None,
        });
        if now.saturating_duration_since(f.last) >= FORGET_AFTER {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        if f.count > FREE_FAILURES {
            let doublings = (f.count - FREE_FAILURES - 1).min(16);
            let pause = Duration::from_secs(1u64 << doublings).min(MAX_PAUSE);
            f.paused_until = Some(now + pause);
        }
    }

    /// A successful sign-in from `ip` clears its count.
    pub fn succeeded(&self, ip: IpAddr) {
        self.map().remove(&source_key(ip));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

/// The password gate and the per-source throttle of one key service.
#[derive(Debug, Default)]
pub struct Guard {
    pub gate: PasswordGate,
    pub throttle: Throttle,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_gate_refuses_past_its_queue_and_frees_slots() {
        let gate = PasswordGate::new(1, 1);
        let a = gate.enter().await.expect("running");
        let waiting = {
            let g = &gate;
            async move { g.enter().await }
        };
        tokio::pin!(waiting);
        // The second waits (queued); the third is refused at once.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut waiting)
                .await
                .is_err()
        );
        assert_eq!(gate.enter().await.err(), Some(Busy(1)));
        drop(a);
        let b = waiting.await.expect("queued one runs");
        drop(b);
        assert_eq!(gate.admitted.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_source_pauses_after_a_few_failures_and_the_table_is_bounded() {
        let t = Throttle::default();
        let ip: IpAddr = [192, 0, 2, 1].into();
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            t.failed(ip, now);
            assert!(t.check(ip, now).is_ok());
        }
        t.failed(ip, now);
        assert_eq!(t.check(ip, now), Err(Busy(1)));
        t.failed(ip, now);
        assert_eq!(t.check(ip, now), Err(Busy(2)));
        assert!(t.check(ip, now + Duration::from_secs(3)).is_ok());
        // Another address is not affected; one /64 is one source.
        assert!(t.check([192, 0, 2, 2].into(), now).is_ok());
        let a: IpAddr = "2001:db8::1".parse().expect("v6");
        let b: IpAddr = "2001:db8::2".parse().expect("v6");
        for _ in 0..=FREE_FAILURES {
            t.failed(a, now);
        }
        assert!(t.check(b, now).is_err());
        t.succeeded(ip);
        assert!(t.check(ip, now).is_ok());
        for i in 0..(MAX_SOURCES as u32 + 100) {
            t.failed(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(t.len() <= MAX_SOURCES);
    }
}
