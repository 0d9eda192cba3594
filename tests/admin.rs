//! The admin API over TLS with client certificates: who may decide what.

mod common;

use std::time::Duration;

use common::admin::{Admin, decide};
use common::services::approver;
use countersign::admin::pb;
use countersign::approval::ApprovalParams;
use tonic::Code;

const TOKEN: &str = "tess-secret-token";

async fn start() -> Admin {
    Admin::start(
        "admin-test:",
        vec![
            approver("dora", &["data-owners"], None),
            approver("agent-7", &["data-owners"], None),
            approver("alice", &["data-owners"], None),
            approver("ivan", &["interns"], None),
            approver("tess", &["data-owners"], Some(TOKEN)),
        ],
    )
    .await
}

#[tokio::test]
async fn a_permitted_approver_with_a_certificate_approves() {
    let admin = start().await;
    let id = admin
        .open(
            "fp",
            &["data-owners"],
            ApprovalParams {
                reason_required: true,
                ..Default::default()
            },
        )
        .await;
    let mut dora = admin.client(Some("dora")).await;

    let listed = dora
        .list(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .approvals;
    assert_eq!(
        listed.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        [id.as_str()]
    );

    let err = dora.approve(decide(&id, "  ")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("requires a reason"),
        "{}",
        err.message()
    );

    let a = dora
        .approve(decide(&id, "quarterly report"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.status, "approved");
    assert_eq!(
        (a.votes[0].approver.as_str(), a.votes[0].reason.as_str()),
        ("dora", "quarterly report")
    );

    let err = dora.approve(decide(&id, "again")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}

#[tokio::test]
async fn the_requester_and_the_human_it_acts_for_cannot_approve() {
    let admin = start().await;
    let id = admin
        .open("fp", &["data-owners"], ApprovalParams::default())
        .await;

    let err = admin
        .client(Some("agent-7"))
        .await
        .approve(decide(&id, "me"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("asked for this call"),
        "{}",
        err.message()
    );

    let err = admin
        .client(Some("alice"))
        .await
        .approve(decide(&id, "mine"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("on behalf of"), "{}", err.message());
}

#[tokio::test]
async fn an_approver_outside_the_groups_or_without_cedar_permission_is_refused() {
    let admin = start().await;
    let guarded = admin
        .open("fp-1", &["data-owners"], ApprovalParams::default())
        .await;
    let err = admin
        .client(Some("ivan"))
        .await
        .approve(decide(&guarded, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("needs an approver in `data-owners`"),
        "{}",
        err.message()
    );

    // No group named by the policy: Cedar alone decides, and no policy lets
    // an intern approve exports.
    let open = admin.open("fp-2", &[], ApprovalParams::default()).await;
    let err = admin
        .client(Some("ivan"))
        .await
        .approve(decide(&open, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message()
            .contains(r#"no policy permits `User::"ivan"`"#),
        "{}",
        err.message()
    );
    // Someone without a configured group is refused the same way.
    let err = admin
        .client(Some("stranger"))
        .await
        .deny(decide(&open, "no"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn without_a_certificate_or_token_every_call_is_unauthenticated() {
    let admin = start().await;
    let mut anonymous = admin.client(None).await;
    let err = anonymous
        .list(pb::ListRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // A header claiming to be someone is not an identity.
    let mut req = tonic::Request::new(pb::ListRequest::default());
    req.metadata_mut()
        .insert("x-approver", "dora".parse().unwrap());
    assert_eq!(
        anonymous.list(req).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut req = tonic::Request::new(pb::ListRequest::default());
    req.metadata_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    assert_eq!(
        anonymous.list(req).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn a_configured_bearer_token_authenticates_its_approver() {
    let admin = start().await;
    let id = admin
        .open("fp", &["data-owners"], ApprovalParams::default())
        .await;
    let mut client = admin.client(None).await;
    let mut req = tonic::Request::new(decide(&id, "ok"));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let a = client.approve(req).await.unwrap().into_inner();
    assert_eq!(
        (a.status.as_str(), a.votes[0].approver.as_str()),
        ("approved", "tess")
    );
}

#[tokio::test]
async fn deciding_an_expired_request_fails_with_a_clear_status() {
    let admin = start().await;
    let params = ApprovalParams {
        pending_ttl: Duration::from_secs(1),
        ..Default::default()
    };
    let id = admin.open("fp", &["data-owners"], params).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let err = admin
        .client(Some("dora"))
        .await
        .approve(decide(&id, "late"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("is expired, not pending"),
        "{}",
        err.message()
    );
    let err = admin
        .client(Some("dora"))
        .await
        .get(pb::GetRequest {
            id: "ap-nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn watch_streams_requests_and_decisions_as_they_happen() {
    let admin = start().await;
    let mut dora = admin.client(Some("dora")).await;
    // The stream opens once the subscription is live: no wait needed.
    let mut events = dora.watch(pb::WatchRequest {}).await.unwrap().into_inner();
    let id = admin
        .open("fp", &["data-owners"], ApprovalParams::default())
        .await;
    dora.approve(decide(&id, "ok")).await.unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(ev.approval.as_ref().unwrap().id, id);
        kinds.push(ev.kind);
    }
    assert_eq!(kinds, ["requested", "approved"]);
}
