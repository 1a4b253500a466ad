//! The HTTP accept loop: hyper with a header-read timeout (slow clients are cut off), a handling
//! timeout on every request, and graceful shutdown (in-flight requests finish, then the loop returns).
//!
//! `axum::serve` sets no header-read timeout, so a client trickling its headers would hold a
//! connection for ever; hyper's own connection builder with a timer does. It serves HTTP/1.1 only:
//! HTTP/2 has no such timeout in hyper, and a cleartext HTTP/2 connection is refused.

use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `app` on `listener` until `shutdown`, then waits up to `timeout` for open requests.
/// `timeout` bounds reading a request's headers and handling it.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let app = app.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        timeout,
    ));
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only. hyper's HTTP/2 server (compiled in for reqwest's client) has no header-read
    // timeout, so a cleartext HTTP/2 client could hold a connection open by sending its preface or
    // headers slowly. nginx, Prometheus and browsers behind nginx all speak HTTP/1.1 to us. (The
    // auto builder's `http1_only` is ignored by `serve_connection_with_upgrades`: hence hyper's own.)
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(true);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // Small JSON answers: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("http server stopped"),
        _ = tokio::time::sleep(timeout) => tracing::warn!("http connections still open after the grace period; closing"),
    }
}
