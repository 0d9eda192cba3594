//! What is posted: what an agent chose is shown escaped (no mention, link
//! or forged line), and the message follows the request whoever decides
//! it (here the admin API, as the CLI would).

use countersign::admin::pb::approvals_server::Approvals;
use countersign::approval::{ApprovalParams, Status};
use serde_json::json;

use crate::common::admin::decide;
use crate::common::check::{check, seen};
use crate::{DATA_CHANNEL, Rig, has_buttons, text};

#[tokio::test]
async fn what_an_agent_chose_is_shown_escaped() {
    let rig = Rig::start().await;
    // An MCP tool call whose `destination` argument (shown to approvers)
    // tries a link, mentions and a forged line.
    let forged =
        "<http://evil.example|s3://reports> <!channel> <@U0DORA>\n*Approved* by security & done";
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "export_dataset",
        "arguments": {"dataset": "sales", "format": "csv", "destination": forged},
    }});
    let req = check("POST", "/mcp")
        .header("content-type", "application/json")
        .claims(json!({"sub": "agent-7", "groups": ["agents"]}))
        .body(&call.to_string())
        .build();
    seen(&rig.notified.authz.decide(&req).await);
    let posted = rig
        .api
        .wait("chat.postMessage", |b| {
            b.to_string().contains("export_dataset")
        })
        .await;
    assert_eq!(posted.body["channel"], DATA_CHANNEL);
    let shown = text(&posted.body);
    for raw in ["<!channel>", "<@U0DORA>", "<http", " & ", "\n*Approved*"] {
        assert!(!shown.contains(raw), "`{raw}` in {shown}");
    }
    let line = shown
        .lines()
        .find(|l| l.contains("destination:*"))
        .unwrap_or_else(|| panic!("no destination in {shown}"));
    assert!(
        line.ends_with(
            r"&lt;http://evil.example|s3://reports&gt; &lt;!channel&gt; &lt;@U0DORA&gt;\u{a}*Approved* by security &amp; done"
        ),
        "{line}"
    );
    // Every line is one of the message's own.
    for l in shown.lines() {
        assert!(
            !l.starts_with("*Approved") && l.starts_with('*'),
            "a line not of the message's own: {l}"
        );
    }
    // The notification text too.
    let fallback = posted.body["text"].as_str().unwrap();
    assert!(
        !fallback.contains('<') && !fallback.contains('\n'),
        "{fallback}"
    );
    // No unfurled preview of anything.
    assert_eq!(posted.body["unfurl_links"], false);
}

#[tokio::test]
async fn a_decision_on_the_admin_api_updates_the_message() {
    let rig = Rig::start().await;
    let id = rig.open("fp-admin", ApprovalParams::default()).await;
    let posted = rig.posted(&id).await;
    assert!(has_buttons(&posted.body));

    let as_dora = |id: &str, reason: &str| {
        let mut req = tonic::Request::new(decide(id, reason));
        req.metadata_mut()
            .insert("authorization", "Bearer dora-token".parse().unwrap());
        req
    };
    rig.notified
        .admin
        .approve(as_dora(&id, "quarterly report"))
        .await
        .unwrap();
    let update = rig
        .api
        .wait("chat.update", |b| text(b).starts_with("*Approved by dora*"))
        .await;
    assert!(!has_buttons(&update.body), "{}", update.body);
    assert!(text(&update.body).contains(": quarterly report"));
    // The first message the recorder was asked to post.
    assert_eq!(update.body["ts"], "1700000000.000001");

    rig.notified
        .admin
        .revoke(as_dora(&id, "wrong dataset"))
        .await
        .unwrap();
    assert_eq!(rig.get(&id).await.status, Status::Revoked);
    let update = rig
        .api
        .wait("chat.update", |b| text(b).starts_with("*Revoked by dora*"))
        .await;
    assert!(text(&update.body).contains("*revoke* by dora at"));
    // Updated in place: one message for the request.
    let posts = rig.api.calls("chat.postMessage");
    assert_eq!(posts.len(), 1, "{posts:#?}");
}
