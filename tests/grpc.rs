//! The ext_authz service over real gRPC: a tonic client against the server on
//! an ephemeral port, as Envoy would call it.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::check::{check, seen};
use countersign::authz::{AuthzService, AuthzSettings};
use countersign::config::Config;
use countersign::policy::PolicyStore;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::{Value, json};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

struct Running {
    endpoint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

async fn start() -> Running {
    let config = Config::load(None, &HashMap::new()).unwrap();
    let store = PolicyStore::open(
        &common::repo().join("policies"),
        config.mapper.probes().unwrap(),
    )
    .unwrap();
    let settings = AuthzSettings::from_config(&config);
    let approvals = Arc::new(countersign::approval::RedisStore::new(config.store.clone()).unwrap());
    let authz = AuthzService::new(
        Arc::new(config.mapper),
        Arc::new(store),
        approvals,
        settings,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        let shutdown = async {
            let _ = rx.await;
        };
        countersign::server::serve(listener, authz, Duration::from_secs(5), shutdown)
            .await
            .unwrap();
    });
    Running {
        endpoint,
        stop: Some(tx),
        done,
    }
}

async fn call(r: &Running, req: CheckRequest) -> common::check::Seen {
    let mut client = AuthorizationClient::connect(r.endpoint.clone())
        .await
        .unwrap();
    seen(&client.check(req).await.unwrap().into_inner())
}

#[tokio::test]
async fn allow_deny_and_malformed_over_grpc() {
    let r = start().await;

    let alice =
        check("GET", "/v1/datasets/sales").claims(json!({"sub": "alice", "groups": ["analysts"]}));
    let s = call(&r, alice.build()).await;
    assert_eq!((s.rpc_code, s.http_status), (0, 200));
    assert_eq!(s.headers["x-countersign-principal"], r#"User::"alice""#);

    let s = call(&r, check("GET", "/v1/datasets/sales").build()).await;
    assert_eq!((s.rpc_code, s.http_status), (7, 403));
    let body: Value = serde_json::from_str(&s.body).unwrap();
    assert_eq!(body["policies"], json!(["anonymous-denied"]));

    let s = call(&r, CheckRequest::default()).await;
    assert_eq!((s.rpc_code, s.http_status), (3, 400));
    let body: Value = serde_json::from_str(&s.body).unwrap();
    assert_eq!(
        body["reason"],
        "bad request: the check request carries no attributes"
    );
}

#[tokio::test]
async fn health_reports_serving_for_the_server_and_the_authz_service() {
    let mut r = start().await;
    let channel = tonic::transport::Channel::from_shared(r.endpoint.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "envoy.service.auth.v3.Authorization"] {
        let resp = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap();
        assert_eq!(
            resp.into_inner().status(),
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    // Shutdown drains and returns.
    r.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), r.done)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn concurrent_checks_on_one_connection_all_get_answers() {
    let r = start().await;
    let client = AuthorizationClient::connect(r.endpoint.clone())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            let req = if i % 2 == 0 {
                check("GET", "/v1/datasets/sales")
                    .claims(json!({"sub": "alice", "groups": ["analysts"]}))
            } else {
                check("GET", "/v1/datasets/sales")
            };
            (
                i,
                seen(&c.check(req.build()).await.unwrap().into_inner()).http_status,
            )
        }));
    }
    for t in tasks {
        let (i, status) = t.await.unwrap();
        assert_eq!(status, if i % 2 == 0 { 200 } else { 403 });
    }
}
