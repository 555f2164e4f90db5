//! Back-off after failed registration secrets (issue 12, item 7).
//!
//! A registration whose domain or shared secret is wrong counts as a failure
//! against its source address (IPv4 address, or IPv6 /64) and against the
//! domain it named. Once `limit` failures (5 per address, 20 per domain by
//! default) fall within the window (10 minutes), that address or domain is
//! refused for a back-off: HTTP 429 with `Retry-After`, whatever the secret,
//! so a guess during the back-off learns nothing. Each further back-off of the
//! same address or domain is twice as long as the last (from the base, 60 s
//! by default) up to 15 minutes; an entry quiet for a window after its last
//! back-off starts over.
//!
//! Registrations in flight count against the limit as if they failed, so a
//! burst of parallel guesses cannot pass it before the first answers are
//! counted: at most `limit` registrations run at once per address.
//!
//! The tables live in the key service's memory (a restart forgets them) and
//! are bounded: when one is full, the entries quiet longest are dropped,
//! those in back-off last.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The back-off rules; `Default` is the appliance's.
#[derive(Debug, Clone)]
pub struct Policy {
    pub window: Duration,
    pub base: Duration,
    pub cap: Duration,
    pub per_address: u32,
    pub per_domain: u32,
    /// Most entries kept per table.
    pub capacity: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            window: Duration::from_secs(600),
            base: Duration::from_secs(60),
            cap: Duration::from_secs(900),
            per_address: 5,
            per_domain: 20,
            capacity: 10_000,
        }
    }
}

#[derive(Debug, Default)]
struct Entry {
    /// Failures within the window, oldest first (at most `limit`).
    failures: Vec<Instant>,
    in_flight: u32,
    /// Back-offs so far; the next lasts `base * 2^strikes`.
    strikes: u32,
    blocked_until: Option<Instant>,
    last_seen: Option<Instant>,
}

impl Entry {
    fn blocked(&self, now: Instant) -> Option<Duration> {
        self.blocked_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    fn forget_old(&mut self, now: Instant, policy: &Policy) {
        self.failures
            .retain(|t| now.saturating_duration_since(*t) < policy.window);
        if self.blocked(now).is_none()
            && self.failures.is_empty()
            && self
                .last_seen
                .is_some_and(|t| now.saturating_duration_since(t) >= policy.window)
        {
            self.strikes = 0;
        }
    }

    fn idle(&self, now: Instant, policy: &Policy) -> bool {
        self.in_flight == 0
            && self.blocked(now).is_none()
            && self.failures.is_empty()
            && self.strikes == 0
            && self
                .last_seen
                .is_none_or(|t| now.saturating_duration_since(t) >= policy.window)
    }

    /// Counts a failure; starts a back-off when the limit is reached.
    fn fail(&mut self, now: Instant, limit: u32, policy: &Policy) {
        self.failures.push(now);
        if self.failures.len() >= limit as usize {
            let factor = 1u32.checked_shl(self.strikes).unwrap_or(u32::MAX);
            let delay = policy
                .base
                .checked_mul(factor)
                .unwrap_or(policy.cap)
                .min(policy.cap);
            self.blocked_until = Some(now + delay);
            self.strikes = self.strikes.saturating_add(1);
            self.failures.clear();
        }
    }
}

#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, Entry>,
    limit: u32,
}

impl<K: std::hash::Hash + Eq + Clone> Table<K> {
    fn new(limit: u32) -> Self {
        Table {
            entries: HashMap::new(),
            limit,
        }
    }

    /// The remaining back-off of `key`, or `None` when it may try now.
    fn check(&mut self, key: &K, now: Instant, policy: &Policy) -> Option<Duration> {
        let entry = self.entries.get_mut(key)?;
        entry.forget_old(now, policy);
        if let Some(left) = entry.blocked(now) {
            return Some(left);
        }
        // Attempts in flight count as failures until they are answered; a
        // caller turned away here retries within a second.
        if entry.failures.len() as u32 + entry.in_flight >= self.limit {
            return Some(Duration::from_secs(1));
        }
        None
    }

    fn entry(&mut self, key: &K, now: Instant, policy: &Policy) -> &mut Entry {
        if !self.entries.contains_key(key) && self.entries.len() >= policy.capacity {
            self.evict(now, policy);
        }
        let entry = self.entries.entry(key.clone()).or_default();
        entry.last_seen = Some(now);
        entry
    }

    /// Makes room: drops idle entries, then the tenth quiet longest (those in
    /// back-off last).
    fn evict(&mut self, now: Instant, policy: &Policy) {
        self.entries.retain(|_, e| !e.idle(now, policy));
        if self.entries.len() < policy.capacity {
            return;
        }
        let mut order: Vec<(bool, Option<Instant>, K)> = self
            .entries
            .iter()
            .map(|(k, e)| (e.blocked(now).is_some(), e.last_seen, k.clone()))
            .collect();
        order.sort_by_key(|(blocked, seen, _)| (*blocked, *seen));
        let drop = (policy.capacity / 10).max(1);
        for (_, _, key) in order.into_iter().take(drop) {
            self.entries.remove(&key);
        }
    }
}

#[derive(Debug)]
struct Tables {
    addresses: Table<IpAddr>,
    domains: Table<String>,
}

/// The back-off state of the enrolment ports (both share one).
#[derive(Debug)]
pub struct EnrolGuard {
    policy: Policy,
    tables: Mutex<Tables>,
}

/// The source as counted: an IPv4 address, or the /64 of an IPv6 one (a
/// host gets a whole /64, so counting single addresses would count nothing).
fn source_key(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// Domain names as counted: the name's first 64 characters (the longest a
/// domain name may be), so a long made-up name costs no more memory.
fn domain_key(domain: &str) -> String {
    domain.chars().take(64).collect()
}

/// A registration admitted by [`EnrolGuard::admit`]; tell it how it ended.
/// Dropped without [`Attempt::finish`] (the request was cancelled), it
/// counts as neither failure nor success.
#[derive(Debug)]
pub struct Attempt {
    guard: Arc<EnrolGuard>,
    address: IpAddr,
    domain: String,
    done: bool,
}

impl EnrolGuard {
    pub fn new(policy: Policy) -> Arc<Self> {
        Arc::new(EnrolGuard {
            tables: Mutex::new(Tables {
                addresses: Table::new(policy.per_address.max(1)),
                domains: Table::new(policy.per_domain.max(1)),
            }),
            policy,
        })
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        // The tables hold counters only; one left half-updated by a panic is
        // still usable.
        self.tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a registration from `addr` naming `domain`, or answers how
    /// long the caller must wait.
    pub fn admit(self: &Arc<Self>, addr: IpAddr, domain: &str) -> Result<Attempt, Duration> {
        let (address, domain) = (source_key(addr), domain_key(domain));
        let now = Instant::now();
        let policy = &self.policy;
        let mut t = self.tables();
        let wait = [
            t.addresses.check(&address, now, policy),
            t.domains.check(&domain, now, policy),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        t.addresses.entry(&address, now, policy).in_flight += 1;
        t.domains.entry(&domain, now, policy).in_flight += 1;
        Ok(Attempt {
            guard: self.clone(),
            address,
            domain,
            done: false,
        })
    }
}

impl Attempt {
    /// Ends the attempt: `secret_failed` when the domain or secret was wrong.
    pub fn finish(mut self, secret_failed: bool) {
        self.done = true;
        let guard = self.guard.clone();
        let policy = &guard.policy;
        let now = Instant::now();
        let mut t = guard.tables();
        let Tables { addresses, domains } = &mut *t;
        let (address_limit, domain_limit) = (addresses.limit, domains.limit);
        let address = addresses.entry(&self.address, now, policy);
        address.in_flight = address.in_flight.saturating_sub(1);
        if secret_failed {
            address.fail(now, address_limit, policy);
        }
        let domain = domains.entry(&self.domain, now, policy);
        domain.in_flight = domain.in_flight.saturating_sub(1);
        if secret_failed {
            domain.fail(now, domain_limit, policy);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let now = Instant::now();
        let mut t = self.guard.tables();
        if let Some(e) = t.addresses.entries.get_mut(&self.address) {
            e.in_flight = e.in_flight.saturating_sub(1);
            e.last_seen = Some(now);
        }
        if let Some(e) = t.domains.entries.get_mut(&self.domain) {
            e.in_flight = e.in_flight.saturating_sub(1);
            e.last_seen = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            window: Duration::from_secs(600),
            base: Duration::from_secs(60),
            cap: Duration::from_secs(900),
            per_address: 5,
            per_domain: 20,
            capacity: 100,
        }
    }

    fn fail(g: &Arc<EnrolGuard>, addr: &str, domain: &str) {
        g.admit(addr.parse().expect("address"), domain)
            .expect("admitted")
            .finish(true);
    }

    #[test]
    fn five_failures_from_one_address_block_it_and_only_it() {
        let g = EnrolGuard::new(policy());
        for _ in 0..5 {
            fail(&g, "192.0.2.1", "d");
        }
        let wait = g
            .admit("192.0.2.1".parse().expect("address"), "other")
            .expect_err("blocked");
        assert!(wait > Duration::from_secs(55) && wait <= Duration::from_secs(60));
        g.admit("192.0.2.2".parse().expect("address"), "d")
            .expect("another address may try")
            .finish(false);
    }

    #[test]
    fn twenty_failures_for_one_domain_block_it_from_everywhere() {
        let g = EnrolGuard::new(policy());
        for i in 0..20 {
            fail(&g, &format!("192.0.2.{i}"), "d");
        }
        assert!(g.admit("198.51.100.1".parse().expect("a"), "d").is_err());
        g.admit("198.51.100.1".parse().expect("a"), "e")
            .expect("another domain")
            .finish(false);
    }

    #[test]
    fn in_flight_attempts_count_against_the_limit() {
        let g = EnrolGuard::new(policy());
        let a: IpAddr = "192.0.2.1".parse().expect("address");
        let held: Vec<Attempt> = (0..5).map(|_| g.admit(a, "d").expect("admitted")).collect();
        assert!(g.admit(a, "d").is_err(), "a sixth in parallel waits");
        drop(held);
        g.admit(a, "d").expect("after they end").finish(false);
    }

    #[test]
    fn back_off_doubles_up_to_the_cap() {
        let p = policy();
        let mut e = Entry::default();
        let now = Instant::now();
        let mut seen = Vec::new();
        for _ in 0..6 {
            for _ in 0..5 {
                e.fail(now, 5, &p);
            }
            seen.push(e.blocked(now).expect("blocked").as_secs());
        }
        assert_eq!(seen, [60, 120, 240, 480, 900, 900]);
    }

    #[test]
    fn ipv6_counts_by_slash_64() {
        let g = EnrolGuard::new(policy());
        for i in 1..=5 {
            fail(&g, &format!("2001:db8:1:2::{i}"), "d");
        }
        assert!(
            g.admit("2001:db8:1:2:ffff::9".parse().expect("a"), "x")
                .is_err()
        );
        assert!(g.admit("2001:db8:1:3::1".parse().expect("a"), "x").is_ok());
    }

    #[test]
    fn tables_stay_within_capacity() {
        let g = EnrolGuard::new(policy());
        for i in 0..1000u32 {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            fail(&g, &addr.to_string(), &format!("domain-{i}"));
        }
        let t = g.tables();
        assert!(t.addresses.entries.len() <= 100);
        assert!(t.domains.entries.len() <= 100);
    }
}
