//! The decision path without the network: `CheckRequest` -> mapping ->
//! Cedar -> `CheckResponse`, at several policy-set sizes; Cedar alone on the
//! whole set and on the action's slice; a check with telemetry on; the
//! approval store (a real `redis-server` on a free port); MCP checks; and
//! AuthZEN evaluations through the PDP's router.
//!
//! `cargo bench --bench check` (filter with e.g. `-- decide/`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use cedar_policy::Authorizer;
use countersign::approval::approvers::Approvers;
use countersign::approval::{ApprovalStore, Lifecycle, MemoryStore, RedisStore, Ruling as Vote};
use countersign::audit::EventSink;
use countersign::authz::{AuthzService, AuthzSettings};
use countersign::authzen::{EVALUATION_PATH, EVALUATIONS_PATH, Pdp};
use countersign::config::{AuthzenConfig, Config, EMBEDDED};
use countersign::gate::{Gate, GateSettings};
use countersign::metrics::Metrics;
use countersign::policy::PolicyStore;
use countersign::telemetry::Telemetry;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::json;
use tower::ServiceExt;

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../bench/synthetic.rs"]
mod synthetic;

use common::check;
use synthetic::{allowed, export, http_body_1k, mcp_call_1k};

/// The allocator the `countersign` binary runs with (src/main.rs).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Policy-set sizes: the 20 example policies alone, then with generated ones.
const SIZES: [usize; 4] = [EXAMPLES, 100, 1_000, 10_000];
/// How many policies `policies/` holds.
const EXAMPLES: usize = 20;

struct Fixture {
    _dir: tempfile::TempDir,
    policies: Arc<PolicyStore>,
}

fn config() -> Config {
    Config::load(None, &HashMap::new()).unwrap()
}

fn fixture(total: usize, token_uses: Option<u32>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    synthetic::write_policy_dir(dir.path(), total.saturating_sub(EXAMPLES), token_uses).unwrap();
    synthetic::write_body_permit(dir.path()).unwrap();
    let probes = config().mapper.probes().unwrap();
    let policies = PolicyStore::open(dir.path(), probes).unwrap();
    Fixture {
        _dir: dir,
        policies: Arc::new(policies),
    }
}

/// The Redis store at `url`.
fn redis(url: &str) -> Arc<RedisStore> {
    let mut store = config().store;
    store.url = url.to_owned();
    Arc::new(RedisStore::new(store).unwrap())
}

/// The decision core the front doors share, and the approvals it holds.
fn gate(
    f: &Fixture,
    store: Arc<dyn ApprovalStore>,
    telemetry: Option<Telemetry>,
) -> (Gate, Lifecycle) {
    let config = config();
    let sink = EventSink::new(telemetry, Metrics::default());
    let approvers = Approvers::from_config(f.policies.clone(), &config);
    let approvals = Lifecycle::new(store, sink, approvers);
    let gate = Gate::new(
        f.policies.clone(),
        approvals.clone(),
        GateSettings::from_config(&config),
    );
    (gate, approvals)
}

fn service(
    f: &Fixture,
    store: Arc<dyn ApprovalStore>,
    telemetry: Option<Telemetry>,
) -> AuthzService {
    let config = config();
    let settings = AuthzSettings::from_config(&config);
    let (gate, _) = gate(f, store, telemetry);
    AuthzService::new(Arc::new(config.mapper), gate, settings)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn decide(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("decide");
    let req = allowed();
    for size in SIZES {
        let f = fixture(size, None);
        // Nothing listens on port 1: the allow path never calls Redis.
        let svc = service(&f, redis("redis://127.0.0.1:1"), None);
        let seen = check::seen(&rt.block_on(svc.decide(&req)));
        assert_eq!(seen.http_status, 200, "{seen:?}");
        g.bench_with_input(BenchmarkId::new("allow", size), &req, |b, req| {
            b.to_async(&rt).iter(|| svc.decide(req));
        });
    }
    // Span creation and the hand-off to the exporter's queue.
    let f = fixture(100, None);
    let svc = rt.block_on(async {
        service(
            &f,
            redis("redis://127.0.0.1:1"),
            Some(Telemetry::with_exporter(Discard)),
        )
    });
    g.bench_with_input(BenchmarkId::new("allow-traced", 100), &req, |b, req| {
        b.to_async(&rt).iter(|| svc.decide(req));
    });
    g.finish();
}

/// Cedar alone: the whole set against the request action's slice.
fn cedar(c: &mut Criterion) {
    let mut g = c.benchmark_group("cedar");
    let authorizer = Authorizer::new();
    for size in SIZES {
        let f = fixture(size, None);
        let loaded = f.policies.current();
        let config = config();
        let mapper = &config.mapper;
        let http = allowed().attributes.unwrap().request.unwrap().http.unwrap();
        let claims = json!({"sub": "alice", "groups": ["analysts"]});
        let req = countersign::request::HttpRequest {
            method: &http.method,
            path: &http.path,
            host: &http.host,
            scheme: &http.scheme,
            headers: &http.headers,
            body: &[],
            source_address: "",
            source_principal: "",
            jwt_claims: claims.as_object(),
            request_id: "req-7",
            time: None,
        };
        let mapped = mapper.map(&req).unwrap();
        let request = mapped.request(false).unwrap();
        let slice = loaded.policies_for(&mapped.action);
        g.bench_function(BenchmarkId::new("whole-set", size), |b| {
            b.iter(|| authorizer.is_authorized(&request, &loaded.set, &mapped.entities));
        });
        g.bench_function(BenchmarkId::new("slice", size), |b| {
            b.iter(|| authorizer.is_authorized(&request, slice, &mapped.entities));
        });
    }
    g.finish();
}

/// The approval path: a retried call finding its approved request, and the
/// whole check that takes a use by token; on a real Redis (`approval`, the
/// figures RESULTS.md quotes) and on the memory store (`approval-memory`:
/// the path without the network).
fn approvals(c: &mut Criterion) {
    let rt = runtime();
    let redis_server = rt.block_on(common::Redis::start());
    let stores: [(&str, Arc<dyn ApprovalStore>); 2] = [
        ("approval", redis(&redis_server.url())),
        ("approval-memory", Arc::new(MemoryStore::new())),
    ];
    let f = fixture(100, Some(u32::MAX));
    for (group, store) in stores {
        let svc = service(&f, store.clone(), None);
        let first = check::seen(&rt.block_on(svc.decide(&export(10, None))));
        let body: serde_json::Value = serde_json::from_str(&first.body).unwrap();
        let id = body["approval_id"].as_str().expect("approval required");
        let token = body["approval_token"].as_str().unwrap().to_owned();
        rt.block_on(store.vote(id, "dora".into(), Vote::Approve, "benchmark"))
            .unwrap();
        let with_token = export(10, Some(&token));
        let used = check::seen(&rt.block_on(svc.decide(&with_token)));
        assert_eq!(used.http_status, 200, "{used:?}");

        let mut g = c.benchmark_group(group);
        g.bench_function("check-with-token", |b| {
            b.to_async(&rt).iter(|| svc.decide(&with_token));
        });
        let retry = export(10, None);
        g.bench_function("check-retry-finds-request", |b| {
            b.to_async(&rt).iter(|| svc.decide(&retry));
        });
        g.finish();
    }
}

/// An MCP check against an HTTP-route check with a body of the same size
/// (about 1 KiB): allowed, and guarded with a valid approval (the HTTP call
/// presents its token, the MCP call is the identical tool call). On the
/// memory store, so that both compare CPU, not Redis round trips.
fn mcp(c: &mut Criterion) {
    let rt = runtime();
    let f = fixture(100, Some(u32::MAX));
    // The HTTP export's 1 KiB is a body field its guard would not show
    // (`note`), and a call carrying what approvers are not shown cannot be
    // approved: here the guard shows everything, as the MCP tool's guard
    // shows every argument, so both sides bind about 1 KiB.
    let guard = f._dir.path().join("data-export.cedar");
    let text = std::fs::read_to_string(&guard).unwrap();
    let shown = text.replace(r#"@show("format, rows")"#, r#"@show("*")"#);
    assert_ne!(text, shown, "the export guard's @show changed");
    std::fs::write(&guard, shown).unwrap();
    f.policies.reload().unwrap();
    let store = Arc::new(MemoryStore::new());
    let svc = service(&f, store.clone(), None);
    let mut g = c.benchmark_group("mcp");

    let http = http_body_1k();
    let mcp_read = mcp_call_1k("read_dataset", 1);
    for (name, req) in [("http-body-1k-allow", &http), ("mcp-1k-allow", &mcp_read)] {
        let seen = check::seen(&rt.block_on(svc.decide(req)));
        assert_eq!(seen.rpc_code, 0, "{name}: {seen:?}");
        g.bench_function(name, |b| b.to_async(&rt).iter(|| svc.decide(req)));
    }

    // Approved once, used by every iteration (uses: u32::MAX).
    let approve = |body: &str| {
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        let id = body["approval_id"]
            .as_str()
            .or_else(|| body["result"]["_meta"]["countersign/decision"]["approval_id"].as_str())
            .expect("approval required")
            .to_owned();
        rt.block_on(store.vote(&id, "dora".into(), Vote::Approve, "benchmark"))
            .unwrap();
        body["approval_token"].as_str().map(str::to_owned)
    };
    let body = format!(
        r#"{{"format":"csv","rows":10,"note":"{}"}}"#,
        "x".repeat(990)
    );
    let first = check::seen(&rt.block_on(svc.decide(&export_body(&body, None))));
    let token = approve(&first.body).expect("the HTTP answer carries the token");
    let http_used = export_body(&body, Some(&token));
    let mcp_export = mcp_call_1k("export_dataset", 2);
    approve(&check::seen(&rt.block_on(svc.decide(&mcp_export))).body);
    for (name, req) in [
        ("http-body-1k-approved", &http_used),
        ("mcp-1k-approved", &mcp_export),
    ] {
        let seen = check::seen(&rt.block_on(svc.decide(req)));
        assert_eq!(seen.rpc_code, 0, "{name}: {seen:?}");
        g.bench_function(name, |b| b.to_async(&rt).iter(|| svc.decide(req)));
    }
    g.finish();
}

/// An agent's export with `body`, presenting `token` if given.
fn export_body(body: &str, token: Option<&str>) -> envoy_types::ext_authz::v3::pb::CheckRequest {
    let mut c = check::check("POST", "/v1/datasets/sales/export")
        .claims(json!({"sub": "agent-7", "groups": ["agents"], "on_behalf_of": "alice"}))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        c = c.header("x-countersign-approval", t);
    }
    c.build()
}

/// The AuthZEN client's bearer token, as in bench/run.py.
const AUTHZEN_TOKEN: &str = "bench-pep-token";

/// The embedded configuration with an `[authzen]` table, as bench/run.py
/// serves it, on the policies in `dir`.
fn authzen_config(dir: &std::path::Path) -> AuthzenConfig {
    use sha2::Digest as _;
    let file = tempfile::NamedTempFile::new().unwrap();
    let digest = hex::encode(sha2::Sha256::digest(AUTHZEN_TOKEN));
    let text = format!(
        "{EMBEDDED}\n[authzen]\n[[authzen.clients]]\nname = \"bench\"\ntoken_sha256 = \"{digest}\"\n"
    );
    std::fs::write(file.path(), text).unwrap();
    let env = HashMap::from([(
        "COUNTERSIGN_POLICY_DIR".to_owned(),
        dir.display().to_string(),
    )]);
    let config = Config::load(Some(file.path()), &env).unwrap();
    config.authzen.expect("an [authzen] table")
}

/// One authenticated AuthZEN POST through `router`: its status and body.
async fn authzen_call(router: Router, path: &str, body: &'static str) -> (StatusCode, Bytes) {
    let req = Request::post(path)
        .header("authorization", format!("Bearer {AUTHZEN_TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let resp = router.oneshot(req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, body)
}

/// AuthZEN evaluations in process: the PDP's router called with `oneshot`
/// (no socket, no HTTP/1 parsing), one evaluation and a batch of 10
/// (bench/authzen-*.json, as bench/run.py sends them), on 100 policies.
/// Each evaluation is the Cedar request of `decide/allow/100` on the same
/// `read` slice, so the two compare the front doors: JSON in and out, the
/// AuthZEN mapping and axum here; the route table and `CheckResponse`
/// there. The memory store: an allow never reaches it.
fn authzen(c: &mut Criterion) {
    let rt = runtime();
    let f = fixture(100, None);
    let (gate, approvals) = gate(&f, Arc::new(MemoryStore::new()), None);
    let config = authzen_config(f._dir.path());
    let bound = config.listen;
    let router = Pdp::new(gate, f.policies.clone(), approvals, config, bound).router();
    let mut g = c.benchmark_group("authzen");
    let cases = [
        (
            "evaluation",
            EVALUATION_PATH,
            include_str!("../bench/authzen-evaluation.json"),
            1,
        ),
        (
            "evaluations-10",
            EVALUATIONS_PATH,
            include_str!("../bench/authzen-evaluations.json"),
            10,
        ),
    ];
    for (name, path, body, allows) in cases {
        let (status, answer) = rt.block_on(authzen_call(router.clone(), path, body));
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(status, StatusCode::OK, "{answer}");
        let decisions = match answer.get("evaluations") {
            Some(many) => many.as_array().unwrap().clone(),
            None => vec![answer.clone()],
        };
        assert!(
            decisions.len() == allows && decisions.iter().all(|d| d["decision"] == true),
            "{name}: {answer}"
        );
        g.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| authzen_call(router.clone(), path, body));
        });
    }
    g.finish();
}

/// Drops every span: measures making and queueing them, not the network.
#[derive(Debug)]
struct Discard;

impl opentelemetry_sdk::trace::SpanExporter for Discard {
    async fn export(
        &self,
        _batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

criterion_group!(benches, decide, cedar, approvals, mcp, authzen);
criterion_main!(benches);
