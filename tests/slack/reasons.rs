//! A policy that requires a reason: the click opens a modal asking for it
//! (`views.open` with the click's trigger), and its submission rules; an
//! empty reason, or a submitter who may not rule, keeps the modal open
//! with the refusal under the reason, and records nothing.

use std::time::{Duration, Instant};

use countersign::approval::Status;
use serde_json::{Value, json};

use crate::common::check::{check, seen};
use crate::{Rig, has_buttons, submit, text};

/// An agent's export acting for alice, through the check as Envoy sends
/// it: `agent-exports-need-approval` asks a data owner, with a reason.
async fn export(rig: &Rig, rows: u32) -> String {
    let req = check("POST", "/v1/datasets/sales/export")
        .claims(json!({"sub": "agent-7", "groups": ["agents"], "on_behalf_of": "alice"}))
        .body(&format!(r#"{{"format":"csv","rows":{rows}}}"#))
        .build();
    let answer = seen(&rig.notified.authz.decide(&req).await);
    assert_eq!(answer.http_status, 403, "{answer:?}");
    let answer: Value = serde_json::from_str(&answer.body).unwrap();
    answer["approval_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_required_reason_is_asked_in_a_modal_and_recorded_on_submission() {
    let rig = Rig::start().await;
    let id = export(&rig, 10).await;
    let posted = rig.posted(&id).await;
    let shown = text(&posted.body);
    for words in [
        r#"*Who:* User::"agent-7" (on behalf of User::"alice")"#,
        r#"*What:* Action::"export" on Dataset::"sales""#,
        "*Request:* POST /v1/datasets/sales/export",
        "*body.format:* csv",
        "*body.rows:* 10",
        "*Policies:* agent-exports-need-approval",
        "*Quorum:* 0 of 1 approval(s) from data-owners, reason required",
        "*Expires:* <!date^",
    ] {
        assert!(shown.contains(words), "`{words}` not in {shown}");
    }

    // The click asks for the reason; nothing is recorded yet.
    let (status, _) = rig
        .send(&crate::click("U0DORA", "countersign_approve", &id))
        .await;
    assert_eq!(status, 200);
    let opened = rig.api.wait("views.open", |_| true).await;
    assert_eq!(opened.body["trigger_id"], "1234.5678.trigger");
    let view = &opened.body["view"];
    assert_eq!(view["callback_id"], "countersign_reason");
    let metadata = view["private_metadata"].as_str().unwrap().to_owned();
    assert_eq!(metadata, format!("approve:{id}"));
    assert!(rig.get(&id).await.votes.is_empty());

    // An empty reason, or someone who may not rule: the modal stays open
    // with why, and nothing is recorded.
    for (user, reason, why) in [
        ("U0DORA", "   ", "this request requires a reason"),
        ("U0MALLORY", "fine", "is not mapped to an approver"),
        ("U0OSCAR", "fine", "needs an approver in `data-owners`"),
        ("U0ALICE", "fine", "who cannot decide its approval"),
    ] {
        let (status, body) = rig.send(&submit(user, &metadata, reason)).await;
        assert_eq!(status, 200);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["response_action"], "errors", "{body}");
        let said = body["errors"]["reason"].as_str().unwrap();
        assert!(said.contains(why), "{user}: `{why}` not in {said}");
    }
    assert!(rig.get(&id).await.votes.is_empty());

    // The reason given: approved, and said in the message.
    let (status, body) = rig
        .send(&submit("U0DORA", &metadata, "quarterly report"))
        .await;
    assert_eq!(
        (status, body.as_str()),
        (200, ""),
        "an empty answer closes the modal"
    );
    let a = rig.get(&id).await;
    assert_eq!(a.status, Status::Approved);
    assert_eq!(a.votes[0].reason, "quarterly report");
    let update = rig
        .api
        .wait("chat.update", |b| text(b).contains("*approve* by dora at"))
        .await;
    let shown = text(&update.body);
    assert!(
        shown.starts_with(&format!("*Approved by dora* `{id}`")),
        "{shown}"
    );
    assert!(shown.contains(": quarterly report"), "{shown}");
    assert!(!has_buttons(&update.body));
}

#[tokio::test]
async fn a_deny_asks_its_reason_too_and_one_deny_ends_the_request() {
    let rig = Rig::start().await;
    let id = export(&rig, 20).await;
    rig.posted(&id).await;
    rig.send(&crate::click("U0ERIN", "countersign_deny", &id))
        .await;
    let opened = rig.api.wait("views.open", |_| true).await;
    let metadata = opened.body["view"]["private_metadata"].as_str().unwrap();
    assert_eq!(metadata, format!("deny:{id}"));
    let (status, body) = rig
        .send(&submit("U0ERIN", metadata, "not this quarter"))
        .await;
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(rig.get(&id).await.status, Status::Denied);
    let update = rig
        .api
        .wait("chat.update", |b| text(b).starts_with("*Denied by erin*"))
        .await;
    assert!(text(&update.body).contains(": not this quarter"));
    assert!(!has_buttons(&update.body));
}

#[tokio::test]
async fn a_click_is_answered_within_slacks_3_seconds_when_redis_and_slack_are_slow() {
    let rig = Rig::start().await;
    let id = export(&rig, 30).await;
    rig.posted(&id).await;
    rig.api.slow("views.open", Duration::from_secs(10));
    // Redis holds writes 1.2 s, within the store's timeout (2 s): the
    // replay mark waits that long.
    let mut redis = redis::Client::open(rig.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1200)
        .arg("WRITE")
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    let started = Instant::now();
    let (status, _) = rig
        .send(&crate::click("U0DORA", "countersign_approve", &id))
        .await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    // Slack shows the clicker an error past 3 s, whatever happened.
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    let told = rig
        .api
        .wait("chat.postEphemeral", |b| b["user"] == "U0DORA")
        .await;
    let said = told.body["text"].as_str().unwrap();
    assert!(said.contains("could not be opened"), "{said}");
    assert!(rig.get(&id).await.votes.is_empty());
}
