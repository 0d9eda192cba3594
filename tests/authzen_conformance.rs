//! AuthZEN Authorization API 1.0 conformance, against the real binary over
//! HTTP and HTTPS:
//! - the certification scenario's Basic, Batch and Discovery tests
//!   (`certification/authorization-api-1_0-scenario.md` in openid/authzen),
//!   one test per test id (`c_2_2_1_...` is §C.2.2.1), on the fixture in
//!   `examples/authzen-certification/`;
//! - every case of the interop "Todo" decisions
//!   (`tests/authzen/todo-decisions-1_0-02.json`) on `examples/authzen-todo/`;
//! - callers' authentication, the size limits, the batch semantics, the
//!   mapping's refusals;
//! - AuthZEN clients from PyPI (`tests/authzen/client_check.py`).
//!
//! Each example runs as the user would run it: its own `countersign.toml`,
//! with only the AuthZEN port (and, for HTTPS, the certificates) changed.
//! Tests that run at the same time share one sidecar per example.
mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Weak};

use common::tls::Pki;
use common::{Sidecar, repo};
use serde_json::{Value, json};

/// The demo tokens in the examples' `countersign.toml`.
const CERT_TOKEN: &str = "certification-harness-token";
const TODO_TOKEN: &str = "todo-backend-token";

/// The limits the AuthZEN endpoints document (docs/authzen.md): past
/// them, 413.
const MAX_BODY_BYTES: usize = 1024 * 1024;
const MAX_BATCH: usize = 1000;

/// countersign serving one example's AuthZEN endpoints; stopped on drop.
struct Pdp {
    /// `http://127.0.0.1:PORT` or `https://...`: the PDP's base URL.
    base: String,
    http: reqwest::Client,
    token: &'static str,
    sidecar: Sidecar,
    _config: tempfile::TempDir,
}

impl Pdp {
    /// `examples/<example>` with its own configuration, the AuthZEN
    /// listener moved to a port of its choosing; over TLS with `pki`'s
    /// server certificate (and its CA for client certificates) when given.
    fn start(example: &str, token: &'static str, pki: Option<&Pki>) -> Pdp {
        let dir = repo().join("examples").join(example);
        let config = std::fs::read_to_string(dir.join("countersign.toml")).unwrap();
        let listen = r#"listen = "127.0.0.1:9194""#;
        assert_eq!(config.matches(listen).count(), 1, "{example}: {listen}");
        let mut authzen = r#"listen = "127.0.0.1:0""#.to_owned();
        if let Some(pki) = pki {
            let (cert, key) = pki.server();
            authzen += &format!(
                "\ntls_cert = {:?}\ntls_key = {:?}\nclient_ca = {:?}",
                cert,
                key,
                pki.ca()
            );
        }
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("countersign.toml");
        std::fs::write(&path, config.replace(listen, &authzen)).unwrap();
        let sidecar = Sidecar::start_with(
            "127.0.0.1:0",
            &dir,
            &[("COUNTERSIGN_CONFIG", path.to_str().unwrap())],
            &[],
        );
        let addr = sidecar.authzen_addr.clone().expect("the AuthZEN address");
        let (scheme, http) = match pki {
            Some(pki) => ("https", tls_client(pki, None)),
            None => ("http", client().build().unwrap()),
        };
        Pdp {
            base: format!("{scheme}://{addr}"),
            http,
            token,
            sidecar,
            _config: tmp,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST url` as a caller: with the token, declaring JSON.
    fn post_json(&self, url: String) -> reqwest::RequestBuilder {
        self.http
            .post(url)
            .bearer_auth(self.token)
            .header("content-type", "application/json")
    }

    /// `POST path` with the caller's token and `body` as JSON.
    async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(self.post_json(self.url(path)).body(body.to_string()))
            .await
    }

    async fn evaluation(&self, body: &Value) -> Answer {
        self.post("/access/v1/evaluation", body).await
    }

    async fn evaluations(&self, body: &Value) -> Answer {
        self.post("/access/v1/evaluations", body).await
    }

    /// The single decision for `body`, which must be answered 200.
    async fn decide(&self, body: &Value) -> bool {
        self.evaluation(body).await.decision(body)
    }

    /// The batch's decisions, which must be answered 200.
    async fn decide_all(&self, body: &Value) -> Vec<bool> {
        self.evaluations(body).await.decisions(body)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let res = match req.send().await {
            Ok(res) => res,
            Err(e) => panic!("request failed: {e:?}\n{}", self.sidecar.log()),
        };
        Answer::read(res).await
    }
}

/// An HTTP client that keeps no connection between requests: tests that
/// share a `Pdp` each run their own tokio runtime, and a pooled connection
/// dies with the runtime that opened it.
fn client() -> reqwest::ClientBuilder {
    reqwest::Client::builder().pool_max_idle_per_host(0)
}

/// A client trusting `pki`'s CA, presenting the certificate of `who`.
fn tls_client(pki: &Pki, who: Option<&str>) -> reqwest::Client {
    let ca = std::fs::read(pki.ca()).unwrap();
    let mut b = client()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap());
    if let Some(who) = who {
        let (cert, key) = pki.client(who);
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

/// The one `T` (a sidecar) that tests running at the same time share;
/// started by the first, stopped when the last one done drops it.
fn shared<T>(slot: &'static Mutex<Weak<T>>, start: impl FnOnce() -> T) -> Arc<T> {
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = slot.upgrade() {
        return t;
    }
    let t = Arc::new(start());
    *slot = Arc::downgrade(&t);
    t
}

/// The certification fixture over plain HTTP.
fn certification() -> Arc<Pdp> {
    static SLOT: Mutex<Weak<Pdp>> = Mutex::new(Weak::new());
    shared(&SLOT, || {
        Pdp::start("authzen-certification", CERT_TOKEN, None)
    })
}

/// The certification fixture over HTTPS, with client certificates from
/// `pki`'s CA accepted as callers too.
struct TlsPdp {
    pdp: Pdp,
    pki: Pki,
}

fn certification_tls() -> Arc<TlsPdp> {
    static SLOT: Mutex<Weak<TlsPdp>> = Mutex::new(Weak::new());
    shared(&SLOT, || {
        let pki = Pki::new();
        let pdp = Pdp::start("authzen-certification", CERT_TOKEN, Some(&pki));
        TlsPdp { pdp, pki }
    })
}

/// An HTTP answer, its body read as JSON where it is JSON.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    request_id: Option<String>,
    www_authenticate: Option<String>,
    text: String,
    body: Value,
}

impl Answer {
    async fn read(res: reqwest::Response) -> Answer {
        let header = |name: &str| {
            res.headers()
                .get(name)
                .map(|v| v.to_str().unwrap_or_default().to_owned())
        };
        let status = res.status().as_u16();
        let content_type = header("content-type").unwrap_or_default();
        let request_id = header("x-request-id");
        let www_authenticate = header("www-authenticate");
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            content_type,
            request_id,
            www_authenticate,
            text,
            body,
        }
    }

    /// Whether the answer says it is JSON (`application/json`, any
    /// parameters) and is.
    fn is_json(&self) -> bool {
        let media = self.content_type.split(';').next().unwrap_or("").trim();
        media.eq_ignore_ascii_case("application/json") && !self.body.is_null()
    }

    /// §C.2.3: 200, JSON, a boolean `decision`, a `context` object if any.
    fn decision(&self, request: &Value) -> bool {
        assert_eq!(self.status, 200, "{request}\n-> {self:?}");
        assert!(self.is_json(), "{request}\n-> {self:?}");
        assert_context_is_an_object(&self.body, request);
        self.body["decision"]
            .as_bool()
            .unwrap_or_else(|| panic!("no boolean decision: {request}\n-> {self:?}"))
    }

    /// §C.3.3: 200, JSON, an `evaluations` array of decisions.
    fn decisions(&self, request: &Value) -> Vec<bool> {
        assert_eq!(self.status, 200, "{request}\n-> {self:?}");
        assert!(self.is_json(), "{request}\n-> {self:?}");
        let items = self.body["evaluations"]
            .as_array()
            .unwrap_or_else(|| panic!("no evaluations array: {request}\n-> {self:?}"));
        items
            .iter()
            .map(|item| {
                assert_context_is_an_object(item, request);
                item["decision"].as_bool().unwrap_or_else(|| {
                    panic!("an item without a boolean decision: {request}\n-> {self:?}")
                })
            })
            .collect()
    }

    /// A refusal: `status`, with a JSON body that says why.
    fn assert_refused(&self, status: u16, what: &str) {
        assert_eq!(self.status, status, "{what}\n-> {self:?}");
        assert!(
            self.is_json(),
            "{what}: expected a JSON reason\n-> {self:?}"
        );
        assert!(
            self.body.get("decision").is_none(),
            "{what}: an error answer carries no decision\n-> {self:?}"
        );
        assert!(
            self.text.len() > 2,
            "{what}: the reason is empty\n-> {self:?}"
        );
    }
}

/// §C.2.3.2: `context`, when present, is a JSON object.
fn assert_context_is_an_object(answer: &Value, request: &Value) {
    if let Some(c) = answer.get("context") {
        assert!(
            c.is_object(),
            "context is not an object: {request}\n-> {answer}"
        );
    }
}

// ---- The fixture's vocabulary -------------------------------------------------

fn user(id: &str) -> Value {
    json!({"type": "user", "id": id})
}

fn record(id: &str) -> Value {
    json!({"type": "record", "id": id})
}

fn action(name: &str) -> Value {
    json!({"name": name})
}

fn ask(subject: Value, act: Value, resource: Value) -> Value {
    json!({"subject": subject, "action": act, "resource": resource})
}

fn archived_record_2() -> Value {
    json!({"type": "record", "id": "record-2", "properties": {"status": "archived"}})
}

fn admin_bob() -> Value {
    json!({"type": "user", "id": "bob", "properties": {"role": "admin"}})
}

fn delete(soft: bool) -> Value {
    json!({"name": "delete", "properties": {"soft": soft}})
}

/// The eight decisions the fixture must give (§C.1.4), as the scenario's
/// tests send them.
fn fixture_rules() -> Vec<(&'static str, Value, bool)> {
    vec![
        (
            "rule 1",
            ask(user("alice"), action("read"), record("record-1")),
            true,
        ),
        (
            "rule 2",
            ask(user("alice"), action("write"), record("record-1")),
            true,
        ),
        (
            "rule 3",
            ask(user("bob"), action("read"), record("record-1")),
            true,
        ),
        (
            "rule 4",
            ask(user("bob"), action("write"), record("record-1")),
            false,
        ),
        (
            "rule 5",
            ask(user("alice"), action("write"), archived_record_2()),
            false,
        ),
        (
            "rule 6",
            ask(admin_bob(), action("write"), archived_record_2()),
            true,
        ),
        (
            "rule 7",
            ask(user("alice"), delete(true), record("record-1")),
            true,
        ),
        (
            "rule 8",
            ask(user("alice"), delete(false), record("record-1")),
            false,
        ),
    ]
}

// ---- C.2 Basic: Access Evaluation ------------------------------------------------

#[tokio::test]
async fn c_2_2_1_fixture_permit() {
    let pdp = certification();
    let req = ask(user("alice"), action("read"), record("record-1"));
    assert!(pdp.decide(&req).await);
}

#[tokio::test]
async fn c_2_2_2_fixture_deny() {
    let pdp = certification();
    let req = ask(user("bob"), action("write"), record("record-1"));
    assert!(!pdp.decide(&req).await);
}

#[tokio::test]
async fn c_2_2_3_optional_context() {
    let pdp = certification();
    let mut req = ask(user("alice"), action("read"), record("record-1"));
    req["context"] = json!({"time": "2025-06-27T18:03-07:00", "ip": "192.168.1.1"});
    assert!(pdp.decide(&req).await);
    // The fixture's decisions hold with a context too (§C.1.6).
    for (rule, mut req, want) in fixture_rules() {
        req["context"] = json!({"time": "2025-06-27T18:03-07:00", "ip": "192.168.1.1"});
        assert_eq!(pdp.decide(&req).await, want, "{rule} with a context");
    }
}

#[tokio::test]
async fn c_2_2_4_deny_on_resource_properties() {
    let pdp = certification();
    let req = ask(user("alice"), action("write"), archived_record_2());
    assert!(!pdp.decide(&req).await);
}

#[tokio::test]
async fn c_2_2_5_permit_on_subject_properties() {
    let pdp = certification();
    let req = ask(admin_bob(), action("write"), archived_record_2());
    assert!(pdp.decide(&req).await);
}

#[tokio::test]
async fn c_2_2_6_permit_on_action_properties() {
    let pdp = certification();
    let req = ask(user("alice"), delete(true), record("record-1"));
    assert!(pdp.decide(&req).await);
}

#[tokio::test]
async fn c_2_2_7_deny_on_action_properties() {
    let pdp = certification();
    let req = ask(user("alice"), delete(false), record("record-1"));
    assert!(!pdp.decide(&req).await);
}

#[tokio::test]
async fn c_2_2_8_additional_properties() {
    let pdp = certification();
    let req = json!({
        "subject": {"type": "user", "id": "alice",
                    "properties": {"department": "Sales", "role": "manager"}},
        "action": {"name": "read", "properties": {"method": "GET"}},
        "resource": {"type": "record", "id": "record-1",
                     "properties": {"status": "active", "owner": "bob"}},
    });
    assert!(pdp.decide(&req).await);
}

#[tokio::test]
async fn c_2_2_9_unknown_fields() {
    let pdp = certification();
    let mut req = ask(user("alice"), action("read"), record("record-1"));
    req["foo"] = json!("bar");
    req["futureField"] = json!({"nested": true});
    assert!(pdp.decide(&req).await);
}

#[tokio::test]
async fn c_2_3_1_decision_is_a_boolean() {
    let pdp = certification();
    for (rule, req, want) in fixture_rules() {
        assert_eq!(pdp.decide(&req).await, want, "{rule}");
    }
}

#[tokio::test]
async fn c_2_3_2_response_context_is_an_object() {
    let pdp = certification();
    // A permit and a deny; `decide` checks any `context` is an object.
    assert!(
        pdp.decide(&ask(user("alice"), action("read"), record("record-1")))
            .await
    );
    assert!(
        !pdp.decide(&ask(user("bob"), action("write"), record("record-1")))
            .await
    );
}

#[tokio::test]
async fn c_2_4_1_missing_required_fields() {
    let pdp = certification();
    let full = ask(user("alice"), action("read"), record("record-1"));
    for field in ["subject", "action", "resource"] {
        let mut req = full.clone();
        req.as_object_mut().unwrap().remove(field);
        pdp.evaluation(&req)
            .await
            .assert_refused(400, &format!("missing `{field}`: {req}"));
    }
}

#[tokio::test]
async fn c_2_4_2_missing_required_sub_fields() {
    let pdp = certification();
    let cases = [
        ask(json!({"id": "alice"}), action("read"), record("record-1")),
        ask(json!({"type": "user"}), action("read"), record("record-1")),
        ask(user("alice"), json!({}), record("record-1")),
        ask(user("alice"), action("read"), json!({"id": "record-1"})),
        ask(user("alice"), action("read"), json!({"type": "record"})),
    ];
    for req in cases {
        pdp.evaluation(&req)
            .await
            .assert_refused(400, &req.to_string());
    }
}

#[tokio::test]
async fn c_2_4_3_invalid_content_type() {
    let pdp = certification();
    let body = ask(user("alice"), action("read"), record("record-1")).to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/xml"),
        None,
    ] {
        let mut req = pdp
            .http
            .post(pdp.url("/access/v1/evaluation"))
            .bearer_auth(pdp.token)
            .body(body.clone());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        pdp.send(req)
            .await
            .assert_refused(400, &format!("content-type {content_type:?}"));
    }
}

#[tokio::test]
async fn c_2_4_4_malformed_json() {
    let pdp = certification();
    for body in [
        r#"{"subject": {"type": "user", "id": "alice"}"#,
        "not json",
        r#"{"subject": {"type": "user", "id": "alice"},}"#,
        r#"{"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"}, "resource": {"type": "record", "id": "record-1"}} trailing"#,
        // The top level must be an object.
        r#"[{"subject": {"type": "user", "id": "alice"}}]"#,
    ] {
        let req = pdp.post_json(pdp.url("/access/v1/evaluation")).body(body);
        pdp.send(req).await.assert_refused(400, body);
    }
}

#[tokio::test]
async fn c_2_4_5_empty_request_body() {
    let pdp = certification();
    for path in ["/access/v1/evaluation", "/access/v1/evaluations"] {
        let req = pdp.post_json(pdp.url(path));
        pdp.send(req)
            .await
            .assert_refused(400, &format!("empty body to {path}"));
    }
}

#[tokio::test]
async fn c_2_4_6_invalid_field_types() {
    let pdp = certification();
    let cases = [
        ask(json!("alice"), action("read"), record("record-1")),
        ask(user("alice"), json!({"name": 123}), record("record-1")),
        ask(
            json!({"type": "user", "id": 7}),
            action("read"),
            record("record-1"),
        ),
        ask(
            user("alice"),
            action("read"),
            json!({"type": ["record"], "id": "record-1"}),
        ),
        ask(user("alice"), json!("read"), record("record-1")),
        ask(
            json!({"type": "user", "id": "alice", "properties": "admin"}),
            action("read"),
            record("record-1"),
        ),
    ];
    for req in cases {
        pdp.evaluation(&req)
            .await
            .assert_refused(400, &req.to_string());
    }
    let mut req = ask(user("alice"), action("read"), record("record-1"));
    req["context"] = json!(["not", "an", "object"]);
    pdp.evaluation(&req)
        .await
        .assert_refused(400, &req.to_string());
}

/// `POST path` with `body` and the header `X-Request-ID: id`.
async fn with_request_id(pdp: &Pdp, path: &str, body: &Value, id: &str) -> Answer {
    let req = pdp.post_json(pdp.url(path)).header("x-request-id", id);
    pdp.send(req.body(body.to_string())).await
}

#[tokio::test]
async fn c_2_5_1_x_request_id_echo() {
    let pdp = certification();
    let single = ask(user("alice"), action("read"), record("record-1"));
    let batch = json!({"subject": user("bob"), "resource": record("record-1"),
                       "evaluations": [{"action": action("read")}, {"action": action("write")}]});
    let bad = json!({"action": action("read")});
    for (i, (path, body, status)) in [
        ("/access/v1/evaluation", &single, 200),
        ("/access/v1/evaluations", &batch, 200),
        ("/access/v1/evaluation", &bad, 400),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("bfe9eb29-ab87-4ca3-be83-d1d5d830571{i}");
        let a = with_request_id(&pdp, path, body, &id).await;
        assert_eq!(a.status, status, "{path} {body}\n-> {a:?}");
        assert_eq!(a.request_id.as_deref(), Some(id.as_str()), "{path}: {a:?}");
    }
}

#[tokio::test]
async fn c_2_5_2_x_request_id_absent() {
    let pdp = certification();
    let req = ask(user("alice"), action("read"), record("record-1"));
    // `post` sends no X-Request-ID; the PDP may make one up.
    let a = pdp.evaluation(&req).await;
    assert!(a.decision(&req));
    if let Some(id) = &a.request_id {
        assert!(!id.is_empty(), "{a:?}");
    }
}

#[tokio::test]
async fn c_2_6_idempotency() {
    let pdp = certification();
    for (rule, req, want) in fixture_rules() {
        for i in 0..5 {
            assert_eq!(
                pdp.decide(&req).await,
                want,
                "{rule}, asked {} times",
                i + 1
            );
        }
    }
}

// ---- C.3 Batch: Access Evaluations -------------------------------------------------

#[tokio::test]
async fn c_3_2_1_batch_with_evaluations_array() {
    let pdp = certification();
    let req = json!({
        "subject": user("alice"),
        "action": action("read"),
        "evaluations": [{"resource": record("record-1")}, {"resource": record("record-2")}],
    });
    let got = pdp.decide_all(&req).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0], "alice reads record-1 (rule 1)");
}

#[tokio::test]
async fn c_3_2_2_batch_fixture_decisions() {
    let pdp = certification();
    let req = json!({
        "subject": user("bob"),
        "resource": record("record-1"),
        "evaluations": [{"action": action("read")}, {"action": action("write")}],
    });
    assert_eq!(pdp.decide_all(&req).await, [true, false]);
}

#[tokio::test]
async fn c_3_2_3_batch_resource_properties() {
    let pdp = certification();
    let req = json!({
        "subject": user("alice"),
        "action": action("write"),
        "evaluations": [
            {"resource": {"type": "record", "id": "record-1", "properties": {"status": "active"}}},
            {"resource": archived_record_2()},
        ],
    });
    assert_eq!(pdp.decide_all(&req).await, [true, false]);
}

#[tokio::test]
async fn c_3_2_4_batch_subject_properties() {
    let pdp = certification();
    let req = json!({
        "action": action("write"),
        "resource": archived_record_2(),
        "evaluations": [{"subject": user("alice")}, {"subject": admin_bob()}],
    });
    assert_eq!(pdp.decide_all(&req).await, [false, true]);
}

#[tokio::test]
async fn c_3_2_5_batch_without_defaults() {
    let pdp = certification();
    let req = json!({
        "evaluations": [
            ask(user("alice"), action("read"), record("record-1")),
            ask(user("bob"), action("write"), record("record-1")),
        ],
    });
    assert_eq!(pdp.decide_all(&req).await, [true, false]);
}

#[tokio::test]
async fn c_3_2_6_batch_context_inheritance() {
    let pdp = certification();
    let req = json!({
        "subject": user("alice"),
        "action": action("read"),
        "context": {"time": "2025-06-27T18:03-07:00"},
        "evaluations": [
            {"resource": record("record-1")},
            {"resource": record("record-2"),
             "context": {"time": "2025-06-27T19:00-07:00", "source": "batch-override"}},
        ],
    });
    assert_eq!(pdp.decide_all(&req).await.len(), 2);
}

#[tokio::test]
async fn c_3_2_7_batch_top_level_defaults() {
    let pdp = certification();
    let req = json!({
        "subject": user("alice"),
        "action": action("write"),
        "resource": {"type": "record", "id": "record-1", "properties": {"status": "active"}},
        "evaluations": [{}, {"resource": archived_record_2()}],
    });
    assert_eq!(pdp.decide_all(&req).await, [true, false]);
}

#[tokio::test]
async fn c_3_3_batch_response_format() {
    let pdp = certification();
    // §C.3.3.1-3: as many answers as items, in their order, each a decision:
    // all eight fixture rules in one batch, then in reverse.
    let rules = fixture_rules();
    let mut items: Vec<Value> = rules.iter().map(|(_, r, _)| r.clone()).collect();
    let mut want: Vec<bool> = rules.iter().map(|(_, _, d)| *d).collect();
    for _ in 0..2 {
        let req = json!({"evaluations": items});
        let a = pdp.evaluations(&req).await;
        assert_eq!(a.decisions(&req), want);
        // §C.3.3.4: a top-level decision SHOULD be omitted; a PEP ignores it.
        if let Some(d) = a.body.get("decision") {
            assert!(d.is_boolean(), "{a:?}");
        }
        items.reverse();
        want.reverse();
    }
}

#[tokio::test]
async fn c_3_4_1_item_errors_under_execute_all() {
    let pdp = certification();
    let req = json!({
        "subject": user("alice"),
        "action": action("read"),
        "options": {"evaluations_semantic": "execute_all"},
        "evaluations": [{"resource": record("record-1")}, {}],
    });
    assert_eq!(pdp.decide_all(&req).await, [true, false]);
}

#[tokio::test]
async fn c_3_4_2_missing_evaluations_array() {
    let pdp = certification();
    let req = ask(user("alice"), action("read"), record("record-1"));
    let a = pdp.evaluations(&req).await;
    assert!(a.decision(&req));
}

#[tokio::test]
async fn c_3_4_3_empty_evaluations_array() {
    let pdp = certification();
    let mut req = ask(user("alice"), action("read"), record("record-1"));
    req["evaluations"] = json!([]);
    let a = pdp.evaluations(&req).await;
    assert!(a.decision(&req));
}

// ---- C.5 Transport and C.6 Discovery, over HTTPS --------------------------------------

#[tokio::test]
async fn c_5_transport() {
    let tls = certification_tls();
    let pdp = &tls.pdp;
    assert!(pdp.base.starts_with("https://"));
    let permit = ask(user("alice"), action("read"), record("record-1"));
    // 1, 2: HTTPS with application/json in, 200 and application/json out
    // (a charset parameter is application/json too).
    assert!(pdp.decide(&permit).await);
    for ct in ["application/json; charset=utf-8", "Application/JSON"] {
        let a = pdp
            .send(
                pdp.http
                    .post(pdp.url("/access/v1/evaluation"))
                    .bearer_auth(pdp.token)
                    .header("content-type", ct)
                    .body(permit.to_string()),
            )
            .await;
        assert!(a.decision(&permit), "content-type {ct}");
    }
    let batch = json!({"subject": user("bob"), "resource": record("record-1"),
                       "evaluations": [{"action": action("read")}, {"action": action("write")}]});
    assert_eq!(pdp.decide_all(&batch).await, [true, false]);
    // 3: a missing required field is a 400.
    pdp.evaluation(&json!({"action": action("read"), "resource": record("record-1")}))
        .await
        .assert_refused(400, "missing subject over HTTPS");
    // 4: X-Request-ID echoed.
    let a = with_request_id(pdp, "/access/v1/evaluation", &permit, "c-5-4").await;
    assert_eq!(a.request_id.as_deref(), Some("c-5-4"), "{a:?}");
    // 5: unknown fields ignored.
    let mut unknown = permit.clone();
    unknown["extension"] = json!({"any": ["thing"]});
    unknown["subject"]["nickname"] = json!("al");
    assert!(pdp.decide(&unknown).await);
}

#[tokio::test]
async fn c_6_metadata() {
    let tls = certification_tls();
    let pdp = &tls.pdp;
    let a = pdp
        .send(
            pdp.http
                .get(pdp.url("/.well-known/authzen-configuration"))
                .bearer_auth(pdp.token),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.is_json(), "{a:?}");
    let m = &a.body;
    assert!(m.is_object(), "{a:?}");
    // §C.6.5: policy_decision_point is the base URL the metadata was
    // fetched from (no trailing slash, query or fragment).
    assert_eq!(m["policy_decision_point"], json!(pdp.base), "{m}");
    let https = |key: &str| {
        let url = m[key]
            .as_str()
            .unwrap_or_else(|| panic!("`{key}` is not a string: {m}"));
        assert!(url.starts_with("https://"), "`{key}` is not HTTPS: {m}");
        url.to_owned()
    };
    let evaluation = https("access_evaluation_endpoint");
    // Every advertised endpoint is where the API is.
    let permit = ask(user("alice"), action("read"), record("record-1"));
    let via = |url: String, body: Value| pdp.send(pdp.post_json(url).body(body.to_string()));
    assert!(via(evaluation, permit.clone()).await.decision(&permit));
    if m.get("access_evaluations_endpoint").is_some() {
        let batch = json!({"subject": user("bob"), "resource": record("record-1"),
                           "evaluations": [{"action": action("read")}, {"action": action("write")}]});
        let url = https("access_evaluations_endpoint");
        assert_eq!(
            via(url, batch.clone()).await.decisions(&batch),
            [true, false]
        );
    }
    for key in [
        "search_subject_endpoint",
        "search_resource_endpoint",
        "search_action_endpoint",
    ] {
        if m.get(key).is_some() {
            let url = https(key);
            let a = via(url, permit.clone()).await;
            assert_ne!(a.status, 404, "`{key}` is advertised but not served: {a:?}");
        }
    }
    if let Some(caps) = m.get("capabilities") {
        let all_strings = caps
            .as_array()
            .is_some_and(|c| c.iter().all(Value::is_string));
        assert!(all_strings, "capabilities is not an array of strings: {m}");
    }
    if let Some(jwt) = m.get("signed_metadata") {
        // A JWS in compact form whose claims carry `iss`.
        use base64::Engine;
        let parts: Vec<&str> = jwt.as_str().unwrap_or("").split('.').collect();
        assert_eq!(parts.len(), 3, "signed_metadata is not a JWT: {m}");
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .unwrap_or_default();
        assert!(
            claims["iss"].is_string(),
            "signed_metadata has no `iss`: {claims}"
        );
    }
}

// ---- Callers -------------------------------------------------------------------------

/// Every endpoint that answers callers' requests: method, path, body.
fn guarded_endpoints() -> Vec<(reqwest::Method, &'static str, Option<Value>)> {
    let permit = ask(user("alice"), action("read"), record("record-1"));
    let batch = json!({"subject": user("alice"), "action": action("read"),
                       "evaluations": [{"resource": record("record-1")}]});
    vec![
        (
            reqwest::Method::POST,
            "/access/v1/evaluation",
            Some(permit.clone()),
        ),
        (reqwest::Method::POST, "/access/v1/evaluations", Some(batch)),
        (
            reqwest::Method::POST,
            "/access/v1/requests",
            Some(json!({})),
        ),
        (
            reqwest::Method::GET,
            "/access/v1/requests/some-request",
            None,
        ),
    ]
}

#[tokio::test]
async fn callers_without_a_known_token_get_401() {
    let pdp = certification();
    let credentials: [(&str, Option<String>); 6] = [
        ("no Authorization header", None),
        ("an unknown token", Some("Bearer not-the-token".into())),
        ("an empty bearer token", Some("Bearer ".into())),
        ("the token without its scheme", Some(CERT_TOKEN.into())),
        (
            "the token as Basic credentials",
            Some(format!("Basic {CERT_TOKEN}")),
        ),
        (
            "the token with a character more",
            Some(format!("Bearer {CERT_TOKEN}x")),
        ),
    ];
    for (method, path, body) in guarded_endpoints() {
        for (what, header) in &credentials {
            let mut req = pdp.http.request(method.clone(), pdp.url(path));
            if let Some(h) = header {
                req = req.header("authorization", h);
            }
            if let Some(b) = &body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            let a = pdp.send(req).await;
            let what = format!("{method} {path} with {what}");
            a.assert_refused(401, &what);
            // RFC 6750 §3, and the AuthZEN spec's "Sender Authentication
            // Failure": a 401 says which scheme to use.
            let challenge = a.www_authenticate.as_deref().unwrap_or("");
            assert!(
                challenge.to_ascii_lowercase().starts_with("bearer"),
                "{what}: no Bearer challenge\n-> {a:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    // RFC 9110 §11.1: the authentication scheme is a case-insensitive token.
    let pdp = certification();
    let permit = ask(user("alice"), action("read"), record("record-1"));
    for scheme in ["bearer", "BEARER"] {
        let a = pdp
            .send(
                pdp.http
                    .post(pdp.url("/access/v1/evaluation"))
                    .header("authorization", format!("{scheme} {CERT_TOKEN}"))
                    .header("content-type", "application/json")
                    .body(permit.to_string()),
            )
            .await;
        assert!(a.decision(&permit), "scheme `{scheme}`");
    }
}

#[tokio::test]
async fn client_certificates_from_the_configured_ca_authenticate() {
    let tls = certification_tls();
    let (pdp, pki) = (&tls.pdp, &tls.pki);
    let permit = ask(user("alice"), action("read"), record("record-1"));
    let post = |client: reqwest::Client| {
        let pdp = &pdp;
        let body = permit.to_string();
        async move {
            pdp.send(
                client
                    .post(pdp.url("/access/v1/evaluation"))
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await
        }
    };
    // A certificate from the CA, no token: a caller.
    let a = post(tls_client(pki, Some("agent-7"))).await;
    assert!(a.decision(&permit));
    // Neither certificate nor token: refused.
    post(tls_client(pki, None))
        .await
        .assert_refused(401, "HTTPS, no certificate, no token");
    // A certificate from another CA: refused, in the handshake or with 401.
    let stranger = Pki::new();
    let ca = std::fs::read(pki.ca()).unwrap();
    let (cert, key) = stranger.client("stranger");
    let mut pem = std::fs::read(cert).unwrap();
    pem.extend(std::fs::read(key).unwrap());
    let other = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let res = other
        .post(pdp.url("/access/v1/evaluation"))
        .header("content-type", "application/json")
        .body(permit.to_string())
        .send()
        .await;
    if let Ok(res) = res {
        Answer::read(res)
            .await
            .assert_refused(401, "a certificate from another CA");
    }
    // The PDP still answers its callers.
    assert!(pdp.decide(&permit).await);
}

// ---- Limits --------------------------------------------------------------------------

#[tokio::test]
async fn oversized_bodies_and_batches_are_refused_and_the_pdp_keeps_serving() {
    let pdp = Pdp::start("authzen-certification", CERT_TOKEN, None);
    let permit = ask(user("alice"), action("read"), record("record-1"));
    // A body over the limit: refused, whatever it holds.
    let mut big = permit.clone();
    big["context"] = json!({"padding": "x".repeat(MAX_BODY_BYTES)});
    let res = pdp
        .post_json(pdp.url("/access/v1/evaluation"))
        .body(big.to_string())
        .send()
        .await;
    match res {
        Ok(res) => Answer::read(res)
            .await
            .assert_refused(413, "a body over 1 MiB"),
        // The PDP may answer before reading the whole body and close the
        // connection under the sender; then there is nothing to read.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e:?}"),
    }
    assert!(pdp.decide(&permit).await, "after a body over the limit");
    // A batch at the limit is answered whole...
    let item = json!({"resource": record("record-1")});
    let batch = |n: usize| {
        json!({"subject": user("alice"), "action": action("read"),
               "evaluations": vec![item.clone(); n]})
    };
    let at_limit = batch(MAX_BATCH);
    assert_eq!(
        pdp.decide_all(&at_limit).await,
        vec![true; MAX_BATCH],
        "a batch of {MAX_BATCH}"
    );
    // ...one item more is refused.
    pdp.evaluations(&batch(MAX_BATCH + 1))
        .await
        .assert_refused(413, &format!("a batch of {}", MAX_BATCH + 1));
    assert!(pdp.decide(&permit).await, "after a batch over the limit");
}

// ---- Batch semantics -------------------------------------------------------------------

#[tokio::test]
async fn batch_short_circuit_semantics_stop_at_the_first_deciding_answer() {
    let pdp = certification();
    // bob: read (permit), write (deny), read (permit), write (deny).
    let batch = |semantic: &str| {
        json!({"subject": user("bob"), "resource": record("record-1"),
               "options": {"evaluations_semantic": semantic},
               "evaluations": [{"action": action("read")}, {"action": action("write")},
                               {"action": action("read")}, {"action": action("write")}]})
    };
    assert_eq!(
        pdp.decide_all(&batch("execute_all")).await,
        [true, false, true, false]
    );
    assert_eq!(
        pdp.decide_all(&batch("deny_on_first_deny")).await,
        [true, false]
    );
    assert_eq!(
        pdp.decide_all(&batch("permit_on_first_permit")).await,
        [true]
    );
    // A failed item is a deny for deny_on_first_deny too.
    let failing = json!({"subject": user("alice"), "action": action("read"),
                         "options": {"evaluations_semantic": "deny_on_first_deny"},
                         "evaluations": [{}, {"resource": record("record-1")}]});
    assert_eq!(pdp.decide_all(&failing).await, [false]);
    // No such semantic.
    let req = batch("execute_some");
    pdp.evaluations(&req)
        .await
        .assert_refused(400, &req.to_string());
}

// ---- The mapping into Cedar ------------------------------------------------------------

#[tokio::test]
async fn stored_attributes_win_and_requests_fill_in_what_is_not_stored() {
    let pdp = certification();
    // record-2 is archived in entities.json: saying otherwise changes nothing.
    let unarchived =
        json!({"type": "record", "id": "record-2", "properties": {"status": "active"}});
    assert!(
        !pdp.decide(&ask(user("alice"), action("write"), unarchived))
            .await
    );
    // bob is an admin in entities.json, whatever the request says.
    let demoted = json!({"type": "user", "id": "bob", "properties": {"role": "viewer"}});
    assert!(
        pdp.decide(&ask(demoted, action("write"), archived_record_2()))
            .await
    );
    // carol is not in entities.json: her request's properties are her
    // attributes (rule 6: "a subject with role admin").
    let carol = json!({"type": "user", "id": "carol", "properties": {"role": "admin"}});
    assert!(
        pdp.decide(&ask(carol.clone(), action("write"), archived_record_2()))
            .await
    );
    let carol_plain = user("carol");
    assert!(
        !pdp.decide(&ask(carol_plain, action("write"), archived_record_2()))
            .await
    );
    // A record entities.json does not know, archived by the request alone.
    let record_9 =
        json!({"type": "record", "id": "record-9", "properties": {"status": "archived"}});
    assert!(
        pdp.decide(&ask(carol, action("write"), record_9.clone()))
            .await
    );
    assert!(
        !pdp.decide(&ask(user("alice"), action("write"), record_9))
            .await
    );
}

#[tokio::test]
async fn unknown_types_undeclared_actions_and_ill_typed_properties_are_400() {
    let pdp = certification();
    let cases = [
        // No such entity types in the schema.
        ask(
            json!({"type": "spaceship", "id": "x"}),
            action("read"),
            record("record-1"),
        ),
        ask(
            user("alice"),
            action("read"),
            json!({"type": "document", "id": "record-1"}),
        ),
        // No such action.
        ask(user("alice"), action("fly"), record("record-1")),
        // `read` does not apply to a `user` resource.
        ask(user("alice"), action("read"), user("bob")),
        // Declared attributes with the wrong type.
        ask(
            json!({"type": "user", "id": "alice", "properties": {"role": 7}}),
            action("read"),
            record("record-1"),
        ),
        ask(
            user("alice"),
            action("read"),
            json!({"type": "record", "id": "record-1", "properties": {"status": true}}),
        ),
        ask(
            user("alice"),
            json!({"name": "delete", "properties": {"soft": "yes"}}),
            record("record-1"),
        ),
    ];
    for req in cases {
        pdp.evaluation(&req)
            .await
            .assert_refused(400, &req.to_string());
    }
}

#[tokio::test]
async fn batch_items_that_cannot_be_mapped_are_denied_alone() {
    let pdp = certification();
    let req = json!({
        "subject": user("alice"),
        "action": action("read"),
        "evaluations": [
            {"resource": record("record-1")},
            {"resource": {"type": "spaceship", "id": "x"}},
            {"action": action("fly"), "resource": record("record-1")},
            {"resource": record("record-2")},
        ],
    });
    assert_eq!(pdp.decide_all(&req).await, [true, false, false, true]);
}

// ---- The interop "Todo" scenario ---------------------------------------------------------

#[tokio::test]
async fn todo_interop_decisions_all_match() {
    let pdp = Pdp::start("authzen-todo", TODO_TOKEN, None);
    let file = repo().join("tests/authzen/todo-decisions-1_0-02.json");
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let single = cases["evaluation"].as_array().unwrap();
    let batches = cases["evaluations"].as_array().unwrap();
    assert_eq!((single.len(), batches.len()), (40, 3));
    let mut mismatches = Vec::new();
    // As the interop's runner (interop/authzen-todo-backend/test/runner.ts)
    // judges: a single evaluation by its `decision`, a batch by its whole
    // `evaluations` array; and every answer must be a 200.
    for (i, case) in single.iter().enumerate() {
        let a = pdp.evaluation(&case["request"]).await;
        if a.status != 200 || a.body["decision"] != case["expected"] {
            mismatches.push(format!(
                "evaluation #{i}: {}\n  expected decision {}, got {} {}",
                case["request"], case["expected"], a.status, a.text
            ));
        }
    }
    for (i, case) in batches.iter().enumerate() {
        let a = pdp.evaluations(&case["request"]).await;
        if a.status != 200 || a.body["evaluations"] != case["expected"] {
            mismatches.push(format!(
                "evaluations #{i}: {}\n  expected {}, got {} {}",
                case["request"], case["expected"], a.status, a.text
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of 43 Todo cases do not match:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

// ---- AuthZEN clients from PyPI -----------------------------------------------------------

#[tokio::test]
async fn python_authzen_clients_get_the_answers_of_raw_calls() {
    let pdp = certification();
    let single: Vec<Value> = fixture_rules().into_iter().map(|(_, r, _)| r).collect();
    let batch = vec![
        json!({"subject": user("bob"), "resource": record("record-1"),
               "evaluations": [{"action": action("read")}, {"action": action("write")}]}),
        json!({"action": action("write"), "resource": archived_record_2(),
               "evaluations": [{"subject": user("alice")}, {"subject": admin_bob()}]}),
        json!({"subject": user("alice"), "action": action("write"),
               "resource": {"type": "record", "id": "record-1", "properties": {"status": "active"}},
               "evaluations": [{}, {"resource": archived_record_2()}]}),
    ];
    let mut raw_single = Vec::new();
    for r in &single {
        raw_single.push(pdp.decide(r).await);
    }
    let mut raw_batch = Vec::new();
    for r in &batch {
        raw_batch.push(pdp.decide_all(r).await);
    }
    let want: Vec<bool> = fixture_rules().into_iter().map(|(_, _, d)| d).collect();
    assert_eq!(raw_single, want);
    let cases = json!({"base": pdp.base, "token": pdp.token, "single": single, "batch": batch});
    let answers = python_clients(&cases);
    assert_eq!(
        answers["apparitor"]["single"],
        json!(raw_single),
        "{answers}"
    );
    assert_eq!(answers["apparitor"]["batch"], json!(raw_batch), "{answers}");
    assert_eq!(answers["decern"]["single"], json!(raw_single), "{answers}");
    // An unknown token is an error to both, with the PDP's 401.
    assert_eq!(answers["apparitor"]["bad_token"], json!(401), "{answers}");
    assert_eq!(answers["decern"]["bad_token"], json!(401), "{answers}");
}

/// `tests/authzen/client_check.py` run with `.venv/bin/python` (where
/// scripts/test.sh installs the clients) on `cases`; its JSON answer.
fn python_clients(cases: &Value) -> Value {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.exists(),
        "no .venv: run scripts/test.sh, or `python3 -m venv .venv && .venv/bin/pip install -r tests/authzen/requirements.txt`"
    );
    let script = repo().join("tests/authzen/client_check.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cases.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{} failed (are tests/authzen/requirements.txt installed in .venv?):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}
