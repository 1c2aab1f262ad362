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
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            nodelay: true,
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
    let router = router.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
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
        // No upgrades (websockets): none of Cordon's routes use them.
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    graceful.shutdown().await;
    Ok(())
}
