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
//!
//! Layout: `basic` (C.2), `batch` (C.3, and the short-circuit semantics),
//! `discovery` (C.5, C.6, over HTTPS), `callers` (authentication, limits),
//! `mapping` (the mapping into Cedar, the Todo interop, PyPI clients).

#[path = "../common/mod.rs"]
mod common;

mod basic;
mod batch;
mod callers;
mod discovery;
mod mapping;

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
