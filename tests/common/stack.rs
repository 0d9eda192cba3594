//! A whole deployment for end-to-end tests: real Envoy with envoy/envoy.yaml,
//! the real `countersign` binary with Redis and the admin API, and the
//! `countersign approvals` client over TLS.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::tls::Pki;
use super::{Envoy, Redis, Sidecar, policy_copy};

pub struct Stack {
    pub envoy: Envoy,
    pub sidecar: Sidecar,
    pub redis: Redis,
    pub pki: Pki,
    pub http: reqwest::Client,
    pub policies: tempfile::TempDir,
    /// The configuration file countersign runs with.
    pub config: PathBuf,
}

/// The approvers every stack knows, and their group: one per group the
/// example policies name, two in security for its quorum of 2.
pub const APPROVERS: [(&str, &str); 4] = [
    ("dora", "data-owners"),
    ("sara", "security"),
    ("sid", "security"),
    ("omar", "on-call"),
];

/// The embedded example configuration, plus the `[redis]` table `redis`
/// and the admin API.
pub fn config(dir: &Path, redis: &str, pki: &Pki) -> PathBuf {
    let (cert, key) = pki.server();
    let mut text = std::fs::read_to_string(super::repo().join("src/default-config.toml")).unwrap();
    text.push_str(&format!(
        r#"
[redis]
{redis}

[approvals]
hold_max = "20s"

[admin]
listen = "127.0.0.1:0"
tls_cert = "{}"
tls_key = "{}"
client_ca = "{}"
"#,
        cert.display(),
        key.display(),
        pki.ca().display()
    ));
    for (name, group) in APPROVERS {
        text.push_str(&format!(
            "\n[[admin.approvers]]\nname = \"{name}\"\ngroups = [\"{group}\"]\n"
        ));
    }
    let path = dir.join("countersign.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub async fn stack() -> Stack {
    stack_traced(None).await
}

/// With Envoy and countersign sending spans to an OTLP receiver on `otlp`.
pub async fn stack_traced(otlp: Option<u16>) -> Stack {
    let redis = Redis::start().await;
    let url = redis.url();
    stack_on(redis, &url, Some("e2e:"), otlp).await
}

/// With countersign reaching `redis` through `url` (a proxy, a user).
pub async fn stack_on(redis: Redis, url: &str, prefix: Option<&str>, otlp: Option<u16>) -> Stack {
    let prefix = prefix.map_or(String::new(), |p| format!("prefix = \"{p}\""));
    let table = format!("url = \"{url}\"\n{prefix}");
    assemble(redis, &table, policy_copy(), otlp, None, &|t| t, &|y| y).await
}

/// With Envoy's configuration (`envoy/envoy.yaml`) passed through `edit`.
pub async fn stack_with_envoy(edit: &dyn Fn(String) -> String) -> Stack {
    let redis = Redis::start().await;
    let table = format!("url = \"{}\"", redis.url());
    assemble(redis, &table, policy_copy(), None, None, &|t| t, edit).await
}

/// With `policies`, spans to `otlp`, and the configuration passed through
/// `edit` (to put routes in shadow mode, say).
pub async fn stack_with(
    policies: tempfile::TempDir,
    otlp: Option<u16>,
    edit: &dyn Fn(String) -> String,
) -> Stack {
    let redis = Redis::start().await;
    let table = format!("url = \"{}\"", redis.url());
    assemble(redis, &table, policies, otlp, None, edit, &|y| y).await
}

/// With `/mcp` routed to an MCP server on `mcp_port`, and `policies`.
pub async fn stack_mcp(mcp_port: u16, policies: tempfile::TempDir) -> Stack {
    let redis = Redis::start().await;
    let table = format!("url = \"{}\"", redis.url());
    assemble(
        redis,
        &table,
        policies,
        None,
        Some(mcp_port),
        &|t| t,
        &|y| y,
    )
    .await
}

/// countersign with the `[redis]` table `redis_table` and `policies`, and
/// its Envoy; spans to `otlp`, `/mcp` to `mcp`, if given; the
/// configurations passed through `edit` (countersign's) and `edit_envoy`.
async fn assemble(
    redis: Redis,
    redis_table: &str,
    policies: tempfile::TempDir,
    otlp: Option<u16>,
    mcp: Option<u16>,
    edit: &dyn Fn(String) -> String,
    edit_envoy: &dyn Fn(String) -> String,
) -> Stack {
    let pki = Pki::new();
    let path = config(pki.dir(), redis_table, &pki);
    std::fs::write(&path, edit(std::fs::read_to_string(&path).unwrap())).unwrap();
    let endpoint = otlp.map(|p| format!("http://127.0.0.1:{p}"));
    let mut env = vec![("COUNTERSIGN_CONFIG", path.to_str().unwrap())];
    if let Some(e) = &endpoint {
        env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", e));
    }
    let sidecar = Sidecar::start(policies.path(), &env);
    let free = super::free_port;
    let envoy = Envoy::start_edited(
        sidecar.port(),
        otlp.unwrap_or_else(free),
        mcp.unwrap_or_else(free),
        edit_envoy,
    )
    .await;
    Stack {
        envoy,
        sidecar,
        redis,
        pki,
        http: reqwest::Client::new(),
        policies,
        config: path,
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

/// One countersign and its Envoy, as the tests drive them.
pub struct View<'a> {
    pub envoy: &'a Envoy,
    pub sidecar: &'a Sidecar,
    pki: &'a Pki,
    http: &'a reqwest::Client,
    /// The Host every call names, if not Envoy's own address.
    host: Option<&'static str>,
}

impl Stack {
    pub fn view(&self) -> View<'_> {
        View {
            envoy: &self.envoy,
            sidecar: &self.sidecar,
            pki: &self.pki,
            http: &self.http,
            host: None,
        }
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> u16 {
        self.view().get(path, bearer).await
    }

    pub async fn open_and_approve(
        &self,
        path: &str,
        bearer: &str,
        body: &str,
        reason: &str,
    ) -> (String, String) {
        self.view()
            .open_and_approve(path, bearer, body, reason)
            .await
    }

    pub async fn post(
        &self,
        path: &str,
        bearer: &str,
        body: &str,
        approval: Option<&str>,
    ) -> Reply {
        self.view().post(path, bearer, body, approval).await
    }

    pub fn held(&self, path: &str, bearer: &str) -> tokio::task::JoinHandle<(u16, Value)> {
        self.view().held(path, bearer)
    }

    pub async fn pending_id(&self, who: &str) -> String {
        self.view().pending_id(who).await
    }

    pub fn cli(&self, who: &str, args: &[&str]) -> (i32, String) {
        self.view().cli(who, args)
    }
}

/// The service a fleet's callers call.
pub const FLEET_HOST: &str = "datasets.acme.test";

/// Several countersign instances, each with its own Envoy, on one store:
/// a mesh in miniature. Every instance has the admin API.
pub struct Fleet {
    pub peers: Vec<(Sidecar, Envoy)>,
    pub pki: Pki,
    pub http: reqwest::Client,
    pub policies: tempfile::TempDir,
    pub config: PathBuf,
}

impl Fleet {
    /// `n` instances with the `[redis]` table `redis`.
    pub async fn start(n: usize, redis: &str) -> Fleet {
        let pki = Pki::new();
        let policies = policy_copy();
        let config = config(pki.dir(), redis, &pki);
        let mut peers = Vec::new();
        for _ in 0..n {
            let sidecar = Sidecar::start(
                policies.path(),
                &[("COUNTERSIGN_CONFIG", config.to_str().unwrap())],
            );
            let envoy = Envoy::start(sidecar.port()).await;
            peers.push((sidecar, envoy));
        }
        Fleet {
            peers,
            pki,
            http: reqwest::Client::new(),
            policies,
            config,
        }
    }

    /// Instance `i`.
    pub fn on(&self, i: usize) -> View<'_> {
        let (sidecar, envoy) = &self.peers[i];
        View {
            envoy,
            sidecar,
            pki: &self.pki,
            http: &self.http,
            // Callers name the service, not the sidecar they happen to
            // reach, so that a call is the same call through any of them.
            host: Some(FLEET_HOST),
        }
    }

    /// Every instance's log, for failure messages.
    pub fn logs(&self) -> String {
        self.peers
            .iter()
            .enumerate()
            .map(|(i, (s, _))| format!("--- instance {i}\n{}", s.log()))
            .collect()
    }
}

/// Sends every request at once; how many passed (200). Each refusal must
/// say the approval is consumed.
pub async fn race(requests: Vec<reqwest::RequestBuilder>) -> usize {
    let calls: Vec<_> = requests
        .into_iter()
        .map(|req| {
            tokio::spawn(async move {
                let r = req.send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or(Value::Null))
            })
        })
        .collect();
    let mut passed = 0;
    for c in calls {
        match c.await.unwrap() {
            (200, _) => passed += 1,
            (403, body) => assert!(
                body["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("is consumed"),
                "{body}"
            ),
            (status, body) => panic!("{status}: {body}"),
        }
    }
    passed
}

impl View<'_> {
    /// A JSON POST with `bearer` and, if given, an approval token.
    pub fn post_request(
        &self,
        path: &str,
        bearer: &str,
        body: &str,
        approval: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let req = self
            .request(reqwest::Method::POST, path)
            .bearer_auth(bearer)
            .header("content-type", "application/json")
            .body(body.to_owned());
        match approval {
            Some(t) => req.header("x-countersign-approval", t),
            None => req,
        }
    }

    /// A request through this instance's Envoy.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, self.envoy.url(path));
        match self.host {
            Some(h) => req.header(reqwest::header::HOST, h),
            None => req,
        }
    }

    /// GET `path` through Envoy; the status.
    pub async fn get(&self, path: &str, bearer: Option<&str>) -> u16 {
        let mut req = self.request(reqwest::Method::GET, path);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap().status().as_u16()
    }

    /// POSTs a call that needs an approval, approves it as `dora` with
    /// `reason`; the approval's id and the caller's token.
    pub async fn open_and_approve(
        &self,
        path: &str,
        bearer: &str,
        body: &str,
        reason: &str,
    ) -> (String, String) {
        let r = self.post(path, bearer, body, None).await;
        assert_eq!(r.body["decision"], "approval_required", "{:?}", r.body);
        let id = r.body["approval_id"].as_str().unwrap().to_owned();
        let token = r.body["approval_token"].as_str().unwrap().to_owned();
        let (code, out) = self.cli("dora", &["approve", &id, "--reason", reason]);
        assert_eq!(code, 0, "{out}");
        (id, token)
    }

    pub async fn post(
        &self,
        path: &str,
        bearer: &str,
        body: &str,
        approval: Option<&str>,
    ) -> Reply {
        Self::reply(self.post_request(path, bearer, body, approval)).await
    }

    /// `method path` with `bearer`, a JSON body and an approval token if
    /// given.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &str,
        body: Option<&str>,
        approval: Option<&str>,
    ) -> Reply {
        let mut req = self.request(method, path).bearer_auth(bearer);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        if let Some(t) = approval {
            req = req.header("x-countersign-approval", t);
        }
        Self::reply(req).await
    }

    async fn reply(req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        Reply {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    /// POSTs `{}` to a held route in the background; its status and body
    /// (see [`answer_of`]).
    pub fn held(&self, path: &str, bearer: &str) -> tokio::task::JoinHandle<(u16, Value)> {
        self.held_with(reqwest::Method::POST, path, bearer, "{}")
    }

    /// Sends a call that may be held, in the background; its status and
    /// body.
    pub fn held_with(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &str,
        body: &str,
    ) -> tokio::task::JoinHandle<(u16, Value)> {
        let req = self
            .request(method, path)
            .bearer_auth(bearer)
            .header("content-type", "application/json")
            .body(body.to_owned());
        tokio::spawn(async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        })
    }

    /// The id of the first request `who` sees pending; fails after 10 s.
    pub async fn pending_id(&self, who: &str) -> String {
        let mut id = None;
        let appeared = super::eventually(
            std::time::Duration::from_secs(10),
            std::time::Duration::from_millis(200),
            || {
                let (code, out) = self.cli(who, &["list", "--output", "json"]);
                id = (code == 0)
                    .then(|| serde_json::from_str::<Value>(&out).ok())
                    .flatten()
                    .and_then(|v| v[0]["id"].as_str().map(str::to_owned));
                let found = id.is_some();
                async move { found }
            },
        )
        .await;
        assert!(
            appeared,
            "no request pending for {who}:\n{}",
            self.sidecar.log()
        );
        id.unwrap_or_default()
    }

    /// `countersign approvals ARGS` as approver `who`; (exit code, stdout+stderr).
    pub fn cli(&self, who: &str, args: &[&str]) -> (i32, String) {
        let out = super::approvals_cli(self.sidecar, self.pki, who, args)
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), super::output_text(&out))
    }
}

/// The answer to a call sent with `held` or `held_with`, once released;
/// fails after 15 s.
pub async fn answer_of(held: tokio::task::JoinHandle<(u16, Value)>) -> (u16, Value) {
    tokio::time::timeout(std::time::Duration::from_secs(15), held)
        .await
        .expect("the held call was not answered within 15 s")
        .unwrap()
}
