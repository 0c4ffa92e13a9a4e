//! The cap on connections one client address may hold open at once
//! (`IDEM_MAX_CONNECTIONS_PER_ADDRESS`), so that one address cannot take every place of the
//! connection limit (`serve`) and shut everyone else out.
//!
//! Counted when a connection is accepted, before anything is read, so only the peer's own
//! address is known: connections from a trusted proxy (`IDEM_TRUSTED_PROXIES`) are not
//! capped, as they carry many clients and the proxy caps each (the README's nginx example).
//! An IPv6 peer counts under its /64, the block one subscriber is usually given, so that a
//! host cannot escape the cap by using more of its own addresses; an IPv4-mapped IPv6 peer
//! counts as its IPv4 address.
//!
//! A connection past the cap is answered at once with a 503 problem carrying `Retry-After`
//! (which the agent honours) and closed, without reading its request: nothing it sends can
//! keep it open.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::client_addr::TrustedProxies;

/// The cap when none is configured: an office of a thousand workstations behind one NAT
/// address, each long-polling with one connection.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 1_000;

/// Seconds a refused client is asked to wait before trying again.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// Connections open per client address, against the cap. Cloned, it is the same.
#[derive(Clone)]
pub struct PerAddress {
    inner: Arc<Inner>,
}

struct Inner {
    cap: usize,
    uncapped: TrustedProxies,
    open: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicU64,
}

/// One connection counted under its address: uncounted when dropped.
pub struct Counted {
    inner: Arc<Inner>,
    /// `None` for a connection that is not capped (from a trusted proxy).
    key: Option<IpAddr>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut open = self.inner.lock();
        if let Some(count) = open.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&key);
            }
        }
    }
}

impl PerAddress {
    /// At most `cap` connections (at least one) per address, except from `uncapped`.
    pub fn new(cap: usize, uncapped: TrustedProxies) -> PerAddress {
        PerAddress {
            inner: Arc::new(Inner {
                cap: cap.max(1),
                uncapped,
                open: Mutex::default(),
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// The most connections one address may hold open.
    pub fn cap(&self) -> usize {
        self.inner.cap
    }

    /// Connections refused since start for their address being at the cap.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Addresses holding at least one capped connection now.
    pub fn addresses(&self) -> usize {
        self.inner.lock().len()
    }

    /// Counts a connection from `peer`, or `None` if its address already holds the cap.
    pub fn admit(&self, peer: IpAddr) -> Option<Counted> {
        let peer = peer.to_canonical();
        if self.inner.uncapped.contains(peer) {
            return Some(Counted {
                inner: self.inner.clone(),
                key: None,
            });
        }
        let key = counted_as(peer);
        let mut open = self.inner.lock();
        let count = open.entry(key).or_insert(0);
        if *count >= self.inner.cap {
            drop(open);
            self.inner.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *count += 1;
        Some(Counted {
            inner: self.inner.clone(),
            key: Some(key),
        })
    }
}

impl Inner {
    /// The counts; a panic elsewhere while holding them leaves them consistent (each change
    /// is one integer), so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The address `peer` is counted under: itself for IPv4, its /64 for IPv6.
fn counted_as(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_address_at_the_cap_is_refused_until_one_of_its_connections_closes() {
        let caps = PerAddress::new(2, TrustedProxies::default());
        let first = caps.admit(ip("192.0.2.1")).unwrap();
        let _second = caps.admit(ip("192.0.2.1")).unwrap();
        assert!(caps.admit(ip("192.0.2.1")).is_none());
        assert_eq!(caps.refused(), 1);
        // Another address is not held back by this one.
        let other = caps.admit(ip("192.0.2.2")).unwrap();
        assert_eq!(caps.addresses(), 2);
        drop(first);
        assert!(caps.admit(ip("192.0.2.1")).is_some());
        drop(other);
        assert_eq!(
            caps.addresses(),
            1,
            "an address with nothing open is forgotten"
        );
    }

    #[test]
    fn ipv6_addresses_count_per_64_and_mapped_ipv4_as_ipv4() {
        let caps = PerAddress::new(2, TrustedProxies::default());
        let _a = caps.admit(ip("2001:db8:1:2::1")).unwrap();
        let _b = caps.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert!(
            caps.admit(ip("2001:db8:1:2:abcd::1")).is_none(),
            "the same /64"
        );
        assert!(caps.admit(ip("2001:db8:1:3::1")).is_some(), "another /64");

        let _c = caps.admit(ip("198.51.100.7")).unwrap();
        let _d = caps.admit(ip("::ffff:198.51.100.7")).unwrap();
        assert!(caps.admit(ip("198.51.100.7")).is_none());
        assert_eq!(caps.refused(), 2);
    }

    #[test]
    fn trusted_proxies_are_not_capped() {
        let caps = PerAddress::new(1, TrustedProxies::parse("10.0.0.0/8").unwrap());
        let held: Vec<Counted> = (0..5)
            .map(|_| caps.admit(ip("10.1.2.3")).unwrap())
            .collect();
        assert_eq!(caps.addresses(), 0);
        assert_eq!(caps.refused(), 0);
        let _own = caps.admit(ip("192.0.2.1")).unwrap();
        assert!(caps.admit(ip("192.0.2.1")).is_none());
        drop(held);
        assert_eq!(caps.addresses(), 1);
    }
}
