//! The Envoy front door called directly: CheckRequests in, CheckResponses
//! out, with the example policies and a Redis store that is down (nothing
//! listens on port 1), so approvable calls find it unavailable and every
//! other call must not notice.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use common::check::{self, check, seen};
use countersign::authz::AuthzService;
use countersign::config::Config;
use countersign::policy::PolicyStore;
use countersign::server::check_wire::parse_grpc_timeout;
use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use serde_json::{Value, json};

const RPC_PERMISSION_DENIED: i32 = 7;
const RPC_INVALID_ARGUMENT: i32 = 3;

fn service() -> AuthzService {
    let config = Config::load(None, &HashMap::new()).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let policies = PolicyStore::open(&dir, config.mapper.probes().unwrap()).unwrap();
    let store_config = countersign::approval::StoreConfig {
        url: "redis://127.0.0.1:1".into(),
        cluster: false,
        replica_acks: 0,
        ..config.store.clone()
    };
    let store = Arc::new(countersign::approval::RedisStore::new(store_config).unwrap());
    common::services::authz_service(config, Arc::new(policies), store, Default::default())
}

fn body(s: &check::Seen) -> Value {
    serde_json::from_str(&s.body).unwrap()
}

#[tokio::test]
async fn an_allowed_request_names_the_principal_to_the_upstream() {
    let req = check("GET", "/v1/datasets/sales")
        .claims(json!({"sub": "alice", "groups": ["analysts"], "exp": 1.9e9}))
        .header("x-countersign-principal", r#"User::"root""#)
        .build();
    let resp = service().decide(&req).await;
    let s = seen(&resp);
    assert_eq!((s.rpc_code, s.http_status), (0, 200), "{s:?}");
    assert_eq!(s.headers["x-countersign-principal"], r#"User::"alice""#);
    assert!(
        s.appended.is_empty(),
        "the principal header must overwrite: {s:?}"
    );
    // An approval token is the caller's secret: never forwarded upstream.
    let Some(HttpResponse::OkResponse(ok)) = &resp.http_response else {
        panic!("not an OK response")
    };
    assert_eq!(ok.headers_to_remove, ["x-countersign-approval"]);
}

#[tokio::test]
async fn a_denial_is_403_with_a_json_body_naming_the_policy() {
    let s = seen(
        &service()
            .decide(&check("GET", "/v1/datasets/sales").build())
            .await,
    );
    assert_eq!((s.rpc_code, s.http_status), (RPC_PERMISSION_DENIED, 403));
    assert_eq!(s.headers["content-type"], "application/json");
    assert_eq!(
        body(&s),
        json!({"decision": "deny", "reason": "forbidden by `anonymous-denied`",
               "policies": ["anonymous-denied"], "request_id": "req-7"})
    );
}

#[tokio::test]
async fn a_request_no_policy_permits_says_so() {
    let req = check("DELETE", "/v1/datasets/sales")
        .claims(json!({"sub": "alice", "groups": ["analysts"]}))
        .build();
    let s = seen(&service().decide(&req).await);
    assert_eq!(s.http_status, 403);
    assert_eq!(body(&s)["reason"], "no policy permits this request");
    assert_eq!(body(&s)["policies"], json!([]));
}

#[tokio::test]
async fn spoofed_identity_headers_leave_the_caller_anonymous() {
    let req = check("GET", "/v1/datasets/sales")
        .header("x-countersign-principal", r#"User::"alice""#)
        .header("x-authenticated-user", "alice")
        .header(
            "x-forwarded-client-cert",
            "By=spiffe://x;URI=spiffe://mesh.local/ns/reports/sa/reporter",
        )
        .build();
    let s = seen(&service().decide(&req).await);
    assert_eq!(body(&s)["policies"], json!(["anonymous-denied"]));
}

#[tokio::test]
async fn an_mtls_workload_is_decided_as_a_workload() {
    let svc = service();
    let ok = check("GET", "/v1/datasets/sales")
        .peer("spiffe://mesh.local/ns/reports/sa/reporter")
        .build();
    assert_eq!(seen(&svc.decide(&ok).await).http_status, 200);
    let other = check("GET", "/v1/datasets/sales")
        .peer("spiffe://mesh.local/ns/x/sa/y")
        .build();
    assert_eq!(seen(&svc.decide(&other).await).http_status, 403);
}

#[tokio::test]
async fn the_body_decides_a_body_route_and_an_unwritable_audit_refuses_the_allow() {
    let svc = service();
    let export = async |b: &str| {
        let req = check("POST", "/v1/datasets/sales/export")
            .claims(json!({"sub": "dora", "groups": ["data-owners"]}))
            .body(b)
            .build();
        seen(&svc.decide(&req).await)
    };
    // Exports are a guarded action, so every decision on one is audited;
    // this service's Redis is down, so the allow cannot be recorded.
    let s = export(r#"{"format":"csv","rows":10}"#).await;
    assert_eq!(s.http_status, 503, "{s:?}");
    assert!(
        body(&s)["reason"]
            .as_str()
            .unwrap()
            .contains("audit trail cannot be written")
    );
    let s = export(r#"{"format":"xml"}"#).await;
    assert_eq!(
        (s.http_status, body(&s)["policies"].clone()),
        (403, json!(["export-formats"]))
    );
    let s = export("not json").await;
    assert_eq!(s.http_status, 400);
    assert!(
        body(&s)["reason"]
            .as_str()
            .unwrap()
            .starts_with("bad request: request body is not valid JSON")
    );
}

#[tokio::test]
async fn requests_that_cannot_be_mapped_are_400_with_the_reason() {
    let svc = service();
    let s = seen(&svc.decide(&CheckRequest::default()).await);
    assert_eq!((s.rpc_code, s.http_status), (RPC_INVALID_ARGUMENT, 400));
    assert_eq!(
        body(&s)["reason"],
        "bad request: the check request carries no attributes"
    );

    let s = seen(
        &svc.decide(
            &check("GET", "/v1/datasets/sales")
                .claims(json!("a string"))
                .build(),
        )
        .await,
    );
    assert_eq!(s.http_status, 400);
    assert!(
        body(&s)["reason"]
            .as_str()
            .unwrap()
            .contains("not a JSON object")
    );

    let s = seen(
        &svc.decide(
            &check("GET", "/v1/datasets/sales")
                .claims(json!({"name": "x"}))
                .build(),
        )
        .await,
    );
    assert_eq!(
        body(&s)["reason"],
        "bad request: the verified JWT has no string `sub` claim"
    );

    let s = seen(&svc.decide(&check("GET", "/v1/%zz").build()).await);
    assert_eq!(
        body(&s)["reason"],
        "bad request: malformed percent-encoding in the request path"
    );
    assert_eq!(body(&s)["request_id"], "req-7");
}

#[tokio::test]
async fn denials_never_echo_credentials_or_body_values() {
    let svc = service();
    let with_secrets = |c: check::Check| {
        c.header("authorization", "Bearer secret-token-value")
            .header("cookie", "session=secret-cookie")
            .build()
    };
    // A policy denial, a body the policy cannot read, a body value Cedar
    // cannot hold, and claims Cedar cannot hold.
    let cases = [
        with_secrets(check("GET", "/v1/datasets/sales")),
        with_secrets(
            check("POST", "/v1/datasets/sales/export")
                .claims(json!({"sub": "dora", "groups": ["data-owners"]}))
                .body(r#"{"format":"secret-format","rows":0.123456}"#),
        ),
        with_secrets(
            check("POST", "/v1/datasets/sales/export")
                .claims(json!({"sub": "dora", "secret": 0.123456}))
                .body(r#"{"format":"secret-format","format":"csv"}"#),
        ),
    ];
    for req in cases {
        let resp = svc.decide(&req).await;
        let s = seen(&resp);
        assert!(s.http_status == 400 || s.http_status == 403, "{s:?}");
        let message = resp
            .status
            .as_ref()
            .map(|st| st.message.clone())
            .unwrap_or_default();
        for text in [&s.body, &message] {
            assert!(
                !text.contains("secret-") && !text.contains("0.123456"),
                "{text}"
            );
        }
    }
}

#[tokio::test]
async fn an_approvable_call_with_the_store_down_is_503_and_other_calls_are_unaffected() {
    let svc = service();
    let agent = json!({"sub": "agent-7", "groups": ["agents"]});
    let req = check("POST", "/v1/datasets/sales/export")
        .claims(agent.clone())
        .body(r#"{"format":"csv"}"#)
        .build();
    let s = seen(&svc.decide(&req).await);
    assert_eq!(s.http_status, 503, "{s:?}");
    assert!(
        body(&s)["reason"]
            .as_str()
            .unwrap()
            .starts_with("approvals are unavailable"),
        "{}",
        s.body
    );
    assert_eq!(body(&s)["policies"], json!(["agent-exports-need-approval"]));

    // A call the agent may not make even with an approval is simply denied.
    let s = seen(
        &svc.decide(&check("DELETE", "/v1/datasets/sales").claims(agent).build())
            .await,
    );
    assert_eq!(
        (s.http_status, body(&s)["reason"].clone()),
        (403, json!("no policy permits this request"))
    );
    let alice = json!({"sub": "alice", "groups": ["analysts"]});
    assert_eq!(
        seen(
            &svc.decide(&check("GET", "/v1/datasets/sales").claims(alice).build())
                .await
        )
        .http_status,
        200
    );
}

#[test]
fn grpc_timeouts_parse_in_every_unit() {
    assert_eq!(
        parse_grpc_timeout("500m"),
        Some(std::time::Duration::from_millis(500))
    );
    assert_eq!(
        parse_grpc_timeout("30S"),
        Some(std::time::Duration::from_secs(30))
    );
    assert_eq!(
        parse_grpc_timeout("2M"),
        Some(std::time::Duration::from_secs(120))
    );
    assert_eq!(
        parse_grpc_timeout("1H"),
        Some(std::time::Duration::from_secs(3600))
    );
    assert_eq!(
        parse_grpc_timeout("7u"),
        Some(std::time::Duration::from_micros(7))
    );
    assert_eq!(
        parse_grpc_timeout("9n"),
        Some(std::time::Duration::from_nanos(9))
    );
    for bad in [
        "",
        "m",
        "5x",
        "-1S",
        "1.5S",
        "123456789S",
        "18446744073709551615S",
    ] {
        assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
    }
}

/// A JSON-RPC message to `/mcp` from an agent (or anonymous).
fn mcp(message: Value, claims: Option<Value>) -> CheckRequest {
    let mut c = check("POST", "/mcp")
        .header("content-type", "application/json")
        .body(&message.to_string());
    if let Some(claims) = claims {
        c = c.claims(claims);
    }
    c.build()
}

#[tokio::test]
async fn mcp_refusals_are_json_rpc_answers_echoing_the_id_and_notifications_get_an_http_error() {
    let svc = service();
    let agent = || Some(json!({"sub": "agent-7", "groups": ["agents"]}));
    // A forbidden tool: a tool result the model reads, the string id echoed.
    let call = json!({"jsonrpc": "2.0", "id": "call-9", "method": "tools/call",
                      "params": {"name": "delete_dataset", "arguments": {"dataset": "sales"}}});
    let s = seen(&svc.decide(&mcp(call, agent())).await);
    assert_eq!(
        (s.rpc_code, s.http_status),
        (RPC_PERMISSION_DENIED, 200),
        "{s:?}"
    );
    let b = body(&s);
    assert_eq!(b["id"], "call-9");
    assert_eq!(b["result"]["isError"], true);
    assert_eq!(
        b["result"]["_meta"]["countersign/decision"]["decision"],
        "deny"
    );
    let text = b["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("mcp-delete-tools-forbidden"), "{text}");
    // A guarded tool with the store down: unavailable, said the same way.
    let export = json!({"jsonrpc": "2.0", "id": 10, "method": "tools/call",
                        "params": {"name": "export_dataset", "arguments": {"dataset": "sales"}}});
    let b = body(&seen(&svc.decide(&mcp(export, agent())).await));
    assert_eq!(b["id"], 10);
    assert_eq!(
        b["result"]["_meta"]["countersign/decision"]["decision"], "unavailable",
        "{b}"
    );
    // Another refused request: JSON-RPC error -32001.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}});
    let s = seen(&svc.decide(&mcp(init, None)).await);
    assert_eq!(s.http_status, 200);
    let b = body(&s);
    assert_eq!(
        (b["id"].clone(), b["error"]["code"].clone()),
        (json!(1), json!(-32001)),
        "{b}"
    );
    // A refused notification has no one waiting for a result: 403.
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let s = seen(&svc.decide(&mcp(note, None)).await);
    assert_eq!(
        (s.rpc_code, s.http_status),
        (RPC_PERMISSION_DENIED, 403),
        "{s:?}"
    );
    // Not one message: 400 with a JSON-RPC error an MCP client reads.
    let s = seen(&svc.decide(&mcp(json!([]), agent())).await);
    assert_eq!(
        (s.rpc_code, s.http_status),
        (RPC_INVALID_ARGUMENT, 400),
        "{s:?}"
    );
    let b = body(&s);
    assert_eq!(b["error"]["code"], -32600);
    assert_eq!(b["id"], Value::Null);
}
