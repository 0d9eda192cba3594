//! The Access Request profile's endpoints: `POST /access/v1/requests`
//! opens (or finds) the approval request of a requestable denial, bound by
//! its evaluation id; `GET /access/v1/requests/{id}` reports its task.
//! Approvers, quorum, separation of duties, webhooks and audit are the
//! approval lifecycle's, as for calls through Envoy.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::binding::Binder;
use super::evaluate::{Asked, parent, request_id};
use super::wire::{self, Evaluation};
use super::{HOST, Pdp, REQUESTS_PATH, Received};
use crate::approval::{Approval, Ruling, Status, StoreError, now_secs};
use crate::gate::{Approach, Outcome, Unapplied};

const PROBLEM: &str = "urn:openid:authzen:access-request:error:";

/// An `application/problem+json` answer with one of the profile's types.
fn problem(status: StatusCode, kind: &str, title: &str, detail: &str) -> Response {
    let body = json!({
        "type": format!("{PROBLEM}{kind}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r
}

fn bad_request(detail: &str) -> Response {
    super::error(StatusCode::BAD_REQUEST, detail)
}

fn unbound(detail: &str) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "invalid_denial_binding",
        "The access request cannot be bound to the denial",
        detail,
    )
}

/// The submission: the denied evaluation and its `denial.evaluation_id`.
fn submission(value: &Value) -> Result<(Evaluation, String), Box<Response>> {
    let obj = value
        .as_object()
        .ok_or_else(|| Box::new(bad_request("the request body must be a JSON object")))?;
    if obj.contains_key("items") {
        return Err(Box::new(problem(
            StatusCode::BAD_REQUEST,
            "not_requestable",
            "Bundled access requests are not supported",
            "submit one access request per denied evaluation, without `items`",
        )));
    }
    let e = wire::evaluation(value).map_err(|e| Box::new(bad_request(&e.to_string())))?;
    let denial = obj
        .get("denial")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            Box::new(unbound(
                "`denial` (with the `evaluation_id` of the denied evaluation) is required",
            ))
        })?;
    let id = denial
        .get("evaluation_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Box::new(unbound("`denial.evaluation_id` is required: this PDP binds denials by evaluation id, not by binding token"))
        })?;
    Ok((e, id.to_owned()))
}

pub(super) async fn submit(State(pdp): State<Pdp>, req: Request) -> Response {
    let (Received { headers, peer, .. }, value) = match super::receive_json(&pdp, req).await {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let (e, evaluation_id) = match submission(&value) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match Binder::expiry(&evaluation_id) {
        Ok(expires_at) if now_secs() > expires_at => {
            return problem(
                StatusCode::GONE,
                "expired_denial",
                "The requestable denial has expired",
                "evaluate again for a fresh `access_request`",
            );
        }
        Ok(_) => {}
        Err(err) => return unbound(&err.to_string()),
    }
    let binder = pdp.inner.binder.clone();
    let binds = move |fingerprint: &str| binder.binds(&evaluation_id, fingerprint);
    let asked = Asked {
        source: &peer,
        request_id: request_id(&headers),
        parent: parent(&pdp, &headers),
    };
    let outcome = pdp
        .decide(&e, asked, Approach::Submit { binds: &binds })
        .await;
    match outcome {
        Outcome::ApprovalRequired { approval, .. } => {
            let status = if approval.status == Status::Pending {
                StatusCode::ACCEPTED
            } else {
                StatusCode::CREATED
            };
            let location = pdp.url(&format!("{REQUESTS_PATH}/{}", approval.id));
            let mut r = super::json(status, &task(&pdp, &approval));
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Outcome::Requestable(r)
            if r.unapplied
                .as_ref()
                .is_some_and(|(_, w)| *w == Unapplied::Unbound) =>
        {
            unbound(
                "`denial.evaluation_id` was not issued for this subject, action, resource and context",
            )
        }
        Outcome::Allow { .. } => problem(
            StatusCode::BAD_REQUEST,
            "not_requestable",
            "Access is not requestable",
            "this access is allowed now: evaluate it again",
        ),
        Outcome::Invalid { reason } => bad_request(&reason),
        Outcome::Unavailable { reason, .. } => {
            super::error(StatusCode::SERVICE_UNAVAILABLE, &reason)
        }
        Outcome::Deny { reason, .. } => problem(
            StatusCode::BAD_REQUEST,
            "not_requestable",
            "Access is not requestable",
            &reason,
        ),
        Outcome::Requestable(r) => problem(
            StatusCode::BAD_REQUEST,
            "not_requestable",
            "Access is not requestable",
            r.reason(),
        ),
    }
}

pub(super) async fn status(State(pdp): State<Pdp>, Path(id): Path<String>) -> Response {
    let unknown = || {
        problem(
            StatusCode::NOT_FOUND,
            "unknown_task",
            "Unknown task",
            "no access request has this id",
        )
    };
    match pdp.inner.approvals.get(&id).await {
        // Only requests opened through this front door are its tasks.
        Ok(a) if a.info.host == HOST => super::json(StatusCode::OK, &task(&pdp, &a)),
        Ok(_) | Err(StoreError::NotFound(_)) => unknown(),
        Err(e) => {
            tracing::warn!("approval store: {e}");
            super::error(StatusCode::SERVICE_UNAVAILABLE, crate::gate::UNAVAILABLE)
        }
    }
}

/// The profile's task for approval request `a`, with its result once
/// approved: re-evaluate, naming the approval in `context.approval`.
fn task(pdp: &Pdp, a: &Approval) -> Value {
    let status = match a.status {
        Status::Pending => "pending",
        // A used approval was approved; its uses are the PDP's to count.
        Status::Approved | Status::Consumed => "approved",
        Status::Denied => "denied",
        Status::Expired => "expired",
        Status::Revoked => "cancelled",
    };
    let mut out = json!({
        "task": {
            "id": a.id,
            "status": status,
            "status_endpoint": pdp.url(&format!("{REQUESTS_PATH}/{}", a.id)),
            "expires_at": crate::clock::rfc3339(a.expires_at),
            "progress": {
                "total_steps": a.info.quorum,
                "current_step": (a.approvals() as u32 + 1).min(a.info.quorum),
            },
        },
    });
    if status == "approved" {
        let approved_at = a
            .votes
            .iter()
            .filter(|v| v.verdict == Ruling::Approve)
            .map(|v| v.at)
            .max();
        let mut approval = json!({
            "id": a.id,
            "approved_until": crate::clock::rfc3339(a.use_until),
        });
        if let Some(at) = approved_at {
            approval["approved_at"] = crate::clock::rfc3339(at).into();
        }
        out["result"] = json!({ "mode": "reevaluate", "approval": approval });
    }
    out
}
