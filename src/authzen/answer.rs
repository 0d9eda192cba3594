//! The gate's outcome as an AuthZEN decision: `{"decision": bool,
//! "context": {...}}`. A denial's context says why as far as
//! `[authzen] explain` allows; a requestable denial carries the Access
//! Request profile's `access_request`; a re-evaluation whose approval does
//! not apply says what to do next.

use serde_json::{Map, Value, json};

use super::{Pdp, REQUESTS_PATH};
use crate::approval::now_secs;
use crate::config::Explain;
use crate::gate::{Outcome, Requestable, Unapplied};

/// One evaluation's answer.
#[derive(Debug)]
pub(super) enum Answer {
    /// 200 with this body.
    Decision(Value),
    /// It cannot be decided as sent: 400 (or a failed batch item).
    Invalid(String),
}

/// The status the trail records for an outcome: decisions are 200.
pub(super) fn status_of(o: &Outcome) -> u16 {
    match o {
        Outcome::Invalid { .. } => 400,
        _ => 200,
    }
}

/// The profile's reason code of a requestable denial.
pub const APPROVAL_REQUIRED: &str = "approval_required";

/// `outcome` as an answer; `named`: the request named an approval (a
/// re-evaluation), so a denial says what to do next.
pub(super) fn of(pdp: &Pdp, outcome: &Outcome, named: bool) -> Answer {
    let explain = pdp.inner.config.explain;
    let denied = |reason: &str, policies: &[String]| {
        let mut context = Map::new();
        if named {
            // Current policy denies whatever the approval: asking again
            // will not help.
            context.insert("reason".into(), "policy_denied".into());
            context.insert("next_action".into(), "none".into());
            if explain != Explain::None {
                context.insert("message".into(), reason.into());
            }
        } else if explain != Explain::None {
            context.insert("reason".into(), reason.into());
        }
        if explain == Explain::Policies && !policies.is_empty() {
            context.insert("policies".into(), json!(policies));
        }
        decision(false, context)
    };
    match outcome {
        Outcome::Allow { .. } => Answer::Decision(json!({ "decision": true })),
        Outcome::Deny { reason, policies } => Answer::Decision(denied(reason, policies)),
        Outcome::Invalid { reason } => Answer::Invalid(reason.clone()),
        Outcome::Unavailable { reason, .. } => {
            Answer::Decision(decision(false, error_context(503, reason)))
        }
        // The evaluation path never opens a request; an access request
        // that opened one is answered by `requests`.
        Outcome::ApprovalRequired {
            reason, approval, ..
        } => Answer::Decision(denied(reason, &approval.info.policies)),
        Outcome::Requestable(r) => Answer::Decision(requestable(pdp, r, explain)),
    }
}

fn decision(allowed: bool, context: Map<String, Value>) -> Value {
    if context.is_empty() {
        json!({ "decision": allowed })
    } else {
        json!({ "decision": allowed, "context": context })
    }
}

fn error_context(status: u16, message: &str) -> Map<String, Value> {
    let mut context = Map::new();
    context.insert(
        "error".into(),
        json!({ "status": status, "message": message }),
    );
    context
}

/// A requestable denial (the profile's `access_request`, bound by an
/// evaluation id), or a re-evaluation whose approval does not apply.
fn requestable(pdp: &Pdp, r: &Requestable, explain: Explain) -> Value {
    let mut context = Map::new();
    let (code, next) = match r.unapplied.as_ref().map(|(_, why)| *why) {
        None => (APPROVAL_REQUIRED, None),
        Some(Unapplied::Unknown | Unapplied::Unbound) => ("approval_unverifiable", Some("none")),
        Some(Unapplied::OutOfScope) => ("out_of_scope", Some("request")),
        Some(Unapplied::Spent) => ("approval_expired", Some("request")),
        Some(Unapplied::Pending) => ("approval_pending", Some("retry")),
        Some(Unapplied::Denied) => ("approval_denied", Some("none")),
    };
    context.insert("reason".into(), code.into());
    if let Some(next) = next {
        context.insert("next_action".into(), next.into());
        if next == "retry" {
            context.insert("retry_after".into(), 5.into());
        }
    }
    if explain != Explain::None {
        context.insert("message".into(), r.reason().into());
    }
    if explain == Explain::Policies {
        context.insert("policies".into(), json!(r.policies));
    }
    // A fresh hint whenever asking (again) can help.
    if next.is_none() || next == Some("request") {
        let now = now_secs();
        let window = pdp.inner.config.binding_window.as_secs() as i64;
        let expires_at = now + window;
        let id = pdp.inner.binder.issue(&r.fingerprint, expires_at);
        context.insert("evaluation_id".into(), id.into());
        context.insert("evaluated_at".into(), crate::clock::rfc3339(now).into());
        context.insert(
            "access_request".into(),
            json!({
                "endpoint": pdp.url(REQUESTS_PATH),
                "expires_at": crate::clock::rfc3339(expires_at),
            }),
        );
    }
    decision(false, context)
}
