//! Approvals in Slack, in process: a real Redis, the example policies, the
//! Slack channel fed by the outbox, the interactivity endpoint on
//! 127.0.0.1, and a recorder standing in for the Slack Web API (nothing
//! leaves the machine). Payloads are signed as Slack signs them.
//!
//! Layout: `recorder` (the Web API stand-in), `clicks` (buttons: quorum,
//! who may not rule, forged and replayed requests), `reasons` (the reason
//! modal), `messages` (what is posted, escaped, and kept up to date).

#[path = "../common/mod.rs"]
mod common;

mod clicks;
mod messages;
mod reasons;
mod recorder;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::Redis;
use common::services::{
    Notifying, example_config, example_policies, lifecycle, redis_store, store_config,
};
use countersign::approval::store::CheckRef;
use countersign::approval::{Approval, ApprovalParams, ApprovalStore, RedisStore};
use countersign::audit::EventSink;
use countersign::config::{Secret, SlackApprover, SlackConfig};
use countersign::metrics::Metrics;
use hmac::{Hmac, Mac};
use recorder::Recorder;
use serde_json::{Value, json};

const TEAM: &str = "T0TEAM";
const APP: &str = "A0APP";
const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const BOT_TOKEN: &str = "xoxb-test-token";
/// Where data owners' requests are posted.
const DATA_CHANNEL: &str = "C0DATA";

/// Slack users and the approvers they are mapped to: two data owners, the
/// human an agent acts for, the agent itself, someone on call (not a data
/// owner). `U0MALLORY` is mapped to nobody.
const USERS: [(&str, &str, &str); 5] = [
    ("U0DORA", "dora", "data-owners"),
    ("U0ERIN", "erin", "data-owners"),
    ("U0ALICE", "alice", "data-owners"),
    ("U0AGENT", "agent-7", "data-owners"),
    ("U0OSCAR", "oscar", "on-call"),
];

/// One sidecar's worth of Slack approvals on its own Redis.
struct Rig {
    store: Arc<RedisStore>,
    api: Recorder,
    /// The interactivity endpoint's URL.
    endpoint: String,
    /// The ext_authz front door, to open requests as Envoy's calls do, and
    /// the admin API, on which `dora-token` is dora's.
    notified: Notifying,
    client: reqwest::Client,
    /// What `/metrics` would show.
    metrics: Metrics,
    policies: Arc<countersign::policy::PolicyStore>,
    redis: Redis,
}

impl Rig {
    async fn start() -> Rig {
        let redis = Redis::start().await;
        let api = Recorder::start().await;
        let store = Arc::new(redis_store(store_config(&redis.url(), "slack:")));
        let dyn_store: Arc<dyn ApprovalStore> = store.clone();
        let policies = Arc::new(example_policies(&example_config()));
        let slack = SlackConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            path: "/slack/interactivity".into(),
            api_url: api.base.clone(),
            team_id: TEAM.into(),
            api_app_id: APP.into(),
            bot_token: Secret::new(BOT_TOKEN.into()),
            signing_secret: Secret::new(SECRET.into()),
            default_channel: Some("C0DEFAULT".into()),
            channels: BTreeMap::from([("data-owners".into(), DATA_CHANNEL.into())]),
            users: USERS
                .iter()
                .map(|(user, name, group)| {
                    let a = SlackApprover {
                        name: (*name).into(),
                        groups: vec![(*group).into()],
                    };
                    ((*user).to_owned(), a)
                })
                .collect(),
        };
        let channel =
            countersign::slack::channel(&slack, dyn_store.clone(), Duration::from_secs(600));
        // Before any request opens: the outbox starts at the stream's end.
        let notified = Notifying::start(dyn_store.clone(), vec![channel.clone()]).await;
        let sink = EventSink::default();
        let approvals = lifecycle(policies.clone(), dyn_store.clone(), sink.clone());
        let endpoint = countersign::slack::endpoint(&slack, approvals, channel);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{}", listener.local_addr().unwrap(), slack.path);
        tokio::spawn(countersign::slack::interact::serve(
            listener,
            endpoint,
            std::future::pending(),
        ));
        Rig {
            store,
            api,
            endpoint: url,
            notified,
            client: reqwest::Client::new(),
            metrics: sink.metrics().clone(),
            policies,
            redis,
        }
    }

    /// An agent's export acting for alice, for data owners, opened in the
    /// store as a check opens it: its id.
    async fn open(&self, fingerprint: &str, params: ApprovalParams) -> String {
        let new = common::export_request(fingerprint, &["data-owners"], params);
        let opened = self.store.open(&new, CheckRef::default()).await.unwrap();
        opened.approval.id
    }

    /// The `/metrics` text.
    async fn scrape(&self) -> String {
        self.metrics.render(&self.policies, &*self.store).await
    }

    async fn get(&self, id: &str) -> Approval {
        self.store.get(id).await.unwrap().unwrap()
    }

    /// Posts `payload` as Slack does: form-encoded, signed now.
    async fn send(&self, payload: &Value) -> (u16, String) {
        let body = form(payload);
        let now = countersign::clock::now_secs();
        self.send_signed(&body, now, &sign(SECRET, now, &body))
            .await
    }

    /// Posts `body` with exactly these timestamp and signature headers.
    async fn send_signed(&self, body: &str, ts: i64, signature: &str) -> (u16, String) {
        let r = self
            .client
            .post(&self.endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The message first posted for request `id`.
    async fn posted(&self, id: &str) -> recorder::Call {
        self.api
            .wait("chat.postMessage", |b| b.to_string().contains(id))
            .await
    }
}

/// `payload=<json>`, as Slack sends interactivity payloads.
fn form(payload: &Value) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
}

/// `v0=` and the hex HMAC-SHA256 of `v0:{ts}:{body}` keyed with `secret`.
fn sign(secret: &str, ts: i64, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Distinct per payload, as Slack's `action_ts` and `view.hash` are: two
/// clicks in one second are not one replayed.
fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("1700000001.{n:06}")
}

/// A click on a request's button (`countersign_approve` or
/// `countersign_deny`) by Slack user `user`, as Slack sends it.
fn click(user: &str, action: &str, id: &str) -> Value {
    json!({
        "type": "block_actions",
        "user": {"id": user, "username": user.to_lowercase(), "team_id": TEAM},
        "api_app_id": APP,
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": "1700000000.000001", "channel_id": DATA_CHANNEL},
        "trigger_id": "1234.5678.trigger",
        "team": {"id": TEAM, "domain": "acme"},
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": {"id": DATA_CHANNEL, "name": "data-owners"},
        "message": {"type": "message", "ts": "1700000000.000001", "text": "Approval requested"},
        "response_url": "https://hooks.slack.com/actions/T0TEAM/1/xyz",
        "actions": [{
            "action_id": action, "block_id": "countersign_decide", "value": id,
            "type": "button", "action_ts": unique(),
            "text": {"type": "plain_text", "text": "Approve"},
        }],
    })
}

/// The reason modal submitted by `user` with `reason`.
fn submit(user: &str, metadata: &str, reason: &str) -> Value {
    json!({
        "type": "view_submission",
        "team": {"id": TEAM, "domain": "acme"},
        "user": {"id": user, "username": user.to_lowercase(), "team_id": TEAM},
        "api_app_id": APP,
        "token": "legacy-verification-token",
        "trigger_id": "1234.5678.submit",
        "view": {
            "id": "V0VIEW", "team_id": TEAM, "type": "modal",
            "callback_id": "countersign_reason",
            "private_metadata": metadata,
            "hash": unique(),
            "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}},
        },
        "response_urls": [],
    })
}

/// A message's section texts, one after the other.
fn text(message: &Value) -> String {
    message["blocks"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter(|b| b["type"] == "section")
                .filter_map(|b| b["text"]["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Whether a message still offers the buttons.
fn has_buttons(message: &Value) -> bool {
    message["blocks"]
        .as_array()
        .is_some_and(|b| b.iter().any(|b| b["type"] == "actions"))
}

/// Two approvals needed, no reason: clicks rule at once.
fn quorum_two() -> ApprovalParams {
    ApprovalParams {
        quorum: 2,
        reason_required: false,
        ..ApprovalParams::default()
    }
}
