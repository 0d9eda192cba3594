//! `POST /access/v1/evaluation` and `/access/v1/evaluations`: each
//! evaluation is mapped, decided by the gate (a span, a metric and, when
//! guarded, an audit entry each) and answered in order.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::answer::{self, Answer};
use super::wire::{self, Evaluation, Semantic};
use super::{EVALUATION_PATH, HOST, Pdp, REQUEST_ID, Received};
use crate::gate::{AccessRequest, Approach, Arrival, BodyState, Call, Outcome};

/// What an AuthZEN call binds as its content-encoding.
const BINDING_DOMAIN: &str = "authzen";

/// The caller's request id (set by the request-id layer).
pub(super) fn request_id(headers: &HeaderMap) -> &str {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The caller's trace, from `traceparent` (or B3) headers.
pub(super) fn parent(pdp: &Pdp, headers: &HeaderMap) -> Option<opentelemetry::Context> {
    struct Headers<'a>(&'a HeaderMap);
    impl opentelemetry::propagation::Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
    let none = Headers(&HeaderMap::new());
    let h = Headers(headers);
    pdp.inner
        .gate
        .traced()
        .then(|| crate::telemetry::propagate::parent_from(&none, &h))
}

/// What one evaluation's gate call is told about the request.
pub(super) struct Asked<'a> {
    pub source: &'a str,
    pub request_id: &'a str,
    pub parent: Option<opentelemetry::Context>,
}

impl Pdp {
    /// Decides one evaluation with `approach`: the mapping refusal, or
    /// the gate's outcome and the fingerprint-bearing bytes it bound.
    pub(super) async fn decide(
        &self,
        e: &Evaluation,
        asked: Asked<'_>,
        approach: Approach<'_>,
    ) -> Outcome {
        let arrival = Arrival::now(asked.parent);
        let loaded = self.inner.policies.current();
        let mapped = super::map::TypeMap(&self.inner.config.types).map(e, &loaded);
        drop(loaded);
        let scheme = if self.inner.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        // What an approval binds besides the mapped request; the body is
        // the bound members, once mapped.
        let call = Call {
            method: "POST",
            host: HOST,
            scheme,
            path: EVALUATION_PATH,
            body: b"",
            content_type: super::JSON,
            // Binds an AuthZEN call apart from every HTTP call: a call
            // through Envoy with a body and any content-encoding but
            // identity is refused before an approval could bind it.
            content_encoding: BINDING_DOMAIN,
            body_state: BodyState::Complete,
            source_address: asked.source,
            request_id: asked.request_id,
            token: None,
            status_of: answer::status_of,
        };
        let mapped = match mapped {
            Ok(m) => m,
            Err(e) => {
                let reason = format!("bad request: {e}");
                return self.inner.gate.reject(&call, reason, arrival);
            }
        };
        let access = AccessRequest {
            call: Call {
                body: &mapped.bound,
                ..call
            },
            arrival,
            mapped: &mapped.request,
            answer_by: None,
            approach,
        };
        self.inner.gate.decide(access).await
    }

    /// An evaluation's answer: decided as described (`Approach::Describe`),
    /// or using the approval named in `context.approval`.
    async fn answer(&self, e: &Evaluation, asked: Asked<'_>) -> Answer {
        let named = e
            .context
            .get(super::map::APPROVAL_MEMBER)
            .and_then(|a| a.get("id"))
            .and_then(Value::as_str);
        let approach = match named {
            Some(id) => Approach::Use(id),
            None => Approach::Describe,
        };
        let outcome = self.decide(e, asked, approach).await;
        answer::of(self, &outcome, named.is_some())
    }
}

pub(super) async fn one(State(pdp): State<Pdp>, req: Request) -> Response {
    let (Received { headers, peer, .. }, value) = match super::receive_json(&pdp, req).await {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let e = match wire::evaluation(&value) {
        Ok(e) => e,
        Err(err) => return super::error(StatusCode::BAD_REQUEST, &err.to_string()),
    };
    single(&pdp, &e, &headers, &peer).await
}

/// One evaluation's HTTP answer: 200 with the decision, or 400 when it
/// cannot be mapped.
async fn single(pdp: &Pdp, e: &Evaluation, headers: &HeaderMap, peer: &str) -> Response {
    let asked = Asked {
        source: peer,
        request_id: request_id(headers),
        parent: parent(pdp, headers),
    };
    match pdp.answer(e, asked).await {
        Answer::Decision(v) => super::json(StatusCode::OK, &v),
        Answer::Invalid(why) => super::error(StatusCode::BAD_REQUEST, &why),
    }
}

pub(super) async fn many(State(pdp): State<Pdp>, req: Request) -> Response {
    let (Received { headers, peer, .. }, value) = match super::receive_json(&pdp, req).await {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let batch = match wire::batch(&value, pdp.inner.config.max_batch) {
        Ok(Some(b)) => b,
        // No `evaluations`: a single evaluation, as the spec says.
        Ok(None) => {
            return match wire::evaluation(&value) {
                Ok(e) => single(&pdp, &e, &headers, &peer).await,
                Err(err) => super::error(StatusCode::BAD_REQUEST, &err.to_string()),
            };
        }
        Err(err @ wire::WireError::TooMany { .. }) => {
            return super::error(StatusCode::PAYLOAD_TOO_LARGE, &err.to_string());
        }
        Err(err) => return super::error(StatusCode::BAD_REQUEST, &err.to_string()),
    };
    let id = request_id(&headers);
    let mut out = Vec::with_capacity(batch.items.len());
    for (i, item) in batch.items.iter().enumerate() {
        // Each item is its own check, with its own span: `<id>/<index>`.
        let item_id = format!("{id}/{i}");
        let decided = match item {
            Ok(e) => {
                let asked = Asked {
                    source: &peer,
                    request_id: &item_id,
                    parent: parent(&pdp, &headers),
                };
                pdp.answer(e, asked).await
            }
            Err(err) => Answer::Invalid(err.to_string()),
        };
        let (v, decision) = match decided {
            Answer::Decision(v) => {
                let d = v["decision"].as_bool().unwrap_or(false);
                (v, d)
            }
            // A failed item is a denial with its error, as the spec has it.
            Answer::Invalid(why) => (
                json!({"decision": false, "context": {"error": {"status": 400, "message": why}}}),
                false,
            ),
        };
        out.push(v);
        let stop = match batch.semantic {
            Semantic::ExecuteAll => false,
            Semantic::DenyOnFirstDeny => !decision,
            Semantic::PermitOnFirstPermit => decision,
        };
        if stop {
            break;
        }
    }
    super::json(StatusCode::OK, &json!({ "evaluations": out }))
}
