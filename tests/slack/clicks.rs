//! The Approve and Deny buttons: a click rules as the admin API would
//! (quorum of distinct approvers, separation of duties, groups), the
//! clicker's Slack identity is recorded, whoever may not rule is told so,
//! and only Slack's own, fresh, first-seen requests from the configured
//! workspace and app are heard.

use countersign::approval::approvers::Method;
use countersign::approval::store::AuditCursor;
use countersign::approval::{ApprovalParams, ApprovalStore, Status};
use serde_json::json;

use crate::{DATA_CHANNEL, Rig, SECRET, click, form, has_buttons, quorum_two, sign, text};

const APPROVE: &str = "countersign_approve";
const DENY: &str = "countersign_deny";

#[tokio::test]
async fn clicks_approve_at_quorum_and_the_message_shows_each_vote_then_loses_its_buttons() {
    let rig = Rig::start().await;
    let id = rig.open("fp-quorum", quorum_two()).await;
    let posted = rig.posted(&id).await;
    assert_eq!(posted.authorization, format!("Bearer {}", crate::BOT_TOKEN));
    assert_eq!(posted.body["channel"], DATA_CHANNEL);
    assert!(has_buttons(&posted.body), "{}", posted.body);

    // One of two.
    let (status, body) = rig.send(&click("U0DORA", APPROVE, &id)).await;
    assert_eq!((status, body.as_str()), (200, ""));
    let a = rig.get(&id).await;
    assert_eq!(a.status, Status::Pending);
    let v = &a.votes[0];
    assert_eq!(
        (
            v.approver.as_str(),
            v.method,
            v.issuer.as_str(),
            v.subject.as_str()
        ),
        ("dora", Some(Method::Slack), crate::TEAM, "U0DORA")
    );
    let update = rig
        .api
        .wait("chat.update", |b| text(b).contains("1 of 2 approvals"))
        .await;
    // The message posted, where it was posted.
    assert_eq!(
        (&update.body["channel"], &update.body["ts"]),
        (&json!(DATA_CHANNEL), &json!("1700000000.000001"))
    );
    assert!(has_buttons(&update.body));

    // The same approver again: told, not counted.
    rig.send(&click("U0DORA", APPROVE, &id)).await;
    let told = rig
        .api
        .wait("chat.postEphemeral", |b| b["user"] == "U0DORA")
        .await;
    assert_eq!(told.body["channel"], DATA_CHANNEL);
    let said = told.body["text"].as_str().unwrap();
    assert!(said.contains("already decided"), "{said}");
    assert_eq!(rig.get(&id).await.votes.len(), 1);

    // A second data owner: approved, the buttons go.
    rig.send(&click("U0ERIN", APPROVE, &id)).await;
    assert_eq!(rig.get(&id).await.status, Status::Approved);
    let update = rig
        .api
        .wait("chat.update", |b| {
            text(b).starts_with(&format!("*Approved by dora, erin* `{id}`"))
        })
        .await;
    assert!(!has_buttons(&update.body), "{}", update.body);

    // The audit trail says who clicked, as Slack knows them.
    let entries = rig
        .store
        .audit_range(&mut AuditCursor::from("-"), "+", 100)
        .await
        .unwrap();
    let approved = entries
        .iter()
        .find(|e| e.fields.contains(&("event".into(), "approved".into())))
        .expect("an approved entry");
    for field in [
        ("approver", "erin"),
        ("approver_method", "slack"),
        ("approver_issuer", crate::TEAM),
        ("approver_subject", "U0ERIN"),
    ] {
        let field = (field.0.to_owned(), field.1.to_owned());
        assert!(
            approved.fields.contains(&field),
            "{field:?} not in {approved:?}"
        );
    }

    // Decided: a late click is told so.
    rig.send(&click("U0DORA", DENY, &id)).await;
    let told = rig
        .api
        .wait("chat.postEphemeral", |b| {
            b["text"]
                .as_str()
                .unwrap()
                .contains("is approved, not pending")
        })
        .await;
    assert_eq!(told.body["user"], "U0DORA");
    assert_eq!(rig.get(&id).await.status, Status::Approved);
}

#[tokio::test]
async fn whoever_may_not_rule_is_told_why_and_nothing_is_recorded() {
    let rig = Rig::start().await;
    // A reason required: someone who may not rule is told so, never asked
    // for a reason.
    let params = ApprovalParams {
        reason_required: true,
        ..ApprovalParams::default()
    };
    let id = rig.open("fp-refusals", params).await;
    rig.posted(&id).await;
    for (user, action, why) in [
        (
            "U0MALLORY",
            APPROVE,
            "your Slack user (U0MALLORY) is not mapped to an approver",
        ),
        // Mapped to the agent that asked.
        (
            "U0AGENT",
            APPROVE,
            r#"`User::"agent-7"` asked for this call and cannot decide its approval"#,
        ),
        // Mapped to the human the agent acts for.
        (
            "U0ALICE",
            APPROVE,
            r#"this call acts on behalf of `User::"alice"`, who cannot decide its approval"#,
        ),
        (
            "U0OSCAR",
            APPROVE,
            "needs an approver in `data-owners`; `oscar` is in `on-call`",
        ),
        (
            "U0OSCAR",
            DENY,
            "needs an approver in `data-owners`; `oscar` is in `on-call`",
        ),
    ] {
        let before = rig.api.calls("chat.postEphemeral").len();
        let (status, _) = rig.send(&click(user, action, &id)).await;
        assert_eq!(status, 200, "{user}");
        let told = rig
            .api
            .wait("chat.postEphemeral", |b| {
                b["user"] == user && b["text"].as_str().unwrap().contains(why)
            })
            .await;
        let said = told.body["text"].as_str().unwrap();
        assert!(said.starts_with("Nothing was recorded: "), "{said}");
        assert_eq!(rig.api.calls("chat.postEphemeral").len(), before + 1);
    }
    let a = rig.get(&id).await;
    assert_eq!((a.status, a.votes.len()), (Status::Pending, 0));
    assert!(rig.api.calls("views.open").is_empty());
}

#[tokio::test]
async fn forged_stale_replayed_and_foreign_requests_are_refused() {
    let rig = Rig::start().await;
    let id = rig.open("fp-forged", quorum_two()).await;
    rig.posted(&id).await;
    let payload = click("U0DORA", APPROVE, &id);
    let body = form(&payload);
    let now = countersign::clock::now_secs();

    // Signed with another secret.
    let (status, _) = rig
        .send_signed(&body, now, &sign("not-the-secret", now, &body))
        .await;
    assert_eq!(status, 401);
    // Another body under a genuine signature.
    let other = form(&click("U0ERIN", APPROVE, &id));
    let (status, _) = rig
        .send_signed(&other, now, &sign(SECRET, now, &body))
        .await;
    assert_eq!(status, 401);
    // Genuine, but six minutes old (or ahead).
    for ts in [now - 360, now + 360] {
        let (status, _) = rig.send_signed(&body, ts, &sign(SECRET, ts, &body)).await;
        assert_eq!(status, 401, "{ts}");
    }
    // No signature at all.
    let (status, _) = rig.send_signed(&body, now, "").await;
    assert_eq!(status, 401);
    // Signed, but from another workspace or app.
    let mut foreign = payload.clone();
    foreign["team"]["id"] = json!("T0OTHER");
    assert_eq!(rig.send(&foreign).await.0, 403);
    let mut foreign = payload.clone();
    foreign["api_app_id"] = json!("A0OTHER");
    assert_eq!(rig.send(&foreign).await.0, 403);
    // Signed, but not a payload.
    let junk = "payload=not-json";
    assert_eq!(
        rig.send_signed(junk, now, &sign(SECRET, now, junk)).await.0,
        400
    );
    assert!(rig.get(&id).await.votes.is_empty());

    // The genuine request counts, once.
    let signature = sign(SECRET, now, &body);
    assert_eq!(rig.send_signed(&body, now, &signature).await.0, 200);
    assert_eq!(rig.get(&id).await.votes.len(), 1);
    let (status, said) = rig.send_signed(&body, now, &signature).await;
    assert_eq!((status, said.trim()), (401, "replayed"));
    assert_eq!(rig.get(&id).await.votes.len(), 1);
    // Nobody was told anything: none of these came from a click.
    assert!(rig.api.calls("chat.postEphemeral").is_empty());
    let scraped = rig.scrape().await;
    for (result, n) in [
        ("unverified", 5),
        ("foreign", 2),
        ("invalid", 1),
        ("ruled", 1),
        ("replayed", 1),
    ] {
        let line = format!("countersign_slack_requests_total{{result=\"{result}\"}} {n}\n");
        assert!(scraped.contains(&line), "no `{line}` in {scraped}");
    }
}

#[tokio::test]
async fn a_replay_is_refused_however_its_signature_is_spelt() {
    let rig = Rig::start().await;
    let id = rig.open("fp-replay-case", quorum_two()).await;
    rig.posted(&id).await;
    let body = form(&click("U0DORA", APPROVE, &id));
    let now = countersign::clock::now_secs();
    let signature = sign(SECRET, now, &body);
    assert_eq!(rig.send_signed(&body, now, &signature).await.0, 200);
    // The same request again, its hex digest in capitals (hex is read in
    // either case): the same signature, so a replay.
    let shouted = format!("v0={}", signature["v0=".len()..].to_uppercase());
    let (status, said) = rig.send_signed(&body, now, &shouted).await;
    assert_eq!((status, said.trim()), (401, "replayed"));
    assert_eq!(rig.get(&id).await.votes.len(), 1);
}

#[tokio::test]
async fn malformed_signed_requests_are_answered_and_record_nothing() {
    let rig = Rig::start().await;
    let id = rig.open("fp-malformed", quorum_two()).await;
    rig.posted(&id).await;
    let ours = json!({"team": {"id": crate::TEAM}, "api_app_id": crate::APP});
    let with = |extra: serde_json::Value| {
        let mut p = ours.clone();
        p.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        p
    };
    let huge = "ü".repeat(50_000);
    for (payload, expected) in [
        (json!({"type": "block_actions"}), 403),
        (with(json!({"type": "block_actions"})), 400),
        (
            with(json!({"type": "block_actions", "user": "U0DORA"})),
            400,
        ),
        (with(json!({"type": 7, "user": {"id": "U0DORA"}})), 400),
        (
            with(json!({"type": "block_actions", "user": {"id": "U0DORA"}, "actions": {}})),
            400,
        ),
        (
            with(json!({"type": "block_actions", "user": {"id": "U0DORA"},
                "actions": [{"action_id": APPROVE}]})),
            200,
        ),
        (
            with(json!({"type": "block_actions", "user": {"id": "U0DORA"},
                "actions": [{"action_id": APPROVE, "value": huge}], "channel": {"id": DATA_CHANNEL}})),
            200,
        ),
        (
            with(json!({"type": "view_submission", "user": {"id": "U0DORA"},
                "view": {"callback_id": "countersign_reason", "private_metadata": "approve:"}})),
            200,
        ),
        (
            with(json!({"type": "view_submission", "user": {"id": "U0DORA"},
                "view": {"callback_id": "countersign_reason", "private_metadata": format!("approve:{id}\u{202e}"),
                    "state": {"values": {"reason": {"reason": {"value": null}}}}}})),
            200,
        ),
        (
            with(json!({"type": "shortcut", "user": {"id": "U0DORA"}})),
            200,
        ),
    ] {
        let (status, said) = rig.send(&payload).await;
        assert_eq!(status, expected, "{said} for {:.200}", payload.to_string());
    }
    for body in ["", "payload", "payload=%FF%FE%00", "a=1&payload=[1,2]"] {
        let now = countersign::clock::now_secs();
        let (status, _) = rig.send_signed(body, now, &sign(SECRET, now, body)).await;
        assert_eq!(status, 400, "{body}");
    }
    // Past the body limit: refused before anything is read into a payload.
    let big = format!("payload={}", "a".repeat(2 * 1024 * 1024));
    let now = countersign::clock::now_secs();
    let (status, _) = rig.send_signed(&big, now, &sign(SECRET, now, &big)).await;
    assert_eq!(status, 413);
    assert!(rig.get(&id).await.votes.is_empty());
}
