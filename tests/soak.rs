//! Soak: the whole deployment (real Envoy running envoy/envoy.yaml, the real
//! `countersign` binary, a real redis-server, both exporting spans to an
//! OTLP receiver) under mixed traffic for
//! `COUNTERSIGN_SOAK_SECS` seconds (default 30, at least 20), with Redis
//! restarts and policy reloads along the way. Every answer is judged against
//! what its kind must get at that moment (Redis up, down, or coming back);
//! countersign must stay up and its resident memory flat. `scripts/soak.sh`
//! runs the long form; `--nocapture` shows the closing table.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::stack::{Stack, stack_traced};
use common::{Redis, token, token_with};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use serde_json::{Value, json};
use tokio::sync::RwLock;

/// A request not answered in this long hung: Envoy's ext_authz timeout is
/// 0.5 s and the upstream answers at once.
const HANG: Duration = Duration::from_secs(5);
/// After guarded calls work again following a Redis restart, this much
/// longer still counts as the outage (503 allowed), to be generous.
const GRACE: Duration = Duration::from_secs(5);
/// How long a policy file change may take to show in answers.
const RELOAD_DEADLINE: Duration = Duration::from_secs(10);
/// How long guarded calls may take to work again once Redis is back.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two requests of one traffic task.
const PACE: Duration = Duration::from_millis(10);
/// RSS bound: the median of the last third of the samples may exceed the
/// first third's by 30 % plus 8 MiB (allocator arenas and caches settle in
/// steps). In the 10-minute run (some 300,000 requests) a leak of about
/// 100 bytes per request crosses it; in the 30 s one, a few KiB.
const RSS_FACTOR: f64 = 1.3;
const RSS_SLACK_KIB: u64 = 8 * 1024;

/// The policy file the reload task rewrites (in the stack's copy).
const TOGGLE_FILE: &str = "soak-toggle.cedar";
const TOGGLE_ON: &str = r#"@id("soak-toggle")
permit (principal in Group::"marketing", action == Action::"read", resource == Dataset::"soak-toggle");
"#;
const TOGGLE_OFF: &str = "// soak: the toggle is off\n";
/// Broken while the toggle is on: were it loaded, the permit would be gone.
const BROKEN_TYPE: &str = r#"@id("soak-typo")
permit (principal in Group::"marketing", action == Action::"raed", resource);
"#;
/// Broken while the toggle is off: were its good half loaded, the permit
/// would be in force.
const BROKEN_SYNTAX: &str = r#"@id("soak-toggle")
permit (principal in Group::"marketing", action == Action::"read", resource == Dataset::"soak-toggle");
@id("soak-broken")
permit (principal, action, resource) when {
"#;

const CHECKS: [&str; 3] = [
    r#"countersign_checks_total{decision="allow"}"#,
    r#"countersign_checks_total{decision="deny"}"#,
    r#"countersign_checks_total{decision="approval_required"}"#,
];
const RELOADS_OK: &str = r#"countersign_policy_reloads_total{result="ok"}"#;
const RELOADS_FAILED: &str = r#"countersign_policy_reloads_total{result="failed"}"#;

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
    token_with("agent-7", &["agents"], json!({"on_behalf_of": "alice"}))
}

/// What a request is, and so what it must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Read,
    Health,
    Anonymous,
    WrongGroup,
    DeniedExport,
    Malformed,
    OwnerExport,
    AgentExport,
    Open,
    EarlyToken,
    Approve,
    ApproveLost,
    Use,
    Replay,
    LostToken,
    Toggle,
}

impl Kind {
    const ALL: [Kind; 16] = [
        Kind::Read,
        Kind::Health,
        Kind::Anonymous,
        Kind::WrongGroup,
        Kind::DeniedExport,
        Kind::Malformed,
        Kind::OwnerExport,
        Kind::AgentExport,
        Kind::Open,
        Kind::EarlyToken,
        Kind::Approve,
        Kind::ApproveLost,
        Kind::Use,
        Kind::Replay,
        Kind::LostToken,
        Kind::Toggle,
    ];

    /// What it is, and what it must get with Redis up / down.
    fn describe(self) -> (&'static str, &'static str) {
        match self {
            Kind::Read => ("read, alice (analysts)", "200 / 200"),
            Kind::Health => ("/healthz, anonymous", "200 / 200"),
            Kind::Anonymous => ("read, anonymous", "403 `anonymous-denied` / same"),
            Kind::WrongGroup => ("read, carol (marketing)", "403 no permit / same"),
            Kind::DeniedExport => ("export, alice (guarded action, denied)", "403 / 403"),
            Kind::Malformed => ("export, malformed body", "400 / 400"),
            Kind::OwnerExport => ("export, dora (data-owners)", "200 / 503 audit"),
            Kind::AgentExport => (
                "export, agent (needs approval)",
                "403 approval_required / 503",
            ),
            Kind::Open => ("approval flow: open", "403 approval_required + token / 503"),
            Kind::EarlyToken => ("approval flow: token before approval", "403 pending / 503"),
            Kind::Approve => ("approval flow: `approvals approve` (exit code)", "0 / ≠0"),
            Kind::ApproveLost => ("approve an approval lost with Redis (exit code)", "≠0"),
            Kind::Use => ("approval flow: retry with token", "200 / 503"),
            Kind::Replay => (
                "approval flow: replay of a used token",
                "403 consumed / 503",
            ),
            Kind::LostToken => ("token issued before a Redis restart", "403 not valid / 503"),
            Kind::Toggle => (
                "reload probe, carol on the toggled dataset",
                "follows the file",
            ),
        }
    }

    /// Needs Redis: 503 while it is unreachable.
    fn guarded(self) -> bool {
        matches!(
            self,
            Kind::OwnerExport
                | Kind::AgentExport
                | Kind::Open
                | Kind::EarlyToken
                | Kind::Use
                | Kind::Replay
                | Kind::LostToken
        )
    }

    /// Must never be 200: no valid approval token comes with it.
    fn never_allowed(self) -> bool {
        matches!(
            self,
            Kind::AgentExport | Kind::Open | Kind::EarlyToken | Kind::Replay | Kind::LostToken
        )
    }

    /// An approval-token request, by where its approval stands when it is
    /// sent: `opened_in` is the Redis generation that holds the approval.
    fn token_use(opened_in: u64, approved: bool, used: bool) -> impl FnOnce(u64) -> Kind {
        move |now| {
            if now != opened_in {
                Kind::LostToken
            } else if used {
                Kind::Replay
            } else if approved {
                Kind::Use
            } else {
                Kind::EarlyToken
            }
        }
    }
}

/// Where Redis stood while a request was in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Up,
    /// Stopped for the whole request.
    Down,
    /// Around a restart: either answer is right.
    Edge,
}

/// One Redis restart: when the stop began, when Redis was gone, when the
/// new one was being started, when guarded calls worked again.
struct Outage {
    began: Instant,
    stopped: Option<Instant>,
    restarting: Option<Instant>,
    recovered: Option<Instant>,
}

/// One answer: an HTTP status, or the approvals CLI's exit code; -1 for none.
struct Answer {
    kind: Kind,
    status: i32,
    body: Value,
    started: Instant,
    ended: Instant,
    /// The Redis generation when it was sent.
    generation: u64,
}

impl Answer {
    fn text(&self, key: &str) -> &str {
        self.body[key].as_str().unwrap_or_default()
    }

    fn denied(&self, reason: &str) -> bool {
        self.status == 403
            && self.text("decision") == "deny"
            && self.text("reason").contains(reason)
    }

    fn approval_required(&self) -> bool {
        self.status == 403
            && self.text("decision") == "approval_required"
            && self.text("status") == "pending"
    }

    /// countersign's own 503, not Envoy's for a check that missed its timeout.
    fn countersign_503(&self) -> bool {
        self.status == 503
            && (self.text("reason").starts_with("approvals are unavailable")
                || self
                    .text("reason")
                    .starts_with("the audit trail cannot be written"))
    }

    fn as_expected_with_redis_up(&self) -> bool {
        match self.kind {
            Kind::Read => self.status == 200 && self.body == "hello from the upstream\n",
            Kind::Health | Kind::OwnerExport | Kind::Use => self.status == 200,
            Kind::Anonymous => {
                self.status == 403 && self.body["policies"] == json!(["anonymous-denied"])
            }
            Kind::WrongGroup | Kind::DeniedExport => self.denied("no policy permits this request"),
            Kind::Malformed => {
                self.status == 400 && self.text("reason").starts_with("bad request:")
            }
            Kind::AgentExport | Kind::Open => {
                self.approval_required() && self.text("approval_token").len() == 64
            }
            Kind::EarlyToken => self.approval_required(),
            Kind::Approve => self.status == 0,
            Kind::ApproveLost => self.status != 0,
            Kind::Replay => self.denied("is consumed"),
            Kind::LostToken => self.denied("the approval token is not valid"),
            Kind::Toggle => self.status == 200 || self.status == 403,
        }
    }

    fn as_expected_with_redis_down(&self) -> bool {
        match self.kind {
            Kind::Approve | Kind::ApproveLost => self.status != 0,
            k if k.guarded() => self.countersign_503(),
            _ => self.as_expected_with_redis_up(),
        }
    }
}

/// A request through Envoy.
struct Call<'a> {
    method: &'static str,
    path: &'a str,
    bearer: Option<&'a str>,
    body: Option<&'a str>,
    approval: Option<&'a str>,
}

fn get<'a>(path: &'a str, bearer: Option<&'a str>) -> Call<'a> {
    Call {
        method: "GET",
        path,
        bearer,
        body: None,
        approval: None,
    }
}

fn export<'a>(
    path: &'a str,
    bearer: &'a str,
    body: &'a str,
    approval: Option<&'a str>,
) -> Call<'a> {
    Call {
        method: "POST",
        path,
        bearer: Some(bearer),
        body: Some(body),
        approval,
    }
}

/// The run's shared state: the stack, the outages, and what was seen.
struct Soak {
    /// Taken exclusively only to stop or replace Redis, so that the
    /// approvals CLI never runs across a stop; HTTP traffic does not take
    /// it and keeps flowing while Redis dies.
    stack: RwLock<Stack>,
    /// Envoy's listener.
    base: String,
    http: reqwest::Client,
    /// Bumped once a stopped Redis is gone: approvals of an older
    /// generation are lost, and a request sent in a newer one cannot use them.
    generation: AtomicU64,
    outages: Mutex<Vec<Outage>>,
    started: Instant,
    until: Instant,
    halted: AtomicBool,
    tally: Mutex<BTreeMap<Kind, BTreeMap<i32, u64>>>,
    violations: Mutex<Vec<String>>,
    metrics_url: String,
    policy_dir: PathBuf,
}

impl Soak {
    fn running(&self) -> bool {
        Instant::now() < self.until && !self.halted.load(Ordering::SeqCst)
    }

    fn violation(&self, what: String) {
        eprintln!(
            "VIOLATION at {:.1}s: {what}",
            self.started.elapsed().as_secs_f64()
        );
        self.violations.lock().unwrap().push(what);
    }

    fn phase(&self, started: Instant, ended: Instant) -> Phase {
        for o in self.outages.lock().unwrap().iter() {
            if ended < o.began {
                continue;
            }
            if o.stopped.is_some_and(|s| started >= s) && o.restarting.is_none_or(|r| ended <= r) {
                return Phase::Down;
            }
            match o.recovered {
                Some(r) if started > r + GRACE => {}
                _ => return Phase::Edge,
            }
        }
        Phase::Up
    }

    /// Counts the answer and records every invariant it breaks.
    fn judge(&self, a: &Answer) {
        *self
            .tally
            .lock()
            .unwrap()
            .entry(a.kind)
            .or_default()
            .entry(a.status)
            .or_default() += 1;
        let phase = self.phase(a.started, a.ended);
        let mut broken = Vec::new();
        let expected = match phase {
            Phase::Up => a.as_expected_with_redis_up(),
            Phase::Down => a.as_expected_with_redis_down(),
            Phase::Edge => a.as_expected_with_redis_up() || a.as_expected_with_redis_down(),
        };
        if !expected {
            broken.push("unexpected answer");
        }
        if a.status == 200 && a.kind.never_allowed() {
            broken.push("a guarded call was allowed without a valid approval");
        }
        if a.status == -1 {
            broken.push("no answer within 5 s");
        }
        if a.kind != Kind::Approve && a.kind != Kind::ApproveLost {
            if a.status >= 500 && a.status != 503 {
                broken.push("a 5xx other than 503");
            }
            if a.status == 503 && phase == Phase::Up {
                broken.push("a 503 with Redis up");
            }
            if a.status == 503 && !a.countersign_503() {
                broken.push("a 503 that is not countersign's (a check past Envoy's timeout?)");
            }
        }
        if !broken.is_empty() {
            let body: String = a.body.to_string().chars().take(300).collect();
            self.violation(format!(
                "{}: {:?} {} (Redis {phase:?}, took {} ms): {}",
                broken.join("; "),
                a.kind,
                a.status,
                (a.ended - a.started).as_millis(),
                body
            ));
        }
    }

    async fn call(&self, c: Call<'_>, kind: impl FnOnce(u64) -> Kind) -> Answer {
        let generation = self.generation.load(Ordering::SeqCst);
        let kind = kind(generation);
        let mut req = self.http.request(
            c.method.parse().unwrap(),
            format!("{}{}", self.base, c.path),
        );
        if let Some(t) = c.bearer {
            req = req.bearer_auth(t);
        }
        if let Some(b) = c.body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        if let Some(t) = c.approval {
            req = req.header("x-countersign-approval", t);
        }
        let started = Instant::now();
        let (status, text) = match req.send().await {
            Ok(r) => {
                let status = i32::from(r.status().as_u16());
                match r.text().await {
                    Ok(t) => (status, t),
                    Err(e) => (-1, format!("body lost: {e}")),
                }
            }
            Err(e) => (-1, format!("no answer: {e}")),
        };
        let ended = Instant::now();
        let a = Answer {
            kind,
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            started,
            ended,
            generation,
        };
        self.judge(&a);
        a
    }

    /// `countersign approvals approve ID` as dora, for an approval opened
    /// while Redis generation `opened_in` ran.
    async fn approve(self: &Arc<Self>, id: &str, opened_in: u64) -> Answer {
        let (soak, id) = (self.clone(), id.to_owned());
        tokio::task::spawn_blocking(move || {
            let stack = soak.stack.blocking_read();
            let generation = soak.generation.load(Ordering::SeqCst);
            let kind = if generation == opened_in {
                Kind::Approve
            } else {
                Kind::ApproveLost
            };
            let started = Instant::now();
            let (status, out) = stack.cli("dora", &["approve", &id, "--reason", "soak"]);
            let ended = Instant::now();
            drop(stack);
            let a = Answer {
                kind,
                status,
                body: Value::String(out),
                started,
                ended,
                generation,
            };
            soak.judge(&a);
            a
        })
        .await
        .unwrap()
    }

    /// countersign's /metrics, or why it did not answer; a failure is a
    /// violation.
    async fn scrape(&self) -> Result<String, String> {
        let started = Instant::now();
        let got = async {
            let r = self.http.get(&self.metrics_url).send().await?;
            let status = r.status();
            Ok::<_, reqwest::Error>((status, r.text().await?))
        }
        .await;
        let failed = match got {
            Ok((status, text)) if status.is_success() => return Ok(text),
            Ok((status, text)) => format!("{status}: {text}"),
            Err(e) => format!("{e:?}"),
        };
        let why = format!(
            "/metrics did not answer (after {} ms): {failed}",
            started.elapsed().as_millis()
        );
        self.violation(why.clone());
        Err(why)
    }

    /// One sample from /metrics; `None` if the scrape failed or lacks it.
    async fn metric(&self, name: &str) -> Option<f64> {
        let value = metric(&self.scrape().await.ok()?, name);
        if value.is_none() {
            self.violation(format!("/metrics has no `{name}`"));
        }
        value
    }
}

/// The value of sample `name` (with its labels) in a scrape.
fn metric(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Allowed reads, denials, malformed bodies and exports, round and round.
async fn mixed(soak: Arc<Soak>, worker: usize) {
    let alice = token("alice", &["analysts"]);
    let carol = token("carol", &["marketing"]);
    let dora = token("dora", &["data-owners"]);
    let agent = agent();
    let pending = format!("/v1/datasets/pending-{worker}/export");
    let export_path = "/v1/datasets/sales/export";
    let csv = r#"{"format":"csv","rows":10}"#;
    let mut i = 0u64;
    while soak.running() {
        i += 1;
        // A few distinct agent calls, so that open requests stay bounded.
        let agent_body = format!(r#"{{"format":"csv","rows":{}}}"#, i % 8);
        let malformed = if i.is_multiple_of(2) {
            "{oops"
        } else {
            "[1,2]"
        };
        let calls = [
            (Kind::Read, get("/v1/datasets/sales", Some(&alice))),
            (Kind::Health, get("/healthz", None)),
            (Kind::Anonymous, get("/v1/datasets/sales", None)),
            (Kind::WrongGroup, get("/v1/datasets/sales", Some(&carol))),
            (Kind::Malformed, export(export_path, &dora, malformed, None)),
            (Kind::DeniedExport, export(export_path, &alice, csv, None)),
            (Kind::OwnerExport, export(export_path, &dora, csv, None)),
            (
                Kind::AgentExport,
                export(&pending, &agent, &agent_body, None),
            ),
        ];
        for (kind, c) in calls {
            soak.call(c, |_| kind).await;
            tokio::time::sleep(PACE).await;
        }
    }
}

/// An agent's export, approved by dora through the CLI, used once, replayed.
async fn approval_flow(soak: Arc<Soak>, worker: usize) {
    let agent = agent();
    let mut n = 0u64;
    while soak.running() {
        n += 1;
        let path = format!("/v1/datasets/flow-{worker}-{n}/export");
        let body = format!(r#"{{"format":"csv","rows":{n}}}"#);
        let open = soak
            .call(export(&path, &agent, &body, None), |_| Kind::Open)
            .await;
        let (Some(id), Some(tok)) = (
            open.body["approval_id"].as_str(),
            open.body["approval_token"].as_str(),
        ) else {
            // Redis is down: try again shortly.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let opened_in = open.generation;
        soak.call(
            export(&path, &agent, &body, Some(tok)),
            Kind::token_use(opened_in, false, false),
        )
        .await;
        let approved = soak.approve(id, opened_in).await.status == 0;
        // The retry, then the replay (or a second try if the first got a 503).
        let mut used = false;
        for _ in 0..2 {
            let a = soak
                .call(
                    export(&path, &agent, &body, Some(tok)),
                    Kind::token_use(opened_in, approved, used),
                )
                .await;
            used |= a.status == 200;
        }
        tokio::time::sleep(PACE).await;
    }
}

/// Rewrites the toggle file: on, broken (type error), off, broken (syntax
/// error), ...; checks that each good change shows and no broken one does.
async fn reloads(soak: Arc<Soak>, every: Duration) -> (u32, u32) {
    let carol = token("carol", &["marketing"]);
    let file = soak.policy_dir.join(TOGGLE_FILE);
    let probe = || {
        soak.call(get("/v1/datasets/soak-toggle", Some(&carol)), |_| {
            Kind::Toggle
        })
    };
    let count = async |name| soak.metric(name).await;
    let (mut good, mut bad) = (0, 0);
    let mut on = false;
    let mut step = 0u32;
    while soak.running() {
        let want = |on: bool| if on { 200 } else { 403 };
        if step.is_multiple_of(2) {
            on = step.is_multiple_of(4);
            let before = count(RELOADS_OK).await;
            std::fs::write(&file, if on { TOGGLE_ON } else { TOGGLE_OFF }).unwrap();
            let shown = Instant::now() + RELOAD_DEADLINE;
            let mut last = 0;
            while Instant::now() < shown {
                last = probe().await.status;
                if last == want(on) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if last != want(on) {
                soak.violation(format!(
                    "policy toggle {} did not show within {RELOAD_DEADLINE:?}: carol got {last}",
                    if on { "on" } else { "off" }
                ));
            }
            // Counted just after the swap: allow for a descheduled thread.
            let mut after = count(RELOADS_OK).await;
            let counted = Instant::now() + Duration::from_secs(2);
            while after <= before && Instant::now() < counted {
                tokio::time::sleep(Duration::from_millis(100)).await;
                after = count(RELOADS_OK).await.or(after);
            }
            if let (Some(b), Some(a)) = (before, after)
                && a <= b
            {
                soak.violation(format!(
                    "a good policy change was not counted as a reload ({b} before, {a} after)"
                ));
            }
            good += 1;
        } else {
            let before = count(RELOADS_FAILED).await;
            std::fs::write(&file, if on { BROKEN_TYPE } else { BROKEN_SYNTAX }).unwrap();
            let noticed = Instant::now() + RELOAD_DEADLINE;
            let mut after = before;
            while Instant::now() < noticed && after <= before {
                tokio::time::sleep(Duration::from_millis(100)).await;
                after = count(RELOADS_FAILED).await.or(after);
            }
            if after <= before {
                soak.violation(format!(
                    "a broken policy file was not counted as a failed reload ({before:?} before, {after:?} after)"
                ));
            }
            for _ in 0..5 {
                let got = probe().await.status;
                if got != want(on) {
                    soak.violation(format!(
                        "a broken policy file changed an outcome: carol got {got}, not {}",
                        want(on)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if count("countersign_policy_ready")
                .await
                .is_some_and(|r| r != 1.0)
            {
                soak.violation("not ready after a broken policy file".into());
            }
            bad += 1;
        }
        step += 1;
        tokio::time::sleep(every).await;
    }
    (good, bad)
}

#[derive(Default)]
struct ChaosReport {
    restarts: u32,
    lost_refused: u32,
    slowest_outage_answer: Duration,
    recoveries: Vec<Duration>,
}

/// Stops Redis at each of `at` (from the start) under traffic, keeps it
/// down for `outage`, starts a fresh one on the same port, and checks that
/// guarded calls recover and that the approvals opened before are gone: a
/// granted one is refused, a pending one cannot be approved.
async fn redis_restarts(soak: Arc<Soak>, at: Vec<Duration>, outage: Duration) -> ChaosReport {
    let agent = agent();
    let dora = token("dora", &["data-owners"]);
    let alice = token("alice", &["analysts"]);
    let csv = r#"{"format":"csv","rows":10}"#;
    let mut report = ChaosReport::default();
    for (i, when) in at.into_iter().enumerate() {
        tokio::time::sleep_until((soak.started + when).into()).await;
        if !soak.running() {
            break;
        }
        // Two approvals Redis takes with it: one granted and not yet
        // used, one still pending (approved only after the restart).
        let mut lost = Vec::new();
        for (name, grant) in [("granted", true), ("pending", false)] {
            let path = format!("/v1/datasets/lost-{name}-{i}/export");
            let open = soak
                .call(export(&path, &agent, csv, None), |_| Kind::Open)
                .await;
            let (Some(id), Some(tok)) = (
                open.body["approval_id"].as_str(),
                open.body["approval_token"].as_str(),
            ) else {
                soak.violation(format!("could not open the {name} approval to lose"));
                continue;
            };
            if grant && soak.approve(id, open.generation).await.status != 0 {
                soak.violation("could not grant the approval to lose".into());
                continue;
            }
            lost.push((path, id.to_owned(), tok.to_owned(), open.generation, grant));
        }

        // Killed under traffic: calls in flight may or may not reach it.
        soak.outages.lock().unwrap().push(Outage {
            began: Instant::now(),
            stopped: None,
            restarting: None,
            recovered: None,
        });
        let port = {
            let mut stack = soak.stack.write().await;
            stack.redis.stop();
            stack.redis.port
        };
        // INVARIANT: bumped only once the old Redis is gone, so a request
        // sent in the new generation cannot reach an approval of the old.
        soak.generation.fetch_add(1, Ordering::SeqCst);
        soak.outages.lock().unwrap().last_mut().unwrap().stopped = Some(Instant::now());
        let path = format!("/v1/datasets/outage-{i}/export");
        let back_at = Instant::now() + outage;
        while Instant::now() < back_at {
            let probes = [
                (Kind::AgentExport, export(&path, &agent, csv, None)),
                (
                    Kind::OwnerExport,
                    export("/v1/datasets/sales/export", &dora, csv, None),
                ),
                (Kind::Read, get("/v1/datasets/sales", Some(&alice))),
            ];
            for (kind, c) in probes {
                let a = soak.call(c, |_| kind).await;
                if kind.guarded() {
                    report.slowest_outage_answer =
                        report.slowest_outage_answer.max(a.ended - a.started);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let restarting = Instant::now();
        soak.outages.lock().unwrap().last_mut().unwrap().restarting = Some(restarting);
        let fresh = Redis::start_on(port).await;
        soak.stack.write().await.redis = fresh;
        report.restarts += 1;
        let probe = format!("/v1/datasets/recovery-{i}/export");
        let recovered = loop {
            let a = soak
                .call(export(&probe, &agent, csv, None), |_| Kind::AgentExport)
                .await;
            if a.status != 503 {
                break Some(Instant::now());
            }
            if restarting.elapsed() > RECOVERY_DEADLINE {
                soak.violation(format!(
                    "guarded calls still get 503 {RECOVERY_DEADLINE:?} after Redis came back"
                ));
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if let Some(r) = recovered {
            report.recoveries.push(r - restarting);
            soak.outages.lock().unwrap().last_mut().unwrap().recovered = Some(r);
        }
        for (path, id, tok, opened_in, granted) in lost {
            if !granted {
                let a = soak.approve(&id, opened_in).await;
                if a.kind != Kind::ApproveLost || a.status == 0 {
                    soak.violation(format!(
                        "approving an approval lost with Redis: {:?} exit {}: {}",
                        a.kind, a.status, a.body
                    ));
                }
            }
            let a = soak
                .call(
                    export(&path, &agent, csv, Some(&tok)),
                    Kind::token_use(opened_in, granted, false),
                )
                .await;
            if a.kind == Kind::LostToken && a.denied("the approval token is not valid") {
                report.lost_refused += 1;
            } else {
                soak.violation(format!(
                    "an approval lost with Redis was not refused: {:?} {} {}",
                    a.kind, a.status, a.body
                ));
            }
        }
    }
    report
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        // The state follows the parenthesised command name.
        s.rsplit(')')
            .next()
            .and_then(|rest| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

/// countersign's VmRSS in KiB once a second after `warm_up`, and a scrape
/// of /metrics (which must always answer); halts the run if countersign is
/// gone.
async fn rss(soak: Arc<Soak>, warm_up: Duration) -> Vec<u64> {
    let pid = soak.stack.read().await.sidecar.pid();
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while soak.running() {
        tick.tick().await;
        if !alive(pid) {
            soak.violation("countersign exited".into());
            soak.halted.store(true, Ordering::SeqCst);
            break;
        }
        if soak.started.elapsed() >= warm_up {
            samples.push(soak.stack.read().await.sidecar.rss_kib().1);
        }
        let _ = soak.scrape().await;
    }
    samples
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
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
