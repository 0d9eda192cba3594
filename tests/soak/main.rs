//! Soak: the whole deployment (real Envoy running envoy/envoy.yaml, the real
//! `countersign` binary, a real redis-server, both exporting spans to an
//! OTLP receiver) under mixed traffic for
//! `COUNTERSIGN_SOAK_SECS` seconds (default 30, at least 20), with Redis
//! restarts and policy reloads along the way. Every answer is judged against
//! what its kind must get at that moment (Redis up, down, or coming back);
//! countersign must stay up and its resident memory flat. `scripts/soak.sh`
//! runs the long form; `--nocapture` shows the closing table.
//!
//! Layout: `kinds` (each kind of request and what it must get), `run` (the
//! run's shared state: calls made and judged), `traffic` (mixed requests
//! and approval flows), `reloads` (policy changes), `redis_restarts`
//! (Redis stopped and replaced), `memory` (RSS samples and their bound);
//! the test itself, its report and its invariants below.

#[path = "../common/mod.rs"]
mod common;

mod kinds;
mod memory;
mod redis_restarts;
mod reloads;
mod run;
mod traffic;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::stack::stack_traced;
use common::token_with;
use kinds::Kind;
use memory::{RSS_FACTOR, RSS_SLACK_KIB, alive, median, mib, rss};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use redis_restarts::redis_restarts;
use reloads::{RELOADS_FAILED, RELOADS_OK, reloads};
use run::{Soak, metric};
use serde_json::json;
use tokio::sync::RwLock;
use traffic::{approval_flow, mixed};

/// A request not answered in this long hung: Envoy's ext_authz timeout is
/// 0.5 s and the upstream answers at once.
const HANG: Duration = Duration::from_secs(5);

const CHECKS: [&str; 3] = [
    r#"countersign_checks_total{decision="allow",shadow="false"}"#,
    r#"countersign_checks_total{decision="deny",shadow="false"}"#,
    r#"countersign_checks_total{decision="approval_required",shadow="false"}"#,
];

/// An OTLP/gRPC receiver that counts spans by service and keeps none, so
/// that telemetry is on as in production without the test's memory growing.
#[derive(Clone, Default)]
struct SpanCounter(Arc<Mutex<BTreeMap<String, u64>>>);

#[tonic::async_trait]
impl TraceService for SpanCounter {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut seen = self.0.lock().unwrap();
        for rs in &request.get_ref().resource_spans {
            let service = common::otlp::service_name(rs);
            let n: usize = rs.scope_spans.iter().map(|ss| ss.spans.len()).sum();
            *seen.entry(service).or_default() += n as u64;
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn agent() -> String {
    agent_named("agent-7")
}

/// An agent of its own: each principal may have at most
/// `approvals.max_pending_per_principal` requests pending.
fn agent_named(sub: &str) -> String {
    token_with(sub, &["agents"], json!({"on_behalf_of": "alice"}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_mixed_traffic_restarts_and_reloads_every_answer_is_right_and_memory_stays_flat() {
    let secs: u64 = std::env::var("COUNTERSIGN_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
        .max(20);
    let run = Duration::from_secs(secs);
    let warm_up = (run / 10).clamp(Duration::from_secs(5), Duration::from_secs(60));
    let outage = (run / 20).clamp(Duration::from_secs(3), Duration::from_secs(15));
    let reload_every = (run / 12).clamp(Duration::from_secs(2), Duration::from_secs(10));
    let restarts_at: Vec<Duration> = if secs >= 120 {
        vec![run * 35 / 100, run * 70 / 100]
    } else {
        vec![run * 45 / 100]
    };

    let spans = SpanCounter::default();
    let (otlp, _stop_otlp) = common::otlp::serve(spans.clone()).await;
    let s = stack_traced(Some(otlp)).await;
    let metrics_url = format!("http://{}/metrics", s.sidecar.metrics_addr);
    let policy_dir = s.policies.path().to_owned();
    let base = s.envoy.url("");
    let started = Instant::now();
    let soak = Arc::new(Soak {
        stack: RwLock::new(s),
        base,
        http: reqwest::Client::builder().timeout(HANG).build().unwrap(),
        generation: AtomicU64::new(0),
        outages: Mutex::new(Vec::new()),
        started,
        until: started + run,
        halted: AtomicBool::new(false),
        tally: Mutex::new(BTreeMap::new()),
        violations: Mutex::new(Vec::new()),
        metrics_url,
        policy_dir,
    });

    let mut traffic = Vec::new();
    for w in 0..3 {
        traffic.push(tokio::spawn(mixed(soak.clone(), w)));
    }
    for w in 0..2 {
        traffic.push(tokio::spawn(approval_flow(soak.clone(), w)));
    }
    let reloader = tokio::spawn(reloads(soak.clone(), reload_every));
    let chaos = tokio::spawn(redis_restarts(soak.clone(), restarts_at.clone(), outage));
    let sampler = tokio::spawn(rss(soak.clone(), warm_up));
    for t in traffic {
        t.await.unwrap();
    }
    let (good_reloads, broken_reloads) = reloader.await.unwrap();
    let chaos = chaos.await.unwrap();
    let samples = sampler.await.unwrap();
    let elapsed = started.elapsed();

    let stack = soak.stack.read().await;
    let pid = stack.sidecar.pid();
    let still_alive = alive(pid);
    let (peak, _) = if still_alive {
        stack.sidecar.rss_kib()
    } else {
        (0, 0)
    };
    let log = stack.sidecar.log();
    let scrape = match soak.http.get(&soak.metrics_url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    drop(stack);

    // The report.
    let tally = soak.tally.lock().unwrap().clone();
    let violations = soak.violations.lock().unwrap().clone();
    let total: u64 = tally.values().flat_map(|m| m.values()).sum();
    let mut out = format!(
        "\n### Soak: {} s run ({} s asked), {} requests, {:.0} per second\n\n\
         | kind | expected (Redis up / down) | count | answers |\n|---|---|---:|---|\n",
        elapsed.as_secs(),
        secs,
        total,
        total as f64 / elapsed.as_secs_f64()
    );
    for kind in Kind::ALL {
        let (what, expected) = kind.describe();
        let seen = tally.get(&kind).cloned().unwrap_or_default();
        let answers = seen
            .iter()
            .map(|(status, n)| format!("{status}×{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let count: u64 = seen.values().sum();
        let _ = writeln!(out, "| {what} | {expected} | {count} | {answers} |");
    }
    let third = samples.len() / 3;
    let (first, last) = if third > 0 {
        (
            median(&samples[..third]),
            median(&samples[samples.len() - third..]),
        )
    } else {
        (0, 0)
    };
    let bound = (first as f64 * RSS_FACTOR) as u64 + RSS_SLACK_KIB;
    let count_of = |name| metric(&scrape, name).map_or("?".into(), |v| v.to_string());
    let ms = |d: Duration| format!("{} ms", d.as_millis());
    let mut rows = vec![
        ("invariant violations", violations.len().to_string()),
        (
            "RSS, median of first / last third after warm-up",
            format!("{} / {} (bound {})", mib(first), mib(last), mib(bound)),
        ),
        (
            "RSS samples (1 s), warm-up",
            format!("{}, {} s", samples.len(), warm_up.as_secs()),
        ),
        (
            "RSS min / max sample, peak (VmHWM)",
            format!(
                "{} / {}, {}",
                mib(samples.iter().copied().min().unwrap_or(0)),
                mib(samples.iter().copied().max().unwrap_or(0)),
                mib(peak)
            ),
        ),
        (
            "policy writes: good / broken",
            format!("{good_reloads} / {broken_reloads}"),
        ),
        (
            "reloads counted by countersign: ok / failed",
            format!("{} / {}", count_of(RELOADS_OK), count_of(RELOADS_FAILED)),
        ),
        (
            "Redis restarts (outage each)",
            format!("{} ({} s)", chaos.restarts, outage.as_secs()),
        ),
        (
            "approvals lost with Redis, refused after",
            chaos.lost_refused.to_string(),
        ),
        (
            "slowest guarded answer while Redis was down",
            ms(chaos.slowest_outage_answer),
        ),
        (
            "guarded calls working again after restart",
            chaos
                .recoveries
                .iter()
                .map(|d| ms(*d))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "checks counted by countersign: allow / deny / approval_required",
            CHECKS
                .iter()
                .map(|name| count_of(name))
                .collect::<Vec<_>>()
                .join(" / "),
        ),
    ];
    let received = spans.0.lock().unwrap().clone();
    rows.push((
        "spans received by the collector",
        received
            .iter()
            .map(|(service, n)| format!("{service}: {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    rows.push((
        "spans countersign dropped",
        count_of("countersign_spans_dropped_total"),
    ));
    let lines_with = |level: &str| log.lines().filter(|l| l.contains(level)).count();
    rows.push((
        "countersign log lines: WARN / ERROR",
        format!("{} / {}", lines_with(" WARN "), lines_with(" ERROR ")),
    ));
    out.push_str("\n| figure | value |\n|---|---|\n");
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    eprintln!("{out}");

    // The invariants.
    assert!(still_alive, "countersign exited:\n{log}");
    assert!(!log.contains("panicked"), "countersign panicked:\n{log}");
    assert!(
        violations.is_empty(),
        "{} invariant violations, the first:\n{}",
        violations.len(),
        violations
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        chaos.restarts as usize,
        restarts_at.len(),
        "not every Redis restart happened"
    );
    assert!(
        good_reloads >= 2 && broken_reloads >= 1,
        "too few policy changes: {good_reloads} good, {broken_reloads} broken"
    );
    // Every kind of request was made, and the flows went all the way.
    for kind in Kind::ALL {
        let seen = tally.get(&kind).map_or(0, |m| m.values().sum::<u64>());
        assert!(seen > 0, "no {kind:?} request was made");
    }
    let used = tally
        .get(&Kind::Use)
        .and_then(|m| m.get(&200))
        .copied()
        .unwrap_or(0);
    assert!(used > 0, "no approved export went through");
    assert!(
        samples.len() >= 9,
        "too few RSS samples ({}) to judge memory",
        samples.len()
    );
    assert!(
        last <= bound,
        "countersign's RSS grew: last-third median {} > {} (first-third median {} × {RSS_FACTOR} + {}); samples (KiB): {samples:?}",
        mib(last),
        mib(bound),
        mib(first),
        mib(RSS_SLACK_KIB)
    );
}
