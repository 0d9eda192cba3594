//! Hardening (issue 6, item 10): who cannot reach the approvers' API (no
//! credentials, a certificate from another CA, TLS below 1.2), and a Redis
//! user limited to countersign's keys and commands, as docs/redis-acl.md
//! documents it, is enough to run the whole approval story.
//!
//! Layout: `credentials` (no certificate, no token), `tls` (a foreign CA,
//! TLS versions) with `tls_wire` (TLS spoken by hand), `redis_acl` (the
//! documented Redis user) with `store_operations` (everything the store
//! does), `approval_story` (the README's story as that user).

#[path = "../common/mod.rs"]
mod common;

mod approval_story;
mod credentials;
mod redis_acl;
mod store_operations;
mod tls;
mod tls_wire;

use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cedar_policy::EntityTypeName;
use common::Redis;
use common::tls::Pki;
use countersign::admin::AdminService;
use countersign::admin::auth::Authenticator;
use countersign::admin::pb::{self, approvals_client::ApprovalsClient};
use countersign::approval::store::CheckRef;
use countersign::approval::{ApprovalParams, RedisStore, Status, StoreConfig};
use countersign::config::{AdminConfig, ApproverConfig, Config};
use countersign::policy::PolicyStore;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

// ---------------------------------------------------------------------------
// The admin API, in process, over TLS with client certificates.
// ---------------------------------------------------------------------------

struct Admin {
    pki: Pki,
    port: u16,
    store: Arc<RedisStore>,
    _redis: Redis,
}

/// What the service answers a caller that brings neither a certificate nor
/// a token.
const NO_CREDENTIALS: &str =
    "no client certificate and no bearer token: authenticate with --cert/--key or --token";

async fn start_admin() -> Admin {
    let redis = Redis::start().await;
    let pki = Pki::new();
    let store = Arc::new(
        RedisStore::new(StoreConfig {
            url: redis.url(),
            cluster: false,
            replica_acks: 0,
            prefix: "hardening:".into(),
            timeout: Duration::from_secs(2),
            retention: Duration::from_secs(3600),
            audit_max_len: 10_000,
            audit_max_age: None,
        })
        .unwrap(),
    );
    let config = Config::load(None, &std::collections::HashMap::new()).unwrap();
    let policies = Arc::new(
        PolicyStore::open(
            &common::repo().join("policies"),
            config.mapper.probes().unwrap(),
        )
        .unwrap(),
    );
    let approvers = vec![ApproverConfig {
        name: "dora".into(),
        groups: vec!["data-owners".into()],
        token_sha256: None,
    }];
    let (cert, key) = pki.server();
    let cfg = AdminConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert_pem: std::fs::read(cert).unwrap(),
        key_pem: std::fs::read(key).unwrap(),
        client_ca_pem: Some(std::fs::read(pki.ca()).unwrap()),
        approvers: approvers.clone(),
    };
    let tls = countersign::server::admin_tls(&cfg).unwrap();
    let service = AdminService::new(
        store.clone(),
        policies,
        Authenticator::new(approvers),
        EntityTypeName::from_str("User").unwrap(),
        EntityTypeName::from_str("Group").unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(countersign::server::serve_admin(
        listener,
        service,
        tls,
        std::future::pending(),
    ));
    Admin {
        pki,
        port,
        store,
        _redis: redis,
    }
}

impl Admin {
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// An agent's export, acting for alice, that a data owner may approve.
    async fn open(&self) -> String {
        let new = common::export_request("fp", &["data-owners"], ApprovalParams::default());
        self.store
            .open(&new, CheckRef::default())
            .await
            .unwrap()
            .approval
            .id
    }

    /// A tonic client trusting the admin API's CA, presenting `identity`
    /// (certificate and key files) if given. Connection errors come back as
    /// the error of the first call.
    async fn client(
        &self,
        identity: Option<(PathBuf, PathBuf)>,
    ) -> Result<ApprovalsClient<Channel>, String> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(self.pki.ca()).unwrap()));
        if let Some((c, k)) = identity {
            tls = tls.identity(Identity::from_pem(
                std::fs::read(c).unwrap(),
                std::fs::read(k).unwrap(),
            ));
        }
        let channel = Channel::from_shared(self.url())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        Ok(ApprovalsClient::new(channel))
    }

    /// `countersign approvals ARGS` against this admin API, trusting its CA,
    /// with `identity` as `--cert`/`--key` if given; (exit code, stderr).
    async fn cli(&self, identity: Option<(PathBuf, PathBuf)>, args: &[&str]) -> (i32, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_countersign"));
        cmd.arg("approvals")
            .args(args)
            .args(["--admin", &self.url()])
            .arg("--ca")
            .arg(self.pki.ca());
        for k in [
            "COUNTERSIGN_ADMIN_CERT",
            "COUNTERSIGN_ADMIN_KEY",
            "COUNTERSIGN_ADMIN_TOKEN",
        ] {
            cmd.env_remove(k);
        }
        if let Some((c, k)) = identity {
            cmd.arg("--cert").arg(c).arg("--key").arg(k);
        }
        // The server runs on this test's runtime: wait for the client
        // elsewhere.
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The request as the store has it: still pending, and nobody voted.
    async fn assert_untouched(&self, id: &str) {
        let a = self.store.get(id).await.unwrap().unwrap();
        assert_eq!(a.status, Status::Pending);
        assert!(a.votes.is_empty(), "{:?}", a.votes);
    }
}

fn decide(id: &str) -> pb::DecideRequest {
    pb::DecideRequest {
        id: id.into(),
        reason: "quarterly report".into(),
    }
}
