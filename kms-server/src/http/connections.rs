//! Connection admission: at most `max_connections` connections open at once, and at most
//! `max_connections_per_ip` from one client address, counted from the moment a connection
//! is accepted, before its TLS handshake or a byte of a request is read. A connection over
//! a limit is closed at once, unread, and counted in `kms_http_refused_total` as
//! `too_many_connections`.
//!
//! The address is the peer's (no request has been read, so `X-Forwarded-For` is unknown
//! here). IPv6 peers count per /64, the block one host or site usually holds. Peers in the
//! trusted proxies are exempt from the per-address limit, since they carry many clients,
//! but never from the total.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::ops::metrics::Metrics;

/// How many connections may be open at once; `0` in a field means no limit there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, all clients together (default 10,000).
    pub max_connections: usize,
    /// Connections open at once from one client address, IPv6 by /64 (default 256).
    pub max_connections_per_ip: usize,
    /// Peers exempt from the per-address limit: the trusted proxies.
    pub exempt: Vec<ipnet::IpNet>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 10_000,
            max_connections_per_ip: 256,
            exempt: Vec::new(),
        }
    }
}

/// Counts open connections and admits new ones under [`ConnectionLimits`].
#[derive(Debug)]
pub struct ConnectionGate {
    limits: ConnectionLimits,
    counts: Mutex<Counts>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// A connection's place in the counts, given back when it is dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    gate: Arc<ConnectionGate>,
    /// The address counted against, `None` for an exempt peer.
    address: Option<IpAddr>,
}

impl ConnectionGate {
    /// A gate with nothing open yet; refusals are counted in `metrics`.
    pub fn new(limits: ConnectionLimits, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(ConnectionGate {
            limits,
            counts: Mutex::new(Counts::default()),
            metrics,
        })
    }

    /// A place for a connection from `peer`, or `None` when it would exceed a limit.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<ConnectionPermit> {
        let peer = peer.to_canonical();
        let address =
            (!self.limits.exempt.iter().any(|net| net.contains(&peer))).then(|| counted(peer));
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let over_total = !has_room(self.limits.max_connections, counts.total);
        let over_address = address.is_some_and(|a| {
            let open = counts.per_address.get(&a).copied().unwrap_or(0);
            !has_room(self.limits.max_connections_per_ip, open)
        });
        if over_total || over_address {
            drop(counts);
            self.metrics.record_refused("too_many_connections");
            return None;
        }
        counts.total += 1;
        if let Some(a) = address {
            *counts.per_address.entry(a).or_insert(0) += 1;
        }
        Some(ConnectionPermit {
            gate: Arc::clone(self),
            address,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

/// Whether one more than `open` stays within `limit` (0: no limit).
fn has_room(limit: usize, open: usize) -> bool {
    limit == 0 || open < limit
}

/// The address a peer is counted under: itself, or its /64 for IPv6.
fn counted(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self
            .gate
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(a) = self.address {
            if let Some(open) = counts.per_address.get_mut(&a) {
                *open = open.saturating_sub(1);
                if *open == 0 {
                    counts.per_address.remove(&a);
                }
            }
        }
    }
}

/// A connection admitted under the limits: its stream, its peer and its place.
#[derive(Debug)]
pub struct Admitted<Io> {
    /// The stream, ready for HTTP.
    pub io: Io,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Its place in the counts, held for as long as the connection is served.
    pub permit: ConnectionPermit,
}

/// Where the server takes its connections from: plain TCP ([`TcpIncoming`]) or TLS
/// ([`crate::http::tls::TlsListener`]).
pub trait Incoming: Send {
    /// The stream of one connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The next admitted connection; waits for one.
    fn accept(&mut self) -> impl Future<Output = Admitted<Self::Io>> + Send;
}

/// Plain TCP connections, admitted by a [`ConnectionGate`].
#[derive(Debug)]
pub struct TcpIncoming {
    listener: TcpListener,
    gate: Arc<ConnectionGate>,
}

impl TcpIncoming {
    /// Connections accepted on `listener`, admitted by `gate`.
    pub fn new(listener: TcpListener, gate: Arc<ConnectionGate>) -> Self {
        TcpIncoming { listener, gate }
    }
}

impl Incoming for TcpIncoming {
    type Io = TcpStream;

    async fn accept(&mut self) -> Admitted<TcpStream> {
        accept_admitted(&self.listener, &self.gate).await
    }
}

/// The next TCP connection on `listener` that `gate` admits; connections over a limit are
/// closed as they arrive.
pub async fn accept_admitted(
    listener: &TcpListener,
    gate: &Arc<ConnectionGate>,
) -> Admitted<TcpStream> {
    loop {
        let (io, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually out of file descriptors: wait a moment rather than spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match gate.admit(peer.ip()) {
            Some(permit) => return Admitted { io, peer, permit },
            None => {
                tracing::debug!(peer = %peer, "connection refused: too many connections");
                drop(io);
            }
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
mod tests {
    use super::*;

    fn gate(total: usize, per_ip: usize, exempt: &[&str]) -> Arc<ConnectionGate> {
        ConnectionGate::new(
            ConnectionLimits {
                max_connections: total,
                max_connections_per_ip: per_ip,
                exempt: exempt.iter().map(|n| n.parse().unwrap()).collect(),
            },
            Arc::new(Metrics::new()),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_address_gets_its_share_and_places_come_back() {
        let g = gate(10, 2, &[]);
        let a1 = g.admit(ip("192.0.2.1")).unwrap();
        let _a2 = g.admit(ip("192.0.2.1")).unwrap();
        assert!(g.admit(ip("192.0.2.1")).is_none());
        assert!(g.admit(ip("::ffff:192.0.2.1")).is_none(), "mapped v4 is v4");
        let _b = g.admit(ip("192.0.2.2")).unwrap();
        drop(a1);
        assert!(g.admit(ip("192.0.2.1")).is_some());
        assert!(g.metrics.encode().unwrap().contains("too_many_connections"));
    }

    #[test]
    fn ipv6_peers_count_per_slash_64() {
        let g = gate(10, 1, &[]);
        let _a = g.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(g.admit(ip("2001:db8:1:2:ffff::9")).is_none());
        assert!(g.admit(ip("2001:db8:1:3::1")).is_some());
    }

    #[test]
    fn the_total_binds_everyone_and_proxies_skip_only_the_per_address_limit() {
        let g = gate(3, 1, &["10.0.0.0/8"]);
        let held: Vec<_> = (0..3).map(|_| g.admit(ip("10.1.1.1")).unwrap()).collect();
        assert_eq!(g.open(), 3);
        assert!(g.admit(ip("10.1.1.1")).is_none());
        assert!(g.admit(ip("192.0.2.9")).is_none());
        drop(held);
        assert_eq!(g.open(), 0);
        assert!(g.admit(ip("192.0.2.9")).is_some());
    }

    #[test]
    fn zero_means_no_limit() {
        let g = gate(0, 0, &[]);
        let held: Vec<_> = (0..1000)
            .map(|_| g.admit(ip("192.0.2.1")).unwrap())
            .collect();
        assert_eq!(g.open(), held.len());
    }
}
