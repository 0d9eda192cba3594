//! An [`Outcome`] as Envoy's `CheckResponse`: the status and body the caller
//! gets, and the headers the upstream gets on an allow.

use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, HttpStatusCode, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use serde::Serialize;

use super::AuthzService;
use crate::approval::Approval;
use crate::gate::Outcome;
use crate::request::McpCall;

/// Header naming the approval request in an `approval_required` answer.
pub const APPROVAL_ID_HEADER: &str = "x-countersign-approval-id";
const RETRY_AFTER_SECONDS: &str = "10";

/// `google.rpc.Code` values Envoy reads from `CheckResponse.status`.
const RPC_OK: i32 = 0;
const RPC_INVALID_ARGUMENT: i32 = 3;
const RPC_PERMISSION_DENIED: i32 = 7;
const RPC_UNAVAILABLE: i32 = 14;

/// The body of every denial.
#[derive(Debug, Serialize)]
struct Denial<'a> {
    decision: &'static str,
    reason: &'a str,
    policies: &'a [String],
    request_id: &'a str,
}

/// The body of a call that waits for an approval.
#[derive(Debug, Serialize)]
struct ApprovalRequired<'a> {
    decision: &'static str,
    reason: &'a str,
    approval_id: &'a str,
    status: &'a str,
    /// Until when the request may be approved (RFC 3339).
    expires_at: String,
    approvers: &'a [String],
    quorum: u32,
    policies: &'a [String],
    request_id: &'a str,
    /// Only in the answer that opened the request: present it, on the
    /// identical retry, in the approval token header.
    #[serde(skip_serializing_if = "Option::is_none")]
    approval_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_header: Option<&'a str>,
}

/// The rpc code and HTTP status an outcome gives the caller.
fn codes(o: &Outcome) -> (i32, HttpStatusCode) {
    match o {
        Outcome::Allow { .. } => (RPC_OK, HttpStatusCode::Ok),
        Outcome::Deny { .. } | Outcome::ApprovalRequired { .. } | Outcome::Requestable(_) => {
            (RPC_PERMISSION_DENIED, HttpStatusCode::Forbidden)
        }
        Outcome::Unavailable { .. } => (RPC_UNAVAILABLE, HttpStatusCode::ServiceUnavailable),
        Outcome::Invalid { .. } => (RPC_INVALID_ARGUMENT, HttpStatusCode::BadRequest),
    }
}

/// The HTTP status an outcome gives the caller.
pub(super) fn http_status(o: &Outcome) -> u16 {
    codes(o).1 as u16
}

/// On an MCP request with an `id`, every answer is `200` with a JSON-RPC
/// response: MCP clients raise on an HTTP error and lose its body.
pub(super) fn mcp_status_of(call: &McpCall) -> fn(&Outcome) -> u16 {
    if call.id.is_some() {
        |_| 200
    } else {
        http_status
    }
}

impl AuthzService {
    /// The answer Envoy gets.
    pub(super) fn respond(&self, outcome: &Outcome, request_id: &str) -> CheckResponse {
        let policies: &[String] = match outcome {
            Outcome::Allow { principal } => return self.allow(principal),
            Outcome::ApprovalRequired {
                approval,
                token,
                reason,
            } => return self.approval_required(approval, token.as_deref(), reason, request_id),
            Outcome::Deny { policies, .. } | Outcome::Unavailable { policies, .. } => policies,
            Outcome::Requestable(r) => &r.policies,
            Outcome::Invalid { .. } => &[],
        };
        let (code, status) = codes(outcome);
        deny(code, status, outcome.reason(), policies, request_id)
    }

    /// The answer to an MCP request with an `id`: a JSON-RPC response (see
    /// [`crate::mcp`]), with the usual rpc code for Envoy's stats.
    pub(super) fn respond_mcp(
        &self,
        outcome: &Outcome,
        request_id: &str,
        call: &McpCall,
    ) -> CheckResponse {
        if let Outcome::Allow { principal } = outcome {
            return self.allow(principal);
        }
        let mut headers = Vec::new();
        if let Outcome::ApprovalRequired { approval, .. } = outcome {
            headers.push(header(APPROVAL_ID_HEADER, &approval.id));
        }
        let body = crate::mcp::answer(call, outcome, request_id);
        let code = codes(outcome).0;
        denied(code, HttpStatusCode::Ok, outcome.reason(), headers, body)
    }

    /// A request to an MCP endpoint that cannot be decided: 400 with a
    /// JSON-RPC error, which MCP clients read.
    pub(super) fn respond_mcp_invalid(&self, outcome: &Outcome, request_id: &str) -> CheckResponse {
        let body = crate::mcp::invalid(outcome.reason(), request_id);
        let (code, status) = codes(outcome);
        denied(code, status, outcome.reason(), Vec::new(), body)
    }

    fn allow(&self, principal: &str) -> CheckResponse {
        let headers = match &self.settings.principal_header {
            // Overwrite, so a client-sent copy never reaches the upstream.
            Some(name) => vec![header(name, principal)],
            None => vec![],
        };
        CheckResponse {
            status: Some(rpc::Status {
                code: RPC_OK,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers,
                // The approval token is the caller's secret, not the upstream's.
                headers_to_remove: vec![self.settings.token_header.clone()],
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn approval_required(
        &self,
        a: &Approval,
        token: Option<&str>,
        reason: &str,
        request_id: &str,
    ) -> CheckResponse {
        let body = serde_json::to_string(&ApprovalRequired {
            decision: "approval_required",
            reason,
            approval_id: &a.id,
            status: a.status.as_str(),
            expires_at: crate::clock::rfc3339(a.expires_at),
            approvers: &a.info.approver_groups,
            quorum: a.info.quorum,
            policies: &a.info.policies,
            request_id,
            approval_token: token,
            token_header: token.map(|_| self.settings.token_header.as_str()),
        })
        .unwrap_or_else(|_| r#"{"decision":"approval_required"}"#.to_owned());
        let headers = vec![
            header(APPROVAL_ID_HEADER, &a.id),
            header("retry-after", RETRY_AFTER_SECONDS),
        ];
        let message = "approval required";
        denied(
            RPC_PERMISSION_DENIED,
            HttpStatusCode::Forbidden,
            message,
            headers,
            body,
        )
    }
}

fn deny(
    code: i32,
    status: HttpStatusCode,
    reason: &str,
    policies: &[String],
    request_id: &str,
) -> CheckResponse {
    let body = serde_json::to_string(&Denial {
        decision: "deny",
        reason,
        policies,
        request_id,
    })
    .unwrap_or_else(|_| r#"{"decision":"deny"}"#.to_owned());
    denied(code, status, reason, Vec::new(), body)
}

/// A denied check: its rpc code and message, and the caller's status,
/// JSON body and headers.
fn denied(
    code: i32,
    status: HttpStatusCode,
    message: &str,
    mut headers: Vec<HeaderValueOption>,
    body: String,
) -> CheckResponse {
    headers.insert(0, header("content-type", "application/json"));
    CheckResponse {
        status: Some(rpc::Status {
            code,
            message: message.to_owned(),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: status as i32,
            }),
            headers,
            body,
        })),
        ..Default::default()
    }
}

/// A header that overwrites any copy the request carried.
fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}
