//! Synthetic workloads for benchmarks: policy sets of a chosen size (the
//! example policies and schema from `policies/`, plus generated policies),
//! and the checks the benchmarks send. The including crate provides
//! `crate::check`, the `CheckRequest` builder of `tests/common/check.rs`.
//!
//! The shape, stated so that results can be judged: five generated policies
//! per action (so a deployment grows by adding services and actions, not by
//! piling policies onto one action). The first five go to `read`, the action
//! the benchmarks' allowed call uses, so its slice always holds them; the rest
//! go to actions `op-1`, `op-2`, ... Each group of five mixes group and
//! single-user permits, a forbid with `unless`, a condition on the source
//! address and one on the query.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::Path;

use envoy_types::ext_authz::v3::pb::CheckRequest;
use serde_json::json;

/// alice, an analyst, reads a dataset: allowed by `analysts-read-datasets`.
pub fn allowed() -> CheckRequest {
    crate::check::check("GET", "/v1/datasets/sales")
        .claims(json!({"sub": "alice", "groups": ["analysts"], "exp": 1.9e9}))
        .build()
}

/// An anonymous read: denied by `anonymous-denied`.
pub fn denied() -> CheckRequest {
    crate::check::check("GET", "/v1/datasets/sales").build()
}

/// An agent exports for alice: guarded by `agent-exports-need-approval`.
/// Each `rows` is a different call, so a different approval request.
pub fn export(rows: usize, token: Option<&str>) -> CheckRequest {
    export_as("agent-7", rows, token)
}

/// As [`export`], by agent `sub`: a principal may have only so many
/// requests pending (`approvals.max_pending_per_principal`), so a benchmark
/// that keeps thousands pending spreads them over agents.
pub fn export_as(sub: &str, rows: usize, token: Option<&str>) -> CheckRequest {
    let mut c = crate::check::check("POST", "/v1/datasets/sales/export")
        .claims(json!({"sub": sub, "groups": ["agents"], "on_behalf_of": "alice"}))
        .header("content-type", "application/json")
        .body(&format!(r#"{{"format": "csv", "rows": {rows}}}"#));
    if let Some(t) = token {
        c = c.header("x-countersign-approval", t);
    }
    c.build()
}

/// A JSON string of about `bytes` bytes, for 1 KiB bodies and arguments.
fn filler(bytes: usize) -> String {
    "x".repeat(bytes)
}

/// An analyst exports with a body of about 1 KiB: allowed by the
/// benchmark's own `bench-analysts-export` (see [`write_body_permit`]).
pub fn http_body_1k() -> CheckRequest {
    crate::check::check("POST", "/v1/datasets/sales/export")
        .claims(json!({"sub": "alice", "groups": ["analysts"]}))
        .header("content-type", "application/json")
        .body(&json!({"format": "csv", "rows": 10, "note": filler(990)}).to_string())
        .build()
}

/// An agent's MCP `tools/call` with about 1 KiB of arguments: `read_dataset`
/// is allowed by `agents-call-read-tools`, `export_dataset` guarded by
/// `mcp-exports-need-approval`.
pub fn mcp_call_1k(tool: &str, id: u64) -> CheckRequest {
    // Only declared arguments fit (policies/schema.cedarschema).
    let arguments = match tool {
        "read_dataset" => json!({"dataset": format!("sales-{}", filler(960))}),
        _ => json!({"dataset": "sales", "format": "csv", "destination": filler(930)}),
    };
    crate::check::check("POST", "/mcp")
        .claims(json!({"sub": "agent-7", "groups": ["agents"], "on_behalf_of": "alice"}))
        .header("content-type", "application/json")
        .body(
            &json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                    "params": {"name": tool, "arguments": arguments}})
            .to_string(),
        )
        .build()
}

/// The export an HTTP body check above needs allowed, in its own file.
pub fn write_body_permit(dir: &Path) -> std::io::Result<()> {
    std::fs::write(
        dir.join("bench-body.cedar"),
        "@id(\"bench-analysts-export\")\npermit (principal in Group::\"analysts\", action == Action::\"export\", resource is Dataset);\n",
    )
}

/// Writes the example policies and schema plus `extra` generated policies
/// into `dir`, which must exist. With `token_uses`, an approved agent export
/// may be used that many times (the examples say once), so that a load test
/// can replay one approval token.
pub fn write_policy_dir(dir: &Path, extra: usize, token_uses: Option<u32>) -> std::io::Result<()> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for entry in std::fs::read_dir(examples)? {
        let entry = entry?;
        // The policy files and the schema, not the test suite in tests/.
        if !entry.file_type()?.is_file() {
            continue;
        }
        let mut text = std::fs::read_to_string(entry.path())?;
        if let Some(uses) = token_uses {
            for id in ["agent-exports-need-approval", "mcp-exports-need-approval"] {
                let guard = format!("@id(\"{id}\")");
                text = text.replace(&guard, &format!("{guard}\n@approval_uses(\"{uses}\")"));
            }
        }
        std::fs::write(dir.join(entry.file_name()), text)?;
    }
    let (schema, policies) = generate(extra);
    std::fs::write(dir.join("synthetic.cedarschema"), schema)?;
    std::fs::write(dir.join("synthetic.cedar"), policies)
}

/// As [`write_policy_dir`], with the generated policies spread over files
/// of `per_file` policies each (`synthetic-0.cedar`, `synthetic-1.cedar`,
/// ...), as a large organisation's teams would keep them: a reload after
/// one team's edit has one file to validate again.
pub fn write_policy_files(
    dir: &Path,
    extra: usize,
    per_file: usize,
    token_uses: Option<u32>,
) -> std::io::Result<()> {
    write_policy_dir(dir, 0, token_uses)?;
    std::fs::remove_file(dir.join("synthetic.cedar"))?;
    std::fs::write(dir.join("synthetic.cedarschema"), schema(extra))?;
    let per_file = per_file.max(1);
    for (n, start) in (0..extra).step_by(per_file).enumerate() {
        let text: String = (start..extra.min(start + per_file)).map(policy).collect();
        std::fs::write(dir.join(format!("synthetic-{n}.cedar")), text)?;
    }
    Ok(())
}

/// A schema fragment declaring the generated actions, and the policies.
pub fn generate(extra: usize) -> (String, String) {
    (schema(extra), (0..extra).map(policy).collect())
}

/// The schema fragment declaring the actions of `extra` generated policies.
fn schema(extra: usize) -> String {
    let actions = extra.div_ceil(5);
    let mut schema = String::new();
    if actions > 1 {
        let names: Vec<String> = (1..actions).map(|j| format!("\"op-{j}\"")).collect();
        let _ = writeln!(
            schema,
            "action {} appliesTo {{\n  principal: [User, Workload, Anonymous],\n  resource: [Dataset],\n  context: RequestContext,\n}};",
            names.join(", ")
        );
    }
    schema
}

/// The `i`th generated policy, with its `@id`.
fn policy(i: usize) -> String {
    let action = match i / 5 {
        0 => "read".to_owned(),
        j => format!("op-{j}"),
    };
    let mut policies = String::new();
    let _ = writeln!(policies, "@id(\"synthetic-{i}\")");
    let _ = writeln!(
        policies,
        "{}",
        match i % 5 {
            0 => format!(
                "permit (principal in Group::\"team-{i}\", action == Action::\"{action}\", resource is Dataset);"
            ),
            1 => format!(
                "permit (principal == User::\"user-{i}\", action == Action::\"{action}\", resource) when {{ context.http.method == \"GET\" }};"
            ),
            2 => format!(
                "forbid (principal, action == Action::\"{action}\", resource == Dataset::\"restricted-{i}\") unless {{ principal in Group::\"team-{i}\" }};"
            ),
            3 => format!(
                "permit (principal in Group::\"team-{i}\", action == Action::\"{action}\", resource) when {{ context.source has address && context.source.address.isInRange(ip(\"10.0.0.0/8\")) }};"
            ),
            _ => format!(
                "forbid (principal, action == Action::\"{action}\", resource) when {{ context.http.query has limit && context.http.query.limit == \"{i}\" }};"
            ),
        }
    );
    policies
}
