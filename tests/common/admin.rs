//! The approvers' admin API in process: a Redis store on a redis-server of
//! the test's own, the example policies, the admin service served over TLS
//! with client certificates from a throwaway CA, and clients for it.

use std::path::PathBuf;
use std::sync::Arc;

use countersign::admin::pb::{self, approvals_client::ApprovalsClient};
use countersign::approval::ApprovalStore;
use countersign::approval::store::CheckRef;
use countersign::approval::{ApprovalParams, RedisStore};
use countersign::config::ApproverConfig;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use super::Redis;
use super::services::{
    admin_service, admin_tls, example_config, example_policies, redis_store, store_config,
};
use super::tls::Pki;

pub struct Admin {
    pub pki: Pki,
    pub port: u16,
    /// The store behind the API, to open requests as a check would and to
    /// see what a call changed.
    pub store: Arc<RedisStore>,
    _redis: Redis,
}

impl Admin {
    /// The admin API for `approvers`, its keys in Redis under `prefix`.
    pub async fn start(prefix: &str, approvers: Vec<ApproverConfig>) -> Admin {
        let redis = Redis::start().await;
        let pki = Pki::new();
        let store = Arc::new(redis_store(store_config(&redis.url(), prefix)));
        let policies = Arc::new(example_policies(&example_config()));
        let tls = admin_tls(&pki, approvers.clone());
        let service = admin_service(store.clone(), policies, approvers, Default::default());
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

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// A client trusting the admin API's CA, with the client certificate of
    /// `who` if given.
    pub async fn client(&self, who: Option<&str>) -> ApprovalsClient<Channel> {
        self.connect(who.map(|name| self.pki.client(name)))
            .await
            .unwrap()
    }

    /// A tonic client trusting the admin API's CA, presenting `identity`
    /// (certificate and key files) if given. Connection errors come back as
    /// the error of the first call.
    pub async fn connect(
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

    /// An agent's export, acting for alice, that `groups` may approve: opened
    /// in the store as a check would open it; its id.
    pub async fn open(&self, fingerprint: &str, groups: &[&str], params: ApprovalParams) -> String {
        let new = super::export_request(fingerprint, groups, params);
        self.store
            .open(&new, CheckRef::default())
            .await
            .unwrap()
            .approval
            .id
    }

    /// `countersign approvals ARGS` against this admin API, trusting its CA,
    /// with `identity` as `--cert`/`--key` if given; (exit code, stderr).
    pub async fn cli(&self, identity: Option<(PathBuf, PathBuf)>, args: &[&str]) -> (i32, String) {
        let mut cmd = super::approvals_command(args);
        cmd.args(["--admin", &self.url()])
            .arg("--ca")
            .arg(self.pki.ca());
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
}

/// An Approve, Deny or Revoke of `id` giving `reason`.
pub fn decide(id: &str, reason: &str) -> pb::DecideRequest {
    pb::DecideRequest {
        id: id.into(),
        reason: reason.into(),
    }
}
