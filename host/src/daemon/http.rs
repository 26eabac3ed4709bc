//! The daemon's HTTP/1.1 connections: accepted from a listener (plain TCP,
//! or TLS after its handshake), each served by hyper with a deadline for
//! a request's headers (a client that sends them a byte at a time, to hold
//! connections open, is cut off), the peer's address handed to the routes,
//! and a graceful end: at shutdown no connection is accepted, requests in
//! progress finish (for at most `drain`), idle connections close.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tower_layer::Layer as _;

use super::tls::Peer;

/// Serve `app` on the connections `listener` accepts until `shutdown`
/// resolves; then wait (at most `drain`) for the connections to finish.
pub(super) async fn serve<L>(
    mut listener: L,
    app: Router,
    header_timeout: Duration,
    drain: Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()>
where
    L: Listener<Addr = SocketAddr>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let service =
            TowerToHyperService::new(axum::Extension(ConnectInfo(Peer(addr))).layer(app.clone()));
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(io), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%addr, "connection ended: {e}");
            }
        });
    }
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open {drain:?} after shutdown began: closing them");
    }
    Ok(())
}
