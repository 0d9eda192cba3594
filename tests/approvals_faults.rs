//! Approvals when time runs out or Redis hangs: the ext_authz service called
//! in process, against a real redis-server.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::Redis;
use common::check::{check, seen};
use common::services::{
    authz_service_with, example_config, example_policies, redis_store, store_config,
};
use countersign::approval::StoreConfig;
use countersign::audit::EventSink;
use countersign::authz::AuthzService;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use serde_json::{Value, json};

fn service(redis: &Redis, hold_max: Duration) -> AuthzService {
    let config = example_config();
    let policies = example_policies(&config);
    let store = redis_store(StoreConfig {
        timeout: Duration::from_millis(250),
        retention: Duration::from_secs(600),
        ..store_config(&redis.url(), "faults:")
    });
    authz_service_with(
        config,
        Arc::new(policies),
        Arc::new(store),
        EventSink::default(),
        |g| g.hold_max = hold_max,
    )
}

fn grant_role() -> CheckRequest {
    check("POST", "/acme.iam.v1.Roles/GrantRole")
        .claims(json!({"sub": "sam", "groups": ["security"]}))
        .body(r#"{"role":"admin","user":"mallory"}"#)
        .build()
}

fn export() -> CheckRequest {
    check("POST", "/v1/datasets/sales/export")
        .claims(json!({"sub": "agent-7", "groups": ["agents"]}))
        .body(r#"{"format":"csv"}"#)
        .build()
}

async fn answer(svc: &AuthzService, req: &CheckRequest) -> (u16, Value) {
    // A safety net only: a hang fails the test instead of stalling CI.
    let resp = tokio::time::timeout(Duration::from_secs(10), svc.decide(req))
        .await
        .expect("the check hung");
    let s = seen(&resp);
    (
        s.http_status,
        serde_json::from_str(&s.body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_hold_that_nobody_decides_answers_as_deny_mode_with_a_token() {
    let redis = Redis::start().await;
    let svc = service(&redis, Duration::from_secs(1));
    let (status, body) = answer(&svc, &grant_role()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        (body["decision"].as_str(), body["status"].as_str()),
        (Some("approval_required"), Some("pending"))
    );
    assert_eq!(body["policies"], json!(["privilege-changes-need-approval"]));
    assert!(
        body["approval_token"]
            .as_str()
            .is_some_and(|t| t.len() == 64),
        "{body}"
    );
}

#[tokio::test]
async fn a_hung_redis_gets_a_503_from_countersign_not_a_timeout_from_envoy() {
    let redis = Redis::start().await;
    let svc = service(&redis, Duration::from_secs(1));
    // Connected and working first, so that the hang is mid-life.
    assert_eq!(answer(&svc, &export()).await.0, 403);
    redis.signal("-STOP");
    // Envoy's ext_authz timeout in envoy/envoy.yaml: countersign must answer
    // inside it, or the caller gets Envoy's error instead of ours.
    let envoy_waits = Duration::from_millis(500);
    let within = async |req: &CheckRequest| {
        let started = std::time::Instant::now();
        let resp = svc
            .decide_within(req, Some(envoy_waits), &HashMap::<String, String>::new())
            .await;
        let s = seen(&resp);
        let body: Value = serde_json::from_str(&s.body).unwrap_or(Value::Null);
        (s.http_status, body, started.elapsed())
    };
    let (status, body, took) = within(&export()).await;
    // A call the policies allow on a guarded action needs its audit entry.
    let owner = check("POST", "/v1/datasets/sales/export")
        .claims(json!({"sub": "dora", "groups": ["data-owners"]}))
        .body(r#"{"format":"csv"}"#)
        .build();
    let (owner_status, owner_body, owner_took) = within(&owner).await;
    redis.signal("-CONT");
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["reason"],
        "approvals are unavailable: the approval store cannot be reached; retry later"
    );
    assert!(took < envoy_waits, "answered after {took:?}");
    assert_eq!(owner_status, 503, "{owner_body}");
    assert!(
        owner_body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("audit trail cannot be written")),
        "{owner_body}"
    );
    assert!(owner_took < envoy_waits, "answered after {owner_took:?}");
    // The hung store did not affect a call that needs no approval.
    let alice = check("GET", "/v1/datasets/sales")
        .claims(json!({"sub": "alice", "groups": ["analysts"]}))
        .build();
    assert_eq!(answer(&svc, &alice).await.0, 200);
}

#[tokio::test]
async fn after_redis_comes_back_approvals_work_again_without_a_restart() {
    let mut redis = Redis::start().await;
    let port = redis.port;
    let svc = service(&redis, Duration::from_secs(1));
    assert_eq!(answer(&svc, &export()).await.0, 403);
    redis.stop();
    assert_eq!(answer(&svc, &export()).await.0, 503);
    let _again = Redis::start_on(port).await;
    let recovered = common::eventually(
        Duration::from_secs(10),
        Duration::from_millis(200),
        || async { answer(&svc, &export()).await.1["decision"] == "approval_required" },
    )
    .await;
    assert!(recovered, "approvals did not recover after Redis came back");
}

#[tokio::test]
async fn a_hold_ends_before_the_callers_deadline() {
    let redis = Redis::start().await;
    // hold_max alone would wait 20 s; Envoy says it waits 800 ms.
    let svc = service(&redis, Duration::from_secs(20));
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        svc.decide_within(
            &grant_role(),
            Some(Duration::from_millis(800)),
            &std::collections::HashMap::<String, String>::new(),
        ),
    )
    .await
    .expect("the hold ignored the caller's deadline");
    let s = seen(&resp);
    let body: Value = serde_json::from_str(&s.body).unwrap();
    assert_eq!(
        (s.http_status, body["decision"].as_str()),
        (403, Some("approval_required"))
    );
}

/// `redis.replica_acks = 1` on a primary with no replica: the use is taken
/// and recorded with its allow, WAIT confirms nothing and the caller gets
/// 503. The entry right after the allow in the trail says so.
#[tokio::test]
async fn an_unconfirmed_use_is_corrected_in_the_trail_right_after_its_allow() {
    #[allow(unused_imports)]
    use countersign::approval::ApprovalStore;
    use countersign::approval::store::AuditCursor;
    let redis = Redis::start().await;
    let config = example_config();
    let store = Arc::new(redis_store(StoreConfig {
        replica_acks: 1,
        timeout: Duration::from_millis(400),
        ..store_config(&redis.url(), "unconfirmed:")
    }));
    let policies = Arc::new(example_policies(&config));
    let svc = authz_service_with(
        config,
        policies,
        store.clone(),
        EventSink::default(),
        |_| {},
    );
    let (status, body) = answer(&svc, &export()).await;
    assert_eq!(status, 403, "{body}");
    let (id, token) = (
        body["approval_id"].as_str().unwrap().to_owned(),
        body["approval_token"].as_str().unwrap().to_owned(),
    );
    // An approval is not waited for (losing it only fails closed).
    store
        .vote(
            &id,
            "dora".into(),
            countersign::approval::Ruling::Approve,
            "ok",
        )
        .await
        .unwrap();
    let retry = check("POST", "/v1/datasets/sales/export")
        .claims(json!({"sub": "agent-7", "groups": ["agents"]}))
        .header("x-countersign-approval", &token)
        .body(r#"{"format":"csv"}"#)
        .build();
    let (status, body) = answer(&svc, &retry).await;
    assert_eq!(status, 503, "{body}");

    let trail = store
        .audit_range(&mut AuditCursor::from("-"), "+", 100)
        .await
        .unwrap();
    let field = |e: &countersign::approval::store::AuditEntry, k: &str| {
        e.fields
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let allow = trail
        .iter()
        .position(|e| field(e, "event") == "decision" && field(e, "decision") == "allow")
        .expect("the allow written with the use");
    let next = trail.get(allow + 1).expect("an entry after the allow");
    let fields: HashMap<&str, String> = [
        "event",
        "decision",
        "status_code",
        "approval_id",
        "request_id",
        "principal",
        "action",
        "resource",
    ]
    .into_iter()
    .map(|k| (k, field(next, k)))
    .collect();
    assert_eq!(fields["event"], "use_unconfirmed", "{next:?}");
    assert_eq!(fields["decision"], "error", "{next:?}");
    assert_eq!(fields["status_code"], "503", "{next:?}");
    assert_eq!(fields["approval_id"], id, "{next:?}");
    assert_eq!(
        fields["request_id"],
        field(&trail[allow], "request_id"),
        "{next:?}"
    );
    assert_eq!(fields["principal"], r#"User::"agent-7""#, "{next:?}");
    assert!(
        field(next, "reason").contains("got 0 of the 1 replica confirmation(s)"),
        "{next:?}"
    );
    // Nothing after the correction claims otherwise.
    assert_eq!(trail.len(), allow + 2, "{trail:?}");
}

/// An agent that varies a body field the approvers are not shown opens one
/// request per variant: past `approvals.max_pending_per_principal` it gets
/// a refusal that says why, counted; its identical retry still finds its
/// request.
#[tokio::test]
async fn past_its_cap_of_pending_requests_a_principal_is_refused_with_the_reason() {
    let redis = Redis::start().await;
    let config = example_config();
    let policies = Arc::new(example_policies(&config));
    let store = Arc::new(redis_store(StoreConfig {
        max_pending_per_principal: 2,
        ..store_config(&redis.url(), "cap:")
    }));
    let sink = EventSink::default();
    let svc = authz_service_with(
        config,
        policies.clone(),
        store.clone(),
        sink.clone(),
        |_| {},
    );
    let export = |rows: u32| {
        check("POST", "/v1/datasets/sales/export")
            .claims(json!({"sub": "agent-7", "groups": ["agents"]}))
            .body(&format!(r#"{{"format":"csv","rows":{rows}}}"#))
            .build()
    };
    for rows in [1, 2, 1] {
        let (status, body) = answer(&svc, &export(rows)).await;
        assert_eq!(
            (status, &body["decision"]),
            (403, &json!("approval_required")),
            "{body}"
        );
    }
    let (status, body) = answer(&svc, &export(3)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["decision"], "deny", "{body}");
    assert_eq!(
        body["reason"],
        "principal `User::\"agent-7\"` has 2 approval requests pending; no more are opened \
         until approvers decide some or they expire (approvals.max_pending_per_principal)"
    );
    let scraped = sink.metrics().render(&policies, &*store).await;
    assert!(
        scraped.contains("countersign_approval_requests_refused_total 1"),
        "{scraped}"
    );
}
