//! The audit trail end to end: real Envoy (envoy/envoy.yaml, tracing on), the
//! real binary, real Redis, and spans received over real OTLP/gRPC.

mod common;

use std::process::Command;
use std::time::Duration;

use common::otlp::{Collector, Received};
use common::stack::{Stack, stack_traced};
use common::{Envoy, Sidecar, eventually, policy_copy, token, token_with};
use countersign::approval::ApprovalStore;
use serde_json::{Value, json};

const EXPORT: &str = "/v1/datasets/sales/export";
const BODY: &str = r#"{"format":"csv","rows":10}"#;

fn agent() -> String {
    token_with("agent-7", &["agents"], json!({"on_behalf_of": "alice"}))
}

/// Waits for spans matching `pred`.
async fn spans_where(
    c: &Collector,
    what: &str,
    pred: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    let ok = eventually(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async { pred(&c.spans()) },
    )
    .await;
    let spans = c.spans();
    assert!(
        ok,
        "{what}; received: {:?}",
        spans
            .iter()
            .map(|s| (s.service.as_str(), s.name()))
            .collect::<Vec<_>>()
    );
    spans
}

/// `countersign audit export` against the stack's Redis, one JSON object per line.
fn audit_export(s: &Stack) -> Vec<Value> {
    common::audit_export(&s.pki.dir().join("countersign.toml"))
}

#[tokio::test]
async fn the_check_span_is_a_child_of_envoys_span_and_carries_no_secrets() {
    let collector = Collector::start().await;
    let s = stack_traced(Some(collector.port)).await;
    let alice = token("alice", &["analysts"]);
    let r = s
        .http
        .get(s.envoy.url("/v1/datasets/sales?format=csv"))
        .bearer_auth(&alice)
        .header("cookie", "session=cookie-secret-123")
        .header("x-countersign-approval", "approval-secret-456")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // On a guarded route the approval token is read (and refused).
    let r = s
        .post(EXPORT, &agent(), BODY, Some("approval-secret-456"))
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);

    let spans = spans_where(&collector, "a check span and Envoy's spans", |spans| {
        let decided = |d: &str| {
            spans.iter().find(|s| {
                s.name() == "countersign.check"
                    && s.attr("countersign.decision").as_deref() == Some(d)
            })
        };
        decided("deny").is_some()
            && decided("allow").is_some_and(|c| {
                spans
                    .iter()
                    .any(|e| e.service == "envoy" && e.span_id() == c.parent_id())
            })
    })
    .await;
    let check = spans
        .iter()
        .find(|s| {
            s.name() == "countersign.check"
                && s.attr("countersign.decision").as_deref() == Some("allow")
        })
        .unwrap();
    assert_eq!(check.service, "countersign");
    let parent = spans
        .iter()
        .find(|e| e.span_id() == check.parent_id())
        .unwrap();
    assert_eq!(parent.service, "envoy");
    assert_eq!(parent.trace_id(), check.trace_id());
    // The request's own span (the root) is Envoy's, in the same trace.
    assert!(
        spans.iter().any(|e| e.service == "envoy"
            && e.trace_id() == check.trace_id()
            && e.span.parent_span_id.is_empty()),
        "no root span from Envoy in the check's trace"
    );

    for (key, want) in [
        ("countersign.decision", "allow"),
        ("countersign.principal", r#"User::"alice""#),
        ("countersign.action", r#"Action::"read""#),
        ("countersign.resource", r#"Dataset::"sales""#),
        ("http.request.method", "GET"),
        ("url.path", "/v1/datasets/sales"),
        ("http.response.status_code", "200"),
        ("countersign.guarded", "false"),
    ] {
        assert_eq!(check.attr(key).as_deref(), Some(want), "{key}");
    }
    assert!(
        check
            .attr("countersign.policies")
            .is_some_and(|p| !p.is_empty())
    );
    assert!(
        check
            .attr("countersign.request_id")
            .is_some_and(|p| !p.is_empty())
    );

    for span in &spans {
        let dump = span.dump();
        for secret in [alice.as_str(), "cookie-secret-123", "approval-secret-456"] {
            assert!(
                !dump.contains(secret),
                "span {} from {} carries a secret",
                span.name(),
                span.service
            );
        }
    }
}

#[tokio::test]
async fn an_approved_export_tells_its_story_in_linked_spans_and_the_audit_stream() {
    let collector = Collector::start().await;
    let s = stack_traced(Some(collector.port)).await;
    let agent = agent();

    let (id, token) = s
        .open_and_approve(EXPORT, &agent, BODY, "quarterly report")
        .await;
    let r = s.post(EXPORT, &agent, BODY, Some(&token)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    let named = |spans: &[Received], n: &str| spans.iter().filter(|s| s.name() == n).count();
    let spans = spans_where(&collector, "the approval lifecycle spans", |spans| {
        named(spans, "countersign.approval.consumed") == 1
            && named(spans, "countersign.approval.approved") == 1
            && named(spans, "countersign.approval.requested") == 1
            && named(spans, "countersign.check") >= 2
    })
    .await;
    let one = |n: &str| spans.iter().find(|s| s.name() == n).unwrap().clone();
    let checks: Vec<&Received> = spans
        .iter()
        .filter(|s| s.name() == "countersign.check")
        .collect();
    let opening = checks
        .iter()
        .find(|c| c.attr("countersign.decision").as_deref() == Some("approval_required"))
        .expect("the check that opened the request");
    let using = checks
        .iter()
        .find(|c| c.attr("countersign.decision").as_deref() == Some("allow"))
        .expect("the check that used the approval");
    for c in [opening, using] {
        assert_eq!(
            c.attr("countersign.approval.id").as_deref(),
            Some(id.as_str())
        );
        assert_eq!(c.attr("countersign.guarded").as_deref(), Some("true"));
        assert_eq!(c.attr("countersign.audit.written").as_deref(), Some("true"));
        assert_eq!(
            c.attr("countersign.principal").as_deref(),
            Some(r#"User::"agent-7""#)
        );
        assert_eq!(
            c.attr("countersign.on_behalf_of").as_deref(),
            Some(r#"User::"alice""#)
        );
    }
    let links_to_opening = |s: &Received| {
        s.span
            .links
            .iter()
            .any(|l| common::otlp::hex(&l.span_id) == opening.span_id())
    };

    let requested = one("countersign.approval.requested");
    assert_eq!(requested.parent_id(), opening.span_id());
    assert!(links_to_opening(&requested));
    assert_eq!(
        requested
            .attr("countersign.approval.parameter.body.format")
            .as_deref(),
        Some("csv")
    );

    let approved = one("countersign.approval.approved");
    assert!(
        links_to_opening(&approved),
        "approved is not linked to the opening check"
    );
    assert_eq!(
        approved.attr("countersign.approval.approver").as_deref(),
        Some("dora")
    );
    assert_eq!(
        approved.attr("countersign.approval.reason").as_deref(),
        Some("quarterly report")
    );
    assert_eq!(
        approved.attr("countersign.approval.id").as_deref(),
        Some(id.as_str())
    );

    let consumed = one("countersign.approval.consumed");
    assert_eq!(consumed.parent_id(), using.span_id());
    assert!(
        links_to_opening(&consumed),
        "consumed is not linked to the opening check"
    );

    for span in &spans {
        assert!(
            !span.dump().contains(&token),
            "{} carries the approval token",
            span.name()
        );
    }
}

#[tokio::test]
async fn with_the_collector_down_answers_hold_and_the_audit_stream_has_every_event() {
    let collector = Collector::start().await;
    let s = stack_traced(Some(collector.port)).await;
    drop(collector);
    let agent = agent();
    let alice = token("alice", &["analysts"]);

    assert_eq!(s.get("/v1/datasets/sales", Some(&alice)).await, 200);
    let (id, token) = s.open_and_approve(EXPORT, &agent, BODY, "board pack").await;
    let r = s.post(EXPORT, &agent, BODY, Some(&token)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = s.post(EXPORT, &agent, BODY, Some(&token)).await;
    assert_eq!(r.status, 403, "a replay is refused: {:?}", r.body);

    let entries = audit_export(&s);
    let story: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or_default().to_owned(),
                e["decision"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = story
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    // The unguarded read is not in the audit stream; every guarded decision
    // and approval event is, in order.
    assert_eq!(
        pairs,
        [
            ("requested", ""),
            ("decision", "approval_required"),
            ("approved", ""),
            ("consumed", ""),
            ("decision", "allow"),
            ("decision", "deny"),
        ]
    );
    for e in &entries {
        assert_eq!(e["approval_id"], id.as_str(), "{e}");
        assert_eq!(e["principal"], r#"User::"agent-7""#, "{e}");
        assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
    }
    assert_eq!(entries[2]["approver"], "dora");
    assert_eq!(entries[2]["reason"], "board pack");
    let trail = entries.iter().map(Value::to_string).collect::<String>();
    assert!(!trail.contains(&token) && !trail.contains(&agent));

    // The spans that could not be delivered are counted.
    let metrics = format!("http://{}/metrics", s.sidecar.metrics_addr);
    let dropped = eventually(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            metric(&text(&metrics).await, "countersign_spans_dropped_total")
                .is_some_and(|n| n > 0.0)
        },
    )
    .await;
    assert!(dropped, "no dropped spans counted");
}

/// GET `url`; the body.
async fn text(url: impl reqwest::IntoUrl) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// The value of a sample line `name` (with its labels) in a scrape.
fn metric(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn metrics_move_as_requests_are_decided_and_readiness_follows_redis() {
    let mut s = stack_traced(None).await;
    let metrics = format!("http://{}/metrics", s.sidecar.metrics_addr);
    let scrape = || async { text(&metrics).await };
    let allow = r#"countersign_checks_total{decision="allow",shadow="false"}"#;
    let deny = r#"countersign_checks_total{decision="deny",shadow="false"}"#;
    let required = r#"countersign_checks_total{decision="approval_required",shadow="false"}"#;
    let before = scrape().await;
    assert_eq!(metric(&before, allow), Some(0.0), "{before}");

    let alice = token("alice", &["analysts"]);
    for _ in 0..3 {
        assert_eq!(s.get("/v1/datasets/sales", Some(&alice)).await, 200);
    }
    assert_eq!(s.get("/v1/datasets/sales", None).await, 403);
    let r = s.post(EXPORT, &agent(), BODY, None).await;
    assert_eq!(r.body["decision"], "approval_required");

    let after = scrape().await;
    assert_eq!(metric(&after, allow), Some(3.0), "{after}");
    assert_eq!(metric(&after, deny), Some(1.0), "{after}");
    assert_eq!(metric(&after, required), Some(1.0), "{after}");
    assert_eq!(
        metric(&after, "countersign_check_duration_seconds_count"),
        Some(5.0)
    );
    assert_eq!(
        metric(&after, "countersign_approvals_pending"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        metric(
            &after,
            r#"countersign_approval_events_total{event="requested"}"#
        ),
        Some(1.0)
    );
    assert_eq!(metric(&after, "countersign_policy_ready"), Some(1.0));

    let ready = format!("http://{}/readyz", s.sidecar.metrics_addr);
    let health = format!("http://{}/healthz", s.sidecar.metrics_addr);
    assert_eq!(reqwest::get(&ready).await.unwrap().status(), 200);
    s.redis.stop();
    let r = reqwest::get(&ready).await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("approvals"));
    assert_eq!(reqwest::get(&health).await.unwrap().status(), 200);
    assert!(metric(&scrape().await, "countersign_redis_errors_total").is_some_and(|n| n >= 1.0));
}

#[tokio::test]
async fn with_no_valid_policy_set_every_check_is_denied_and_readyz_says_not_ready() {
    let policies = policy_copy();
    let broken = policies.path().join("broken.cedar");
    std::fs::write(
        &broken,
        "permit (principal, action, resource) when { oops };",
    )
    .unwrap();
    let sidecar = Sidecar::start(policies.path(), &[]);
    let envoy = Envoy::start(sidecar.port()).await;
    let base = format!("http://{}", sidecar.metrics_addr);
    let http = reqwest::Client::new();
    let alice = token("alice", &["analysts"]);
    let read = || async {
        http.get(envoy.url("/v1/datasets/sales"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };

    let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("no valid policy set"));
    assert_eq!(read().await, 403, "a sidecar without policies must deny");
    let scrape = text(format!("{base}/metrics")).await;
    assert_eq!(metric(&scrape, "countersign_policy_ready"), Some(0.0));
    assert!(
        sidecar.log().contains("no valid policy set"),
        "{}",
        sidecar.log()
    );

    // Fixing the files recovers without a restart.
    std::fs::remove_file(&broken).unwrap();
    let ready = eventually(
        Duration::from_secs(10),
        Duration::from_millis(200),
        || async {
            reqwest::get(format!("{base}/readyz"))
                .await
                .unwrap()
                .status()
                == 200
        },
    )
    .await;
    assert!(ready, "{}", sidecar.log());
    assert_eq!(read().await, 200);
    let scrape = text(format!("{base}/metrics")).await;
    assert_eq!(
        metric(&scrape, r#"countersign_policy_reloads_total{result="ok"}"#),
        Some(1.0),
        "{scrape}"
    );
}

#[tokio::test]
async fn audit_tail_prints_entries_as_they_are_written_even_after_a_quiet_spell() {
    use std::io::BufRead;
    let redis = common::Redis::start().await;
    let mut tail = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["audit", "tail", "--format", "text"])
        .env_remove("COUNTERSIGN_CONFIG")
        .env("COUNTERSIGN_REDIS_URL", redis.url())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    // Quiet for longer than a Redis reply is normally allowed to take.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let store = common::services::redis_store(countersign::approval::StoreConfig {
        timeout: Duration::from_millis(250),
        audit_max_len: 1000,
        ..common::services::store_config(&redis.url(), "countersign:")
    });
    store
        .append_audit(
            "r-tail",
            &[
                ("event", "decision"),
                ("decision", "deny"),
                ("reason", "line one\nforged=line"),
            ],
        )
        .await
        .unwrap();
    let line = lines.recv_timeout(Duration::from_secs(10));
    let _ = tail.kill();
    let _ = tail.wait();
    let line = line.expect("audit tail printed nothing");
    assert!(
        line.contains(r#"event="decision""#) && line.contains(r#"decision="deny""#),
        "{line}"
    );
    assert!(
        line.contains(r#"reason="line one\nforged=line""#),
        "one escaped line: {line}"
    );
}
