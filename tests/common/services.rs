//! countersign's services built in process, as `countersign serve` builds
//! them: the only place the tests construct the approval store, the policy
//! store, the ext_authz service and the admin service (and its TLS), so that a change to
//! their constructors is fixed here once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use countersign::admin::AdminService;
use countersign::admin::auth::Authenticator;
use countersign::approval::approvers::Approvers;
use countersign::approval::{ApprovalStore, Lifecycle, RedisStore, StoreConfig};
use countersign::audit::EventSink;
use countersign::authz::{AuthzService, AuthzSettings};
use countersign::config::{AdminConfig, ApproverConfig, Config};
use countersign::gate::{Gate, GateSettings};
use countersign::policy::PolicyStore;
use tonic::transport::ServerTlsConfig;

use super::tls::Pki;

/// The embedded example configuration (`src/default-config.toml`), with no
/// environment overrides.
pub fn example_config() -> Config {
    Config::load(None, &HashMap::new()).unwrap()
}

/// The example policies of `policies/`, checked against `config`'s routes.
pub fn example_policies(config: &Config) -> PolicyStore {
    PolicyStore::open(
        &super::repo().join("policies"),
        config.mapper.probes().unwrap(),
    )
    .unwrap()
}

/// Store settings for one Redis node at `url`, keys under `prefix`: 2 s per
/// operation, decided requests kept an hour, an audit guard of 10,000
/// entries and no age limit, 20 pending requests per principal. A test
/// that needs other figures says which with `StoreConfig { timeout: ..., ..store_config(url, prefix) }`.
pub fn store_config(url: &str, prefix: &str) -> StoreConfig {
    StoreConfig {
        url: url.into(),
        cluster: false,
        replica_acks: 0,
        prefix: prefix.into(),
        timeout: Duration::from_secs(2),
        retention: Duration::from_secs(3600),
        audit_max_len: 10_000,
        audit_max_age: None,
        max_pending_per_principal: countersign::approval::store::DEFAULT_MAX_PENDING_PER_PRINCIPAL,
    }
}

/// The Redis approval store with `config` (connections are made lazily).
pub fn redis_store(config: StoreConfig) -> RedisStore {
    RedisStore::new(config).unwrap()
}

/// The ext_authz front door over a gate on `store`, as `serve` wires it.
pub fn authz_service(
    config: Config,
    policies: Arc<PolicyStore>,
    store: Arc<dyn ApprovalStore>,
    sink: EventSink,
) -> AuthzService {
    authz_service_with(config, policies, store, sink, |_| {})
}

/// As [`authz_service`], with the gate's settings changed by `tune`.
pub fn authz_service_with(
    config: Config,
    policies: Arc<PolicyStore>,
    store: Arc<dyn ApprovalStore>,
    sink: EventSink,
    tune: impl FnOnce(&mut GateSettings),
) -> AuthzService {
    let settings = AuthzSettings::from_config(&config);
    let mut gate_settings = GateSettings::from_config(&config);
    tune(&mut gate_settings);
    let approvers = Approvers::from_config(policies.clone(), &config);
    let gate = Gate::new(
        policies,
        Lifecycle::new(store, sink, approvers),
        gate_settings,
    );
    AuthzService::new(Arc::new(config.mapper), gate, settings)
}

/// The approval lifecycle on `store` with the approver rules `serve` uses
/// for the example configuration and `policies`.
pub fn lifecycle(
    policies: Arc<PolicyStore>,
    store: Arc<dyn ApprovalStore>,
    sink: EventSink,
) -> Lifecycle {
    let approvers = Approvers::from_config(policies, &example_config());
    Lifecycle::new(store, sink, approvers)
}

/// The approvers' service for `approvers`, on [`lifecycle`].
pub fn admin_service(
    store: Arc<dyn ApprovalStore>,
    policies: Arc<PolicyStore>,
    approvers: Vec<ApproverConfig>,
    sink: EventSink,
) -> AdminService {
    AdminService::new(
        lifecycle(policies, store, sink),
        Authenticator::new(approvers),
    )
}

/// The admin API's TLS: `pki`'s server certificate, client certificates
/// from `pki`'s CA.
pub fn admin_tls(pki: &Pki, approvers: Vec<ApproverConfig>) -> ServerTlsConfig {
    let (cert, key) = pki.server();
    let config = AdminConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert_pem: std::fs::read(cert).unwrap(),
        key_pem: std::fs::read(key).unwrap(),
        client_ca_pem: Some(std::fs::read(pki.ca()).unwrap()),
        approvers,
        oidc: None,
    };
    countersign::server::admin_tls(&config).unwrap()
}

/// An approver named `name` in `groups`; with `token`, that bearer token
/// authenticates it too (the configuration keeps its SHA-256).
pub fn approver(name: &str, groups: &[&str], token: Option<&str>) -> ApproverConfig {
    use sha2::Digest;
    ApproverConfig {
        name: name.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        token_sha256: token.map(|t| hex::encode(sha2::Sha256::digest(t.as_bytes()))),
    }
}

/// The example services on `store`, every approval event delivered to
/// `channels` (the outbox started as `serve` starts it), and `dora`
/// (`data-owners`, bearer token `dora-token`) as the approver.
pub struct Notifying {
    pub authz: AuthzService,
    pub admin: AdminService,
}

impl Notifying {
    pub async fn start(
        store: Arc<dyn ApprovalStore>,
        channels: Vec<Arc<dyn countersign::notifications::Channel>>,
    ) -> Notifying {
        countersign::notifications::outbox::start(
            store.clone(),
            channels,
            countersign::metrics::Metrics::default(),
            Default::default(),
        )
        .await;
        let config = example_config();
        let policies = Arc::new(example_policies(&config));
        let sink = EventSink::new(None, Default::default());
        let authz = authz_service(config, policies.clone(), store.clone(), sink.clone());
        let approvers = vec![approver("dora", &["data-owners"], Some("dora-token"))];
        let admin = admin_service(store, policies, approvers, sink);
        Notifying { authz, admin }
    }

    /// `dora` approves `id`.
    pub async fn approve(&self, id: &str, reason: &str) {
        use countersign::admin::pb::approvals_server::Approvals;
        let mut req = tonic::Request::new(super::admin::decide(id, reason));
        req.metadata_mut()
            .insert("authorization", "Bearer dora-token".parse().unwrap());
        self.admin.approve(req).await.unwrap();
    }
}
