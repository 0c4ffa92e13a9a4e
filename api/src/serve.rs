//! The HTTP listener: accepts connections and serves the router on each, over HTTP/1.1, until
//! the service stops, then lets the connections in flight finish.
//!
//! Not `axum::serve`, because it gives hyper no timer, and without one hyper has no header
//! read timeout: a client that opens a connection and sends nothing, or a request head a
//! byte at a time (slowloris), holds a socket and a task for as long as it likes, and enough
//! of them exhaust the process's file descriptors. Here each connection must deliver every
//! request head within the configured time (`IDEM_HEADER_READ_TIMEOUT_SECONDS`), counted from
//! when the server is ready to read it: on an idle keep-alive connection that bounds the idle
//! wait too. A long-poll is not affected: its head arrives at once, and the wait is the
//! handler's.
//!
//! It also bounds the connections served at once (`IDEM_MAX_CONNECTIONS`): at the limit it
//! stops accepting, and new connections wait in the kernel's listen backlog until one closes,
//! rather than each taking a descriptor and ~30 KiB until the process runs out of either. By
//! default the limit is half the descriptors the process may open ([`descriptor_limit`]
//! raises the soft limit to the hard one first), leaving the rest to the log's and the read
//! models' files. Within that limit, one client address may hold at most
//! `IDEM_MAX_CONNECTIONS_PER_ADDRESS` (`per_address`); a connection past it is refused at
//! once with a 503 and its place given back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, watch};
use tower::ServiceExt;

use crate::per_address::{Counted, PerAddress};
use crate::problem::Problem;

/// How long a failed `accept` waits before the next (file descriptors exhausted, say).
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The most connections served at once by default, however many descriptors there are:
/// ~2 GiB of connection state at ~30 KiB each.
pub const DEFAULT_MAX_CONNECTIONS: usize = 65_536;

/// How often, at most, reaching the connection limit is logged.
const LIMIT_LOG_EVERY: Duration = Duration::from_secs(60);

/// The limit on connections served at once, and how many are open. Cloned, it is the same.
#[derive(Clone)]
pub struct Connections {
    slots: Arc<Semaphore>,
    limit: usize,
    open: Arc<AtomicUsize>,
    per_address: PerAddress,
}

/// One open connection's place: given back when it is dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    _counted: Counted,
    open: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connections {
    /// At most `limit` connections at once (at least one), and at most what `per_address`
    /// allows from one address.
    pub fn new(limit: usize, per_address: PerAddress) -> Connections {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        Connections {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            open: Arc::default(),
            per_address,
        }
    }

    /// The cap on connections per client address.
    pub fn per_address(&self) -> &PerAddress {
        &self.per_address
    }

    /// The most connections served at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn occupy(&self, permit: OwnedSemaphorePermit, counted: Counted) -> Slot {
        self.open.fetch_add(1, Ordering::Relaxed);
        Slot {
            _permit: permit,
            _counted: counted,
            open: self.open.clone(),
        }
    }
}

/// The connection limit: the configured one, else half of `descriptors` (the process's
/// limit on open files), at most [`DEFAULT_MAX_CONNECTIONS`].
pub fn connection_limit(configured: Option<usize>, descriptors: u64) -> usize {
    configured.unwrap_or_else(|| {
        usize::try_from(descriptors / 2)
            .unwrap_or(usize::MAX)
            .clamp(1, DEFAULT_MAX_CONNECTIONS)
    })
}

/// The number of files this process may open, after raising its soft limit to its hard one
/// (as Go's runtime does): services are often started with a soft limit of 1,024, too few for
/// a thousand long-polling agents. If the limit cannot be read, 1,024 is assumed.
pub fn descriptor_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let Some(current) = limit.current else {
        return u64::MAX;
    };
    match limit.maximum {
        Some(maximum) if maximum > current => {
            let raised = rustix::process::Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => maximum,
                Err(e) => {
                    tracing::warn!(error = %e, current, maximum, "the open file limit could not be raised");
                    current
                }
            }
        }
        _ => current,
    }
}

/// Serves `app` on `listener`, each request carrying its peer's address (`ConnectInfo`), at
/// most `connections.limit()` connections at once, until `stopping` turns true; then waits
/// for the open connections to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    connections: Connections,
    mut stopping: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let mut limit_logged: Option<Instant> = None;
    let mut cap_logged: Option<Instant> = None;
    let refusal: Arc<[u8]> = Problem::busy(
        "too many connections from your address; try again later",
        crate::per_address::RETRY_AFTER_SECONDS,
    )
    .into_http1_bytes()
    .into();
    let lingering = Arc::new(Semaphore::new(MAX_LINGERING_REFUSALS));
    loop {
        let permit = match connections.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => break,
            Err(TryAcquireError::NoPermits) => {
                if limit_logged.is_none_or(|at| at.elapsed() >= LIMIT_LOG_EVERY) {
                    tracing::warn!(
                        limit = connections.limit,
                        "connection limit reached (IDEM_MAX_CONNECTIONS): new connections wait \
                         in the listen backlog until one closes"
                    );
                    limit_logged = Some(Instant::now());
                }
                tokio::select! {
                    permit = connections.slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    _ = stopping.wait_for(|stop| *stop) => break,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.wait_for(|stop| *stop) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                tracing::error!(error = %e, "accepting a connection failed; trying again in 1 s");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Some(counted) = connections.per_address.admit(peer.ip()) else {
            drop(permit);
            refuse(tcp, refusal.clone(), &lingering);
            if cap_logged.is_none_or(|at| at.elapsed() >= LIMIT_LOG_EVERY) {
                tracing::warn!(
                    %peer,
                    cap = connections.per_address.cap(),
                    "connection refused: its address holds IDEM_MAX_CONNECTIONS_PER_ADDRESS \
                     connections already (logged at most once a minute; see \
                     idem_http_connections_refused_total)"
                );
                cap_logged = Some(Instant::now());
            }
            continue;
        };
        // Answers leave at once, not after Nagle's wait for more to send: a long-poll's
        // answer is one small write, and so is most of what this service sends.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY could not be set");
        }
        let service =
            app.clone()
                .map_request(move |request: hyper::Request<hyper::body::Incoming>| {
                    let mut request = request.map(axum::body::Body::new);
                    request
                        .extensions_mut()
                        .insert(ConnectInfo::<SocketAddr>(peer));
                    request
                });
        let connection =
            http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        let slot = connections.occupy(permit, counted);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Refused connections at most kept open at once while their answer drains ([`refuse`]).
const MAX_LINGERING_REFUSALS: usize = 256;

/// How long a refused connection is kept open at most for its answer to reach the client.
const LINGER: Duration = Duration::from_secs(1);

/// Answers `tcp` with `refusal` and closes it. Closing a socket with unread bytes resets
/// the connection, and a reset can destroy the answer before the client reads it; so the
/// answer is sent, the sending side shut, and what the client sent read and dropped for up
/// to [`LINGER`] before closing, as a web server's lingering close does. At most
/// [`MAX_LINGERING_REFUSALS`] linger at once: past that a refusal is written without waiting
/// and the connection dropped, so a flood of refused connections holds few descriptors.
fn refuse(tcp: tokio::net::TcpStream, refusal: Arc<[u8]>, lingering: &Arc<Semaphore>) {
    let Ok(place) = lingering.clone().try_acquire_owned() else {
        let _ = tcp.try_write(&refusal);
        return;
    };
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _place = place;
        let mut tcp = tcp;
        let _ = tokio::time::timeout(LINGER, async {
            tcp.write_all(&refusal).await?;
            tcp.shutdown().await?;
            let mut sink = [0u8; 4096];
            while tcp.read(&mut sink).await? > 0 {}
            Ok::<(), std::io::Error>(())
        })
        .await;
    });
}

/// Whether an `accept` error concerns only the connection it would have been (the peer gave
/// up before it was accepted), not the listener.
fn is_per_connection(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_limit_is_half_the_descriptors_within_bounds() {
        assert_eq!(connection_limit(None, 20_000), 10_000);
        assert_eq!(connection_limit(None, 1_024), 512);
        assert_eq!(connection_limit(None, 1 << 20), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(connection_limit(None, u64::MAX), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(connection_limit(None, 1), 1, "never zero");
        assert_eq!(connection_limit(Some(100_000), 1_024), 100_000);
    }

    #[test]
    fn a_slot_counts_as_open_until_dropped() {
        let connections = Connections::new(
            2,
            PerAddress::new(10, crate::client_addr::TrustedProxies::default()),
        );
        let peer: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let occupy = || {
            let permit = connections.slots.clone().try_acquire_owned().unwrap();
            let counted = connections.per_address.admit(peer).unwrap();
            connections.occupy(permit, counted)
        };
        let first = occupy();
        let second = occupy();
        assert_eq!(connections.per_address.addresses(), 1);
        assert_eq!(connections.open(), 2);
        assert!(connections.slots.clone().try_acquire_owned().is_err());
        drop(first);
        assert_eq!(connections.open(), 1);
        assert!(connections.slots.clone().try_acquire_owned().is_ok());
        drop(second);
        assert_eq!(connections.open(), 0);
        assert_eq!(
            connections.per_address.addresses(),
            0,
            "a closed connection no longer counts against its address"
        );
    }

    #[test]
    fn the_descriptor_limit_is_raised_to_the_hard_limit() {
        let raised = descriptor_limit();
        let now = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(now.current, Some(raised));
        assert_eq!(now.current, now.maximum.or(now.current));
    }
}
