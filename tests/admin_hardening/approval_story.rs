//! The README's approval story end to end, with countersign logged in to
//! Redis as the documented user.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::stack::answer_of;
use crate::common::{self, eventually, token, token_with};
use crate::redis_acl::{acl_log, limited_url, redis_with_documented_user};

/// The approval story of the README, end to end (real Envoy, the real
/// binary, the `approvals` client, `audit export` and `audit tail`), with
/// countersign logged in to Redis as the documented user.
#[tokio::test]
async fn the_approval_story_runs_end_to_end_as_the_documented_redis_user() {
    let (acl, redis, mut admin) = redis_with_documented_user().await;
    let url = limited_url(&redis, &acl);

    // countersign's default key prefix: the one the documented ACL names.
    let s = common::stack::stack_on(redis, &url, None, None).await;
    let config = s.config.clone();
    // `audit tail` prints what is written after it starts: wait until it
    // polls the streams from their ends.
    let tail = AuditTail::start(&config);
    let following = eventually(Duration::from_secs(10), Duration::from_millis(50), || {
        let mut admin = admin.clone();
        async move {
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut admin)
                .await
                .unwrap();
            clients
                .lines()
                .any(|c| c.contains(" user=countersign ") && c.contains(" cmd=xrange "))
        }
    })
    .await;
    assert!(following, "audit tail is not reading");

    // An agent's export waits for a data owner, who approves it with the
    // `approvals` client; the retry with the token goes through, once.
    const EXPORT: &str = "/v1/datasets/sales/export";
    const BODY: &str = r#"{"format":"csv","rows":10}"#;
    let agent = token_with("agent-7", &["agents"], json!({"on_behalf_of": "alice"}));
    let r = s.post(EXPORT, &agent, BODY, None).await;
    assert_eq!(
        (r.status, r.body["decision"].as_str()),
        (403, Some("approval_required")),
        "{:?}\n{}",
        r.body,
        s.sidecar.log()
    );
    let id = r.body["approval_id"].as_str().unwrap().to_owned();
    let approval = r.body["approval_token"].as_str().unwrap().to_owned();
    let (code, out) = s.cli("dora", &["list"]);
    assert!(code == 0 && out.contains(&id), "{out}");
    let (code, out) = s.cli("dora", &["approve", &id, "--reason", "quarterly report"]);
    assert_eq!(code, 0, "{out}");
    let r = s.post(EXPORT, &agent, BODY, Some(&approval)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = s.post(EXPORT, &agent, BODY, Some(&approval)).await;
    assert_eq!(
        (r.status, r.body["decision"].as_str()),
        (403, Some("deny")),
        "{:?}",
        r.body
    );

    // A held call answers when its approver decides (pub/sub).
    let held = s.held("/acme.iam.v1.Roles/GrantRole", &token("sam", &["security"]));
    let held_id = s.pending_id("sara").await;
    assert!(!held.is_finished(), "the call is held, not answered");
    for who in ["sara", "sid"] {
        let (code, out) = s.cli(who, &["approve", &held_id, "--reason", "onboarding"]);
        assert_eq!(code, 0, "{out}");
    }
    let (status, body) = answer_of(held).await;
    assert_eq!(status, 200, "{body}");

    // Probes: Redis answers, and no Redis operation failed.
    let base = format!("http://{}", s.sidecar.metrics_addr);
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("\ncountersign_approvals_pending 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\ncountersign_redis_errors_total 0\n"),
        "{metrics}"
    );

    // The audit trail, read as the same user.
    let out = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["audit", "export", "--config"])
        .arg(&config)
        .env_remove("COUNTERSIGN_REDIS_URL")
        .env_remove("COUNTERSIGN_CONFIG")
        .output()
        .unwrap();
    let exported = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{exported}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let story = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["approval_id"] == id.as_str())
            .map(|e| {
                format!(
                    "{} {}",
                    e["event"].as_str().unwrap_or_default(),
                    e["decision"].as_str().unwrap_or_default()
                )
            })
            .collect()
    };
    assert_eq!(
        story(&exported),
        [
            "requested ",
            "decision approval_required",
            "approved ",
            "consumed ",
            "decision allow",
            "decision deny"
        ],
        "{exported}"
    );
    let followed = tail.stop_when(|text| story(text).len() >= 6);
    assert_eq!(story(&followed), story(&exported), "{followed}");

    // Redis refused nothing: countersign used only the documented commands,
    // keys and channels (never KEYS, FLUSHALL, CONFIG, ...).
    assert_eq!(
        acl_log(&mut admin).await,
        Vec::<String>::new(),
        "Redis refused countersign a command"
    );
    let log = s.sidecar.log();
    assert!(!log.contains(&acl.password), "the Redis password is logged");
    assert!(!log.contains("NOPERM"), "{log}");
}

/// `countersign audit tail` (JSON lines) with `config`; killed when done.
struct AuditTail {
    child: std::process::Child,
    out: Arc<Mutex<String>>,
}

impl AuditTail {
    fn start(config: &Path) -> AuditTail {
        let mut child = Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args(["audit", "tail", "--config"])
            .arg(config)
            .env_remove("COUNTERSIGN_REDIS_URL")
            .env_remove("COUNTERSIGN_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let (mut stdout, sink) = (child.stdout.take().unwrap(), out.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        AuditTail { child, out }
    }

    /// Waits (10 s at most) until what it printed satisfies `done`; stops
    /// it and returns what it printed.
    fn stop_when(mut self, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(&self.out.lock().unwrap()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.out.lock().unwrap().clone()
    }
}

impl Drop for AuditTail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
