//! A whole sidecar from a validated configuration: policies, the approval
//! store, the gate and its front doors (ext_authz, the admin API, AuthZEN,
//! Slack), notifications, probes, the expiry sweep. [`prepare`] checks
//! everything before a port is bound; [`Prepared::serve`] runs on listeners
//! the caller bound (tests bind port 0), until `shutdown` resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::ServerTlsConfig;

use crate::admin::AdminService;
use crate::admin::auth::Authenticator;
use crate::approval::approvers::Approvers;
use crate::approval::{ApprovalStore, Lifecycle, RedisStore, StoreError, redacted_url};
use crate::audit::EventSink;
use crate::audit::record::Recorder;
use crate::authz::{AuthzService, AuthzSettings};
use crate::config::Config;
use crate::gate::{Gate, GateSettings};
use crate::metrics::Metrics;
use crate::policy::{PolicyStore, watch};
use crate::request::RouteCoverage;
use crate::telemetry::Telemetry;

/// Why the sidecar did not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration problem (exit code 2), in full.
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}{what}: {source}")]
    Listen {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot watch `{dir}`: {source}")]
    Watch { dir: String, source: notify::Error },
    #[error("OpenTelemetry: {0}")]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    #[error(transparent)]
    Server(#[from] super::ServerError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The sockets a sidecar serves on.
#[derive(Debug)]
pub struct Listeners {
    pub authz: TcpListener,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub probes: Option<TcpListener>,
    pub admin: Option<TcpListener>,
    /// The AuthZEN PDP.
    pub authzen: Option<TcpListener>,
    /// Slack's interactivity endpoint.
    pub slack: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses the configuration names.
    pub async fn bind(config: &Config) -> Result<Self, StartError> {
        let bind = async |addr: SocketAddr, what: &'static str| {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, what, source })
        };
        Ok(Self {
            authz: bind(config.listen, "").await?,
            probes: match config.metrics_listen {
                Some(a) => Some(bind(a, " (metrics)").await?),
                None => None,
            },
            admin: match &config.admin {
                Some(a) => Some(bind(a.listen, " (admin API)").await?),
                None => None,
            },
            authzen: match &config.authzen {
                Some(a) => Some(bind(a.listen, " (AuthZEN)").await?),
                None => None,
            },
            slack: match &config.slack {
                Some(s) => Some(bind(s.listen, " (Slack interactivity)").await?),
                None => None,
            },
        })
    }
}

/// A configuration with everything it names loaded and checked.
pub struct Prepared {
    pub config: Config,
    policies: Arc<PolicyStore>,
    store: Arc<dyn ApprovalStore>,
    admin_tls: Option<ServerTlsConfig>,
    authzen_tls: Option<tokio_rustls::TlsAcceptor>,
    /// `serve --record`: its file is opened before any port is bound.
    recorder: Option<Arc<Recorder>>,
}

/// Loads the policies and checks the store URL and the admin TLS material.
/// A broken policy set does not stop the sidecar: it answers every check
/// with a denial, reports not ready, and recovers when a fixed set is saved.
pub fn prepare(config: Config) -> Result<Prepared, StartError> {
    let invalid = |e: String| StartError::Config(format!("invalid configuration: {e}"));
    let probes = config
        .mapper
        .probes()
        .map_err(|e| invalid(format!("{}: {e}", config.origin)))?;
    // Absolute, so that every message says where it looked whatever the
    // working directory was.
    let policy_dir =
        std::path::absolute(&config.policy_dir).unwrap_or_else(|_| config.policy_dir.clone());
    if !policy_dir.is_dir() {
        return Err(StartError::Config(format!(
            "cannot load policies: `{}` does not exist or is not a directory (set `policy.dir` in the configuration, or COUNTERSIGN_POLICY_DIR, to the directory of your *.cedar files)",
            policy_dir.display()
        )));
    }
    let (policies, problem) = PolicyStore::open_or_deny_all(&policy_dir, probes);
    if let Some(e) = problem {
        tracing::error!(
            policy_dir = %policy_dir.display(),
            "no valid policy set, denying every request and reporting not ready until the policies are fixed: {e}"
        );
    }
    for w in &policies.current().warnings {
        tracing::warn!("policy warning: {w}");
    }
    let store = RedisStore::new(config.store.clone())
        .map_err(|e| invalid(format!("{}: field `redis.url`: {e}", config.origin)))?;
    let admin_tls = config
        .admin
        .as_ref()
        .map(super::admin_tls)
        .transpose()
        .map_err(|e| {
            invalid(format!(
                "{}: fields `admin.tls_cert`/`admin.tls_key`/`admin.client_ca`: {e}",
                config.origin
            ))
        })?;
    let authzen_tls = match &config.authzen {
        Some(a) => {
            crate::authzen::acceptor(a).map_err(|e| invalid(format!("{}: {e}", config.origin)))?
        }
        None => None,
    };
    let policies = Arc::new(policies);
    let recorder = match &config.record {
        Some(r) => {
            let recorder =
                Recorder::open(r, policies.clone(), &config.mapper, &config.token_header)
                    .map_err(|e| StartError::Config(e.to_string()))?;
            Some(Arc::new(recorder))
        }
        None => None,
    };
    Ok(Prepared {
        config,
        policies,
        store: Arc::new(store),
        admin_tls,
        authzen_tls,
        recorder,
    })
}

/// Prepares and serves: the whole sidecar in this process.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    prepare(config)?.serve(listeners, shutdown).await
}

/// Longest shutdown waits for queued spans to reach the collector.
const SPAN_FLUSH: Duration = Duration::from_secs(3);
/// How often requests past their deadline are marked expired.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

impl Prepared {
    /// Serves until `shutdown` resolves, then drains.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let Prepared {
            config,
            policies,
            store,
            admin_tls,
            authzen_tls,
            recorder,
        } = self;
        if let Some(r) = &config.record {
            tracing::info!(file = %r.path.display(), rate = r.rate, "recording a sample of checks (redacted) for `policy diff`");
        }
        let addr = listeners.authz.local_addr()?;
        let metrics_addr = listeners
            .probes
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or_else(|| "off".to_owned(), |a| a.to_string());
        let telemetry = Telemetry::from_env()?;
        let metrics = Metrics::new(telemetry.as_ref().map(Telemetry::dropped));
        let _watch = if config.watch_policies {
            Some(
                watch::spawn(policies.clone()).map_err(|source| StartError::Watch {
                    dir: policies.dir().display().to_string(),
                    source,
                })?,
            )
        } else {
            None
        };
        let loaded = policies.current();
        let coverage =
            RouteCoverage::of(&config.mapper, &loaded).with_authzen(config.authzen.is_some());
        tracing::info!(
            %addr,
            %metrics_addr,
            traces = if telemetry.is_some() { "otlp" } else { "off" },
            config = %config.origin,
            policies = loaded.set.policies().count(),
            guarded = loaded.guards.len(),
            policy_dir = %policies.dir().display(),
            routes = coverage.routes,
            mcp_endpoints = config.mapper.mcp.len(),
            guarded_actions = %list_or_none(&coverage.guarded),
            "countersign listening"
        );
        for w in coverage.warnings(&config.origin) {
            tracing::warn!("{w}");
        }
        if !loaded.guards.is_empty() {
            // Said once, in the log, rather than only on `/readyz`: the
            // store connects lazily, so nothing else would show it before
            // the first guarded call is refused.
            tokio::spawn(warn_if_unreachable(
                store.clone(),
                redacted_url(&config.store.url),
            ));
        }
        crate::policy::rollout::announce(&loaded, &config.mapper.in_shadow());
        let mut channels: Vec<Arc<dyn crate::notifications::Channel>> = config
            .webhooks
            .iter()
            .map(|w| Arc::new(w.clone()) as Arc<dyn crate::notifications::Channel>)
            .collect();
        let slack = config
            .slack
            .as_ref()
            .map(|s| crate::slack::channel(s, store.clone(), config.store.retention));
        if let Some(s) = &slack {
            channels.push(s.clone());
        }
        crate::notifications::outbox::start(
            store.clone(),
            channels,
            metrics.clone(),
            config.notifications,
        )
        .await;
        let sink = EventSink::new(telemetry.clone(), metrics.clone());
        let approvers = Approvers::from_config(policies.clone(), &config);
        let approvals = Lifecycle::new(store.clone(), sink, approvers);

        // One signal stops every server.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(());
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<()>| async move {
            let _ = rx.changed().await;
        };
        if let Some(l) = listeners.probes {
            let state = super::Probes {
                metrics: metrics.clone(),
                policies: policies.clone(),
                approvals: store.clone(),
            };
            tokio::spawn(super::serve_probes(l, state, stopped(stop_rx.clone())));
        }
        tokio::spawn(sweep(approvals.clone(), policies.clone()));

        let admin_task = match (listeners.admin, admin_tls, &config.admin) {
            (Some(listener), Some(tls), Some(cfg)) => {
                tracing::info!(admin_addr = %listener.local_addr()?, approvers = cfg.approvers.len(), "admin API listening (TLS)");
                let mut auth = Authenticator::new(cfg.approvers.clone());
                if let Some(oidc) = &cfg.oidc {
                    let idp = crate::idp::Verifier::start(oidc.clone())
                        .map_err(|e| StartError::Config(format!("admin.oidc: {e}")))?;
                    tracing::info!(issuer = %oidc.issuer, "admin API accepts the identity provider's tokens");
                    if oidc.group_prefix.is_empty() && oidc.groups.is_empty() {
                        tracing::warn!(
                            "every group in the identity provider's tokens counts as an approver group: where users can create groups there, set admin.oidc.group_prefix or map groups in [admin.oidc.groups]"
                        );
                    }
                    auth = auth.with_identity_provider(std::sync::Arc::new(idp));
                }
                let service = AdminService::new(approvals.clone(), auth);
                Some(tokio::spawn(super::serve_admin(
                    listener,
                    service,
                    tls,
                    stopped(stop_rx.clone()),
                )))
            }
            _ if config.slack.is_some() => {
                tracing::info!(
                    "admin API off: approvers decide in Slack only (set admin.tls_cert and admin.tls_key for the countersign CLI)"
                );
                None
            }
            _ => {
                tracing::info!(
                    "admin API off: set admin.tls_cert and admin.tls_key to approve requests"
                );
                None
            }
        };

        let slack_task = match (listeners.slack, &config.slack, slack) {
            (Some(listener), Some(cfg), Some(channel)) => {
                tracing::info!(
                    slack_addr = %listener.local_addr()?,
                    path = %cfg.path,
                    users = cfg.users.len(),
                    "Slack interactivity endpoint listening (plain HTTP: put TLS in front)"
                );
                let endpoint = crate::slack::endpoint(cfg, approvals.clone(), channel);
                Some(tokio::spawn(crate::slack::interact::serve(
                    listener,
                    endpoint,
                    stopped(stop_rx.clone()),
                )))
            }
            (None, Some(_), _) => {
                tracing::warn!(
                    "[slack] is configured but no listener was given for its interactivity endpoint: requests are posted, clicks are not heard"
                );
                None
            }
            _ => None,
        };

        let gate = Gate::new(
            policies.clone(),
            approvals.clone(),
            GateSettings::from_config(&config),
        );
        let authzen_task = match (listeners.authzen, &config.authzen) {
            (Some(listener), Some(cfg)) => {
                let bound = listener.local_addr()?;
                let pdp =
                    crate::authzen::Pdp::new(gate.clone(), policies, approvals, cfg.clone(), bound);
                tracing::info!(
                    authzen_addr = %bound,
                    url = %pdp.base(),
                    tls = authzen_tls.is_some(),
                    clients = cfg.clients.len(),
                    "AuthZEN PDP listening"
                );
                Some(tokio::spawn(crate::authzen::serve(
                    listener,
                    pdp,
                    authzen_tls,
                    stopped(stop_rx.clone()),
                )))
            }
            _ => None,
        };
        let authz = AuthzService::new(
            Arc::new(config.mapper),
            gate,
            AuthzSettings {
                jwt_metadata_key: config.jwt_metadata_key,
                principal_header: config.principal_header,
                token_header: config.token_header,
            },
        )
        .with_recorder(recorder);
        super::serve(
            listeners.authz,
            authz,
            config.shutdown_grace,
            stopped(stop_rx),
        )
        .await?;
        if let Some(task) = admin_task {
            match tokio::time::timeout(config.shutdown_grace, task).await {
                Ok(Ok(res)) => res?,
                Ok(Err(e)) => tracing::warn!("admin API task: {e}"),
                Err(_) => tracing::warn!("admin API did not drain within the grace period"),
            }
        }
        if let Some(task) = authzen_task {
            match tokio::time::timeout(config.shutdown_grace, task).await {
                Ok(Ok(Err(e))) => tracing::warn!("{e}"),
                Ok(Ok(Ok(()))) => {}
                Ok(Err(e)) => tracing::warn!("AuthZEN task: {e}"),
                Err(_) => tracing::warn!("AuthZEN PDP did not drain within the grace period"),
            }
        }
        if let Some(task) = slack_task {
            match tokio::time::timeout(config.shutdown_grace, task).await {
                Ok(Ok(Err(e))) => tracing::warn!("Slack interactivity endpoint: {e}"),
                Ok(Ok(Ok(()))) => {}
                Ok(Err(e)) => tracing::warn!("Slack interactivity task: {e}"),
                Err(_) => tracing::warn!(
                    "Slack interactivity endpoint did not drain within the grace period"
                ),
            }
        }
        if let Some(t) = &telemetry {
            t.shutdown(SPAN_FLUSH).await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Pings the approval store once; `url` has its credentials redacted.
async fn warn_if_unreachable(store: Arc<dyn ApprovalStore>, url: String) {
    if let Err(e) = store.ping().await {
        let why = match e {
            StoreError::Unavailable(why) => why,
            other => other.to_string(),
        };
        tracing::warn!(
            "approval store at `{url}` is unreachable: {why}; guarded calls are refused until it is reachable"
        );
    }
}

/// `a,b,c`, or `none`: one log field without spaces.
fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(",")
    }
}

/// Expires approval requests past their deadline (each recorded once, by
/// whichever sidecar sweeps first) and trims the audit stream by age. Only
/// while the policy set has guarded policies, so that a sidecar without
/// approvals never needs Redis.
async fn sweep(approvals: Lifecycle, policies: Arc<PolicyStore>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if policies.current().guards.is_empty() {
            continue;
        }
        let errors = approvals.expire().await;
        if let Some(e) = errors.first() {
            approvals.sink().metrics().redis_error();
            tracing::debug!(shards = errors.len(), "expiry sweep: {e}");
        }
    }
}
