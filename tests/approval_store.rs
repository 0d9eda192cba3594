//! The approval store's contract, against a real `redis-server` started for
//! each test on a free port.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Redis;
use countersign::approval::store::{Consumed, ListFilter, Verdict};
use countersign::approval::{
    ApprovalParams, Mode, NewApproval, RedisStore, Status, StoreConfig, StoreError,
};

fn store(redis: &Redis) -> RedisStore {
    RedisStore::new(StoreConfig {
        url: redis.url(),
        prefix: "test:".into(),
        timeout: Duration::from_secs(2),
        retention: Duration::from_secs(3600),
    })
    .unwrap()
}

fn new(fingerprint: &str, params: ApprovalParams) -> NewApproval {
    common::export_request(fingerprint, &["data-owners"], params)
}

fn params() -> ApprovalParams {
    ApprovalParams::default()
}

#[tokio::test]
async fn opening_is_idempotent_per_fingerprint_and_the_token_is_shown_once() {
    let redis = Redis::start().await;
    let s = store(&redis);
    let first = s.open(&new("fp-1", params())).await.unwrap();
    assert_eq!(first.approval.status, Status::Pending);
    assert!(first.token.as_ref().is_some_and(|t| t.len() == 64));
    assert_eq!(first.approval.info.parameters["body.format"], "csv");

    let again = s.open(&new("fp-1", params())).await.unwrap();
    assert_eq!(again.approval.id, first.approval.id);
    assert!(first.created && !again.created);
    // A retry gets a fresh token (only hashes are kept); both work.
    let (t1, t2) = (first.token.unwrap(), again.token.unwrap());
    assert_ne!(t1, t2);
    s.vote(&first.approval.id, "dora", Verdict::Approve, "")
        .await
        .unwrap();
    assert!(matches!(
        s.consume(Some(&t2), None, "fp-1").await.unwrap(),
        Consumed::Used { .. }
    ));
    assert!(matches!(
        s.consume(Some(&t1), None, "fp-1").await.unwrap(),
        Consumed::NotUsable {
            status: Status::Consumed,
            ..
        }
    ));

    let other = s.open(&new("fp-2", params())).await.unwrap();
    assert_ne!(other.approval.id, first.approval.id);
}

#[tokio::test]
async fn an_approval_is_used_once_by_the_identical_call_only() {
    let redis = Redis::start().await;
    let s = store(&redis);
    let opened = s.open(&new("fp", params())).await.unwrap();
    let (id, token) = (opened.approval.id.clone(), opened.token.unwrap());

    assert_eq!(
        s.consume(Some(&token), None, "fp").await.unwrap(),
        Consumed::NotUsable {
            id: id.clone(),
            status: Status::Pending
        }
    );
    let a = s.vote(&id, "dora", Verdict::Approve, "ok").await.unwrap();
    assert_eq!(a.status, Status::Approved);
    assert!(a.use_until > a.created_at);
    assert_eq!(a.votes[0].approver, "dora");

    assert_eq!(
        s.consume(Some(&token), None, "other-fp").await.unwrap(),
        Consumed::Mismatch { id: id.clone() }
    );
    assert_eq!(
        s.consume(Some("not-a-token"), None, "fp").await.unwrap(),
        Consumed::Unknown
    );
    assert_eq!(
        s.consume(Some(&token), None, "fp").await.unwrap(),
        Consumed::Used {
            id: id.clone(),
            uses_left: 0
        }
    );
    assert_eq!(
        s.consume(Some(&token), None, "fp").await.unwrap(),
        Consumed::NotUsable {
            id: id.clone(),
            status: Status::Consumed
        }
    );
    // Once used up, the same call opens a new request.
    let next = s.open(&new("fp", params())).await.unwrap();
    assert_ne!(next.approval.id, id);
}

#[tokio::test]
async fn a_policy_may_allow_several_uses() {
    let redis = Redis::start().await;
    let s = store(&redis);
    let opened = s
        .open(&new(
            "fp",
            ApprovalParams {
                uses: 3,
                ..params()
            },
        ))
        .await
        .unwrap();
    let token = opened.token.unwrap();
    s.vote(&opened.approval.id, "dora", Verdict::Approve, "")
        .await
        .unwrap();
    for left in [2, 1, 0] {
        assert!(
            matches!(s.consume(Some(&token), None, "fp").await.unwrap(), Consumed::Used { uses_left, .. } if uses_left == left)
        );
    }
    assert!(matches!(
        s.consume(Some(&token), None, "fp").await.unwrap(),
        Consumed::NotUsable {
            status: Status::Consumed,
            ..
        }
    ));
}

#[tokio::test]
async fn a_hundred_concurrent_uses_of_a_single_use_approval_succeed_exactly_once() {
    let redis = Redis::start().await;
    let s = Arc::new(store(&redis));
    let opened = s.open(&new("fp", params())).await.unwrap();
    let token = Arc::new(opened.token.unwrap());
    s.vote(&opened.approval.id, "dora", Verdict::Approve, "")
        .await
        .unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (s, token) = (s.clone(), token.clone());
            tokio::spawn(async move { s.consume(Some(&token), None, "fp").await.unwrap() })
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

#[tokio::test]
async fn a_quorum_counts_distinct_approvers_and_one_deny_ends_the_request() {
    let redis = Redis::start().await;
    let s = store(&redis);
    let id = s
        .open(&new(
            "fp",
            ApprovalParams {
                quorum: 2,
                ..params()
            },
        ))
        .await
        .unwrap()
        .approval
        .id;
    assert_eq!(
        s.vote(&id, "dora", Verdict::Approve, "")
            .await
            .unwrap()
            .status,
        Status::Pending
    );
    assert_eq!(
        s.vote(&id, "dora", Verdict::Approve, "").await.unwrap_err(),
        StoreError::AlreadyVoted {
            id: id.clone(),
            approver: "dora".into()
        }
    );
    let a = s.vote(&id, "erin", Verdict::Approve, "").await.unwrap();
    assert_eq!((a.status, a.votes.len()), (Status::Approved, 2));

    let vetoed = s
        .open(&new(
            "fp-2",
            ApprovalParams {
                quorum: 2,
                ..params()
            },
        ))
        .await
        .unwrap()
        .approval
        .id;
    s.vote(&vetoed, "dora", Verdict::Approve, "").await.unwrap();
    let a = s
        .vote(&vetoed, "erin", Verdict::Deny, "not today")
        .await
        .unwrap();
    assert_eq!(a.status, Status::Denied);
    assert_eq!(
        s.vote(&vetoed, "frank", Verdict::Approve, "")
            .await
            .unwrap_err(),
        StoreError::NotPending {
            id: vetoed.clone(),
            status: Status::Denied
        }
    );
    // The denied call, retried, finds its denied request rather than asking again.
    assert_eq!(
        s.open(&new("fp-2", params())).await.unwrap().approval.id,
        vetoed
    );
}

#[tokio::test]
async fn revoking_withdraws_an_unused_approval_only() {
    let redis = Redis::start().await;
    let s = store(&redis);
    let opened = s.open(&new("fp", params())).await.unwrap();
    let id = opened.approval.id.clone();
    assert!(matches!(
        s.vote(&id, "dora", Verdict::Revoke, "").await.unwrap_err(),
        StoreError::NotApproved { .. }
    ));
    s.vote(&id, "dora", Verdict::Approve, "").await.unwrap();
    assert_eq!(
        s.vote(&id, "erin", Verdict::Revoke, "leaked")
            .await
            .unwrap()
            .status,
        Status::Revoked
    );
    let token = opened.token.unwrap();
    assert_eq!(
        s.consume(Some(&token), None, "fp").await.unwrap(),
        Consumed::NotUsable {
            id,
            status: Status::Revoked
        }
    );
}

#[tokio::test]
async fn pending_requests_and_unused_approvals_expire() {
    let redis = Redis::start().await;
    let s = store(&redis);
    let short = ApprovalParams {
        pending_ttl: Duration::from_secs(1),
        approval_ttl: Duration::from_secs(1),
        ..params()
    };
    let pending = s
        .open(&new("fp-1", short.clone()))
        .await
        .unwrap()
        .approval
        .id;
    let approved = s.open(&new("fp-2", short)).await.unwrap();
    s.vote(&approved.approval.id, "dora", Verdict::Approve, "")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;

    assert_eq!(
        s.get(&pending).await.unwrap().unwrap().status,
        Status::Expired
    );
    assert_eq!(
        s.vote(&pending, "dora", Verdict::Approve, "")
            .await
            .unwrap_err(),
        StoreError::NotPending {
            id: pending.clone(),
            status: Status::Expired
        }
    );
    assert!(matches!(
        s.consume(approved.token.as_deref(), None, "fp-2")
            .await
            .unwrap(),
        Consumed::NotUsable {
            status: Status::Expired,
            ..
        }
    ));
}

#[tokio::test]
async fn decided_requests_stay_listed_with_who_decided_and_why() {
    let redis = Redis::start().await;
    let s = store(&redis);
    let a = s.open(&new("fp-1", params())).await.unwrap().approval.id;
    let b = s.open(&new("fp-2", params())).await.unwrap().approval.id;
    s.vote(&a, "dora", Verdict::Approve, "quarterly report")
        .await
        .unwrap();

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
    let none = s
        .list(&ListFilter {
            action: Some(r#"Action::"delete""#.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn events_announce_each_change() {
    let redis = Redis::start().await;
    let s = store(&redis);
    let mut events = s.subscribe().await;
    // The subscription is set up in the background; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = s
        .open(&new(
            "fp",
            ApprovalParams {
                mode: Mode::Hold,
                ..params()
            },
        ))
        .await
        .unwrap()
        .approval
        .id;
    s.vote(&id, "dora", Verdict::Approve, "").await.unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ev.id, id);
        kinds.push(ev.kind);
    }
    assert_eq!(kinds, ["requested", "approved"]);
}

#[tokio::test]
async fn a_store_that_cannot_be_reached_says_approvals_are_unavailable() {
    let mut redis = Redis::start().await;
    let s = store(&redis);
    redis.stop();
    let err = s.open(&new("fp", params())).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().starts_with("approvals are unavailable"));
}
