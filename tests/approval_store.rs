//! The approval store's contract: one body per behaviour, run against the
//! memory store, one real `redis-server` (started for each test on a free
//! port) and a real 3+3 Redis Cluster (see `contract!` at the end).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Redis;
use common::services::{redis_store, store_config};
use countersign::approval::approvers::{Method, SignedIn, Voter};
use countersign::approval::store::{AuditCursor, CheckRef, Consumed, ListFilter};
use countersign::approval::{
    ApprovalParams, ApprovalStore, MemoryStore, Mode, NewApproval, Opened, RedisStore,
    Ruling as Verdict, Status, StoreConfig, StoreError,
};

fn store(redis: &Redis) -> RedisStore {
    redis_store(store_config(&redis.url(), "test:"))
}

fn new(fingerprint: &str, params: ApprovalParams) -> NewApproval {
    common::export_request(fingerprint, &["data-owners"], params)
}

/// Opens the request for an `export_request` with `fingerprint`, outside any check.
async fn open(s: &dyn ApprovalStore, fingerprint: &str, params: ApprovalParams) -> Opened {
    s.open(&new(fingerprint, params), CheckRef::default())
        .await
        .unwrap()
}

fn params() -> ApprovalParams {
    ApprovalParams::default()
}

async fn opening_is_idempotent_per_fingerprint_and_the_token_is_shown_once(
    s: Arc<dyn ApprovalStore>,
) {
    let first = open(&*s, "fp-1", params()).await;
    assert_eq!(first.approval.status, Status::Pending);
    assert!(first.token.as_ref().is_some_and(|t| t.len() == 64));
    assert_eq!(first.approval.info.parameters["body.format"], "csv");

    let again = open(&*s, "fp-1", params()).await;
    assert_eq!(again.approval.id, first.approval.id);
    assert!(first.created && !again.created);
    // A retry gets a fresh token (only hashes are kept); both work.
    let (t1, t2) = (first.token.unwrap(), again.token.unwrap());
    assert_ne!(t1, t2);
    s.vote(&first.approval.id, "dora".into(), Verdict::Approve, "")
        .await
        .unwrap();
    assert!(matches!(
        s.consume(Some(&t2), None, "fp-1", CheckRef::default())
            .await
            .unwrap(),
        Consumed::Used { .. }
    ));
    assert!(matches!(
        s.consume(Some(&t1), None, "fp-1", CheckRef::default())
            .await
            .unwrap(),
        Consumed::NotUsable {
            status: Status::Consumed,
            ..
        }
    ));

    let other = open(&*s, "fp-2", params()).await;
    assert_ne!(other.approval.id, first.approval.id);
}

/// Where the caller cannot present a token (MCP), none is issued, on
/// opening or on finding: the identical call takes the use by id.
async fn a_request_opened_without_a_token_is_used_by_id_or_fingerprint(s: Arc<dyn ApprovalStore>) {
    let mut quiet = new("fp-quiet", params());
    quiet.issue_token = false;
    let first = s.open(&quiet, CheckRef::default()).await.unwrap();
    let again = s.open(&quiet, CheckRef::default()).await.unwrap();
    assert!(first.created && !again.created);
    assert_eq!(again.approval.id, first.approval.id);
    assert_eq!((first.token, again.token), (None, None));
    let id = first.approval.id;
    s.vote(&id, "dora".into(), Verdict::Approve, "")
        .await
        .unwrap();
    let found = s.open(&quiet, CheckRef::default()).await.unwrap();
    assert_eq!(
        (found.approval.status, found.token),
        (Status::Approved, None)
    );
    assert!(matches!(
        s.consume(None, Some(&id), "fp-quiet", CheckRef::default())
            .await
            .unwrap(),
        Consumed::Used { .. }
    ));
    // With neither token nor id, the fingerprint finds its request.
    let mut twice = new(
        "fp-twice",
        ApprovalParams {
            uses: 2,
            ..params()
        },
    );
    twice.issue_token = false;
    let none = s.consume(None, None, "fp-twice", CheckRef::default()).await;
    assert_eq!(none.unwrap(), Consumed::Unknown, "nothing opened yet");
    let id = s
        .open(&twice, CheckRef::default())
        .await
        .unwrap()
        .approval
        .id;
    let pending = s.consume(None, None, "fp-twice", CheckRef::default()).await;
    assert!(
        matches!(
            pending.unwrap(),
            Consumed::NotUsable {
                status: Status::Pending,
                ..
            }
        ),
        "not before approval"
    );
    s.vote(&id, "dora".into(), Verdict::Approve, "")
        .await
        .unwrap();
    for left in [1, 0] {
        let used = s.consume(None, None, "fp-twice", CheckRef::default()).await;
        assert!(
            matches!(used.unwrap(), Consumed::Used { uses_left, .. } if uses_left == left),
            "{left}"
        );
    }
    let spent = s.consume(None, None, "fp-twice", CheckRef::default()).await;
    assert!(matches!(
        spent.unwrap(),
        Consumed::NotUsable {
            status: Status::Consumed,
            ..
        }
    ));
}

async fn an_approval_is_used_once_by_the_identical_call_only(s: Arc<dyn ApprovalStore>) {
    let opened = open(&*s, "fp", params()).await;
    let (id, token) = (opened.approval.id.clone(), opened.token.unwrap());

    assert_eq!(
        s.consume(Some(&token), None, "fp", CheckRef::default())
            .await
            .unwrap(),
        Consumed::NotUsable {
            id: id.clone(),
            status: Status::Pending
        }
    );
    let a = s
        .vote(&id, "dora".into(), Verdict::Approve, "ok")
        .await
        .unwrap();
    assert_eq!(a.status, Status::Approved);
    assert!(a.use_until > a.created_at);
    assert_eq!(a.votes[0].approver, "dora");

    assert_eq!(
        s.consume(Some(&token), None, "other-fp", CheckRef::default())
            .await
            .unwrap(),
        Consumed::Mismatch { id: id.clone() }
    );
    assert_eq!(
        s.consume(Some("not-a-token"), None, "fp", CheckRef::default())
            .await
            .unwrap(),
        Consumed::Unknown
    );
    assert_eq!(
        s.consume(Some(&token), None, "fp", CheckRef::default())
            .await
            .unwrap(),
        Consumed::Used {
            id: id.clone(),
            uses_left: 0,
            opened_by: String::new(),
        }
    );
    assert_eq!(
        s.consume(Some(&token), None, "fp", CheckRef::default())
            .await
            .unwrap(),
        Consumed::NotUsable {
            id: id.clone(),
            status: Status::Consumed
        }
    );
    // Once used up, the same call opens a new request.
    let next = open(&*s, "fp", params()).await;
    assert_ne!(next.approval.id, id);
}

async fn a_policy_may_allow_several_uses(s: Arc<dyn ApprovalStore>) {
    let opened = open(
        &*s,
        "fp",
        ApprovalParams {
            uses: 3,
            ..params()
        },
    )
    .await;
    let token = opened.token.unwrap();
    s.vote(&opened.approval.id, "dora".into(), Verdict::Approve, "")
        .await
        .unwrap();
    for left in [2, 1, 0] {
        assert!(
            matches!(s.consume(Some(&token), None, "fp", CheckRef::default()).await.unwrap(), Consumed::Used { uses_left, .. } if uses_left == left)
        );
    }
    assert!(matches!(
        s.consume(Some(&token), None, "fp", CheckRef::default())
            .await
            .unwrap(),
        Consumed::NotUsable {
            status: Status::Consumed,
            ..
        }
    ));
}

async fn a_hundred_concurrent_uses_of_a_single_use_approval_succeed_exactly_once(
    s: Arc<dyn ApprovalStore>,
) {
    let opened = open(&*s, "fp", params()).await;
    let token = Arc::new(opened.token.unwrap());
    s.vote(&opened.approval.id, "dora".into(), Verdict::Approve, "")
        .await
        .unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (s, token) = (s.clone(), token.clone());
            tokio::spawn(async move {
                s.consume(Some(&token), None, "fp", CheckRef::default())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut used = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), Consumed::Used { .. }) {
            used += 1;
        }
    }
    assert_eq!(used, 1);
}

async fn a_quorum_counts_distinct_approvers_and_one_deny_ends_the_request(
    s: Arc<dyn ApprovalStore>,
) {
    let two = ApprovalParams {
        quorum: 2,
        ..params()
    };
    let id = open(&*s, "fp", two.clone()).await.approval.id;
    assert_eq!(
        s.vote(&id, "dora".into(), Verdict::Approve, "")
            .await
            .unwrap()
            .status,
        Status::Pending
    );
    assert_eq!(
        s.vote(&id, "dora".into(), Verdict::Approve, "")
            .await
            .unwrap_err(),
        StoreError::AlreadyVoted {
            id: id.clone(),
            approver: "dora".into()
        }
    );
    let a = s
        .vote(&id, "erin".into(), Verdict::Approve, "")
        .await
        .unwrap();
    assert_eq!((a.status, a.votes.len()), (Status::Approved, 2));

    // One person at the identity provider votes once, whatever name
    // (e-mail) their token carries today.
    let signed_in = SignedIn {
        method: Method::Oidc,
        issuer: "https://idp.example.com".into(),
        subject: "00u1dora".into(),
    };
    let renamed = open(&*s, "fp-3", two.clone()).await.approval.id;
    for (name, ok) in [("dora@example.com", true), ("dora.new@example.com", false)] {
        let voter = Voter {
            name,
            signed_in: &signed_in,
        };
        let r = s.vote(&renamed, voter, Verdict::Approve, "").await;
        assert_eq!(r.is_ok(), ok, "{name}: {r:?}");
    }

    let vetoed = open(&*s, "fp-2", two).await.approval.id;
    s.vote(&vetoed, "dora".into(), Verdict::Approve, "")
        .await
        .unwrap();
    let a = s
        .vote(&vetoed, "erin".into(), Verdict::Deny, "not today")
        .await
        .unwrap();
    assert_eq!(a.status, Status::Denied);
    assert_eq!(
        s.vote(&vetoed, "frank".into(), Verdict::Approve, "")
            .await
            .unwrap_err(),
        StoreError::NotPending {
            id: vetoed.clone(),
            status: Status::Denied
        }
    );
    // The denied call, retried, finds its denied request rather than asking again.
    assert_eq!(open(&*s, "fp-2", params()).await.approval.id, vetoed);
}

async fn revoking_withdraws_an_unused_approval_only(s: Arc<dyn ApprovalStore>) {
    let opened = open(&*s, "fp", params()).await;
    let id = opened.approval.id.clone();
    assert!(matches!(
        s.vote(&id, "dora".into(), Verdict::Revoke, "")
            .await
            .unwrap_err(),
        StoreError::NotApproved { .. }
    ));
    s.vote(&id, "dora".into(), Verdict::Approve, "")
        .await
        .unwrap();
    assert_eq!(
        s.vote(&id, "erin".into(), Verdict::Revoke, "leaked")
            .await
            .unwrap()
            .status,
        Status::Revoked
    );
    let token = opened.token.unwrap();
    assert_eq!(
        s.consume(Some(&token), None, "fp", CheckRef::default())
            .await
            .unwrap(),
        Consumed::NotUsable {
            id,
            status: Status::Revoked
        }
    );
}

async fn pending_requests_and_unused_approvals_expire(s: Arc<dyn ApprovalStore>) {
    let short = ApprovalParams {
        pending_ttl: Duration::from_secs(1),
        approval_ttl: Duration::from_secs(1),
        ..params()
    };
    let pending = open(&*s, "fp-1", short.clone()).await.approval.id;
    let approved = open(&*s, "fp-2", short).await;
    s.vote(&approved.approval.id, "dora".into(), Verdict::Approve, "")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;

    assert_eq!(
        s.get(&pending).await.unwrap().unwrap().status,
        Status::Expired
    );
    assert_eq!(
        s.vote(&pending, "dora".into(), Verdict::Approve, "")
            .await
            .unwrap_err(),
        StoreError::NotPending {
            id: pending.clone(),
            status: Status::Expired
        }
    );
    assert!(matches!(
        s.consume(approved.token.as_deref(), None, "fp-2", CheckRef::default())
            .await
            .unwrap(),
        Consumed::NotUsable {
            status: Status::Expired,
            ..
        }
    ));
    // Refusing them recorded nothing; the sweep records each expiry once.
    let mut swept = sweep(&*s).await;
    swept.sort();
    let mut both = vec![pending, approved.approval.id];
    both.sort();
    assert_eq!(swept, both);
    assert!(sweep(&*s).await.is_empty());
    let expired = audit(&*s)
        .await
        .into_iter()
        .filter(|e| e["event"] == "expired")
        .count();
    assert_eq!(expired, 2);
}

async fn decided_requests_stay_listed_with_who_decided_and_why(s: Arc<dyn ApprovalStore>) {
    let a = open(&*s, "fp-1", params()).await.approval.id;
    let b = open(&*s, "fp-2", params()).await.approval.id;
    let signed_in = SignedIn {
        method: Method::Oidc,
        issuer: "https://idp.example.com".into(),
        subject: "00u1dora".into(),
    };
    let dora = Voter {
        name: "dora",
        signed_in: &signed_in,
    };
    s.vote(&a, dora, Verdict::Approve, "quarterly report")
        .await
        .unwrap();
    // Who decided, and how they signed in, in the vote and the audit trail.
    let entries = audit(&*s).await;
    let entry = entries.iter().find(|e| e["event"] == "approved").unwrap();
    assert_eq!(
        (
            entry["approver"].as_str(),
            entry["approver_method"].as_str(),
            entry["approver_issuer"].as_str(),
            entry["approver_subject"].as_str()
        ),
        ("dora", "oidc", "https://idp.example.com", "00u1dora")
    );

    let pending = s
        .list(&ListFilter {
            status: Some(Status::Pending),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        pending.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
        [b.as_str()]
    );
    let all = s.list(&ListFilter::default()).await.unwrap();
    assert_eq!(all.len(), 2);
    let approved = all.iter().find(|x| x.id == a).unwrap();
    assert_eq!(
        (
            approved.votes[0].approver.as_str(),
            approved.votes[0].reason.as_str()
        ),
        ("dora", "quarterly report")
    );
    assert_eq!(
        (approved.votes[0].method, approved.votes[0].subject.as_str()),
        (Some(Method::Oidc), "00u1dora")
    );
    let none = s
        .list(&ListFilter {
            action: Some(r#"Action::"delete""#.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

async fn events_announce_each_change(s: Arc<dyn ApprovalStore>) {
    // Live once subscribe returns: no wait needed.
    let mut events = s.subscribe().await;
    let id = open(
        &*s,
        "fp",
        ApprovalParams {
            mode: Mode::Hold,
            ..params()
        },
    )
    .await
    .approval
    .id;
    s.vote(&id, "dora".into(), Verdict::Approve, "")
        .await
        .unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ev.id, id);
        kinds.push(ev.kind.as_str());
    }
    assert_eq!(kinds, ["requested", "approved"]);
}

#[tokio::test]
async fn a_store_that_cannot_be_reached_says_approvals_are_unavailable() {
    let mut redis = Redis::start().await;
    let s = store(&redis);
    redis.stop();
    let err = s
        .open(&new("fp", params()), CheckRef::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().starts_with("approvals are unavailable"));
}

/// The ids a sweep expired; every shard swept.
async fn sweep(s: &dyn ApprovalStore) -> Vec<String> {
    let swept = s.sweep().await;
    assert!(swept.errors.is_empty(), "{:?}", swept.errors);
    swept.expired
}

/// The fields of every audit entry, in stream order.
async fn audit(s: &dyn ApprovalStore) -> Vec<std::collections::HashMap<String, String>> {
    s.audit_range(&mut AuditCursor::from("-"), "+", 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.fields.into_iter().collect())
        .collect()
}

async fn every_lifecycle_event_is_in_the_audit_stream_once_in_order(s: Arc<dyn ApprovalStore>) {
    let opening = CheckRef {
        request_id: "req-1",
        trace: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ..Default::default()
    };
    let opened = s.open(&new("fp", params()), opening).await.unwrap();
    let id = opened.approval.id.clone();
    assert_eq!(opened.approval.opened_by, opening.trace);
    s.vote(&id, "dora".into(), Verdict::Approve, "ticket CHG-7")
        .await
        .unwrap();
    let used = s
        .consume(
            opened.token.as_deref(),
            None,
            "fp",
            CheckRef {
                request_id: "req-2",
                trace: "",
                // The allow this use leads to, recorded with the use.
                decision: &[("event", "decision"), ("decision", "allow"), ("empty", "")],
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(&used, Consumed::Used { opened_by, .. } if opened_by == opening.trace),
        "{used:?}"
    );
    // A replay changes nothing and records nothing.
    s.consume(opened.token.as_deref(), None, "fp", CheckRef::default())
        .await
        .unwrap();

    let entries = audit(&*s).await;
    let events: Vec<&str> = entries.iter().map(|e| e["event"].as_str()).collect();
    assert_eq!(events, ["requested", "approved", "consumed", "decision"]);
    for e in &entries {
        assert_eq!(e["approval_id"], id);
    }
    for e in &entries[..3] {
        assert_eq!(e["principal"], r#"User::"agent-7""#, "{e:?}");
    }
    assert_eq!(entries[3]["decision"], "allow");
    assert_eq!(entries[3]["approval_status"], "consumed");
    assert!(
        !entries[3].contains_key("empty"),
        "empty values are left out"
    );
    assert_eq!(entries[0]["request_id"], "req-1");
    assert_eq!(entries[0]["trace"], opening.trace);
    assert_eq!(entries[1]["approver"], "dora");
    assert_eq!(entries[1]["reason"], "ticket CHG-7");
    assert_eq!(entries[2]["request_id"], "req-2");
    assert_eq!(entries[2]["status"], "consumed");
}

async fn the_sweep_records_each_expiry_once(s: Arc<dyn ApprovalStore>) {
    let short = ApprovalParams {
        pending_ttl: Duration::from_secs(1),
        ..params()
    };
    let id = open(&*s, "fp", short).await.approval.id;
    assert!(sweep(&*s).await.is_empty(), "not due yet");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Two sidecars sweeping at once: one records the expiry.
    let (mut swept, b) = tokio::join!(sweep(&*s), sweep(&*s));
    swept.extend(b);
    assert_eq!(swept, std::slice::from_ref(&id));
    assert_eq!(s.get(&id).await.unwrap().unwrap().status, Status::Expired);
    let events: Vec<String> = audit(&*s)
        .await
        .into_iter()
        .map(|e| e["event"].clone())
        .collect();
    assert_eq!(events, ["requested", "expired"]);
}

/// Varying what the approver does not see cannot open requests without
/// end: a principal has at most `max_pending_per_principal` (20 by
/// default) pending at once, across every shard of the store.
async fn a_principal_has_at_most_twenty_requests_pending(s: Arc<dyn ApprovalStore>) {
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(open(&*s, &format!("fp-{i}"), params()).await.approval.id);
    }
    // The identical call finds its request: never refused.
    let again = open(&*s, "fp-7", params()).await;
    assert_eq!((again.created, &again.approval.id), (false, &ids[7]));
    let err = s
        .open(&new("fp-21", params()), CheckRef::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "principal `User::\"agent-7\"` has 20 approval requests pending; no more are opened \
         until approvers decide some or they expire (approvals.max_pending_per_principal)"
    );
    // Another principal is not held back by this one.
    let mut other = new("fp-21", params());
    other.info.principal = r#"User::"agent-8""#.into();
    assert!(s.open(&other, CheckRef::default()).await.unwrap().created);
    // Decided requests free their places.
    s.vote(&ids[0], "dora".into(), Verdict::Deny, "no")
        .await
        .unwrap();
    s.vote(&ids[1], "dora".into(), Verdict::Approve, "ok")
        .await
        .unwrap();
    assert!(open(&*s, "fp-22", params()).await.created);
    assert!(open(&*s, "fp-23", params()).await.created);
    let err = s
        .open(&new("fp-24", params()), CheckRef::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("has 20 approval requests pending"),
        "{err}"
    );
    // Finding a decided request is not opening one.
    assert!(!open(&*s, "fp-0", params()).await.created);
    assert!(!open(&*s, "fp-1", params()).await.created);
}

#[path = "approval_store/outbox.rs"]
mod outbox;
use outbox::notifications_are_taken_once_claimed_again_when_stalled_and_acknowledged;

/// Runs each contract body against every store: in memory and on one Redis
/// node, one test each; on a Redis Cluster, in one test that takes the
/// bodies in turn, each under its own key prefix (a cluster takes seconds
/// to start).
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(Arc::new(MemoryStore::new())).await;
                }
            )*
        }

        mod one_redis {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let redis = Redis::start().await;
                    super::$name(Arc::new(store(&redis))).await;
                }
            )*
        }

        #[tokio::test]
        async fn the_contract_holds_on_a_redis_cluster() {
            let cluster = common::cluster::Cluster::start().await;
            $(
                let prefix = concat!(stringify!($name), ":");
                let config = StoreConfig {
                    cluster: true,
                    ..store_config(&cluster.url(), prefix)
                };
                $name(Arc::new(redis_store(config))).await;
            )*
        }
    };
}

contract!(
    opening_is_idempotent_per_fingerprint_and_the_token_is_shown_once,
    a_request_opened_without_a_token_is_used_by_id_or_fingerprint,
    an_approval_is_used_once_by_the_identical_call_only,
    a_policy_may_allow_several_uses,
    a_hundred_concurrent_uses_of_a_single_use_approval_succeed_exactly_once,
    a_quorum_counts_distinct_approvers_and_one_deny_ends_the_request,
    revoking_withdraws_an_unused_approval_only,
    pending_requests_and_unused_approvals_expire,
    decided_requests_stay_listed_with_who_decided_and_why,
    events_announce_each_change,
    every_lifecycle_event_is_in_the_audit_stream_once_in_order,
    the_sweep_records_each_expiry_once,
    a_principal_has_at_most_twenty_requests_pending,
    notifications_are_taken_once_claimed_again_when_stalled_and_acknowledged,
);
