//! The address a request comes from, for the limits kept per client address.
//!
//! Behind a reverse proxy (TLS termination, a load balancer) every connection comes from the
//! proxy, and one client's calls would use up everyone's share. With `IDEM_TRUSTED_PROXIES`
//! set, a connection from one of those addresses is taken at its `X-Forwarded-For` word: the
//! entries are read from the right (the one the nearest proxy added) past every trusted
//! address, and the first other one is the client. Anything a client wrote itself sits further
//! left, so it cannot choose the address it is counted under. A connection from any other
//! address is its own client, whatever its headers say.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::app::Shared;
use crate::problem::Problem;

/// Addresses and networks whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses a comma-separated list of addresses and networks (`10.0.0.0/8`, `::1`); an
    /// empty list trusts nobody.
    pub fn parse(text: &str) -> Result<TrustedProxies, String> {
        let mut networks = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (address, prefix) = match item.split_once('/') {
                Some((address, prefix)) => (address, Some(prefix)),
                None => (item, None),
            };
            let address: IpAddr = address
                .parse()
                .map_err(|_| format!("{item:?} is not an IP address or network"))?;
            let address = address.to_canonical();
            let bits = if address.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => bits,
                Some(prefix) => prefix
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= bits)
                    .ok_or_else(|| format!("{item:?}: the prefix must be 0 to {bits}"))?,
            };
            networks.push((address, prefix));
        }
        Ok(TrustedProxies(networks))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `address` is one of these (an IPv4-mapped IPv6 address as its IPv4 one).
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0
            .iter()
            .any(|&(network, prefix)| match (network, address) {
                (IpAddr::V4(n), IpAddr::V4(a)) => {
                    same_prefix(u32::from(n).into(), u32::from(a).into(), prefix, 32)
                }
                (IpAddr::V6(n), IpAddr::V6(a)) => {
                    same_prefix(u128::from(n), u128::from(a), prefix, 128)
                }
                _ => false,
            })
    }

    /// The client of a connection from `peer` carrying `headers` (see the module's text).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        // Several headers are one list, in order.
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        let mut nearest = peer;
        for entry in entries.iter().rev() {
            let Some(address) = forwarded_address(entry) else {
                // A hop we cannot read: count the request under the last one we could.
                return nearest;
            };
            if !self.contains(address) {
                return address;
            }
            nearest = address;
        }
        nearest
    }
}

/// Whether the top `prefix` of `bits` bits of `a` and `b` agree.
fn same_prefix(a: u128, b: u128, prefix: u8, bits: u32) -> bool {
    let shift = bits - u32::from(prefix);
    shift >= bits || (a >> shift) == (b >> shift)
}

/// One `X-Forwarded-For` entry: an address, perhaps with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`).
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|a| a.to_canonical())
}

/// The client's address, as the limits count it.
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<Shared> for ClientAddr {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Problem> {
        let ConnectInfo(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or_else(|| Problem::internal(&"the connection's address is missing"))?;
        Ok(ClientAddr(
            state
                .config
                .trusted_proxies
                .client(peer.ip(), &parts.headers),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn networks_parse_and_contain_their_addresses() {
        let proxies = TrustedProxies::parse(" 10.0.0.0/8, 192.168.1.7 ,::1, fd00::/8").unwrap();
        for inside in [
            "10.1.2.3",
            "192.168.1.7",
            "::1",
            "fd12::5",
            "::ffff:10.9.9.9",
        ] {
            assert!(proxies.contains(ip(inside)), "{inside}");
        }
        for outside in ["11.0.0.1", "192.168.1.8", "::2", "fe00::1", "203.0.113.5"] {
            assert!(!proxies.contains(ip(outside)), "{outside}");
        }
        assert!(
            TrustedProxies::parse("0.0.0.0/0")
                .unwrap()
                .contains(ip("8.8.8.8"))
        );
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "proxy.example",
            "10.0.0.0/x",
            "1.2.3",
        ] {
            let error = TrustedProxies::parse(bad).unwrap_err();
            assert!(
                error.contains(bad.split('/').next().unwrap()),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn only_a_trusted_peer_is_taken_at_its_word() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let headers = forwarded(&["203.0.113.9"]);
        // Anyone else's header is ignored.
        assert_eq!(
            proxies.client(ip("198.51.100.1"), &headers),
            ip("198.51.100.1")
        );
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.2"), &headers),
            ip("10.0.0.2")
        );
        assert_eq!(proxies.client(ip("10.0.0.2"), &headers), ip("203.0.113.9"));
        // No header: the proxy itself.
        assert_eq!(
            proxies.client(ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let peer = ip("10.0.0.2");
        // What the client wrote itself is further left and never chosen.
        let spoofed = forwarded(&["1.1.1.1, 203.0.113.9, 10.0.0.5"]);
        assert_eq!(proxies.client(peer, &spoofed), ip("203.0.113.9"));
        // Several headers are one list; ports and brackets are read.
        let split = forwarded(&["1.1.1.1", "[2001:db8::7]:443, 10.0.0.5:80"]);
        assert_eq!(proxies.client(peer, &split), ip("2001:db8::7"));
        // Every hop trusted: the farthest.
        assert_eq!(
            proxies.client(peer, &forwarded(&["10.1.1.1, 10.0.0.5"])),
            ip("10.1.1.1")
        );
        // An unreadable hop: the last readable one counts.
        assert_eq!(
            proxies.client(peer, &forwarded(&["203.0.113.9, unknown, 10.0.0.5"])),
            ip("10.0.0.5")
        );
    }
}
