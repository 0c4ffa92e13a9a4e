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

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// How long a failed `accept` waits before the next (file descriptors exhausted, say).
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `app` on `listener`, each request carrying its peer's address (`ConnectInfo`),
/// until `stopping` turns true; then waits for the open connections to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    loop {
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
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
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
