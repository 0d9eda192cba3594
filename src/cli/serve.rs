//! `countersign serve`: load and validate everything, bind, serve.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use tracing_subscriber::EnvFilter;

use super::EXIT_CONFIG;
use crate::authz::{AuthzService, AuthzSettings};
use crate::config::{Config, ProcessEnv};
use crate::policy::{PolicyStore, watch};

pub fn run(config_path: Option<&Path>) -> ExitCode {
    let config = match Config::load(config_path, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("countersign: invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // INVARIANT: the filter was validated by Config::load.
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();

    let probes = match config.mapper.probes() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("countersign: invalid configuration: {}: {e}", config.origin);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let store = match PolicyStore::open(&config.policy_dir, probes) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!(
                "countersign: cannot load policies from `{}`: {e}",
                config.policy_dir.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for w in &store.current().warnings {
        tracing::warn!("policy warning: {w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("countersign: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config, store)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, store: Arc<PolicyStore>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let _watch = if config.watch_policies {
        Some(
            watch::spawn(store.clone())
                .with_context(|| format!("cannot watch `{}`", store.dir().display()))?,
        )
    } else {
        None
    };
    let loaded = store.current();
    tracing::info!(
        %addr,
        config = %config.origin,
        policies = loaded.set.policies().count(),
        policy_dir = %store.dir().display(),
        "countersign listening"
    );
    let settings = AuthzSettings {
        jwt_metadata_key: config.jwt_metadata_key.clone(),
        principal_header: config.principal_header.clone(),
    };
    let authz = AuthzService::new(Arc::new(config.mapper), store, settings);
    crate::server::serve(
        listener,
        authz,
        config.shutdown_grace,
        crate::server::shutdown_signal(),
    )
    .await?;
    tracing::info!("stopped");
    Ok(())
}
