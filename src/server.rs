//! Serves ext_authz and `grpc.health.v1` on one listener; drains on shutdown.

use std::future::Future;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

use crate::authz::AuthzService;

/// Name under which health reports the ext_authz service.
pub const AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves until `shutdown` resolves, then: health NOT_SERVING, stop taking
/// new streams, let in-flight checks finish for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    authz: AuthzService,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status(AUTHZ_SERVICE, ServingStatus::Serving)
        .await;

    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(AuthorizationServer::new(authz))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = drain_rx.await;
        });
    tokio::pin!(server);
    tokio::select! {
        res = &mut server => return res.map_err(Into::into),
        () = shutdown => {}
    }
    tracing::info!(
        grace_seconds = grace.as_secs(),
        "shutting down: NOT_SERVING, draining in-flight checks"
    );
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    reporter
        .set_service_status(AUTHZ_SERVICE, ServingStatus::NotServing)
        .await;
    let _ = drain_tx.send(());
    match tokio::time::timeout(grace, server).await {
        Ok(res) => res.map_err(Into::into),
        Err(_) => {
            tracing::warn!("grace period over; closing the remaining connections");
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        // If the handler cannot be installed, wait on SIGTERM alone rather
        // than shutting down at once.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
