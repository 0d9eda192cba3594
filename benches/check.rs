//! The decision path without the network: `CheckRequest` -> mapping ->
//! Cedar -> `CheckResponse`, at several policy-set sizes; Cedar alone on the
//! whole set and on the action's slice; a check with telemetry on; and the
//! approval store (a real `redis-server` on a free port).
//!
//! `cargo bench --bench check` (filter with e.g. `-- decide/`).

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cedar_policy::Authorizer;
use countersign::approval::store::Verdict as Vote;
use countersign::approval::{RedisStore, StoreConfig};
use countersign::authz::{AuthzService, AuthzSettings};
use countersign::config::Config;
use countersign::policy::PolicyStore;
use countersign::telemetry::Telemetry;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use serde_json::json;

#[path = "../tests/common/check.rs"]
mod check;
#[path = "../bench/synthetic.rs"]
mod synthetic;

/// Policy-set sizes: the 14 example policies alone, then with generated ones.
const SIZES: [usize; 4] = [14, 100, 1_000, 10_000];

struct Fixture {
    _dir: tempfile::TempDir,
    policies: Arc<PolicyStore>,
}

fn config() -> Config {
    Config::load(None, &HashMap::new()).unwrap()
}

fn fixture(total: usize, token_uses: Option<u32>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    synthetic::write_policy_dir(dir.path(), total.saturating_sub(14), token_uses).unwrap();
    let probes = config().mapper.probes().unwrap();
    let policies = PolicyStore::open(dir.path(), probes).unwrap();
    Fixture {
        _dir: dir,
        policies: Arc::new(policies),
    }
}

fn service(f: &Fixture, redis_url: &str, telemetry: Option<Telemetry>) -> AuthzService {
    let config = config();
    let settings = AuthzSettings::from_config(&config);
    let mut store = config.store.clone();
    store.url = redis_url.to_owned();
    AuthzService::new(
        Arc::new(config.mapper),
        f.policies.clone(),
        Arc::new(RedisStore::new(store).unwrap()),
        settings,
    )
    .with_telemetry(telemetry)
}

/// alice, an analyst, reads a dataset: allowed by `analysts-read-datasets`.
fn allowed() -> CheckRequest {
    check::check("GET", "/v1/datasets/sales")
        .claims(json!({"sub": "alice", "groups": ["analysts"], "exp": 1.9e9}))
        .build()
}

/// An agent exports for alice: guarded by `agent-exports-need-approval`.
fn export(token: Option<&str>) -> CheckRequest {
    let mut c = check::check("POST", "/v1/datasets/sales/export")
        .claims(json!({"sub": "agent-7", "groups": ["agents"], "on_behalf_of": "alice"}))
        .header("content-type", "application/json")
        .body(r#"{"format": "csv", "rows": 10}"#);
    if let Some(t) = token {
        c = c.header("x-countersign-approval", t);
    }
    c.build()
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
        let svc = service(&f, "redis://127.0.0.1:1", None);
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
            "redis://127.0.0.1:1",
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

/// The approval store: a retried call finding its approved request, a
/// use taken by token, and the whole check that takes it.
fn approvals(c: &mut Criterion) {
    let rt = runtime();
    let redis = RedisServer::start();
    let f = fixture(100, Some(u32::MAX));
    let svc = service(&f, &redis.url(), None);
    let first = check::seen(&rt.block_on(svc.decide(&export(None))));
    let body: serde_json::Value = serde_json::from_str(&first.body).unwrap();
    let id = body["approval_id"]
        .as_str()
        .expect("approval required")
        .to_owned();
    let token = body["approval_token"].as_str().unwrap().to_owned();
    let mut cfg: StoreConfig = config().store;
    cfg.url = redis.url();
    let store = RedisStore::new(cfg).unwrap();
    rt.block_on(store.vote(&id, "dora", Vote::Approve, "benchmark"))
        .unwrap();
    let with_token = export(Some(&token));
    let used = check::seen(&rt.block_on(svc.decide(&with_token)));
    assert_eq!(used.http_status, 200, "{used:?}");

    let mut g = c.benchmark_group("approval");
    g.bench_function("check-with-token", |b| {
        b.to_async(&rt).iter(|| svc.decide(&with_token));
    });
    let retry = export(None);
    g.bench_function("check-retry-finds-request", |b| {
        b.to_async(&rt).iter(|| svc.decide(&retry));
    });
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

/// A `redis-server` of the bench's own on a free port; killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server not found: install the redis-server package");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self {
                    child,
                    port,
                    _dir: dir,
                };
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start on port {port}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

criterion_group!(benches, decide, cedar, approvals);
criterion_main!(benches);
