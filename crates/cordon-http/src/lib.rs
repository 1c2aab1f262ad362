//! How Cordon's servers (KBS, runtime, proxy) accept connections: a bounded number at once, a
//! deadline for the request head and for the whole request, and a graceful shutdown that lets
//! open requests finish.
//!
//! `axum::serve` sets neither timeout, so a client that sends its headers (or its body) one byte
//! at a time holds a connection and a task for as long as it likes (slowloris). Here:
//! - the request head must arrive within [`ServerLimits::header_read_timeout`], or hyper closes
//!   the connection;
//! - a request (head, body and handler) must complete within [`ServerLimits::request_timeout`],
//!   or it is answered 408 and its resources dropped;
//! - at most [`ServerLimits::max_connections`] connections are served at once; beyond that, new
//!   connections are closed at once rather than queued, so a flood costs a socket for a moment,
//!   not memory.
//!
//! With a [`ServerTls`] ([`serve_with_tls`]) every connection is TLS (rustls): the handshake counts
//! against the connection cap and must finish within [`ServerLimits::tls_handshake_timeout`], or
//! the connection is closed (a client that stalls in the handshake is a slowloris too); the request
//! deadlines then apply as without TLS. A shutdown closes connections still in their handshake.
//! There is no plaintext fallback on a TLS listener.

mod body;
#[cfg(feature = "client")]
pub mod client;
mod tls;

pub use body::ChannelBody;

pub use tls::{ServerTls, TlsError};
pub use tokio_rustls::rustls;

use axum::http::StatusCode;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Limits of one server.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time allowed for a request line and headers to arrive.
    pub header_read_timeout: Duration,
    /// Time allowed for a whole request: reading its body and producing the response.
    pub request_timeout: Duration,
    /// Disable Nagle's algorithm (small request/response pairs).
    pub nodelay: bool,
    /// Time allowed for a TLS handshake (TLS listeners only), before the request head's deadline
    /// starts.
    pub tls_handshake_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            nodelay: true,
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting, lets open requests finish, and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_tls(listener, router, limits, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is given (every connection; none in plaintext).
pub async fn serve_with_tls(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.config().clone()));
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    // Tells connections still in their TLS handshake (not yet watched by `graceful`) to give up.
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of file descriptors and the like: back off briefly rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(
                max = limits.max_connections,
                "connection limit reached; closing a new connection"
            );
            drop(stream);
            continue;
        };
        if limits.nodelay {
            let _ = stream.set_nodelay(true);
        }
        let service = TowerToHyperService::new(router.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        // Subscribed before the shutdown signal can be sent: a connection that starts being
        // watched after it was sent still sees it.
        let watcher = graceful.watcher();
        let tls = acceptor
            .clone()
            .map(|a| (a, limits.tls_handshake_timeout, stopping_rx.clone()));
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, &builder, service, watcher).await,
                Some((acceptor, deadline, stopping)) => {
                    if let Some(stream) =
                        handshake(acceptor, stream, peer, deadline, stopping).await
                    {
                        serve_connection(stream, &builder, service, watcher).await;
                    }
                }
            }
            drop(permit);
        });
    }
    let _ = stopping_tx.send(true);
    graceful.shutdown().await;
    Ok(())
}

/// The TLS handshake of one connection, within `deadline`; `None` (the connection is closed) if it
/// fails, times out, or the server stops meanwhile.
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    deadline: Duration,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let handshake = tokio::time::timeout(deadline, acceptor.accept(stream));
    tokio::select! {
        done = handshake => match done {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out; closing the connection");
                None
            }
        },
        _ = stopping.wait_for(|s| *s) => None,
    }
}

/// Serves HTTP/1 on one connection (plain or after its TLS handshake) until it closes or the
/// graceful shutdown ends it. No upgrades (websockets): none of Cordon's routes use them.
async fn serve_connection<I>(
    io: I,
    builder: &hyper::server::conn::http1::Builder,
    service: TowerToHyperService<Router>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = watcher.watch(builder.serve_connection(TokioIo::new(io), service));
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
