//! Failed logins, counted per user and per client address in token buckets: each login that has
//! to hash a password takes a token before it hashes (so tries sent at once cannot all pass
//! before the first failure is counted), a successful one gives it back, tokens come back at a
//! steady rate, and a key with none left is refused without hashing its password. A client
//! guessing passwords therefore costs the server at most [`FAILURE_REFILL_PER_SEC`] hashes a
//! second per user and per address after its first [`FAILURES_BURST`] tries, however many it
//! sends at once.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Instant;

use parking_lot::Mutex;

/// Failed logins a user or address may make at once before it is slowed down.
pub const FAILURES_BURST: f64 = 10.0;
/// Failed logins a second a user or address regains, after its burst.
pub const FAILURE_REFILL_PER_SEC: f64 = 1.0;
/// Keys remembered per kind; past it, keys whose buckets are full again are forgotten.
pub(crate) const LIMITER_KEYS_MAX: usize = 100_000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant) -> f64 {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + secs * FAILURE_REFILL_PER_SEC).min(FAILURES_BURST)
    }
}

#[derive(Debug)]
struct Buckets<K> {
    map: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new() -> Self {
        Self {
            map: HashMap::new(),
        }
    }

    fn has_token(&self, key: &K, now: Instant) -> bool {
        self.map.get(key).is_none_or(|b| b.refilled(now) >= 1.0)
    }

    /// Gives back a token taken by a login that succeeded.
    fn give_back(&mut self, key: &K, now: Instant) {
        if let Some(b) = self.map.get_mut(key) {
            b.tokens = (b.refilled(now) + 1.0).min(FAILURES_BURST);
            b.at = now;
        }
    }

    fn take(&mut self, key: &K, now: Instant) {
        if self.map.len() >= LIMITER_KEYS_MAX && !self.map.contains_key(key) {
            self.map.retain(|_, b| b.refilled(now) < FAILURES_BURST);
            if self.map.len() >= LIMITER_KEYS_MAX {
                // Everyone is failing: forget the oldest half rather than grow without bound.
                let mut ages: Vec<Instant> = self.map.values().map(|b| b.at).collect();
                ages.sort_unstable();
                if let Some(&cut) = ages.get(ages.len() / 2) {
                    self.map.retain(|_, b| b.at > cut);
                }
            }
        }
        let tokens = self
            .map
            .get(key)
            .map_or(FAILURES_BURST, |b| b.refilled(now));
        self.map.insert(
            key.clone(),
            Bucket {
                tokens: (tokens - 1.0).max(0.0),
                at: now,
            },
        );
    }
}

/// The failed-login buckets of users and of addresses.
#[derive(Debug)]
pub(crate) struct FailureLimiter {
    users: Mutex<Buckets<String>>,
    addresses: Mutex<Buckets<IpAddr>>,
}

impl FailureLimiter {
    pub(crate) fn new() -> Self {
        Self {
            users: Mutex::new(Buckets::new()),
            addresses: Mutex::new(Buckets::new()),
        }
    }

    /// Whether a login of `login` from `addr` may be tried now; if so, it takes its token (given
    /// back by [`FailureLimiter::succeeded`]).
    pub(crate) fn attempt(&self, login: &str, addr: Option<IpAddr>, now: Instant) -> bool {
        let login = login.to_owned();
        let mut users = self.users.lock();
        let mut addresses = self.addresses.lock();
        let allowed =
            users.has_token(&login, now) && addr.is_none_or(|a| addresses.has_token(&a, now));
        if allowed {
            users.take(&login, now);
            if let Some(a) = addr {
                addresses.take(&a, now);
            }
        }
        allowed
    }

    /// The login tried by [`FailureLimiter::attempt`] succeeded: its tokens come back.
    pub(crate) fn succeeded(&self, login: &str, addr: Option<IpAddr>, now: Instant) {
        self.users.lock().give_back(&login.to_owned(), now);
        if let Some(a) = addr {
            self.addresses.lock().give_back(&a, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_of_tries_is_allowed_then_one_per_refill() {
        let l = FailureLimiter::new();
        let t0 = Instant::now();
        let addr: IpAddr = "10.0.0.1".parse().unwrap();
        // Tries sent at once take their tokens before any of them fails.
        for _ in 0..FAILURES_BURST as usize {
            assert!(l.attempt("ann", Some(addr), t0));
        }
        assert!(!l.attempt("ann", Some(addr), t0));
        // Another user from the same address is refused too; from elsewhere, allowed.
        assert!(!l.attempt("bob", Some(addr), t0));
        assert!(l.attempt("bob", Some("10.0.0.2".parse().unwrap()), t0));
        // The same user from another address is refused: the user's bucket is empty.
        assert!(!l.attempt("ann", Some("10.0.0.3".parse().unwrap()), t0));
        let later = t0 + Duration::from_secs_f64(1.0 / FAILURE_REFILL_PER_SEC);
        assert!(l.attempt("ann", Some(addr), later));
        assert!(!l.attempt("ann", Some(addr), later));
    }

    #[test]
    fn a_login_that_succeeds_gives_its_tokens_back() {
        let l = FailureLimiter::new();
        let t0 = Instant::now();
        for _ in 0..(3 * FAILURES_BURST as usize) {
            assert!(l.attempt("ann", None, t0));
            l.succeeded("ann", None, t0);
        }
        for _ in 0..FAILURES_BURST as usize {
            assert!(l.attempt("ann", None, t0));
        }
        assert!(!l.attempt("ann", None, t0));
    }

    #[test]
    fn the_key_count_stays_bounded() {
        let l = FailureLimiter::new();
        let now = Instant::now();
        for i in 0..(LIMITER_KEYS_MAX + 10) {
            l.attempt(&format!("u{i}"), None, now + Duration::from_nanos(i as u64));
        }
        assert!(l.users.lock().map.len() <= LIMITER_KEYS_MAX);
    }
}
