//! AI agents' MCP tool calls through the real Envoy (envoy/envoy.yaml) to a
//! real MCP server, from the real client: the official MCP Python SDK on
//! both ends (tests/mcp/, installed by scripts/install-mcp.sh).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use common::stack::{Stack, stack_mcp};
use common::{eventually, free_port, policy_copy, repo, token_with};

/// The MCP server (tests/mcp/server.py); killed on drop (SIGKILL: on
/// SIGTERM it waits for requests still open).
struct McpServer {
    child: Child,
    port: u16,
}

impl McpServer {
    async fn start() -> McpServer {
        let port = free_port();
        let child = Command::new(python())
            .arg(repo().join("tests/mcp/server.py"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the MCP SDK is missing: run scripts/install-mcp.sh");
        let up = eventually(
            Duration::from_secs(20),
            Duration::from_millis(100),
            || async { std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() },
        )
        .await;
        assert!(up, "the MCP server did not start on {port}");
        McpServer { child, port }
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> std::path::PathBuf {
    repo().join(".venv/bin/python")
}

/// Runs the SDK's client through Envoy as `bearer` (if any): one session,
/// one JSON line per step.
fn client(s: &Stack, bearer: Option<&str>, steps: Value) -> Vec<Value> {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tests/mcp/client.py"))
        .arg(s.envoy.url("/mcp"))
        .arg(steps.to_string())
        .env("MCP_TIMEOUT_SECONDS", "30");
    match bearer {
        Some(b) => cmd.env("MCP_BEARER", b),
        None => cmd.env_remove("MCP_BEARER"),
    };
    let out = cmd.output().expect("run the MCP client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect()
}

fn call(tool: &str, arguments: Value) -> Value {
    json!({"op": "call", "tool": tool, "arguments": arguments})
}

fn agent(sub: &str) -> String {
    token_with(sub, &["agents"], json!({"on_behalf_of": "alice"}))
}

fn export_args() -> Value {
    json!({"dataset": "sales", "format": "csv", "destination": "s3://reports"})
}

/// Asserts a tool result that the model reads as a refusal containing
/// every one of `words`.
fn refused(line: &Value, words: &[&str]) {
    assert_eq!(line["is_error"], true, "{line}");
    let text = line["text"].as_str().unwrap_or_default();
    for w in words {
        assert!(text.contains(w), "`{w}` not in: {text}");
    }
}

#[tokio::test]
async fn an_agents_tool_call_waits_for_a_data_owner_and_then_runs_once() {
    let server = McpServer::start().await;
    let s = stack_mcp(server.port, policy_copy()).await;
    let agent7 = agent("agent-7");

    let out = client(
        &s,
        Some(&agent7),
        json!([
            {"op": "list"},
            call("read_dataset", json!({"dataset": "sales"})),
            call("delete_dataset", json!({"dataset": "sales"})),
            call("export_dataset", export_args()),
        ]),
    );
    assert_eq!(
        out[0]["tools"],
        json!(["read_dataset", "export_dataset", "delete_dataset"])
    );
    assert_eq!(out[1]["is_error"], false, "{}", out[1]);
    assert_eq!(out[1]["text"], "rows of sales");
    refused(
        &out[2],
        &["refused", "delete_dataset", "mcp-delete-tools-forbidden"],
    );
    refused(
        &out[3],
        &[
            "needs a human approval",
            "data-owners",
            "exactly the same arguments",
        ],
    );

    // The approver sees the server, the tool and the arguments shown.
    let id = s.pending_id("dora").await;
    assert!(out[3]["text"].as_str().unwrap().contains(&id), "{}", out[3]);
    let (code, shown) = s.cli("dora", &["show", &id]);
    assert_eq!(code, 0, "{shown}");
    for w in [
        "export_dataset",
        "mcp.server",
        "datasets",
        "arguments.destination",
        "s3://reports",
    ] {
        assert!(shown.contains(w), "`{w}` not in:\n{shown}");
    }
    // Not while pending; then approved by a data owner.
    let early = client(
        &s,
        Some(&agent7),
        json!([call("export_dataset", export_args())]),
    );
    refused(&early[0], &[&id, "pending"]);
    let (code, said) = s.cli("dora", &["approve", &id, "--reason", "quarterly report"]);
    assert_eq!(code, 0, "{said}");

    // Another agent, and other arguments, are other calls.
    let other = client(
        &s,
        Some(&agent("agent-8")),
        json!([call("export_dataset", export_args())]),
    );
    refused(&other[0], &["needs a human approval"]);
    assert!(
        !other[0]["text"].as_str().unwrap().contains(&id),
        "{}",
        other[0]
    );
    let changed = json!({"dataset": "sales", "format": "csv", "destination": "s3://elsewhere"});
    let other = client(&s, Some(&agent7), json!([call("export_dataset", changed)]));
    refused(&other[0], &["needs a human approval"]);
    assert!(
        !other[0]["text"].as_str().unwrap().contains(&id),
        "{}",
        other[0]
    );

    // The same call, in a new session with new JSON-RPC ids: it runs once.
    let again = client(
        &s,
        Some(&agent7),
        json!([
            call("export_dataset", export_args()),
            call("export_dataset", export_args())
        ]),
    );
    assert_eq!(again[0]["is_error"], false, "{}", again[0]);
    assert_eq!(again[0]["text"], "exported sales as csv to s3://reports");
    refused(&again[1], &["needs a human approval"]);
    assert!(
        !again[1]["text"].as_str().unwrap().contains(&id),
        "a replay is a new request"
    );
    let (code, shown) = s.cli("dora", &["show", &id, "--output", "json"]);
    assert_eq!(code, 0, "{shown}");
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["status"], "consumed", "{shown}");
}

#[tokio::test]
async fn a_held_tool_call_completes_the_moment_it_is_approved() {
    let server = McpServer::start().await;
    let policies = policy_copy();
    let file = policies.path().join("mcp-tools.cedar");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(r#"@approval("deny")"#));
    std::fs::write(
        &file,
        text.replace(r#"@approval("deny")"#, r#"@approval("hold")"#),
    )
    .unwrap();
    let s = std::sync::Arc::new(stack_mcp(server.port, policies).await);

    let agent7 = agent("agent-7");
    let caller = {
        let s = s.clone();
        tokio::task::spawn_blocking(move || {
            client(
                &s,
                Some(&agent7),
                json!([call("export_dataset", export_args())]),
            )
        })
    };
    let id = s.pending_id("dora").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!caller.is_finished(), "the tool call is held, not answered");
    let (code, said) = s.cli("dora", &["approve", &id, "--reason", "quarterly report"]);
    assert_eq!(code, 0, "{said}");
    let out = tokio::time::timeout(Duration::from_secs(15), caller)
        .await
        .expect("released on approval")
        .unwrap();
    assert_eq!(out[0]["is_error"], false, "{}", out[0]);
    assert_eq!(out[0]["text"], "exported sales as csv to s3://reports");
}

#[tokio::test]
async fn callers_without_identity_and_bodies_that_are_not_one_message_are_refused_readably() {
    let server = McpServer::start().await;
    let s = stack_mcp(server.port, policy_copy()).await;

    // No token: the SDK surfaces the JSON-RPC error of `initialize`.
    let out = client(&s, None, json!([{"op": "list"}]));
    assert_eq!(out[0]["op"], "initialize", "{out:?}");
    assert_eq!(out[0]["code"], -32001, "{out:?}");
    let message = out[0]["message"].as_str().unwrap();
    assert!(
        message.contains("initialize") && message.contains("anonymous-denied"),
        "{message}"
    );

    // A tool no policy (nor the schema) knows; one named like a route's
    // action; an argument of another type than declared.
    let out = client(
        &s,
        Some(&agent("agent-7")),
        json!([
            {"op": "list"},
            call("drop_tables", json!({})),
            call("read", json!({})),
            call("export_dataset", json!({"dataset": "sales", "format": true, "destination": "x"})),
        ]),
    );
    refused(&out[1], &[r#"Action::"drop_tables""#, "does not declare"]);
    refused(&out[2], &["does not fit", r#"Action::"read""#]);
    refused(&out[3], &["does not fit", "declare every argument"]);

    // What the SDK never sends, straight through Envoy.
    let bearer = agent("agent-7");
    let post = |body: String| {
        s.http
            .post(s.envoy.url("/mcp"))
            .bearer_auth(&bearer)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body)
            .send()
    };
    let one = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                     "params": {"name": "read_dataset", "arguments": {"dataset": "sales"}}});
    for (body, why) in [
        (format!("[{one}]"), "batches are refused"),
        ("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":5}".to_owned(), "`method`"),
        ("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{}}".to_owned(), "`params.name`"),
        ("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"read_dataset\",\"name\":\"delete_dataset\"}}".to_owned(), "duplicate key"),
        (format!("{}1{}", "[".repeat(5000), "]".repeat(5000)), "not JSON"),
    ] {
        let r = post(body.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{}", &body[..body.len().min(80)]);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], -32600, "{v}");
        let text = v["error"]["message"].as_str().unwrap();
        assert!(text.contains(why), "`{why}` not in {text}");
    }
    // Larger than Envoy buffers: Envoy refuses it before any decision.
    let huge = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "read_dataset", "arguments": {"dataset": "x".repeat(70_000)}}});
    assert_eq!(post(huge.to_string()).await.unwrap().status(), 413);
    // A well-formed call still passes: nothing above broke the endpoint.
    let r = post(one.to_string()).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "rows of sales", "{v}");
}
