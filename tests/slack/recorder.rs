//! A stand-in for the Slack Web API on 127.0.0.1: records every call
//! (method, bearer token, JSON body) and answers `ok` as Slack does, with
//! a fresh `ts` per posted message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::common::eventually;

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub authorization: String,
    pub body: Value,
}

#[derive(Default)]
struct Shared {
    calls: Mutex<Vec<Call>>,
    next_ts: AtomicU64,
    /// Methods answered only after this long.
    slow: Mutex<Vec<(String, Duration)>>,
}

pub struct Recorder {
    /// The Web API base to configure (`slack.api_url`).
    pub base: String,
    shared: Arc<Shared>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .route("/api/{method}", axum::routing::post(answer))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/api/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Recorder { base, shared }
    }

    /// Answers `method` only after `delay` from now on.
    pub fn slow(&self, method: &str, delay: Duration) {
        let mut slow = self.shared.slow.lock().unwrap();
        slow.push((method.to_owned(), delay));
    }

    /// The calls of `method` so far, oldest first.
    pub fn calls(&self, method: &str) -> Vec<Call> {
        let calls = self.shared.calls.lock().unwrap();
        calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// The first call of `method` whose body satisfies `pred`, waiting up
    /// to 10 s for it.
    pub async fn wait(&self, method: &str, pred: impl Fn(&Value) -> bool) -> Call {
        let found = || self.calls(method).into_iter().find(|c| pred(&c.body));
        let came = eventually(Duration::from_secs(10), Duration::from_millis(25), || {
            let here = found().is_some();
            async move { here }
        })
        .await;
        assert!(
            came,
            "no `{method}` call as expected; calls: {:#?}",
            self.shared.calls.lock().unwrap()
        );
        found().unwrap()
    }
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> String {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let reply = match method.as_str() {
        "chat.postMessage" => {
            let n = shared.next_ts.fetch_add(1, Ordering::SeqCst) + 1;
            json!({"ok": true, "channel": body["channel"], "ts": format!("1700000000.{n:06}")})
        }
        "chat.update" => json!({"ok": true, "channel": body["channel"], "ts": body["ts"]}),
        "chat.postEphemeral" => json!({"ok": true, "message_ts": "1700000000.999999"}),
        "views.open" => json!({"ok": true, "view": {"id": "V0VIEW"}}),
        _ => json!({"ok": false, "error": "unknown_method"}),
    };
    let delay = {
        let slow = shared.slow.lock().unwrap();
        slow.iter().find(|(m, _)| *m == method).map(|(_, d)| *d)
    };
    shared.calls.lock().unwrap().push(Call {
        method,
        authorization,
        body,
    });
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    reply.to_string()
}
