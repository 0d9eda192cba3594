//! A whole deployment for end-to-end tests: real Envoy with envoy/envoy.yaml,
//! the real `countersign` binary with Redis and the admin API, and the
//! `countersign approvals` client over TLS.

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// The embedded example configuration, plus Redis at `redis_url` (with the
/// key `prefix`, else countersign's default) and the admin API.
pub fn config(dir: &Path, redis_url: &str, prefix: Option<&str>, pki: &Pki) -> PathBuf {
    let prefix = prefix.map_or(String::new(), |p| format!("prefix = \"{p}\"\n"));
    let (cert, key) = pki.server();
    let mut text = std::fs::read_to_string(super::repo().join("src/default-config.toml")).unwrap();
    text.push_str(&format!(
        r#"
[redis]
url = "{redis_url}"
{prefix}
[approvals]
hold_max = "20s"

[admin]
listen = "127.0.0.1:0"
tls_cert = "{}"
tls_key = "{}"
client_ca = "{}"

[[admin.approvers]]
name = "dora"
groups = ["data-owners"]

[[admin.approvers]]
name = "sara"
groups = ["security"]
"#,
        cert.display(),
        key.display(),
        pki.ca().display()
    ));
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
    let pki = Pki::new();
    let policies = policy_copy();
    let path = config(pki.dir(), url, prefix, &pki);
    let endpoint = otlp.map(|p| format!("http://127.0.0.1:{p}"));
    let mut env = vec![("COUNTERSIGN_CONFIG", path.to_str().unwrap())];
    if let Some(e) = &endpoint {
        env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", e));
    }
    let sidecar = Sidecar::start(policies.path(), &env);
    let envoy = match otlp {
        Some(p) => Envoy::start_traced(sidecar.port(), p).await,
        None => Envoy::start(sidecar.port()).await,
    };
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

impl Stack {
    /// GET `path` through Envoy; the status.
    pub async fn get(&self, path: &str, bearer: Option<&str>) -> u16 {
        let mut req = self.http.get(self.envoy.url(path));
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
        let mut req = self
            .http
            .post(self.envoy.url(path))
            .bearer_auth(bearer)
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = approval {
            req = req.header("x-countersign-approval", t);
        }
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

    /// POSTs `{}` to a held route in the background; its status and body.
    pub fn held(&self, path: &str, bearer: &str) -> tokio::task::JoinHandle<(u16, Value)> {
        let req = self
            .http
            .post(self.envoy.url(path))
            .bearer_auth(bearer)
            .body("{}");
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
        let (cert, key) = self.pki.client(who);
        let admin = format!("https://{}", self.sidecar.admin_addr.as_ref().unwrap());
        let out = Command::new(env!("CARGO_BIN_EXE_countersign"))
            .arg("approvals")
            .args(args)
            .args(["--admin", &admin])
            .arg("--ca")
            .arg(self.pki.ca())
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }
}
