//! Each example policy in policies/ does what its comment and
//! docs/policy-guide.md say, through real Envoy (envoy/envoy.yaml), the real
//! `countersign` with the embedded configuration's route table, Redis, and
//! approvers using `countersign approvals`.

mod common;

use std::time::{Duration, SystemTime};

use common::stack::{Reply, Stack, answer_of, stack};
use common::token;
use reqwest::Method;
use serde_json::{Value, json};

fn agent() -> String {
    token("agent-7", &["agents"])
}

fn deployer() -> String {
    token("pipeline-1", &["deployers"])
}

/// A 403 decided by `policies`, with no approval to ask for.
fn denied_by(r: &Reply, policies: Value) {
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.body["decision"], "deny", "{:?}", r.body);
    assert_eq!(r.body["policies"], policies, "{:?}", r.body);
    assert!(r.body.get("approval_id").is_none(), "{:?}", r.body);
}

/// A 403 that opened an approval request for `approvers`; its id and token.
fn approval_required(r: &Reply, policy: &str, approvers: Value) -> (String, String) {
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.body["decision"], "approval_required", "{:?}", r.body);
    assert_eq!(r.body["policies"], json!([policy]), "{:?}", r.body);
    assert_eq!(r.body["approvers"], approvers, "{:?}", r.body);
    let field = |k: &str| r.body[k].as_str().expect(k).to_owned();
    (field("approval_id"), field("approval_token"))
}

/// `countersign approvals show ID --output json` as `who`.
fn show(s: &Stack, who: &str, id: &str) -> Value {
    let (code, out) = s.cli(who, &["show", id, "--output", "json"]);
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&out).unwrap()
}

fn nothing_pending(s: &Stack, who: &str) {
    let (code, out) = s.cli(who, &["list", "--output", "json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]));
}

/// policies/read-only.cedar
#[tokio::test]
async fn read_only_calls_are_allowed_without_approval() {
    let s = stack().await;
    let v = s.view();
    let agent = agent();
    for path in [
        "/v1/datasets/sales",
        "/v1/deployments/web",
        "/v1/reports/q3",
    ] {
        let r = v.call(Method::GET, path, &agent, None, None).await;
        assert_eq!(r.status, 200, "GET {path}: {:?}", r.body);
        assert_eq!(r.headers["x-upstream-saw-principal"], r#"User::"agent-7""#);
    }
    let r = v
        .call(Method::HEAD, "/v1/reports/q3", &agent, None, None)
        .await;
    assert_eq!(r.status, 200);
    // Read-only means read-only: writes by the same agent are not permitted.
    let r = v
        .call(Method::POST, "/v1/reports/q3", &agent, Some("{}"), None)
        .await;
    denied_by(&r, json!([]));
    let r = v
        .call(Method::DELETE, "/v1/datasets/sales", &agent, None, None)
        .await;
    denied_by(&r, json!([]));
    nothing_pending(&s, "dora");
}

/// policies/data-export.cedar
#[tokio::test]
async fn a_data_export_waits_for_a_data_owner_with_a_reason() {
    let s = stack().await;
    let (export, body) = (
        "/v1/datasets/sales/export",
        r#"{"format":"csv","rows":500}"#,
    );
    let r = s.post(export, &agent(), body, None).await;
    let (id, token) = approval_required(&r, "agent-exports-need-approval", json!(["data-owners"]));
    // Approvers see what is to be exported.
    let a = show(&s, "dora", &id);
    assert_eq!(
        a["parameters"],
        json!({"body.format": "csv", "body.rows": "500"})
    );
    // Only a data owner, and only with a reason.
    let (code, out) = s.cli("sara", &["approve", &id, "--reason", "fine"]);
    assert_ne!(code, 0, "security approved an export: {out}");
    let (code, out) = s.cli("dora", &["approve", &id]);
    assert_ne!(code, 0, "approved without a reason: {out}");
    assert!(out.contains("reason"), "{out}");
    let (code, out) = s.cli("dora", &["approve", &id, "--reason", "quarterly report"]);
    assert_eq!(code, 0, "{out}");
    // The retried call goes through once.
    assert_eq!(
        s.post(export, &agent(), body, Some(&token)).await.status,
        200
    );
    let again = s.post(export, &agent(), body, Some(&token)).await;
    assert_eq!(again.status, 403, "{:?}", again.body);
}

/// policies/privilege-escalation.cedar
#[tokio::test]
async fn a_role_binding_is_held_until_two_members_of_security_approve() {
    let s = stack().await;
    let v = s.view();
    let binding = r#"{"kind":"RoleBinding","metadata":{"name":"agent-admin"},
        "roleRef":{"kind":"ClusterRole","name":"cluster-admin"},
        "subjects":[{"kind":"User","name":"agent-7"}]}"#;
    let held = v.held_with(
        Method::POST,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/payments/rolebindings",
        &agent(),
        binding,
    );
    let id = s.pending_id("sara").await;
    let a = show(&s, "sara", &id);
    assert_eq!(a["mode"], "hold");
    assert_eq!(a["quorum"], 2);
    assert_eq!(a["resource"], r#"Namespace::"payments""#);
    assert!(
        a["parameters"]["body.roleRef"]
            .as_str()
            .is_some_and(|r| r.contains("cluster-admin")),
        "approvers see which role: {a}"
    );
    assert!(
        a["parameters"]["body.subjects"]
            .as_str()
            .is_some_and(|r| r.contains("agent-7")),
        "approvers see to whom: {a}"
    );
    let (code, out) = s.cli("dora", &["approve", &id, "--reason", "ok"]);
    assert_ne!(code, 0, "a data owner approved a role binding: {out}");
    let (code, out) = s.cli("sara", &["approve", &id, "--reason", "incident 7"]);
    assert_eq!(code, 0, "{out}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "released by one approval of two");
    let (code, out) = s.cli("sara", &["approve", &id, "--reason", "again"]);
    assert_ne!(code, 0, "one approver counted twice: {out}");
    let (code, out) = s.cli("sid", &["approve", &id, "--reason", "incident 7"]);
    assert_eq!(code, 0, "{out}");
    let (status, body) = answer_of(held).await;
    assert_eq!(status, 200, "{body}");
}

/// policies/infrastructure.cedar
#[tokio::test]
async fn infrastructure_changes_are_held_for_on_call() {
    let s = stack().await;
    let v = s.view();
    let scale = v.held_with(
        Method::POST,
        "/v1/deployments/web/scale",
        &deployer(),
        r#"{"replicas":12}"#,
    );
    let id = s.pending_id("omar").await;
    let a = show(&s, "omar", &id);
    assert_eq!(
        (&a["mode"], &a["action"], &a["parameters"]),
        (
            &json!("hold"),
            &json!(r#"Action::"scale""#),
            &json!({"body.replicas": "12"})
        )
    );
    let (code, out) = s.cli("sara", &["approve", &id, "--reason", "ok"]);
    assert_ne!(code, 0, "security approved for on-call: {out}");
    let (code, out) = s.cli("omar", &["approve", &id, "--reason", "traffic peak"]);
    assert_eq!(code, 0, "{out}");
    let (status, body) = answer_of(scale).await;
    assert_eq!(status, 200, "{body}");

    // A delete that on-call turns down is answered with the refusal.
    let delete = v.held_with(Method::DELETE, "/v1/deployments/web", &deployer(), "");
    let id = s.pending_id("omar").await;
    let (code, out) = s.cli("omar", &["deny", &id, "--reason", "not during the freeze"]);
    assert_eq!(code, 0, "{out}");
    let (status, body) = answer_of(delete).await;
    assert_eq!((status, &body["decision"]), (403, &json!("deny")), "{body}");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("denied by omar: not during the freeze")),
        "the caller learns who refused and why: {body}"
    );

    // Only deployers may ask at all.
    let r = v
        .call(
            Method::POST,
            "/v1/deployments/web/deploy",
            &agent(),
            Some(r#"{"image":"web:2"}"#),
            None,
        )
        .await;
    denied_by(&r, json!([]));
}

/// policies/secrets.cedar
#[tokio::test]
async fn a_secret_rotation_needs_security_and_a_fresh_approval() {
    let s = stack().await;
    let v = s.view();
    let (rotate, how) = (
        "/v1/secrets/db-password/rotate",
        Some(r#"{"kind":"postgres"}"#),
    );
    let r = v.call(Method::POST, rotate, &deployer(), how, None).await;
    let (id, token) = approval_required(&r, "secret-rotations-need-approval", json!(["security"]));
    let (code, out) = s.cli("sara", &["approve", &id, "--reason", "quarterly rotation"]);
    assert_eq!(code, 0, "{out}");
    // Usable for 15 minutes from the approval (`@approval_ttl("15m")`).
    let until = show(&s, "sara", &id)["use_until"]
        .as_str()
        .unwrap()
        .to_owned();
    let left = humantime::parse_rfc3339(&until)
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(
        (Duration::from_secs(14 * 60)..=Duration::from_secs(15 * 60)).contains(&left),
        "usable for {left:?}"
    );
    let r = v
        .call(Method::POST, rotate, &deployer(), how, Some(&token))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = v
        .call(Method::POST, rotate, &deployer(), how, Some(&token))
        .await;
    assert_eq!(r.status, 403, "single use: {:?}", r.body);
}

/// policies/audit-logging.cedar
#[tokio::test]
async fn turning_audit_logging_off_is_denied_to_everyone() {
    let s = stack().await;
    let v = s.view();
    let admin = token("ada", &["admins", "security"]);
    let settings = "/v1/audit/settings";
    for off in [
        r#"{"enabled":false}"#,
        r#"{"enabled":"false"}"#,
        r#"{"retention_days":0}"#,
    ] {
        let r = v.call(Method::PUT, settings, &admin, Some(off), None).await;
        denied_by(&r, json!(["audit-logging-stays-on"]));
    }
    // Nothing was opened for anyone to approve.
    nothing_pending(&s, "sara");
    // Settings that keep it on are an admin's to change.
    let on = r#"{"enabled":true,"retention_days":400}"#;
    let r = v.call(Method::PUT, settings, &admin, Some(on), None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = v
        .call(Method::PUT, settings, &agent(), Some(on), None)
        .await;
    denied_by(&r, json!([]));
}

/// The recipe in docs/policy-guide.md, taken from the guide as written and
/// added to a running sidecar's policies.
#[tokio::test]
async fn the_large_exports_recipe_works_as_written() {
    let s = stack().await;
    let guide = std::fs::read_to_string(common::repo().join("docs/policy-guide.md")).unwrap();
    let marker = "// recipe: large exports need two data owners";
    let start = guide.find(marker).expect("the recipe in the guide");
    let end = start + guide[start..].find("```").expect("the end of the recipe");
    let before = s.sidecar.log().matches("policies reloaded").count();
    std::fs::write(
        s.policies.path().join("large-exports.cedar"),
        &guide[start..end],
    )
    .unwrap();
    let reloaded = common::eventually(Duration::from_secs(10), Duration::from_millis(100), || {
        let n = s.sidecar.log().matches("policies reloaded").count();
        async move { n > before }
    })
    .await;
    assert!(reloaded, "{}", s.sidecar.log());

    let export = "/v1/datasets/sales/export";
    let small = s
        .post(export, &agent(), r#"{"format":"csv","rows":500}"#, None)
        .await;
    approval_required(
        &small,
        "agent-exports-need-approval",
        json!(["data-owners"]),
    );
    assert_eq!(small.body["quorum"], 1);
    let large = r#"{"format":"csv","rows":200000}"#;
    let r = s.post(export, &agent(), large, None).await;
    assert_eq!(r.body["decision"], "approval_required", "{:?}", r.body);
    assert_eq!(r.body["quorum"], 2, "{:?}", r.body);
    let mut policies: Vec<&str> = r.body["policies"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    policies.sort_unstable();
    assert_eq!(
        policies,
        [
            "agent-exports-need-approval",
            "large-exports-need-two-data-owners"
        ]
    );
    // One data owner's approval is not enough.
    let (id, token) = (
        r.body["approval_id"].as_str().unwrap(),
        r.body["approval_token"].as_str().unwrap(),
    );
    let (code, out) = s.cli("dora", &["approve", id, "--reason", "year end"]);
    assert_eq!(code, 0, "{out}");
    let r = s.post(export, &agent(), large, Some(token)).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(show(&s, "dora", id)["status"], "pending");
}
