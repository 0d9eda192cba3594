//! Webhooks: a local HTTP receiver gets the generic, Slack and Teams
//! payloads when a request opens and when it is decided, with the request's context
//! and no secrets; a webhook that never answers holds back only itself.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::Redis;
use common::check::{check, seen};
use common::services::{
    Notifying, authz_service, example_config, example_policies, redis_store, store_config,
};
use countersign::approval::store::{ApprovalStore, CheckRef};
use countersign::approval::{ApprovalParams, EventKind, StoreConfig};
use countersign::audit::EventSink;
use countersign::metrics::Metrics;
use countersign::notifications::outbox::{self, Settings};
use countersign::notifications::webhook::{Format, Webhook};
use countersign::notifications::{Channel, ChannelError, Notice};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Accepts HTTP/1.1 POSTs and hands over (path, JSON body).
async fn receiver() -> (String, mpsc::Receiver<(String, Value)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = sock.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let body: Value = serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap();
                    sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .unwrap();
                    tx.send((path, body)).await.unwrap();
                    buf.clear();
                }
            });
        }
    });
    (base, rx)
}

async fn next(rx: &mut mpsc::Receiver<(String, Value)>) -> (String, Value) {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no webhook call")
        .unwrap()
}

#[tokio::test]
async fn webhooks_hear_of_requests_and_decisions_without_secrets() {
    let redis = Redis::start().await;
    let (base, mut calls) = receiver().await;
    let store = Arc::new(redis_store(StoreConfig {
        retention: Duration::from_secs(600),
        ..store_config(&redis.url(), "hooks:")
    }));
    let services = Notifying::start(
        store,
        vec![
            hook("", &format!("{base}/generic"), Format::Json),
            hook("", &format!("{base}/slack"), Format::Slack),
            hook("", &format!("{base}/teams"), Format::Teams),
        ],
    )
    .await;

    let req = check("POST", "/v1/datasets/sales/export")
        .claims(json!({"sub": "agent-7", "groups": ["agents"], "on_behalf_of": "alice"}))
        .header("authorization", "Bearer secret-jwt-value")
        .header("cookie", "session=secret-cookie")
        .body(r#"{"format":"csv","rows":10}"#)
        .build();
    let answer = seen(&services.authz.decide(&req).await);
    assert_eq!(answer.http_status, 403);
    let answer: Value = serde_json::from_str(&answer.body).unwrap();
    let (id, token) = (
        answer["approval_id"].as_str().unwrap(),
        answer["approval_token"].as_str().unwrap(),
    );

    let mut got = HashMap::new();
    for _ in 0..3 {
        let (path, body) = next(&mut calls).await;
        got.insert(path, body);
    }
    let generic = &got["/generic"];
    assert_eq!(generic["event"], "requested");
    assert_eq!(generic["approval"]["id"], id);
    assert_eq!(generic["approval"]["principal"], r#"User::"agent-7""#);
    assert_eq!(generic["approval"]["on_behalf_of"], r#"User::"alice""#);
    assert_eq!(
        generic["approval"]["parameters"],
        json!({"body.format": "csv", "body.rows": "10"})
    );
    assert_eq!(
        generic["approve_command"],
        format!("countersign approvals approve {id} --reason '...'")
    );
    let slack = &got["/slack"];
    let text = slack["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(
        text.contains(id) && text.contains(r#"on behalf of User::"alice""#),
        "{text}"
    );
    assert!(
        slack["blocks"][1]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .contains("countersign approvals approve")
    );
    let teams = &got["/teams"]["attachments"][0];
    assert_eq!(
        teams["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = teams["content"].to_string();
    assert!(
        card.contains(&format!("countersign approvals approve {id}"))
            && card.contains(r#"(on behalf of User::\"alice\")"#),
        "{card}"
    );
    for body in got.values() {
        let s = body.to_string();
        assert!(!s.contains("secret") && !s.contains(token), "{s}");
    }

    // The decision is announced too.
    services.approve(id, "quarterly report").await;
    let mut got = HashMap::new();
    for _ in 0..3 {
        let (path, body) = next(&mut calls).await;
        got.insert(path, body);
    }
    assert_eq!(got["/generic"]["event"], "approved");
    assert_eq!(got["/generic"]["approval"]["votes"][0]["approver"], "dora");
    assert!(
        got["/slack"]["text"]
            .as_str()
            .unwrap()
            .starts_with("Approved"),
        "{}",
        got["/slack"]
    );
    let card = &got["/teams"]["attachments"][0]["content"];
    assert_eq!(card["body"][0]["inlines"][0]["text"], "Approved", "{card}");
}

fn hook(name: &str, url: &str, format: Format) -> Arc<dyn Channel> {
    Arc::new(Webhook::new(name, url, format))
}

#[tokio::test]
async fn a_webhook_that_never_answers_holds_back_only_itself() {
    let redis = Redis::start().await;
    // Accepts connections and never answers: every delivery hangs until its
    // timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            held.push(listener.accept().await.unwrap());
        }
    });
    let (base, mut calls) = receiver().await;
    let config = example_config();
    let store = Arc::new(redis_store(store_config(&redis.url(), "dead:")));
    let metrics = Metrics::default();
    outbox::start(
        store.clone(),
        vec![
            hook("dead", &dead, Format::Json),
            hook("alive", &format!("{base}/alive"), Format::Json),
        ],
        metrics.clone(),
        Settings::default(),
    )
    .await;
    let policies = Arc::new(example_policies(&config));
    let authz = authz_service(config, policies, store.clone(), EventSink::default());
    let mut ids = Vec::new();
    for rows in 1..=3 {
        let req = check("POST", "/v1/datasets/sales/export")
            .claims(json!({"sub": "agent-7", "groups": ["agents"]}))
            .body(&format!(r#"{{"format":"csv","rows":{rows}}}"#))
            .build();
        let answer: Value = serde_json::from_str(&seen(&authz.decide(&req).await).body).unwrap();
        ids.push(answer["approval_id"].as_str().unwrap().to_owned());
    }
    // The live webhook hears of all three while the dead one still hangs
    // on its first.
    let mut heard = Vec::new();
    for _ in 0..3 {
        let (_, body) = next(&mut calls).await;
        heard.push(body["approval"]["id"].as_str().unwrap().to_owned());
    }
    heard.sort();
    ids.sort();
    assert_eq!(heard, ids);
    let text = metrics
        .render(&example_policies(&example_config()), &*store)
        .await;
    assert!(
        text.contains(r#"countersign_notifications_total{channel="alive",result="delivered"} 3"#),
        "{text}"
    );
    assert!(
        !text.contains(r#"channel="dead",result="delivered""#),
        "{text}"
    );
}

/// A channel that fails as an outage does while `down` lasts (counted
/// down at every attempt, on any sidecar), then takes 200 ms to deliver;
/// `delivered` counts deliveries.
#[derive(Debug)]
struct Flaky {
    down: Arc<AtomicU32>,
    delivered: Arc<AtomicU32>,
}

#[async_trait::async_trait]
impl Channel for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }

    fn wants(&self, _: EventKind) -> bool {
        true
    }

    async fn deliver(&self, _: &Notice) -> Result<(), ChannelError> {
        if self
            .down
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(ChannelError::Unreachable("down".into()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.delivered.fetch_add(1, SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn quick_retries_end_before_another_sidecar_may_claim_the_event() {
    let redis = Redis::start().await;
    let store = Arc::new(redis_store(store_config(&redis.url(), "quick:")));
    // Short, so that the quick retries' pauses (250 ms, then 1 s) reach
    // past it: another sidecar may claim the event after 1 s.
    let settings = Settings {
        retry_after: Duration::from_secs(1),
        give_up_after: Duration::from_secs(60),
    };
    // Two sidecars on one store; the channel is down for two attempts.
    let (down, delivered) = (Arc::new(AtomicU32::new(2)), Arc::new(AtomicU32::new(0)));
    for _ in 0..2 {
        let channel = Flaky {
            down: down.clone(),
            delivered: delivered.clone(),
        };
        outbox::start(
            store.clone(),
            vec![Arc::new(channel)],
            Metrics::default(),
            settings,
        )
        .await;
    }
    let new = common::export_request("fp-quick", &["data-owners"], ApprovalParams::default());
    store.open(&new, CheckRef::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(delivered.load(SeqCst), 1, "delivered by both sidecars");
}
