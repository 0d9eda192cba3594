//! Capture mode end to end: `serve --record` behind the real Envoy writes
//! redacted request descriptions, and `policy diff` decides them again.

mod common;

use std::time::Duration;

use common::{
    Envoy, Redis, Sidecar, countersign, edit_policy, eventually, output_text, policy_copy, token,
};
use serde_json::Value;

#[tokio::test]
async fn recorded_checks_hold_no_secret_and_feed_policy_diff() {
    let redis = Redis::start().await;
    let policies = policy_copy();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recorded.jsonl");
    let url = redis.url();
    let sidecar = Sidecar::start_with(
        "127.0.0.1:0",
        policies.path(),
        &[("COUNTERSIGN_REDIS_URL", url.as_str())],
        &["--record", file.to_str().unwrap(), "--record-rate", "1"],
    );
    let envoy = Envoy::start(sidecar.port()).await;
    let http = reqwest::Client::new();

    let alice = token("alice", &["analysts"]);
    let r = http
        .get(envoy.url("/v1/datasets/sales?format=csv&session=s3cr3t-query"))
        .bearer_auth(&alice)
        .header("cookie", "session=cookie-secret-123")
        .header("x-countersign-approval", "approval-secret-456")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let owner = token("dora", &["data-owners"]);
    let r = http
        .post(envoy.url("/v1/datasets/sales/export"))
        .bearer_auth(&owner)
        .header("content-type", "application/json")
        .body(r#"{"format":"csv","rows":500000,"notes":"body-secret-789"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // An agent's tool call (no MCP server answers: the check is what is
    // recorded), and the agent's answer to a server request, which is not.
    let agent = token("ci-agent", &["agents"]);
    for body in [
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_dataset","arguments":{"dataset":"sales","note":"arg-secret-246"}}}"#,
        r#"{"jsonrpc":"2.0","id":"s-1","result":{"secret":"result-secret-135"}}"#,
    ] {
        http.post(envoy.url("/mcp"))
            .bearer_auth(&agent)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body)
            .send()
            .await
            .unwrap();
    }

    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    let three = eventually(Duration::from_secs(10), Duration::from_millis(50), || {
        let lines = read().lines().count();
        async move { lines == 3 }
    })
    .await;
    assert!(three, "{}\n{}", read(), sidecar.log());
    let text = read();
    for secret in [
        "s3cr3t-query",
        "cookie-secret-123",
        "approval-secret-456",
        "body-secret-789",
        "arg-secret-246",
        "result-secret-135",
        &agent,
        &alice,
        &owner,
    ] {
        assert!(!text.contains(secret), "{secret} recorded: {text}");
    }
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["path"], "/v1/datasets/sales?format=csv");
    assert_eq!(lines[0]["claims"]["sub"], "alice");
    assert_eq!(lines[0]["claims"]["groups"][0], "analysts");
    // Only what an approver is shown (`@show("format, rows")`).
    assert_eq!(
        lines[1]["body"],
        serde_json::json!({"format": "csv", "rows": 500000})
    );
    // The tool's resource is named from `dataset`: kept, so that the call
    // can be decided again; the rest of the arguments are not shown.
    assert_eq!(
        lines[2]["body"]["params"],
        serde_json::json!({"name": "read_dataset", "arguments": {"dataset": "sales"}})
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The recorded sample, decided with a set that lowers the row limit.
    let new = policy_copy();
    edit_policy(new.path(), "datasets.cedar", |c| {
        c.replace("context.body.rows > 1000000", "context.body.rows > 100000")
    });
    let o = countersign(&[
        "policy",
        "diff",
        "--old",
        "policies",
        "--new",
        new.path().to_str().unwrap(),
        "--requests",
        file.to_str().unwrap(),
    ]);
    let out = output_text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.starts_with("3 requests decided"), "{out}");
    assert!(
        out.contains("line 2: POST /v1/datasets/sales/export by User::\"dora\": allow by [data-owners-export] -> deny by [export-row-limit]"),
        "{out}"
    );
    drop(envoy);
    drop(redis);
}

#[test]
fn a_record_file_others_may_read_or_a_link_is_refused_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open.jsonl");
    std::fs::write(&open, "").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        for (file, why) in [
            (
                &open,
                "others may read it; `chmod 600` it, or give a new file",
            ),
            (&link, "it is a symbolic link; give the file itself"),
        ] {
            let o = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
                .args(["serve", "--record", file.to_str().unwrap()])
                .current_dir(common::repo())
                .env("COUNTERSIGN_LISTEN", "127.0.0.1:0")
                .env("COUNTERSIGN_METRICS_LISTEN", "off")
                .env_remove("COUNTERSIGN_CONFIG")
                .output()
                .unwrap();
            let out = output_text(&o);
            assert_eq!(o.status.code(), Some(64), "{out}");
            assert!(
                out.contains("refusing to record into") && out.contains(why),
                "{out}"
            );
            assert!(!out.contains("countersign listening"), "{out}");
        }
    }
    let o = countersign(&["serve", "--record", "x.jsonl", "--record-rate", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        output_text(&o).contains("expected a share above 0 and at most 1"),
        "{}",
        output_text(&o)
    );
}
