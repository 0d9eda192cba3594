//! The Envoy `Authorization` service: `CheckRequest` -> domain request ->
//! decision -> `CheckResponse`. The only module that sees Envoy's types.

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue,
    HeaderValueOption, HttpResponse, HttpStatus, HttpStatusCode, OkHttpResponse,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest as EnvoyHttp;
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use envoy_types::pb::google::rpc;
use serde::Serialize;
use serde_json::{Map, Value};

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{Span as _, SpanContext};
use opentelemetry::{Context, KeyValue};

use crate::approval::notify::Notifier;
use crate::approval::store::{CheckRef, Consumed};
use crate::approval::{
    Approval, ApprovalParams, FingerprintInput, Mode, NewApproval, RedisStore, RequestInfo, Status,
    StoreError,
};
use crate::metrics::{DecisionKind, Metrics};
use crate::policy::{Decision, PolicyStore, Verdict};
use crate::request::{HttpRequest, MappedRequest, Mapper, MappingError};
use crate::telemetry::{Telemetry, attr};

/// Metadata namespace where Envoy's `jwt_authn` filter puts verified claims.
pub const JWT_NAMESPACE: &str = "envoy.filters.http.jwt_authn";

/// `google.rpc.Code` values Envoy reads from `CheckResponse.status`.
const RPC_OK: i32 = 0;
const RPC_INVALID_ARGUMENT: i32 = 3;
const RPC_PERMISSION_DENIED: i32 = 7;

/// A CheckRequest that cannot be decided; answered with 400.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CheckError {
    #[error("the check request carries no {0}")]
    Missing(&'static str),
    #[error("the verified JWT claims in `{JWT_NAMESPACE}` metadata are not a JSON object")]
    ClaimsNotObject,
    #[error(transparent)]
    Mapping(#[from] MappingError),
}

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
    reason: String,
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

/// Settings the service reads per request.
#[derive(Debug, Clone)]
pub struct AuthzSettings {
    /// Key under [`JWT_NAMESPACE`] holding the claims.
    pub jwt_metadata_key: String,
    /// Header that names the principal to the upstream on allow.
    pub principal_header: Option<String>,
    /// Header carrying an approval token on a retried call.
    pub token_header: String,
    /// Longest a hold-mode call waits; below Envoy's timeout on held routes.
    pub hold_max: Duration,
    /// Longest the approval store may take on one check (outside a hold),
    /// so that the caller gets countersign's answer before Envoy's timeout.
    pub store_budget: Duration,
}

impl AuthzSettings {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Self {
            jwt_metadata_key: c.jwt_metadata_key.clone(),
            principal_header: c.principal_header.clone(),
            token_header: c.token_header.clone(),
            hold_max: c.hold_max,
            store_budget: c.store_budget,
        }
    }
}

/// Envoy's ext_authz v3 `Authorization` service.
#[derive(Debug, Clone)]
pub struct AuthzService {
    mapper: Arc<Mapper>,
    policies: Arc<PolicyStore>,
    approvals: Arc<RedisStore>,
    settings: Arc<AuthzSettings>,
    notifier: Option<Arc<Notifier>>,
    telemetry: Option<Telemetry>,
    metrics: Metrics,
    /// Set on shutdown: holds end at once (see [`Self::drain`]).
    draining: Arc<tokio::sync::watch::Sender<bool>>,
}

impl AuthzService {
    /// One ext_authz call as it came off the wire.
    pub async fn check(&self, request: tonic::Request<wire::Decoded>) -> CheckResponse {
        // Denials, bad input included, are answers, not RPC errors: Envoy
        // then shows the caller our status and body rather than a bare 403.
        let check = match request.get_ref() {
            Ok(check) => check,
            Err(e) => {
                tracing::debug!(error = %e, "check request does not decode");
                self.metrics.check(DecisionKind::Deny, Duration::ZERO);
                return deny(
                    RPC_INVALID_ARGUMENT,
                    HttpStatusCode::BadRequest,
                    &format!("bad request: the check request does not decode: {e}"),
                    &[],
                    "",
                );
            }
        };
        // Envoy says how long it will wait; a held call must answer before.
        let envoy_waits = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let grpc = Metadata(request.metadata());
        self.decide_within(check, envoy_waits, &grpc).await
    }
}

/// What a check comes to.
enum Answer {
    Allow {
        principal: String,
    },
    Deny(Decision),
    /// Guarded, and the approval presented or found does not allow it.
    Refused {
        reason: String,
        policies: Vec<String>,
    },
    ApprovalRequired {
        approval: Box<Approval>,
        token: Option<String>,
        reason: String,
    },
    /// Approvals needed but the store is unreachable: fail closed, visibly.
    Unavailable {
        reason: String,
        policies: Vec<String>,
    },
}

impl AuthzService {
    pub fn new(
        mapper: Arc<Mapper>,
        policies: Arc<PolicyStore>,
        approvals: Arc<RedisStore>,
        settings: AuthzSettings,
    ) -> Self {
        Self {
            mapper,
            policies,
            approvals,
            settings: Arc::new(settings),
            notifier: None,
            telemetry: None,
            metrics: Metrics::default(),
            draining: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }

    /// Ends every hold, now and from now on: a held call is answered at once
    /// as in deny mode (its approval id, and the token for a retry), rather
    /// than keeping shutdown waiting while this sidecar's admin API is gone.
    pub fn drain(&self) {
        self.draining.send_replace(true);
    }

    /// Records a span per check and per approval event.
    pub fn with_telemetry(mut self, telemetry: Option<Telemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Counts checks and approval events.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Announces new approval requests to the webhooks.
    pub fn with_notifier(mut self, notifier: Arc<Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// Decides one check. Never fails: anything that prevents a decision is
    /// a denial.
    pub async fn decide(&self, check: &CheckRequest) -> CheckResponse {
        self.decide_within(check, None, &NoMetadata).await
    }

    /// As [`Self::decide`], for a caller that waits at most `caller_waits`;
    /// `grpc` is the call's metadata, where Envoy puts its trace context.
    pub async fn decide_within(
        &self,
        check: &CheckRequest,
        caller_waits: Option<Duration>,
        grpc: &(dyn opentelemetry::propagation::Extractor + Sync),
    ) -> CheckResponse {
        let started = tokio::time::Instant::now();
        let http = check
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let request_id = http.map_or("", request_id);
        let answer_by = caller_waits.map(|d| started + d.saturating_sub(HOLD_MARGIN));
        let mut facts = Facts {
            parent: self.telemetry.as_ref().map(|_| {
                let empty = HashMap::new();
                crate::telemetry::parent_from(grpc, http.map_or(&empty, |h| &h.headers))
            }),
            started: SystemTime::now(),
            ..Facts::default()
        };
        let answer = self.evaluate(check, answer_by, &mut facts).await;
        let mut kind = match &answer {
            Ok(Answer::Allow { .. }) => DecisionKind::Allow,
            Ok(Answer::ApprovalRequired { .. }) => DecisionKind::ApprovalRequired,
            Ok(Answer::Unavailable { .. }) => DecisionKind::Error,
            Ok(Answer::Deny(_) | Answer::Refused { .. }) | Err(_) => DecisionKind::Deny,
        };
        let mut response = self.respond(answer, request_id);
        let mut audited = None;
        if facts.audited_by_store {
            audited = Some(true);
        // Store down (`Error`): the answer is already a 503 refusal, and
        // writing would only delay it past Envoy's deadline.
        } else if facts.guarded && kind != DecisionKind::Error {
            // One budget per check: what the store calls left of it (or, after
            // a hold, of the caller's deadline).
            let until = match answer_by {
                Some(by) if facts.held => by,
                Some(by) => by.min(started + self.settings.store_budget),
                // Held with no deadline from the caller: the budget starts
                // when the hold ends, not when the check arrived.
                None if facts.held => tokio::time::Instant::now() + self.settings.store_budget,
                None => started + self.settings.store_budget,
            };
            let written = self
                .audit(&facts, kind, &response, request_id, http, until)
                .await;
            // An audit device that cannot write refuses what it would allow.
            if !written && kind == DecisionKind::Allow {
                kind = DecisionKind::Error;
                response = deny(
                    RPC_UNAVAILABLE,
                    HttpStatusCode::ServiceUnavailable,
                    AUDIT_UNAVAILABLE,
                    &facts.policies,
                    request_id,
                );
            }
            audited = Some(written);
        }
        self.metrics.check(kind, started.elapsed());
        tracing::debug!(
            principal = %facts.principal,
            action = %facts.action,
            resource = %facts.resource,
            decision = kind.as_str(),
            policies = ?facts.policies,
            request_id,
            "check"
        );
        if self.telemetry.is_some() {
            self.end_span(&mut facts, kind, &response, audited, http);
        }
        response
    }

    /// The answer Envoy gets.
    fn respond(&self, answer: Result<Answer, CheckError>, request_id: &str) -> CheckResponse {
        match answer {
            Ok(Answer::Allow { principal }) => self.allow(&principal),
            Ok(Answer::Deny(decision)) => deny(
                RPC_PERMISSION_DENIED,
                HttpStatusCode::Forbidden,
                &decision.reason(),
                &decision.policies,
                request_id,
            ),
            Ok(Answer::Refused { reason, policies }) => deny(
                RPC_PERMISSION_DENIED,
                HttpStatusCode::Forbidden,
                &reason,
                &policies,
                request_id,
            ),
            Ok(Answer::ApprovalRequired {
                approval,
                token,
                reason,
            }) => self.approval_required(&approval, token.as_deref(), reason, request_id),
            Ok(Answer::Unavailable { reason, policies }) => deny(
                RPC_UNAVAILABLE,
                HttpStatusCode::ServiceUnavailable,
                &reason,
                &policies,
                request_id,
            ),
            Err(e) => {
                tracing::debug!(error = ?e, "bad request");
                deny(
                    RPC_INVALID_ARGUMENT,
                    HttpStatusCode::BadRequest,
                    &format!("bad request: {e}"),
                    &[],
                    request_id,
                )
            }
        }
    }

    /// Appends the decision on a guarded action to the audit stream.
    async fn audit(
        &self,
        facts: &Facts,
        kind: DecisionKind,
        response: &CheckResponse,
        request_id: &str,
        http: Option<&EnvoyHttp>,
        until: tokio::time::Instant,
    ) -> bool {
        let path = http.map_or("", |h| h.path.as_str());
        let method = http.map_or("", |h| h.method.as_str());
        let mut fields =
            decision_fields(facts, kind, http_status(response), method, path, request_id);
        fields.push(("approval_id", facts.approval_id.clone()));
        fields.push(("approval_status", facts.approval_status.to_owned()));
        // Beside its approval's events, when it has one.
        let place = match facts.approval_id.as_str() {
            "" => request_id,
            id => id,
        };
        let written = tokio::time::timeout_at(
            until,
            self.approvals.append_audit(place, &borrowed(&fields)),
        )
        .await;
        match written {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                self.audit_failed(&e.to_string());
                false
            }
            Err(_) => {
                self.audit_failed("timed out");
                false
            }
        }
    }

    fn audit_failed(&self, why: &str) {
        tracing::warn!("audit stream not written, guarded call refused: {why}");
        self.metrics.redis_error();
        self.metrics.audit_failure();
    }

    /// Starts the check span once the request is mapped and decided: only
    /// then is it known whether it must never be sampled out.
    fn start_span(&self, facts: &mut Facts, http: &EnvoyHttp, source: &str) {
        let Some(t) = &self.telemetry else { return };
        let path = http
            .path
            .split_once('?')
            .map_or(http.path.as_str(), |p| p.0);
        let mut attributes = vec![
            KeyValue::new(attr::METHOD, http.method.clone()),
            KeyValue::new(attr::PATH, path.to_owned()),
            KeyValue::new(attr::HOST, http.host.clone()),
            KeyValue::new(attr::SCHEME, http.scheme.clone()),
            KeyValue::new(attr::REQUEST_ID, request_id(http).to_owned()),
            KeyValue::new(attr::GUARDED, facts.guarded),
        ];
        if !source.is_empty() {
            attributes.push(KeyValue::new(attr::CLIENT, source.to_owned()));
        }
        if !facts.principal.is_empty() {
            attributes.extend([
                KeyValue::new(attr::PRINCIPAL, facts.principal.clone()),
                KeyValue::new(attr::ACTION, facts.action.clone()),
                KeyValue::new(attr::RESOURCE, facts.resource.clone()),
            ]);
        }
        if !facts.on_behalf_of.is_empty() {
            attributes.push(KeyValue::new(
                attr::ON_BEHALF_OF,
                facts.on_behalf_of.clone(),
            ));
        }
        let parent = facts.parent.take().unwrap_or_default();
        let span = t.start_check(&parent, facts.started, facts.guarded, attributes);
        facts.traceparent = crate::telemetry::traceparent(span.span_context());
        facts.span = Some(span);
    }

    fn end_span(
        &self,
        facts: &mut Facts,
        kind: DecisionKind,
        response: &CheckResponse,
        audited: Option<bool>,
        http: Option<&EnvoyHttp>,
    ) {
        if facts.span.is_none() {
            // Refused before mapping: record what Envoy sent.
            let empty = EnvoyHttp::default();
            self.start_span(facts, http.unwrap_or(&empty), "");
        }
        let Some(span) = facts.span.take() else {
            return;
        };
        let mut attributes = vec![
            KeyValue::new(attr::DECISION, kind.as_str()),
            KeyValue::new(attr::STATUS_CODE, i64::from(http_status(response))),
            KeyValue::new(attr::POLICIES, crate::telemetry::strings(&facts.policies)),
        ];
        if let Some(reason) = response.status.as_ref().map(|s| s.message.clone())
            && !reason.is_empty()
        {
            attributes.push(KeyValue::new(attr::REASON, reason));
        }
        if !facts.error_policies.is_empty() {
            attributes.push(KeyValue::new(
                attr::ERROR_POLICIES,
                crate::telemetry::strings(&facts.error_policies),
            ));
        }
        if !facts.approval_id.is_empty() {
            attributes.push(KeyValue::new(attr::APPROVAL_ID, facts.approval_id.clone()));
            attributes.push(KeyValue::new(attr::APPROVAL_STATUS, facts.approval_status));
        }
        if let Some(w) = audited {
            attributes.push(KeyValue::new(attr::AUDIT_WRITTEN, w));
        }
        crate::telemetry::end_check(span, attributes, kind == DecisionKind::Error);
    }

    /// An approval event inside this check: a span (child of the check span,
    /// linked to the check that opened the request) and a count.
    fn approval_event(
        &self,
        event: &str,
        facts: &Facts,
        opened_by: Option<&SpanContext>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) {
        self.metrics.approval_event(event);
        if let Some(t) = &self.telemetry {
            let here = facts.span.as_ref().map(|s| s.span_context().clone());
            // The opening check is this one for `requested`.
            let opened_by = opened_by.or(here.as_ref().filter(|_| event == "requested"));
            t.approval_event(event, here.as_ref(), opened_by, attributes());
        }
    }

    async fn evaluate(
        &self,
        check: &CheckRequest,
        answer_by: Option<tokio::time::Instant>,
        facts: &mut Facts,
    ) -> Result<Answer, CheckError> {
        let attrs = check
            .attributes
            .as_ref()
            .ok_or(CheckError::Missing("attributes"))?;
        let http = attrs
            .request
            .as_ref()
            .and_then(|r| r.http.as_ref())
            .ok_or(CheckError::Missing("HTTP request attributes"))?;
        if http.method.is_empty() {
            return Err(CheckError::Missing("HTTP method"));
        }
        let claims = attrs
            .metadata_context
            .as_ref()
            .and_then(|m| m.filter_metadata.get(JWT_NAMESPACE))
            .and_then(|ns| ns.fields.get(&self.settings.jwt_metadata_key))
            .map(claims_object)
            .transpose()?;
        let source = attrs.source.as_ref();
        let source_address = source
            .and_then(|s| s.address.as_ref())
            .and_then(|a| a.address.as_ref())
            .and_then(|a| match a {
                envoy_types::ext_authz::v3::pb::Address::SocketAddress(s) => {
                    Some(s.address.as_str())
                }
                _ => None,
            })
            .unwrap_or("");
        let req = HttpRequest {
            method: &http.method,
            path: &http.path,
            host: &http.host,
            scheme: &http.scheme,
            headers: &http.headers,
            body: body(http),
            source_address,
            source_principal: source.map_or("", |s| s.principal.as_str()),
            jwt_claims: claims.as_ref(),
            request_id: request_id(http),
            time: attrs
                .request
                .as_ref()
                .and_then(|r| r.time.as_ref())
                .map(|t| t.seconds),
        };
        let mapped = self.mapper.map(&req)?;
        let (verdict, guarded) = self.policies.decide_guarded(
            |granted| mapped.request(granted),
            &mapped.entities,
            &mapped.action,
        )?;
        facts.guarded = guarded;
        // Only what the trail needs, and only when there is a trail: the
        // unguarded path without telemetry allocates nothing here.
        if facts.guarded || self.telemetry.is_some() || tracing::enabled!(tracing::Level::DEBUG) {
            facts.principal = mapped.principal.to_string();
            facts.action = mapped.action.to_string();
            facts.resource = mapped.resource.to_string();
            if let Some(o) = &mapped.on_behalf_of {
                facts.on_behalf_of = o.to_string();
            }
            // Policy ids only: Cedar's error text can quote request values.
            let d = verdict_decision(&verdict);
            facts.policies.clone_from(&d.policies);
            if !d.errors.is_empty() {
                facts.error_policies.clone_from(&d.policies);
            }
        }
        self.start_span(facts, http, source_address);
        Ok(match verdict {
            Verdict::Allow(_) => Answer::Allow {
                principal: mapped.principal.to_string(),
            },
            Verdict::Deny(d) => Answer::Deny(d),
            Verdict::Approvable { denial, params, .. } => {
                self.approvable(&req, &mapped, denial, params, answer_by, facts)
                    .await
            }
        })
    }

    /// A call that an approval would allow: use the approval it presents, or
    /// open (or find) its approval request and hold or refuse it.
    async fn approvable(
        &self,
        req: &HttpRequest<'_>,
        mapped: &MappedRequest,
        denial: Decision,
        params: ApprovalParams,
        answer_by: Option<tokio::time::Instant>,
        facts: &mut Facts,
    ) -> Answer {
        let refuse = |reason: String| Answer::Refused {
            reason,
            policies: denial.policies.clone(),
        };
        let unavailable = |e: StoreError| {
            // The detail (hosts, Redis errors) is for operators, not callers.
            tracing::warn!("approval store: {e}");
            self.metrics.redis_error();
            Answer::Unavailable {
                reason: UNAVAILABLE.to_owned(),
                policies: denial.policies.clone(),
            }
        };
        // The approval must bind the body; a body announced but not sent
        // would leave it out of the fingerprint.
        let announced = req
            .headers
            .get("content-length")
            .is_some_and(|v| v.trim() != "0")
            || req.headers.contains_key("transfer-encoding");
        if req
            .headers
            .get(crate::request::PARTIAL_BODY_HEADER)
            .is_some_and(|v| v == "true")
        {
            return refuse(
                "this call needs an approval bound to its whole body, but Envoy sent only part of it".into(),
            );
        }
        if req.body.is_empty() && announced {
            return refuse(
                "this call needs an approval bound to its body, but Envoy did not send the body: enable `with_request_body` on this route".into(),
            );
        }
        let principal = mapped.principal.to_string();
        let action = mapped.action.to_string();
        let resource = mapped.resource.to_string();
        let (path, query) = req.path.split_once('?').unwrap_or((req.path, ""));
        let on_behalf_of = mapped.on_behalf_of.as_ref().map(ToString::to_string);
        let fingerprint = FingerprintInput {
            principal: &principal,
            on_behalf_of: on_behalf_of.as_deref().unwrap_or_default(),
            action: &action,
            resource: &resource,
            method: req.method,
            host: req.host,
            path,
            query,
            body: req.body,
        }
        .digest();
        let budget = self.settings.store_budget;
        let traceparent = facts.traceparent.clone();
        // The allow a use of the approval leads to: recorded by the script
        // that takes the use, so that a use is never spent unrecorded.
        let allow = decision_fields(
            facts,
            DecisionKind::Allow,
            200,
            req.method,
            req.path,
            req.request_id,
        );
        let allow = borrowed(&allow);
        let here = CheckRef {
            request_id: req.request_id,
            trace: &traceparent,
            decision: &allow,
        };

        if let Some(token) = req.headers.get(&self.settings.token_header) {
            let used = tokio::time::timeout(budget, async {
                let consumed = self
                    .approvals
                    .consume(Some(token), None, &fingerprint, here)
                    .await?;
                let pending = match &consumed {
                    Consumed::NotUsable {
                        id,
                        status: Status::Pending,
                    } => self.approvals.get(id).await?,
                    _ => None,
                };
                Ok::<_, StoreError>((consumed, pending))
            })
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("timed out".into())));
            match &used {
                Ok((Consumed::Mismatch { id }, _)) => facts.approval_id.clone_from(id),
                Ok((Consumed::NotUsable { id, status }, _)) => {
                    facts.approval_id.clone_from(id);
                    facts.approval_status = status.as_str();
                }
                _ => {}
            }
            return match used {
                Ok((
                    Consumed::Used {
                        id,
                        uses_left,
                        opened_by,
                    },
                    _,
                )) => {
                    tracing::info!(approval = %id, uses_left, principal = %principal, "approval used");
                    self.used(facts, &id, uses_left, &opened_by);
                    Answer::Allow { principal }
                }
                Ok((Consumed::Unknown, _)) => refuse("the approval token is not valid".into()),
                Ok((Consumed::Mismatch { id }, _)) => refuse(format!(
                    "approval `{id}` was granted for a different request: principal, method, host, path, query and body must be identical"
                )),
                Ok((Consumed::NotUsable { .. }, Some(approval))) => Answer::ApprovalRequired {
                    approval: Box::new(approval),
                    token: None,
                    reason: "the approval is still pending".into(),
                },
                Ok((Consumed::NotUsable { id, status }, _)) => refuse(not_usable(&id, status)),
                Err(e) => unavailable(e),
            };
        }

        let info = RequestInfo {
            principal: principal.clone(),
            on_behalf_of,
            action,
            resource,
            method: req.method.to_owned(),
            path: path.to_owned(),
            host: req.host.to_owned(),
            source_address: req.source_address.to_owned(),
            policies: denial.policies.clone(),
            parameters: shown_parameters(mapped, &params.show),
            approver_groups: params.approver_groups.clone(),
            quorum: params.quorum,
            uses: params.uses,
            reason_required: params.reason_required,
            mode: params.mode,
        };
        let new = NewApproval {
            fingerprint: fingerprint.clone(),
            info,
            params,
        };
        let opened = match tokio::time::timeout(budget, self.approvals.open(&new, here)).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return unavailable(e),
            Err(_) => return unavailable(StoreError::Unavailable("timed out".into())),
        };
        facts.approval_id.clone_from(&opened.approval.id);
        facts.approval_status = opened.approval.status.as_str();
        if opened.created {
            if let Some(n) = &self.notifier {
                n.notify("requested", &opened.approval);
            }
            self.approval_event("requested", facts, None, || {
                crate::telemetry::approval_attributes(&opened.approval)
            });
        }
        let mut approval = opened.approval;
        if new.params.mode == Mode::Hold && approval.status == Status::Pending {
            facts.held = true;
            match self
                .hold(&approval.id, approval.expires_at, answer_by)
                .await
            {
                Ok(Some(a)) => approval = a,
                Ok(None) => {}
                Err(e) => return unavailable(e),
            }
            if approval.status == Status::Approved {
                let consumed = tokio::time::timeout(
                    budget,
                    self.approvals
                        .consume(None, Some(&approval.id), &fingerprint, here),
                )
                .await;
                return match consumed {
                    Ok(Ok(Consumed::Used {
                        id,
                        uses_left,
                        opened_by,
                    })) => {
                        tracing::info!(approval = %id, principal = %principal, "held call approved");
                        self.used(facts, &id, uses_left, &opened_by);
                        Answer::Allow { principal }
                    }
                    // Approved, but another identical held call used it first.
                    Ok(Ok(Consumed::NotUsable { id, status })) => refuse(not_usable(&id, status)),
                    Ok(Ok(_)) => refuse(format!(
                        "approval `{}` could not be used for this call",
                        approval.id
                    )),
                    Ok(Err(e)) => unavailable(e),
                    Err(_) => unavailable(StoreError::Unavailable("timed out".into())),
                };
            }
        }
        facts.approval_status = approval.status.as_str();
        match approval.status {
            Status::Pending => Answer::ApprovalRequired {
                approval: Box::new(approval),
                token: opened.token,
                reason: "this call needs an approval".into(),
            },
            Status::Approved => Answer::ApprovalRequired {
                approval: Box::new(approval),
                token: opened.token,
                reason: "approved: retry the identical request with the approval token".into(),
            },
            Status::Denied => {
                let by = approval.votes.iter().rev().find(|v| v.verdict == "deny");
                let why = by.map_or(String::new(), |v| {
                    format!(" by {}: {}", v.approver, v.reason)
                });
                refuse(format!("approval `{}` was denied{why}", approval.id))
            }
            status => refuse(not_usable(&approval.id, status)),
        }
    }

    /// One use of approval `id` taken by this check.
    fn used(&self, facts: &mut Facts, id: &str, uses_left: u32, opened_by: &str) {
        facts.audited_by_store = true;
        facts.approval_id = id.to_owned();
        facts.approval_status = if uses_left == 0 {
            Status::Consumed.as_str()
        } else {
            Status::Approved.as_str()
        };
        let opened = crate::telemetry::parse_traceparent(opened_by);
        self.approval_event("consumed", facts, opened.as_ref(), || {
            vec![
                KeyValue::new(attr::APPROVAL_ID, id.to_owned()),
                KeyValue::new(attr::APPROVAL_STATUS, facts.approval_status),
                KeyValue::new(attr::USES_LEFT, i64::from(uses_left)),
                KeyValue::new(attr::PRINCIPAL, facts.principal.clone()),
                KeyValue::new(attr::ACTION, facts.action.clone()),
                KeyValue::new(attr::RESOURCE, facts.resource.clone()),
                KeyValue::new(attr::ON_BEHALF_OF, facts.on_behalf_of.clone()),
            ]
        });
    }

    /// Waits for a decision on `id`, until the hold limit or the request's
    /// own deadline. Pub/sub wakes it at once; polling covers lost messages.
    async fn hold(
        &self,
        id: &str,
        expires_at: i64,
        answer_by: Option<tokio::time::Instant>,
    ) -> Result<Option<Approval>, StoreError> {
        let mut draining = self.draining.subscribe();
        let mut events = self.approvals.subscribe().await;
        let left = Duration::from_secs(expires_at.saturating_sub(now_secs()).max(0) as u64);
        let mut deadline = tokio::time::Instant::now() + self.settings.hold_max.min(left);
        if let Some(by) = answer_by {
            // Leave room to consume the approval, record the decision and
            // answer before Envoy gives up.
            let reserve = self.settings.store_budget * 2;
            deadline = deadline.min(by.checked_sub(reserve).unwrap_or(by));
        }
        let mut poll = tokio::time::interval(HOLD_POLL);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Ok(None),
                _ = draining.wait_for(|d| *d) => return Ok(None),
                ev = events.recv() => match ev {
                    Ok(ev) if ev.id != id => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
                    _ => {}
                },
                _ = poll.tick() => {}
            }
            if let Some(a) = self.approvals.get(id).await?
                && a.status != Status::Pending
            {
                return Ok(Some(a));
            }
        }
    }

    fn allow(&self, principal: &str) -> CheckResponse {
        let headers = match &self.settings.principal_header {
            // Overwrite, so a client-sent copy never reaches the upstream.
            Some(name) => vec![header(
                name,
                principal,
                HeaderAppendAction::OverwriteIfExistsOrAdd,
            )],
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
        reason: String,
        request_id: &str,
    ) -> CheckResponse {
        let body = ApprovalRequired {
            decision: "approval_required",
            reason,
            approval_id: &a.id,
            status: a.status.as_str(),
            expires_at: rfc3339(a.expires_at),
            approvers: &a.info.approver_groups,
            quorum: a.info.quorum,
            policies: &a.info.policies,
            request_id,
            approval_token: token,
            token_header: token.map(|_| self.settings.token_header.as_str()),
        };
        let body = serde_json::to_string(&body)
            .unwrap_or_else(|_| r#"{"decision":"approval_required"}"#.to_owned());
        let action = HeaderAppendAction::OverwriteIfExistsOrAdd;
        CheckResponse {
            status: Some(rpc::Status {
                code: RPC_PERMISSION_DENIED,
                message: "approval required".into(),
                ..Default::default()
            }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus {
                    code: HttpStatusCode::Forbidden as i32,
                }),
                headers: vec![
                    header("content-type", "application/json", action),
                    header(APPROVAL_ID_HEADER, &a.id, action),
                    header("retry-after", RETRY_AFTER_SECONDS, action),
                ],
                body,
            })),
            ..Default::default()
        }
    }
}

fn verdict_decision(v: &Verdict) -> &Decision {
    match v {
        Verdict::Allow(d) | Verdict::Deny(d) | Verdict::Approvable { denial: d, .. } => d,
    }
}

/// What one check came to, for its span, its audit entry and its log line.
struct Facts {
    /// The caller's trace; taken when the span starts.
    parent: Option<Context>,
    started: SystemTime,
    span: Option<opentelemetry_sdk::trace::Span>,
    /// The check span as a W3C traceparent ("" without telemetry).
    traceparent: String,
    /// A guarded policy may apply: audited, and never sampled out.
    guarded: bool,
    /// The call waited in a hold.
    held: bool,
    /// The approval store wrote the decision entry (with the use it took).
    audited_by_store: bool,
    principal: String,
    on_behalf_of: String,
    action: String,
    resource: String,
    policies: Vec<String>,
    error_policies: Vec<String>,
    approval_id: String,
    approval_status: &'static str,
}

impl Default for Facts {
    fn default() -> Self {
        Self {
            parent: None,
            started: SystemTime::UNIX_EPOCH,
            span: None,
            traceparent: String::new(),
            guarded: false,
            held: false,
            audited_by_store: false,
            principal: String::new(),
            on_behalf_of: String::new(),
            action: String::new(),
            resource: String::new(),
            policies: Vec::new(),
            error_policies: Vec::new(),
            approval_id: String::new(),
            approval_status: "",
        }
    }
}

/// A guarded decision's audit entry, but for the approval fields.
fn decision_fields(
    facts: &Facts,
    kind: DecisionKind,
    status_code: i32,
    method: &str,
    path_and_query: &str,
    request_id: &str,
) -> Vec<(&'static str, String)> {
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |p| p.0);
    vec![
        ("event", "decision".to_owned()),
        ("decision", kind.as_str().to_owned()),
        ("status_code", status_code.to_string()),
        ("principal", facts.principal.clone()),
        ("on_behalf_of", facts.on_behalf_of.clone()),
        ("action", facts.action.clone()),
        ("resource", facts.resource.clone()),
        ("policies", facts.policies.join(",")),
        ("method", method.to_owned()),
        ("path", path.to_owned()),
        ("request_id", request_id.to_owned()),
        ("trace", facts.traceparent.clone()),
    ]
}

/// Field/value pairs as the store takes them.
fn borrowed<'a>(fields: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The HTTP status a response gives the caller.
fn http_status(r: &CheckResponse) -> i32 {
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().map_or(403, |s| s.code),
        _ => 200,
    }
}

/// gRPC metadata as a trace-context carrier.
struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// No metadata (direct calls and tests).
struct NoMetadata;

impl opentelemetry::propagation::Extractor for NoMetadata {
    fn get(&self, _key: &str) -> Option<&str> {
        None
    }

    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// What a caller is told when the audit stream cannot be written.
const AUDIT_UNAVAILABLE: &str =
    "the audit trail cannot be written, so guarded calls are refused; retry later";

/// What a caller is told when the approval store cannot be reached.
const UNAVAILABLE: &str =
    "approvals are unavailable: the approval store cannot be reached; retry later";

/// A refused approval in plain words.
fn not_usable(id: &str, status: Status) -> String {
    match status {
        Status::Consumed => {
            format!("approval `{id}` is consumed: it has been used as many times as allowed")
        }
        Status::Expired => format!("approval `{id}` is expired"),
        Status::Revoked => format!("approval `{id}` is revoked"),
        Status::Denied => format!("approval `{id}` was denied"),
        Status::Pending | Status::Approved => format!("approval `{id}` is {status}"),
    }
}

/// Header naming the approval request in an `approval_required` answer.
pub const APPROVAL_ID_HEADER: &str = "x-countersign-approval-id";
const RETRY_AFTER_SECONDS: &str = "10";
const HOLD_POLL: Duration = Duration::from_secs(1);
/// Answer this long before the caller's (Envoy's) deadline.
const HOLD_MARGIN: Duration = Duration::from_millis(50);

/// gRPC's `grpc-timeout` header: digits and a unit (H, M, S, m, u, n).
pub(crate) fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}
const RPC_UNAVAILABLE: i32 = 14;

/// Query parameters (allow-listed) and the body fields a guarded policy
/// names with `@show`: what an approver sees of the call's parameters.
fn shown_parameters(mapped: &MappedRequest, show: &[String]) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = mapped.query.iter().cloned().collect();
    if let Some(body) = &mapped.body {
        for field in show {
            if let Some(v) = body.get(field) {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.insert(format!("body.{field}"), text);
            }
        }
    }
    out
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Unix seconds as RFC 3339 (UTC).
pub fn rfc3339(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
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
    CheckResponse {
        status: Some(rpc::Status {
            code,
            message: reason.to_owned(),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: status as i32,
            }),
            headers: vec![header(
                "content-type",
                "application/json",
                HeaderAppendAction::OverwriteIfExistsOrAdd,
            )],
            body,
        })),
        ..Default::default()
    }
}

fn header(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

/// Envoy's `x-request-id` (what its access log shows), else its stream id.
fn request_id(http: &EnvoyHttp) -> &str {
    http.headers
        .get("x-request-id")
        .map_or(http.id.as_str(), String::as_str)
}

/// Envoy sends the body as `raw_body` with `pack_as_bytes`, else as `body`.
fn body(http: &EnvoyHttp) -> &[u8] {
    if http.raw_body.is_empty() {
        http.body.as_bytes()
    } else {
        &http.raw_body
    }
}

/// Envoy's verified JWT claims as a JSON object.
pub fn claims_object(v: &PbValue) -> Result<Map<String, Value>, CheckError> {
    match &v.kind {
        Some(Kind::StructValue(s)) => Ok(struct_to_json(s)),
        _ => Err(CheckError::ClaimsNotObject),
    }
}

fn struct_to_json(s: &Struct) -> Map<String, Value> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), to_json(v)))
        .collect()
}

fn to_json(v: &PbValue) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(to_json).collect()),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
    }
}

pub mod wire;

#[cfg(test)]
mod tests;
