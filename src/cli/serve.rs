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
use crate::config::{Config, LogFormat, ProcessEnv};
use crate::metrics::Metrics;
use crate::policy::{PolicyStore, watch};
use crate::telemetry::Telemetry;
use std::time::Duration;

pub fn run(config_path: Option<&Path>, log_format: Option<LogFormat>) -> ExitCode {
    let config = match Config::load(config_path, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("countersign: {}", super::config_problem(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // INVARIANT: the filter was validated by Config::load.
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log_format.unwrap_or(config.log_format) {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            logs.with_ansi(ansi).init();
        }
    }

    let probes = match config.mapper.probes() {
        Ok(p) => p,
        Err(e) => return config_error(format!("{}: {e}", config.origin)),
    };
    if !config.policy_dir.is_dir() {
        eprintln!(
            "countersign: cannot load policies: `{}` does not exist or is not a directory (set `policy.dir` in the configuration, or COUNTERSIGN_POLICY_DIR, to the directory of your *.cedar files)",
            config.policy_dir.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    // A broken set does not stop the sidecar: it answers every check with a
    // denial, reports not ready, and recovers when a fixed set is saved.
    let (store, problem) = PolicyStore::open_or_deny_all(&config.policy_dir, probes);
    let store = Arc::new(store);
    if let Some(e) = problem {
        tracing::error!(
            policy_dir = %config.policy_dir.display(),
            "no valid policy set, denying every request and reporting not ready until the policies are fixed: {e}"
        );
    }
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
    let metrics_listener = match config.metrics_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} (metrics)"))?,
        ),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
    let telemetry = Telemetry::from_env().context("OpenTelemetry")?;
    let metrics = Metrics::new(telemetry.as_ref().map(Telemetry::dropped));
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
        %metrics_addr,
        traces = if telemetry.is_some() { "otlp" } else { "off" },
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
    if let Some(l) = metrics_listener {
        let state = crate::server::Probes {
            metrics: metrics.clone(),
            policies: store.clone(),
            approvals: approvals.clone(),
        };
        tokio::spawn(crate::server::serve_probes(
            l,
            state,
            stopped(stop_rx.clone()),
        ));
    }
    tokio::spawn(sweep(
        approvals.clone(),
        store.clone(),
        telemetry.clone(),
        metrics.clone(),
    ));

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
            .with_notifier(notifier.clone())
            .with_telemetry(telemetry.clone(), metrics.clone());
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
        .with_notifier(notifier)
        .with_telemetry(telemetry.clone())
        .with_metrics(metrics);
    crate::server::serve(listener, authz, config.shutdown_grace, stopped(stop_rx)).await?;
    if let Some(task) = admin_task {
        match tokio::time::timeout(config.shutdown_grace, task).await {
            Ok(Ok(res)) => res?,
            Ok(Err(e)) => tracing::warn!("admin API task: {e}"),
            Err(_) => tracing::warn!("admin API did not drain within the grace period"),
        }
    }
    if let Some(t) = &telemetry {
        t.shutdown(SPAN_FLUSH).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Longest shutdown waits for queued spans to reach the collector.
const SPAN_FLUSH: Duration = Duration::from_secs(3);
/// How often requests past their deadline are marked expired.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Marks expired approval requests (each recorded once, by whichever
/// sidecar sweeps first) and trims the audit stream by age. Only while the
/// policy set has guarded policies, so that a sidecar without approvals
/// never needs Redis.
async fn sweep(
    approvals: Arc<RedisStore>,
    policies: Arc<PolicyStore>,
    telemetry: Option<Telemetry>,
    metrics: Metrics,
) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if policies.current().guards.is_empty() {
            continue;
        }
        let (expired, errors) = approvals.sweep().await;
        if let Some(e) = errors.first() {
            metrics.redis_error();
            tracing::debug!(shards = errors.len(), "expiry sweep: {e}");
        }
        for id in expired {
            metrics.approval_event("expired");
            tracing::info!(approval = %id, "approval request expired");
            if let Some(t) = &telemetry
                && let Ok(Some(a)) = approvals.get(&id).await
            {
                let opened_by = crate::telemetry::parse_traceparent(&a.opened_by);
                t.approval_event(
                    "expired",
                    None,
                    opened_by.as_ref(),
                    crate::telemetry::approval_attributes(&a),
                );
            }
        }
    }
}
