//! The approval story end to end: real Envoy with envoy/envoy.yaml, the real
//! `countersign` binary, a real redis-server, and the `countersign
//! approvals` client over TLS with client certificates.

mod common;

use std::time::Duration;

use common::stack::{Reply, answer_of, race, stack};
use common::{eventually, token, token_with};
use serde_json::{Value, json};

const EXPORT: &str = "/v1/datasets/sales/export";
const BODY: &str = r#"{"format":"csv","rows":10}"#;

fn agent() -> String {
    token_with("agent-7", &["agents"], json!({"on_behalf_of": "alice"}))
}

#[tokio::test]
async fn an_agents_export_waits_for_a_data_owner_and_the_approval_is_used_once() {
    let s = stack().await;
    let agent = agent();

    let r = s.post(EXPORT, &agent, BODY, None).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.body["decision"], "approval_required");
    assert_eq!(r.body["status"], "pending");
    assert_eq!(r.body["approvers"], json!(["data-owners"]));
    let id = r.body["approval_id"].as_str().unwrap().to_owned();
    let token = r.body["approval_token"].as_str().unwrap().to_owned();
    assert_eq!(r.headers["x-countersign-approval-id"], id.as_str());
    assert!(r.headers.contains_key("retry-after"));

    // The identical call again finds the same request (with a fresh token,
    // in case the first answer was lost).
    let r = s.post(EXPORT, &agent, BODY, None).await;
    assert_eq!(r.body["approval_id"].as_str(), Some(id.as_str()));
    assert!(
        r.body["approval_token"]
            .as_str()
            .is_some_and(|t| t != token)
    );
    // Presenting the token early: still pending.
    let r = s.post(EXPORT, &agent, BODY, Some(&token)).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (403, Some("pending"))
    );

    // The approver sees it, with the chosen parameters and who asked.
    let (code, out) = s.cli("dora", &["list"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&id) && out.contains(r#"User::"agent-7""#),
        "{out}"
    );
    let (code, out) = s.cli("dora", &["show", &id]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("body.format = csv") && out.contains(r#"on behalf of    User::"alice""#),
        "{out}"
    );
    assert!(!out.contains(&token), "the token is the caller's secret");

    // Approving without the reason the policy requires fails and says why.
    let (code, out) = s.cli("dora", &["approve", &id]);
    assert_eq!(code, 1);
    assert!(out.contains("requires a reason"), "{out}");
    let (code, out) = s.cli("dora", &["approve", &id, "--reason", "quarterly report"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("status          approved"), "{out}");

    let r = s.post(EXPORT, &agent, BODY, Some(&token)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.headers["x-upstream-saw-principal"], r#"User::"agent-7""#);
    let r = s.post(EXPORT, &agent, BODY, Some(&token)).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["decision"], "deny");
    let reason = r.body["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("approval `{id}` is consumed")),
        "{reason}"
    );

    let (_, out) = s.cli("dora", &["list", "--status", "all", "--output", "json"]);
    let all: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(all[0]["status"], "consumed");
    assert_eq!(all[0]["votes"][0]["reason"], "quarterly report");
}

#[tokio::test]
async fn an_approval_is_bound_to_the_exact_request() {
    let s = stack().await;
    let agent = agent();
    let r = s.post(EXPORT, &agent, BODY, None).await;
    let id = r.body["approval_id"].as_str().unwrap().to_owned();
    let token = r.body["approval_token"].as_str().unwrap().to_owned();
    let (code, out) = s.cli("dora", &["approve", &id, "--reason", "ok"]);
    assert_eq!(code, 0, "{out}");

    let refused = |r: &Reply| {
        assert_eq!(
            (r.status, r.body["decision"].as_str()),
            (403, Some("deny")),
            "{:?}",
            r.body
        );
        let reason = r.body["reason"].as_str().unwrap();
        assert!(
            reason.contains("granted for a different request"),
            "{reason}"
        );
    };
    refused(
        &s.post(
            EXPORT,
            &agent,
            r#"{"format":"csv","rows":10000}"#,
            Some(&token),
        )
        .await,
    );
    refused(
        &s.post("/v1/datasets/payroll/export", &agent, BODY, Some(&token))
            .await,
    );
    refused(
        &s.post(
            &format!("{EXPORT}?format=parquet"),
            &agent,
            BODY,
            Some(&token),
        )
        .await,
    );
    // What an approver was not shown never reaches the approval at all.
    let unshown = s
        .post(
            &format!("{EXPORT}?dest=elsewhere"),
            &agent,
            r#"{"format":"csv","rows":10,"note":"x"}"#,
            Some(&token),
        )
        .await;
    let reason = unshown.body["reason"].as_str().unwrap_or_default();
    assert_eq!(unshown.status, 403, "{:?}", unshown.body);
    assert!(
        reason.contains("cannot be approved")
            && reason.contains("query parameter `dest`")
            && reason.contains("body field `note`"),
        "{reason}"
    );
    let other_caller = token_with("agent-8", &["agents"], json!({}));
    refused(&s.post(EXPORT, &other_caller, BODY, Some(&token)).await);
    let for_someone_else = token_with("agent-7", &["agents"], json!({"on_behalf_of": "bob"}));
    refused(&s.post(EXPORT, &for_someone_else, BODY, Some(&token)).await);
    // Still unused: the identical request goes through.
    assert_eq!(s.post(EXPORT, &agent, BODY, Some(&token)).await.status, 200);
}

#[tokio::test]
async fn a_held_call_goes_through_when_approved_within_the_hold_time() {
    let s = stack().await;
    let held = s.held("/acme.iam.v1.Roles/GrantRole", &token("sam", &["security"]));
    // Approved by two other members of security (quorum 2; sam himself may
    // not approve).
    let id = s.pending_id("sara").await;
    assert!(!held.is_finished(), "the call is held, not answered");
    let (code, out) = s.cli("sam", &["approve", &id, "--reason", "mine"]);
    assert_ne!(code, 0, "the requester approved his own call: {out}");
    let (code, out) = s.cli("sara", &["approve", &id, "--reason", "onboarding"]);
    assert_eq!(code, 0, "{out}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "released by one approval of two");
    let (code, out) = s.cli("sid", &["approve", &id, "--reason", "onboarding"]);
    assert_eq!(code, 0, "{out}");
    let (status, body) = answer_of(held).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn with_redis_down_approvable_calls_get_503_and_others_keep_their_answer() {
    let mut s = stack().await;
    let agent = agent();
    s.redis.stop();
    let r = s.post(EXPORT, &agent, BODY, None).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert!(
        r.body["reason"]
            .as_str()
            .unwrap()
            .starts_with("approvals are unavailable"),
        "{:?}",
        r.body
    );

    let alice = token("alice", &["analysts"]);
    assert_eq!(s.get("/v1/datasets/sales", Some(&alice)).await, 200);
    let r = s
        .http
        .get(s.envoy.url("/v1/datasets/sales"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test]
async fn a_hundred_concurrent_retries_with_one_single_use_token_pass_exactly_once() {
    let s = stack().await;
    let agent = agent();
    let (_, token) = s.open_and_approve(EXPORT, &agent, BODY, "once").await;
    let calls = (0..100)
        .map(|_| s.view().post_request(EXPORT, &agent, BODY, Some(&token)))
        .collect();
    let passed = race(calls).await;
    assert_eq!(passed, 1);
    // A replay later is refused the same way.
    let r = s.post(EXPORT, &agent, BODY, Some(&token)).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
}

#[tokio::test]
async fn revoked_denied_and_expired_approvals_are_refused() {
    let s = stack().await;
    let agent = agent();
    let body = |rows: u32| format!(r#"{{"format":"csv","rows":{rows}}}"#);
    let refused_with = |r: &Reply, words: &str| {
        assert_eq!(r.status, 403, "{:?}", r.body);
        let reason = r.body["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(words), "{words}: {reason}");
    };

    // Revoked after approval, before use.
    let (id, token) = s.open_and_approve(EXPORT, &agent, &body(1), "ok").await;
    let (code, out) = s.cli("dora", &["revoke", &id, "--reason", "wrong dataset"]);
    assert_eq!(code, 0, "{out}");
    refused_with(
        &s.post(EXPORT, &agent, &body(1), Some(&token)).await,
        "revoked",
    );

    // Denied by an approver.
    let r = s.post(EXPORT, &agent, &body(2), None).await;
    let (id, token) = (
        r.body["approval_id"].as_str().unwrap().to_owned(),
        r.body["approval_token"].as_str().unwrap().to_owned(),
    );
    let (code, out) = s.cli("dora", &["deny", &id, "--reason", "no"]);
    assert_eq!(code, 0, "{out}");
    refused_with(
        &s.post(EXPORT, &agent, &body(2), Some(&token)).await,
        "denied",
    );

    // Expired: a policy that keeps approvals for one second.
    let path = s.policies.path().join("data-export.cedar");
    let text = std::fs::read_to_string(&path).unwrap();
    let short = text.replace(
        "@reason_required(\"true\")",
        "@reason_required(\"true\")\n@approval_ttl(\"1s\")",
    );
    assert_ne!(short, text);
    let reloads = || s.sidecar.log().matches("policies reloaded").count();
    let before = reloads();
    std::fs::write(&path, short).unwrap();
    let reloaded = eventually(Duration::from_secs(10), Duration::from_millis(100), || {
        let n = reloads();
        async move { n > before }
    })
    .await;
    assert!(reloaded, "{}", s.sidecar.log());
    let (_, token) = s.open_and_approve(EXPORT, &agent, &body(4), "brief").await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    refused_with(
        &s.post(EXPORT, &agent, &body(4), Some(&token)).await,
        "expired",
    );
}
