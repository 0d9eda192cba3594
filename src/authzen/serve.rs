//! Serves the AuthZEN routes on their listener: plain HTTP, or TLS
//! (rustls) with optional client certificates, whose holder's name each
//! connection's requests carry as [`PeerName`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::ConnectInfo;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::{Pdp, PeerName};
use crate::config::AuthzenConfig;

/// Longest a client may take over its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Why the AuthZEN listener cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("fields `authzen.tls_cert`/`authzen.tls_key`: {0}")]
    Identity(String),
    #[error("field `authzen.client_ca`: {0}")]
    ClientCa(String),
    #[error("AuthZEN listener: {0}")]
    Io(#[from] std::io::Error),
}

/// The TLS acceptor `config` asks for, checked before any port is bound;
/// `None` for plain HTTP.
pub fn acceptor(config: &AuthzenConfig) -> Result<Option<TlsAcceptor>, ServeError> {
    let Some((cert, key)) = &config.tls else {
        return Ok(None);
    };
    let certs = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServeError::Identity(e.to_string()))?;
    let key =
        PrivateKeyDer::from_pem_slice(key).map_err(|e| ServeError::Identity(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Identity(e.to_string()))?;
    let builder = match &config.client_ca_pem {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca) {
                let c = c.map_err(|e| ServeError::ClientCa(e.to_string()))?;
                roots
                    .add(c)
                    .map_err(|e| ServeError::ClientCa(e.to_string()))?;
            }
            // Optional: a caller may use a bearer token instead.
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| ServeError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut tls = builder
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Identity(e.to_string()))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(tls))))
}

/// Serves `pdp` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    pdp: Pdp,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let router = pdp.router();
    let Some(acceptor) = tls else {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await?;
        return Ok(());
    };
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!("AuthZEN listener: accept: {e}");
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %addr, "AuthZEN TLS handshake: {e}");
                    return;
                }
                Err(_) => return,
            };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| crate::admin::auth::cert_name(c.as_ref()));
            let service = router
                .layer(Extension(PeerName(peer)))
                .layer(Extension(ConnectInfo(addr)));
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
                .await;
            if let Err(e) = served {
                tracing::debug!(peer = %addr, "AuthZEN connection: {e}");
            }
        });
    }
}
