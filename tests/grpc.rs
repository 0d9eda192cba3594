//! The ext_authz service over real gRPC: a tonic client against the server on
//! an ephemeral port, as Envoy would call it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::check::{check, seen};
use common::services::{authz_service, example_config, example_policies, redis_store};
use countersign::audit::EventSink;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use serde_json::{Value, json};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

struct Running {
    endpoint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

async fn start() -> Running {
    let config = example_config();
    let store = example_policies(&config);
    let approvals = Arc::new(redis_store(config.store.clone()));
    let authz = authz_service(config, Arc::new(store), approvals, EventSink::default());
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

/// Sends bytes as a CheckRequest, as a buggy or hostile client could.
async fn call_raw(r: &Running, bytes: Vec<u8>) -> Result<CheckResponse, tonic::Status> {
    use tonic::codec::{Codec, EncodeBuf, Encoder};
    struct Raw;
    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
            use prost::bytes::BufMut;
            buf.put_slice(&item);
            Ok(())
        }
    }
    struct RawCodec;
    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = CheckResponse;
        type Encoder = Raw;
        type Decoder = <tonic_prost::ProstCodec<CheckRequest, CheckResponse> as Codec>::Decoder;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Self::Decoder {
            tonic_prost::ProstCodec::<CheckRequest, CheckResponse>::default().decoder()
        }
    }
    let channel = tonic::transport::Endpoint::from_shared(r.endpoint.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/envoy.service.auth.v3.Authorization/Check",
    );
    grpc.unary(tonic::Request::new(bytes), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn malformed_and_hostile_check_requests_get_400_with_a_reason() {
    use prost::Message;
    let r = start().await;
    let alice = || {
        check("GET", "/v1/datasets/sales").claims(json!({"sub": "alice", "groups": ["analysts"]}))
    };
    let agent = || {
        check("POST", "/v1/datasets/sales/export")
            .claims(json!({"sub": "agent-7", "groups": ["agents"], "on_behalf_of": "alice"}))
            .header("content-type", "application/json")
    };
    let no_http = {
        let mut c = alice().build();
        c.attributes
            .as_mut()
            .unwrap()
            .request
            .as_mut()
            .unwrap()
            .http = None;
        c
    };
    let mut many = alice();
    for i in 0..600 {
        many = many.header(&format!("x-h{i}"), "v");
    }
    let cases: Vec<(&str, CheckRequest, &str)> = vec![
        (
            "no http attributes",
            no_http,
            "bad request: the check request carries no HTTP request attributes",
        ),
        (
            "relative path",
            check("GET", "v1/datasets/sales").build(),
            "bad request: request path must start with `/`",
        ),
        (
            "empty path",
            check("GET", "").build(),
            "bad request: request path must start with `/`",
        ),
        (
            "600 headers",
            many.build(),
            "bad request: request has more than 512 headers",
        ),
        (
            "a 20 KiB path",
            check("GET", &format!("/v1/datasets/{}", "a".repeat(20_000))).build(),
            "bad request: request path is longer than 16384 bytes",
        ),
        (
            "bad percent-encoding",
            alice_at("/v1/datasets/sa%zzles"),
            "bad request: malformed percent-encoding in the request path",
        ),
        (
            "truncated percent-encoding",
            alice_at("/v1/datasets/sales%2"),
            "bad request: malformed percent-encoding in the request path",
        ),
        (
            "bad query encoding",
            alice_at("/v1/datasets/sales?format=%G1"),
            "bad request: malformed percent-encoding in the request query",
        ),
        (
            "not UTF-8 once decoded",
            alice_at("/v1/datasets/%ff%fe"),
            "bad request: path parameter `id` is not valid UTF-8 once percent-decoded",
        ),
        (
            "body not UTF-8",
            agent().body_bytes(b"{\"format\":\"\xff\"}").build(),
            "bad request: request body is not valid JSON",
        ),
        (
            "body not JSON",
            agent().body("{oops").build(),
            "bad request: request body is not valid JSON",
        ),
        (
            "partial body",
            agent()
                .body(r#"{"format":"csv"}"#)
                .header("x-envoy-auth-partial-body", "true")
                .build(),
            "bad request: request body was truncated by Envoy, and this route decides on the body",
        ),
        (
            "claims not an object",
            check("GET", "/v1/datasets/sales")
                .claims(json!("alice"))
                .build(),
            "bad request: the verified JWT claims",
        ),
        (
            "claims without sub",
            check("GET", "/v1/datasets/sales")
                .claims(json!({"groups": ["analysts"]}))
                .build(),
            "bad request: the verified JWT has no string `sub` claim",
        ),
    ];
    for (name, req, reason) in cases {
        let s = call(&r, req).await;
        assert_eq!((s.rpc_code, s.http_status), (3, 400), "{name}: {s:?}");
        let body: Value = serde_json::from_str(&s.body).unwrap();
        assert!(
            body["reason"].as_str().unwrap().starts_with(reason),
            "{name}: {body}"
        );
        assert_eq!(body["decision"], "deny", "{name}");
    }

    // A megabyte in one header countersign reads: decided, not failed.
    let s = call(
        &r,
        alice().header("user-agent", &"u".repeat(1 << 20)).build(),
    )
    .await;
    assert_eq!(s.http_status, 200, "{s:?}");

    // Bytes that are not a CheckRequest at all, or a string field that is
    // not UTF-8 (Envoy never sends one): refused, with the reason.
    let mut bytes = alice_at("/v1/datasets/XXXX").encode_to_vec();
    let at = bytes.windows(4).position(|w| w == b"XXXX").unwrap();
    bytes[at..at + 4].copy_from_slice(b"\xff\xfe\xff\xfe");
    for (name, bytes, why) in [
        (
            "not UTF-8",
            bytes,
            "invalid string value: data is not UTF-8 encoded",
        ),
        ("garbage", vec![0xff; 64], "invalid varint"),
    ] {
        let s = seen(&call_raw(&r, bytes).await.expect(name));
        assert_eq!((s.rpc_code, s.http_status), (3, 400), "{name}: {s:?}");
        let body: Value = serde_json::from_str(&s.body).unwrap();
        let reason = body["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("bad request: the check request does not decode:")
                && reason.contains(why),
            "{name}: {reason}"
        );
    }
    // The server is still answering.
    assert_eq!(call(&r, alice().build()).await.http_status, 200);
}

fn alice_at(path: &str) -> CheckRequest {
    check("GET", path)
        .claims(json!({"sub": "alice", "groups": ["analysts"]}))
        .build()
}

/// `server::run` wires a whole sidecar onto listeners the test bound on
/// port 0: the probes answer, a check is decided, and shutdown returns.
#[tokio::test]
async fn a_whole_sidecar_runs_in_process_on_listeners_the_caller_bound() {
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let listeners = countersign::server::Listeners {
        authz: bind().await.unwrap(),
        probes: Some(bind().await.unwrap()),
        admin: None,
        authzen: None,
        slack: None,
    };
    let authz = format!("http://{}", listeners.authz.local_addr().unwrap());
    let probes = listeners.probes.as_ref().unwrap().local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sidecar = tokio::spawn(countersign::server::run(
        example_config(),
        listeners,
        async {
            let _ = stopped.await;
        },
    ));
    let ready = reqwest::get(format!("http://{probes}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "{:?}", ready.text().await);
    let mut client = AuthorizationClient::connect(authz).await.unwrap();
    let answer = client
        .check(check("GET", "/v1/datasets/sales").build())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen(&answer).http_status, 403, "anonymous is denied");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), sidecar)
        .await
        .expect("shutdown returns")
        .unwrap()
        .unwrap();
}
