//! The client address of each request, and the server-wide deny-list.
//!
//! The client address is the peer's address, unless the peer is a trusted proxy: then it
//! is the right-most address of `X-Forwarded-For` that is not itself a trusted proxy. By
//! default no proxy is trusted, so a client cannot choose its own address by sending the
//! header. Audit events, lockouts, rate limits and the deny-list all use this address.
//!
//! [`client_ip`] is shared with [`crate::guard`]; the policy and the deny-list are the
//! server's (`server` feature).

use std::net::{IpAddr, SocketAddr};
#[cfg(feature = "server")]
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
#[cfg(feature = "server")]
use axum::http::HeaderMap;
use axum::http::HeaderName;
#[cfg(feature = "server")]
use ipnet::IpNet;

#[cfg(feature = "server")]
use crate::http::error::ApiError;
#[cfg(feature = "server")]
use crate::ops::metrics::Metrics;

/// The `X-Forwarded-For` header.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

#[cfg(feature = "server")]
/// Most `X-Forwarded-For` entries looked at, from the right.
const MAX_FORWARDED_HOPS: usize = 32;

/// The address a request came from, in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
/// Which networks are refused and which proxies are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Requests from these networks are refused with `403 forbidden`.
    pub deny: Vec<IpNet>,
    /// Proxies in these networks may name the client in `X-Forwarded-For`.
    pub trusted_proxies: Vec<IpNet>,
}

#[cfg(feature = "server")]
impl NetworkPolicy {
    /// Whether `ip` lies in a denied network.
    pub fn is_denied(&self, ip: IpAddr) -> bool {
        self.deny.iter().any(|n| n.contains(&ip))
    }

    fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    /// The client address of a request from `peer` with `headers`.
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.is_trusted_proxy(client) {
            return client;
        }
        // Every X-Forwarded-For header, in order, as one list; walk it from the right.
        let hops: Vec<&str> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev().take(MAX_FORWARDED_HOPS) {
            let Some(ip) = parse_hop(hop) else {
                // Garbage cannot be attributed: keep the last address we could trust.
                break;
            };
            client = ip;
            if !self.is_trusted_proxy(ip) {
                break;
            }
        }
        client
    }
}

#[cfg(feature = "server")]
/// One `X-Forwarded-For` entry: an address, optionally with a port (`[::1]:80`, `1.2.3.4:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
/// The deny-list in force, and where its refusals are counted.
#[derive(Debug, Clone)]
pub struct NetworkGate {
    /// The policy.
    pub policy: Arc<NetworkPolicy>,
    /// Where refusals are counted.
    pub metrics: Arc<Metrics>,
}

#[cfg(feature = "server")]
impl NetworkGate {
    /// Stores the [`ClientAddr`] of a request that arrived over a connection, or refuses it
    /// with `403 forbidden` when it comes from a denied network.
    pub fn admit(&self, request: &mut Request) -> Result<(), ApiError> {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        if let Some(peer) = peer {
            let client = self.policy.client_addr(peer, request.headers());
            if self.policy.is_denied(client) {
                self.metrics.record_refused("denied_network");
                tracing::info!(client = %client, "request from a denied network refused");
                return Err(ApiError::network_denied());
            }
            request.extensions_mut().insert(ClientAddr(client));
        }
        Ok(())
    }
}

/// The client address of `request`: the resolved [`ClientAddr`], else the peer's address
/// when the server was started with connect info.
pub fn client_ip(request: &Request) -> Option<IpAddr> {
    let extensions = request.extensions();
    extensions.get::<ClientAddr>().map(|c| c.0).or_else(|| {
        extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip().to_canonical())
    })
}

#[cfg(all(test, feature = "server"))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
mod tests {
    use super::*;

    fn policy(trusted: &[&str]) -> NetworkPolicy {
        NetworkPolicy {
            deny: vec![
                "203.0.113.0/24".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
        }
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_FORWARDED_FOR, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_from_an_untrusted_peer_is_ignored() {
        let p = policy(&[]);
        let got = p.client_addr(ip("192.0.2.7"), &xff(&["198.51.100.1"]));
        assert_eq!(got, ip("192.0.2.7"));
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let p = policy(&["10.0.0.0/8"]);
        let h = xff(&["1.1.1.1, 198.51.100.9", "10.0.0.3"]);
        assert_eq!(p.client_addr(ip("10.0.0.2"), &h), ip("198.51.100.9"));
    }

    #[test]
    fn only_trusted_hops_give_the_left_most() {
        let p = policy(&["10.0.0.0/8"]);
        let h = xff(&["10.1.1.1, 10.0.0.3"]);
        assert_eq!(p.client_addr(ip("10.0.0.2"), &h), ip("10.1.1.1"));
        assert_eq!(
            p.client_addr(ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn garbage_hops_stop_the_walk() {
        let p = policy(&["10.0.0.0/8"]);
        let h = xff(&["198.51.100.9, not-an-ip, 10.0.0.3"]);
        assert_eq!(p.client_addr(ip("10.0.0.2"), &h), ip("10.0.0.3"));
    }

    #[test]
    fn hops_with_ports_and_mapped_addresses_are_understood() {
        let p = policy(&["::1/128"]);
        let h = xff(&["[2001:db8::5]:443"]);
        assert_eq!(p.client_addr(ip("::1"), &h), ip("2001:db8::5"));
        let mapped = ip("::ffff:203.0.113.4");
        assert_eq!(
            policy(&[]).client_addr(mapped, &HeaderMap::new()),
            ip("203.0.113.4")
        );
    }

    #[test]
    fn deny_lists_match_v4_and_v6() {
        let p = policy(&[]);
        assert!(p.is_denied(ip("203.0.113.200")));
        assert!(p.is_denied(ip("2001:db8:1::1")));
        assert!(!p.is_denied(ip("198.51.100.1")));
        assert!(!p.is_denied(ip("2001:db9::1")));
    }
}
