//! Faults under load, end to end: Redis killed, Redis slow, SIGTERM with
//! calls in flight and held. Real Envoy, real Redis, the real binary.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::otlp::Collector;
use common::stack::{Stack, stack, stack_traced};
use common::{Redis, eventually, token, token_with};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EXPORT: &str = "/v1/datasets/sales/export";
const BODY: &str = r#"{"format":"csv","rows":10}"#;

fn agent() -> String {
    token_with("agent-7", &["agents"], json!({"on_behalf_of": "alice"}))
}

/// What one call through Envoy came back with.
#[derive(Debug, Clone)]
struct Outcome {
    kind: &'static str,
    status: u16,
    body: Value,
    /// When the answer arrived, since the test started.
    at: Duration,
}

/// Calls of three kinds in a loop until `stop`: an agent's export (guarded),
/// alice's read and an anonymous read (unguarded).
fn load(s: &Stack, stop: Arc<AtomicBool>, t0: Instant) -> tokio::task::JoinHandle<Vec<Outcome>> {
    let http = s.http.clone();
    let (export, read) = (s.envoy.url(EXPORT), s.envoy.url("/v1/datasets/sales"));
    let (agent, alice) = (agent(), token("alice", &["analysts"]));
    tokio::spawn(async move {
        let mut out = Vec::new();
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let (kind, req) = match i % 3 {
                0 => (
                    "guarded",
                    http.post(&export)
                        .bearer_auth(&agent)
                        .header("content-type", "application/json")
                        .body(BODY),
                ),
                1 => ("alice", http.get(&read).bearer_auth(&alice)),
                _ => ("anonymous", http.get(&read)),
            };
            i += 1;
            let Ok(resp) = req.send().await else { continue };
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            out.push(Outcome {
                kind,
                status,
                body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
                at: t0.elapsed(),
            });
        }
        out
    })
}

fn reason(o: &Outcome) -> &str {
    o.body["reason"].as_str().unwrap_or("")
}

#[tokio::test]
async fn redis_killed_under_load_fails_guarded_calls_closed_and_recovers_without_a_restart() {
    let mut s = stack().await;
    let agent = agent();
    // An approval granted before the outage, in a Redis that keeps nothing.
    let (_, token_before) = s.open_and_approve(EXPORT, &agent, BODY, "before").await;

    let (stop, t0) = (Arc::new(AtomicBool::new(false)), Instant::now());
    let tasks: Vec<_> = (0..4).map(|_| load(&s, stop.clone(), t0)).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = t0.elapsed();
    s.redis.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let port = s.redis.port;
    s.redis = Redis::start_on(port).await;
    let restarted = t0.elapsed();
    // Recovery, without restarting countersign.
    let recovered = eventually(
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async {
            let r = s.post(EXPORT, &agent, BODY, None).await;
            r.body["decision"] == "approval_required"
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.extend(t.await.unwrap());
    }
    assert!(
        recovered,
        "guarded calls never recovered:\n{}",
        s.sidecar.log()
    );

    let mut unavailable = 0;
    for o in &outcomes {
        match o.kind {
            "alice" => assert_eq!(o.status, 200, "{o:?}"),
            "anonymous" => assert_eq!(o.status, 403, "{o:?}"),
            _ => match o.status {
                403 => assert_eq!(o.body["decision"], "approval_required", "{o:?}"),
                // countersign's own answer (a JSON reason), so it came
                // before Envoy's timeout, and only while Redis was away.
                503 => {
                    assert!(reason(o).starts_with("approvals are unavailable"), "{o:?}");
                    assert!(
                        o.at > killed && o.at < restarted + Duration::from_secs(10),
                        "{o:?}"
                    );
                    unavailable += 1;
                }
                _ => panic!("unexpected answer to a guarded call: {o:?}"),
            },
        }
    }
    assert!(unavailable > 0, "no guarded call saw the outage");
    let kinds = |k| outcomes.iter().filter(|o| o.kind == k).count();
    assert!(
        kinds("guarded") > 10 && kinds("alice") > 10,
        "too little load"
    );

    // The approval lived only in the Redis that died: not approved now.
    let r = s.post(EXPORT, &agent, BODY, Some(&token_before)).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_ne!(r.body["decision"], "allow");
    // And the whole story works again.
    let (_, fresh) = s
        .open_and_approve(EXPORT, &agent, r#"{"format":"csv","rows":11}"#, "after")
        .await;
    let r = s
        .post(
            EXPORT,
            &agent,
            r#"{"format":"csv","rows":11}"#,
            Some(&fresh),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(!s.sidecar.log().contains("panicked"), "{}", s.sidecar.log());
}

/// A TCP proxy that can hold every byte for a while, as a Redis that is
/// slow (swapping, a long script, a congested link) would.
struct SlowProxy {
    port: u16,
    delay_ms: Arc<AtomicU64>,
}

impl SlowProxy {
    async fn start(to: u16) -> SlowProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, delay.clone()));
                tokio::spawn(pump(sr, cw, delay.clone()));
            }
        });
        SlowProxy { port, delay_ms }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay_ms: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let d = delay_ms.load(Ordering::Relaxed);
        if d > 0 {
            tokio::time::sleep(Duration::from_millis(d)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

#[tokio::test]
async fn a_slow_redis_gets_countersigns_503_well_inside_envoys_deadline() {
    let redis = Redis::start().await;
    let proxy = SlowProxy::start(redis.port).await;
    let slow = format!("redis://127.0.0.1:{}", proxy.port);
    let Stack { envoy, sidecar, .. } =
        &common::stack::stack_on(redis, &slow, Some("e2e:"), None).await;
    let http = reqwest::Client::new();
    let export = || {
        http.post(envoy.url(EXPORT))
            .bearer_auth(agent())
            .header("content-type", "application/json")
            .body(BODY)
            .send()
    };
    let r = export().await.unwrap();
    assert_eq!(r.status(), 403);

    proxy.delay_ms.store(2_000, Ordering::Relaxed);
    for _ in 0..3 {
        let started = Instant::now();
        let r = export().await.unwrap();
        let took = started.elapsed();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        // Envoy's own timeout (0.5 s) would give a 503 with no body.
        assert_eq!(status, 503, "{body}");
        assert!(
            body["reason"]
                .as_str()
                .unwrap_or("")
                .starts_with("approvals are unavailable"),
            "not countersign's answer: {body}"
        );
        assert!(
            took < Duration::from_millis(2_000),
            "answered after {took:?}"
        );
        // Unguarded calls do not wait for Redis.
        let r = http
            .get(envoy.url("/v1/datasets/sales"))
            .bearer_auth(token("alice", &["analysts"]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    proxy.delay_ms.store(0, Ordering::Relaxed);
    let recovered = eventually(
        Duration::from_secs(15),
        Duration::from_millis(200),
        || async { export().await.is_ok_and(|r| r.status() == 403) },
    )
    .await;
    assert!(recovered, "{}", sidecar.log());
}

#[tokio::test]
async fn sigterm_under_load_answers_held_and_in_flight_calls_flushes_spans_and_exits_zero() {
    let collector = Collector::start().await;
    let s = stack_traced(Some(collector.port)).await;
    // A held call: a role grant waits for a second member of security.
    let held = s.held("/acme.iam.v1.Roles/GrantRole", &token("sam", &["security"]));
    s.pending_id("sara").await;
    assert!(!held.is_finished(), "the call is held, not answered");

    let (stop, t0) = (Arc::new(AtomicBool::new(false)), Instant::now());
    let tasks: Vec<_> = (0..4).map(|_| load(&s, stop.clone(), t0)).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let Stack { sidecar, envoy, .. } = s;
    let log = sidecar.log.clone();
    let signalled = t0.elapsed();
    let status = tokio::task::spawn_blocking(move || sidecar.terminate())
        .await
        .unwrap();
    let exited = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let log = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(0), "{log}");
    let (not_serving, stopped) = (
        log.find("shutting down: NOT_SERVING")
            .expect("NOT_SERVING logged"),
        log.find("stopped").expect("stopped logged"),
    );
    assert!(
        not_serving < stopped && !log.contains("grace period over"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");

    // The held call got its answer at shutdown, with what it needs to retry
    // once approved, not Envoy's bare 503.
    let (code, body) = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (code, &body["decision"]),
        (403, &json!("approval_required")),
        "{body}"
    );
    assert!(body["approval_token"].is_string(), "{body}");

    // Calls answered before the signal were decided normally; after it,
    // only a normal answer or Envoy's fail-closed 503.
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.extend(t.await.unwrap());
    }
    for o in &outcomes {
        let normal = match o.kind {
            "alice" => o.status == 200,
            "anonymous" => o.status == 403,
            _ => o.status == 403 && o.body["decision"] == "approval_required",
        };
        assert!(normal || (o.at > signalled && o.status == 503), "{o:?}");
    }
    assert!(
        outcomes.iter().any(|o| o.at > signalled && o.status == 503),
        "Envoy never saw the sidecar go"
    );
    assert_eq!(
        envoy
            .stat("http.ingress.ext_authz.failure_mode_allowed")
            .await,
        0
    );

    // Spans of checks decided during the drain reached the collector.
    let flushed = eventually(Duration::from_secs(5), Duration::from_millis(100), || {
        let held_span = collector.named("countersign.check").iter().any(|c| {
            c.attr("countersign.action").as_deref() == Some(r#"Action::"grant_role""#)
                && c.attr("countersign.decision").as_deref() == Some("approval_required")
        });
        async move { held_span }
    })
    .await;
    assert!(
        flushed,
        "the held check's span was lost; exited after {exited:?}"
    );
}
