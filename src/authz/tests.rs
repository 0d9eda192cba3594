use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::config::Config;

#[path = "../../tests/common/check.rs"]
mod check;
use check::{check, seen};

fn service() -> AuthzService {
    let config = Config::load(None, &HashMap::new()).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let store = PolicyStore::open(&dir, config.mapper.probes().unwrap()).unwrap();
    let settings = AuthzSettings {
        jwt_metadata_key: config.jwt_metadata_key.clone(),
        principal_header: config.principal_header.clone(),
    };
    AuthzService::new(Arc::new(config.mapper), Arc::new(store), settings)
}

fn body(s: &check::Seen) -> Value {
    serde_json::from_str(&s.body).unwrap()
}

#[test]
fn an_allowed_request_names_the_principal_to_the_upstream() {
    let req = check("GET", "/v1/datasets/sales")
        .claims(json!({"sub": "alice", "groups": ["analysts"], "exp": 1.9e9}))
        .header("x-countersign-principal", r#"User::"root""#)
        .build();
    let s = seen(&service().decide(&req));
    assert_eq!((s.rpc_code, s.http_status), (0, 200), "{s:?}");
    assert_eq!(s.headers["x-countersign-principal"], r#"User::"alice""#);
    assert!(
        s.appended.is_empty(),
        "the principal header must overwrite: {s:?}"
    );
}

#[test]
fn a_denial_is_403_with_a_json_body_naming_the_policy() {
    let s = seen(&service().decide(&check("GET", "/v1/datasets/sales").build()));
    assert_eq!((s.rpc_code, s.http_status), (RPC_PERMISSION_DENIED, 403));
    assert_eq!(s.headers["content-type"], "application/json");
    assert_eq!(
        body(&s),
        json!({"decision": "deny", "reason": "forbidden by `anonymous-denied`",
               "policies": ["anonymous-denied"], "request_id": "req-7"})
    );
}

#[test]
fn a_request_no_policy_permits_says_so() {
    let req = check("DELETE", "/v1/datasets/sales")
        .claims(json!({"sub": "alice", "groups": ["analysts"]}))
        .build();
    let s = seen(&service().decide(&req));
    assert_eq!(s.http_status, 403);
    assert_eq!(body(&s)["reason"], "no policy permits this request");
    assert_eq!(body(&s)["policies"], json!([]));
}

#[test]
fn spoofed_identity_headers_leave_the_caller_anonymous() {
    let req = check("GET", "/v1/datasets/sales")
        .header("x-countersign-principal", r#"User::"alice""#)
        .header("x-authenticated-user", "alice")
        .header(
            "x-forwarded-client-cert",
            "By=spiffe://x;URI=spiffe://mesh.local/ns/reports/sa/reporter",
        )
        .build();
    let s = seen(&service().decide(&req));
    assert_eq!(body(&s)["policies"], json!(["anonymous-denied"]));
}

#[test]
fn an_mtls_workload_is_decided_as_a_workload() {
    let svc = service();
    let ok = check("GET", "/v1/datasets/sales")
        .peer("spiffe://mesh.local/ns/reports/sa/reporter")
        .build();
    assert_eq!(seen(&svc.decide(&ok)).http_status, 200);
    let other = check("GET", "/v1/datasets/sales")
        .peer("spiffe://mesh.local/ns/x/sa/y")
        .build();
    assert_eq!(seen(&svc.decide(&other)).http_status, 403);
}

#[test]
fn the_body_decides_a_body_route() {
    let svc = service();
    let export = |b: &str| {
        let req = check("POST", "/v1/datasets/sales/export")
            .claims(json!({"sub": "dora", "groups": ["data-owners"]}))
            .body(b)
            .build();
        seen(&svc.decide(&req))
    };
    assert_eq!(export(r#"{"format":"csv","rows":10}"#).http_status, 200);
    let s = export(r#"{"format":"xml"}"#);
    assert_eq!(
        (s.http_status, body(&s)["policies"].clone()),
        (403, json!(["export-formats"]))
    );
    let s = export("not json");
    assert_eq!(s.http_status, 400);
    assert!(
        body(&s)["reason"]
            .as_str()
            .unwrap()
            .starts_with("bad request: request body is not valid JSON")
    );
}

#[test]
fn requests_that_cannot_be_mapped_are_400_with_the_reason() {
    let svc = service();
    let s = seen(&svc.decide(&CheckRequest::default()));
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
        ),
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
        ),
    );
    assert_eq!(
        body(&s)["reason"],
        "bad request: the verified JWT has no string `sub` claim"
    );

    let s = seen(&svc.decide(&check("GET", "/v1/%zz").build()));
    assert_eq!(
        body(&s)["reason"],
        "bad request: malformed percent-encoding in the request path"
    );
    assert_eq!(body(&s)["request_id"], "req-7");
}

#[test]
fn denials_never_echo_credentials_or_body_values() {
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
        let resp = svc.decide(&req);
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
