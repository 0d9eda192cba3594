//! Serves ext_authz and `grpc.health.v1` on one listener, the admin API
//! over TLS, and the probes; drains on shutdown. [`run`] wires a whole
//! sidecar from a configuration onto listeners the caller bound.

pub mod check_wire;
mod sidecar;

pub use sidecar::{Listeners, Prepared, StartError, prepare, run};

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::admin::AdminService;
use crate::admin::pb::approvals_server::ApprovalsServer;
use crate::authz::AuthzService;
use crate::config::AdminConfig;

/// Name under which health reports the ext_authz service.
pub const AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("gRPC reflection: {0}")]
    Reflection(String),
}

/// Serves until `shutdown` resolves, then: health NOT_SERVING, end holds,
/// stop taking new streams, let in-flight checks finish for at most `grace`.
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
    let authz = std::sync::Arc::new(authz);
    let holds = std::sync::Arc::clone(&authz);
    let server = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(check_wire::CheckServer(authz))
        .serve_with_incoming_shutdown(incoming(listener), async {
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
    // Held checks answer now, with their approval id and token.
    holds.gate().drain();
    let _ = drain_tx.send(());
    match tokio::time::timeout(grace, server).await {
        Ok(res) => res.map_err(Into::into),
        Err(_) => {
            tracing::warn!("grace period over; closing the remaining connections");
            Ok(())
        }
    }
}

/// Accepted connections with Nagle's algorithm off, as tonic's own `serve`
/// sets it: with it on, a small answer can wait out the peer's delayed ACK
/// (about 40 ms) before it is sent.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The admin API's TLS: the server identity, and client certificates from
/// the configured CA when there is one (optional, so that bearer tokens work
/// too; the service refuses calls that bring neither).
pub fn admin_tls(cfg: &AdminConfig) -> Result<ServerTlsConfig, ServerError> {
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(&cfg.cert_pem, &cfg.key_pem));
    if let Some(ca) = &cfg.client_ca_pem {
        tls = tls
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(true);
    }
    // Building a server checks the certificate and key now, before any port
    // is bound.
    tonic::transport::Server::builder().tls_config(tls.clone())?;
    Ok(tls)
}

/// Serves the approvers' API over TLS, with gRPC reflection, until
/// `shutdown` resolves; in-flight calls finish first.
pub async fn serve_admin(
    listener: TcpListener,
    admin: AdminService,
    tls: ServerTlsConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::admin::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    tonic::transport::Server::builder()
        .tls_config(tls)?
        .add_service(reflection)
        .add_service(ApprovalsServer::new(admin))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await?;
    Ok(())
}

/// What `/metrics` and `/readyz` read.
#[derive(Clone)]
pub struct Probes {
    pub metrics: crate::metrics::Metrics,
    pub policies: std::sync::Arc<crate::policy::PolicyStore>,
    pub approvals: std::sync::Arc<dyn crate::approval::ApprovalStore>,
}

/// Plain HTTP: `/metrics` (Prometheus text), `/healthz` (the process
/// answers), `/readyz` (a valid policy set is in force and, when policies
/// ask for approvals, Redis answers).
pub async fn serve_probes(
    listener: TcpListener,
    probes: Probes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(probes);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!("metrics endpoint stopped: {e}");
    }
}

async fn metrics(
    axum::extract::State(p): axum::extract::State<Probes>,
) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        p.metrics.render(&p.policies, p.approvals.as_ref()).await,
    )
}

async fn ready(
    axum::extract::State(p): axum::extract::State<Probes>,
) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    if !p.policies.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no valid policy set is loaded; every check is denied (see the log)\n"
                .into(),
        );
    }
    if !p.policies.current().guards.is_empty()
        && let Err(e) = p.approvals.ping().await
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: policies ask for approvals but {e}\n"),
        );
    }
    (StatusCode::OK, "ready\n".into())
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
