//! The HTTP accept loop: hyper with a header-read timeout (slow clients are cut off), a handling
//! timeout on every request, and graceful shutdown (in-flight requests finish, then the loop returns).
//!
//! `axum::serve` sets no header-read timeout, so a client trickling its headers would hold a
//! connection for ever; hyper's own connection builder with a timer does.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
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
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
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
