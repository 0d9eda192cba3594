//! `countersign serve`: load and validate everything, bind, serve.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;

use super::EXIT_CONFIG;
use crate::admin::AdminService;
use crate::admin::auth::Authenticator;
use crate::approval::RedisStore;
use crate::authz::{AuthzService, AuthzSettings};
use crate::config::{Config, ProcessEnv};
use crate::policy::{PolicyStore, watch};

pub fn run(config_path: Option<&Path>) -> ExitCode {
    let config = match Config::load(config_path, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => return config_error(e),
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
        Err(e) => return config_error(format!("{}: {e}", config.origin)),
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
    let approvals = match RedisStore::new(config.store.clone()) {
        Ok(s) => Arc::new(s),
        Err(e) => return config_error(format!("{}: field `redis.url`: {e}", config.origin)),
    };
    let admin_tls = match config
        .admin
        .as_ref()
        .map(crate::server::admin_tls)
        .transpose()
    {
        Ok(t) => t,
        Err(e) => {
            return config_error(format!(
                "{}: fields `admin.tls_cert`/`admin.tls_key`/`admin.client_ca`: {e}",
                config.origin
            ));
        }
    };
    let runtime = match super::runtime(true) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(serve(config, store, approvals, admin_tls)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("countersign: invalid configuration: {e}");
    ExitCode::from(EXIT_CONFIG)
}

async fn serve(
    config: Config,
    store: Arc<PolicyStore>,
    approvals: Arc<RedisStore>,
    admin_tls: Option<tonic::transport::ServerTlsConfig>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let admin_listener = match &config.admin {
        Some(a) => {
            let l = tokio::net::TcpListener::bind(a.listen)
                .await
                .with_context(|| format!("cannot listen on {} (admin API)", a.listen))?;
            Some(l)
        }
        None => None,
    };
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
        guarded = loaded.guards.len(),
        policy_dir = %store.dir().display(),
        "countersign listening"
    );

    let notifier = crate::approval::notify::Notifier::start(config.webhooks.clone());
    // One signal stops both servers.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    tokio::spawn(async move {
        crate::server::shutdown_signal().await;
        let _ = stop_tx.send(());
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<()>| async move {
        let _ = rx.changed().await;
    };

    let admin_task = match (admin_listener, admin_tls, &config.admin) {
        (Some(listener), Some(tls), Some(cfg)) => {
            tracing::info!(admin_addr = %listener.local_addr()?, approvers = cfg.approvers.len(), "admin API listening (TLS)");
            let service = AdminService::new(
                approvals.clone(),
                store.clone(),
                Authenticator::new(cfg.approvers.clone()),
                config.mapper.identity.user_type.clone(),
                config.mapper.identity.group_type.clone(),
            )
            .with_notifier(notifier.clone());
            Some(tokio::spawn(crate::server::serve_admin(
                listener,
                service,
                tls,
                stopped(stop_rx.clone()),
            )))
        }
        _ => {
            tracing::info!(
                "admin API off: set admin.tls_cert and admin.tls_key to approve requests"
            );
            None
        }
    };

    let settings = AuthzSettings::from_config(&config);
    let authz = AuthzService::new(Arc::new(config.mapper), store, approvals, settings)
        .with_notifier(notifier);
    crate::server::serve(listener, authz, config.shutdown_grace, stopped(stop_rx)).await?;
    if let Some(task) = admin_task {
        match tokio::time::timeout(config.shutdown_grace, task).await {
            Ok(Ok(res)) => res?,
            Ok(Err(e)) => tracing::warn!("admin API task: {e}"),
            Err(_) => tracing::warn!("admin API did not drain within the grace period"),
        }
    }
    tracing::info!("stopped");
    Ok(())
}
