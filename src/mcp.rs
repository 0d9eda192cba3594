//! Answers on MCP endpoints: an [`Outcome`] as the JSON-RPC response an MCP
//! client hands to its caller (and an agent to its model), instead of an
//! HTTP error the SDKs turn into an exception that loses the reason.
//!
//! A refused `tools/call` is a tool result with `isError: true` whose text
//! says what was refused, why, and what to do next; its `_meta` carries the
//! same as data. Any other refused request is a JSON-RPC error
//! ([`REFUSED`]), as the AuthZEN MCP binding does.

use serde_json::{Value, json};

use crate::approval::Approval;
use crate::gate::Outcome;
use crate::request::McpCall;

/// JSON-RPC error code of a refused request other than a tool call.
pub const REFUSED: i64 = -32001;
/// JSON-RPC error code of a request that cannot be decided as sent.
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC error code of a body that is not one readable message.
pub const INVALID_REQUEST: i64 = -32600;
/// Key of countersign's data in a tool result's `_meta`.
pub const META_KEY: &str = "countersign/decision";

/// The JSON-RPC response to `call` for an outcome other than an allow.
pub fn answer(call: &McpCall, outcome: &Outcome, request_id: &str) -> String {
    let id = call.id.clone().unwrap_or(Value::Null);
    let data = data(outcome, request_id);
    let text = text(call, outcome, request_id);
    let message = match outcome {
        Outcome::Invalid { .. } => json!({
            "jsonrpc": "2.0", "id": id,
            "error": { "code": INVALID_PARAMS, "message": text, "data": data },
        }),
        _ if call.is_tool_call() => json!({
            "jsonrpc": "2.0", "id": id,
            "result": {
                "content": [{ "type": "text", "text": text }],
                "isError": true,
                // What the 2026 protocol revision expects of a final result.
                "resultType": "complete",
                "_meta": { META_KEY: data },
            },
        }),
        _ => json!({
            "jsonrpc": "2.0", "id": id,
            "error": { "code": REFUSED, "message": text, "data": data },
        }),
    };
    message.to_string()
}

/// The JSON-RPC error for a request that is not one countersign can read
/// (its `id` unknown, so `null`).
pub fn invalid(reason: &str, request_id: &str) -> String {
    json!({
        "jsonrpc": "2.0", "id": null,
        "error": {
            "code": INVALID_REQUEST,
            "message": format!("countersign cannot decide this request: {reason} (request {request_id})"),
            "data": { "decision": "invalid", "reason": reason, "request_id": request_id },
        },
    })
    .to_string()
}

/// What a program reads: the decision, and for an approval its handle.
fn data(outcome: &Outcome, request_id: &str) -> Value {
    match outcome {
        Outcome::ApprovalRequired {
            approval, reason, ..
        } => json!({
            "decision": "approval_required",
            "reason": reason,
            "approval_id": approval.id,
            "status": approval.status.as_str(),
            "expires_at": crate::clock::rfc3339(approval.expires_at),
            "approvers": approval.info.approver_groups,
            "quorum": approval.info.quorum,
            "policies": approval.info.policies,
            "retry": "the identical call, once approved",
            "request_id": request_id,
        }),
        Outcome::Deny { reason, policies } | Outcome::Unavailable { reason, policies } => json!({
            "decision": if matches!(outcome, Outcome::Deny { .. }) { "deny" } else { "unavailable" },
            "reason": reason,
            "policies": policies,
            "request_id": request_id,
        }),
        Outcome::Invalid { reason } => json!({
            "decision": "invalid", "reason": reason, "request_id": request_id,
        }),
        // Only AuthZEN asks for these; an MCP call is refused.
        Outcome::Requestable(r) => json!({
            "decision": "deny", "reason": r.reason(), "policies": r.policies, "request_id": request_id,
        }),
        Outcome::Allow { .. } => json!({ "decision": "allow" }),
    }
}

/// What a person (or a model) reads.
fn text(call: &McpCall, outcome: &Outcome, request_id: &str) -> String {
    let what = match &call.tool {
        Some(tool) => format!("the call to tool `{tool}` on MCP server `{}`", call.server),
        None => format!("`{}` on MCP server `{}`", call.method, call.server),
    };
    match outcome {
        Outcome::ApprovalRequired { approval, .. } => approval_text(&what, approval),
        Outcome::Deny { reason, policies } => format!(
            "countersign refused {what}: {reason}.{} Nothing ran. (request {request_id})",
            policy_list(policies)
        ),
        Outcome::Requestable(r) => format!(
            "countersign refused {what}: {}.{} Nothing ran. (request {request_id})",
            r.reason(),
            policy_list(&r.policies)
        ),
        Outcome::Unavailable { reason, .. } => format!(
            "countersign could not decide {what}: {reason}. Nothing ran. (request {request_id})"
        ),
        Outcome::Invalid { reason } => {
            format!("countersign cannot decide {what} as sent: {reason} (request {request_id})")
        }
        Outcome::Allow { .. } => String::new(),
    }
}

fn approval_text(what: &str, a: &Approval) -> String {
    let who = if a.info.approver_groups.is_empty() {
        "an approver".to_owned()
    } else {
        format!("a member of {}", a.info.approver_groups.join(" or "))
    };
    let votes = match a.info.quorum {
        1 => String::new(),
        n => format!(" ({n} approvals needed)"),
    };
    format!(
        "{what} needs a human approval before it runs. Nothing ran. Approval request `{id}` is {status}; {who} may approve it{votes} until {until}. Tell the user that approval request `{id}` is waiting. Once it is approved, call the same tool again with exactly the same arguments: it will run once. A call with other arguments needs its own approval.",
        id = a.id,
        status = a.status.as_str(),
        until = crate::clock::rfc3339(a.expires_at),
    )
}

fn policy_list(policies: &[String]) -> String {
    if policies.is_empty() {
        String::new()
    } else {
        format!(" Deciding policies: {}.", policies.join(", "))
    }
}
