//! Notifications survive what sidecars and receivers go through: two real
//! sidecars share one Redis; the webhook receiver is down for 30 s while
//! events pile up and one sidecar is killed and started again. Every event
//! arrives, and none twice.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use common::services::{redis_store, store_config};
use common::{Redis, Sidecar, eventually, export_request, policy_copy};
use countersign::approval::ApprovalParams;
use countersign::approval::store::{ApprovalStore, CheckRef};
use serde_json::Value;

/// (event, approval id) -> how many times it arrived.
type Heard = Arc<Mutex<BTreeMap<(String, String), u32>>>;

/// A webhook receiver on a fixed port that can go down and come back.
struct Receiver {
    port: u16,
    heard: Heard,
    up: Arc<AtomicBool>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let mut r = Receiver {
            port: common::free_port(),
            heard: Heard::default(),
            up: Arc::new(AtomicBool::new(false)),
            server: None,
        };
        r.up().await;
        r
    }

    async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let app = axum::Router::new()
            .route("/hook", post(hear))
            .with_state((self.heard.clone(), self.up.clone()));
        self.up.store(true, Ordering::SeqCst);
        self.server = Some(tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        }));
    }

    /// Down: nothing listens, and a connection kept from before answers
    /// 503.
    fn down(&mut self) {
        self.up.store(false, Ordering::SeqCst);
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }

    fn heard(&self) -> BTreeMap<(String, String), u32> {
        self.heard.lock().unwrap().clone()
    }
}

async fn hear(
    State((heard, up)): State<(Heard, Arc<AtomicBool>)>,
    body: axum::body::Bytes,
) -> StatusCode {
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    if !up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let key = (
        body["event"].as_str().unwrap_or("").to_owned(),
        body["approval"]["id"].as_str().unwrap_or("").to_owned(),
    );
    *heard.lock().unwrap().entry(key).or_default() += 1;
    StatusCode::OK
}

fn config(dir: &std::path::Path, redis: &str, hook: &str) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string(common::repo().join("src/default-config.toml")).unwrap();
    text.push_str(&format!(
        r#"
[redis]
url = "{redis}"

[approvals]
webhooks = [{{ name = "ops", url = "{hook}" }}]

[notifications]
retry_after = "2s"
"#
    ));
    let path = dir.join("countersign.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Opens `n` requests the way a check does (the same script writes the
/// `requested` event), each for a call of its own.
async fn open(store: &dyn ApprovalStore, from: usize, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in from..from + n {
        let params = ApprovalParams::default();
        let fingerprint = format!("{i:064x}");
        let mut new = export_request(&fingerprint, &["data-owners"], params);
        new.info.principal = format!(r#"User::"agent-{i}""#);
        let check = CheckRef {
            request_id: "",
            trace: "",
            decision: &[],
        };
        ids.push(store.open(&new, check).await.unwrap().approval.id);
    }
    ids
}

#[tokio::test]
async fn no_event_is_lost_or_delivered_twice_across_a_dead_receiver_and_a_restarted_sidecar() {
    let redis = Redis::start().await;
    let mut receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let hook = format!("http://127.0.0.1:{}/hook", receiver.port);
    let config = config(dir.path(), &redis.url(), &hook);
    let policies = policy_copy();
    let env = [("COUNTERSIGN_CONFIG", config.to_str().unwrap())];
    let a = Sidecar::start(policies.path(), &env);
    let b = Sidecar::start(policies.path(), &env);
    let store = redis_store(store_config(&redis.url(), "countersign:"));

    let everything = |ids: &[String]| -> BTreeMap<(String, String), u32> {
        ids.iter()
            .map(|id| (("requested".into(), id.clone()), 1))
            .collect()
    };
    let mut ids = open(&store, 0, 20).await;
    let arrived = eventually(Duration::from_secs(20), Duration::from_millis(100), || {
        let done = receiver.heard().len() == ids.len();
        async move { done }
    })
    .await;
    assert!(arrived, "{:?}\n{}{}", receiver.heard(), a.log(), b.log());

    // Down for 30 s; meanwhile 20 more events, and sidecar `a` dies
    // without a word (SIGKILL) and starts again.
    receiver.down();
    ids.extend(open(&store, 20, 10).await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &a.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    drop(a);
    ids.extend(open(&store, 30, 10).await);
    let a = Sidecar::start(policies.path(), &env);
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(receiver.heard().len(), 20, "delivered while down");
    receiver.up().await;

    let arrived = eventually(Duration::from_secs(30), Duration::from_millis(200), || {
        let done = receiver.heard().len() == ids.len();
        async move { done }
    })
    .await;
    assert!(arrived, "{:?}\n{}{}", receiver.heard(), a.log(), b.log());
    // A little longer: a duplicate would come now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.heard(), everything(&ids));
    // The failures were counted where a user would look.
    let failed = |s: &Sidecar| s.log().contains("notification not delivered");
    assert!(failed(&a) || failed(&b), "{}{}", a.log(), b.log());
}

#[tokio::test]
async fn a_notice_the_receiver_rejects_for_good_does_not_hold_back_the_next() {
    use countersign::metrics::Metrics;
    use countersign::notifications::Channel;
    use countersign::notifications::outbox::{self, Settings};
    use countersign::notifications::webhook::{Format, Webhook};

    let redis = Redis::start().await;
    // 400 to the first notice (say, one it cannot parse), 200 after.
    let heard = Heard::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = heard.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let body: Value = serde_json::from_slice(&body).unwrap_or_default();
                let mut seen = seen.lock().unwrap();
                let first = seen.is_empty();
                let key = (String::new(), body["approval"]["id"].to_string());
                *seen.entry(key).or_default() += 1;
                if first {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let store: std::sync::Arc<dyn ApprovalStore> =
        std::sync::Arc::new(redis_store(store_config(&redis.url(), "rejects:")));
    let metrics = Metrics::default();
    let webhook: std::sync::Arc<dyn Channel> =
        std::sync::Arc::new(Webhook::new("picky", &hook, Format::Json));
    outbox::start(
        store.clone(),
        vec![webhook],
        metrics.clone(),
        Settings::default(),
    )
    .await;

    let ids = open(&*store, 0, 2).await;
    // Well within retry_after (30 s): the rejected one is not retried and
    // the next is not kept waiting behind it.
    let both = eventually(Duration::from_secs(10), Duration::from_millis(100), || {
        let n = heard.lock().unwrap().len();
        async move { n == 2 }
    })
    .await;
    assert!(both, "{:?} for {ids:?}", heard.lock().unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(heard.lock().unwrap().values().all(|n| *n == 1));
    let text = metrics
        .render(
            &common::services::example_policies(&common::services::example_config()),
            &*store,
        )
        .await;
    for line in [
        r#"countersign_notifications_total{channel="picky",result="gave_up"} 1"#,
        r#"countersign_notifications_total{channel="picky",result="delivered"} 1"#,
    ] {
        assert!(text.contains(line), "{line} not in {text}");
    }
}
