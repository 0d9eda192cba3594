//! The trail of one check: its span (inside the caller's trace), its log
//! line and, on guarded actions, its audit-stream entry. Filled once, when
//! the request is identified and decided, and read when the check ends.

use std::time::SystemTime;

use opentelemetry::trace::Span as _;
use opentelemetry::{Context, KeyValue};

use crate::approval::events::Parties;
use crate::gate::{Call, Note, Outcome};
use crate::metrics::DecisionKind;
use crate::policy::{Decision, Verdict};
use crate::request::MappedRequest;
use crate::telemetry::{Telemetry, attr};

/// What one check came to, for its span, its audit entry and its log line.
pub struct Trail {
    started: SystemTime,
    /// The caller's trace; taken when the span starts.
    parent: Option<Context>,
    span: Option<opentelemetry_sdk::trace::Span>,
    /// The check span as a W3C traceparent ("" without telemetry).
    traceparent: String,
    /// A guarded policy may apply: audited, and never sampled out.
    guarded: bool,
    principal: String,
    on_behalf_of: String,
    action: String,
    resource: String,
    policies: Vec<String>,
    error_policies: Vec<String>,
    /// On an MCP endpoint: server, JSON-RPC method, tool ("" if none).
    mcp: Option<[String; 3]>,
    /// What the whole policy set decided, and by which policies, where the
    /// enforced answer is another (shadow mode, `@shadow` policies).
    shadow: Option<(DecisionKind, Vec<String>)>,
}

impl Trail {
    pub fn new(started: SystemTime, parent: Option<Context>) -> Self {
        Self {
            started,
            parent,
            span: None,
            traceparent: String::new(),
            guarded: false,
            principal: String::new(),
            on_behalf_of: String::new(),
            action: String::new(),
            resource: String::new(),
            policies: Vec::new(),
            error_policies: Vec::new(),
            mcp: None,
            shadow: None,
        }
    }

    /// The whole policy set decides `would`, not what is enforced.
    pub fn shadowed(&mut self, would: &Verdict) {
        let kind = match would {
            Verdict::Allow(_) => DecisionKind::Allow,
            Verdict::Deny(_) => DecisionKind::Deny,
            Verdict::Approvable { .. } => DecisionKind::ApprovalRequired,
        };
        self.shadow = Some((kind, decision_of(would).policies.clone()));
    }

    /// What the whole policy set decided, where the caller got another
    /// answer.
    pub fn shadow_kind(&self) -> Option<DecisionKind> {
        self.shadow.as_ref().map(|(kind, _)| *kind)
    }

    pub fn guarded(&self) -> bool {
        self.guarded
    }

    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    pub fn policies(&self) -> &[String] {
        &self.policies
    }

    /// Who asked for what; filled by [`Self::identify`] on guarded calls.
    pub fn parties(&self) -> Parties<'_> {
        Parties {
            principal: &self.principal,
            on_behalf_of: &self.on_behalf_of,
            action: &self.action,
            resource: &self.resource,
        }
    }

    /// Who asked for what, and what the policies said; starts the span
    /// (only now is it known whether it must never be sampled out).
    pub fn identify(
        &mut self,
        telemetry: Option<&Telemetry>,
        mapped: &MappedRequest,
        verdict: &Verdict,
        guarded: bool,
        call: &Call<'_>,
    ) {
        self.guarded = guarded;
        if let Some(t) = telemetry {
            self.open_span(t);
        }
        let recording = self.recording();
        // Only what the trail needs, and only when there is a trail: the
        // unguarded path whose span is not recorded (telemetry off, or
        // sampled out) allocates nothing here.
        if guarded || recording || tracing::enabled!(tracing::Level::DEBUG) {
            self.principal = mapped.principal.to_string();
            self.action = mapped.action.to_string();
            self.resource = mapped.resource.to_string();
            if let Some(o) = &mapped.on_behalf_of {
                self.on_behalf_of = o.to_string();
            }
            self.mcp = mapped.mcp.as_ref().map(|m| {
                let tool = m.tool.clone().unwrap_or_default();
                [m.server.clone(), m.method.clone(), tool]
            });
            // Policy ids only: Cedar's error text can quote request values.
            let d = decision_of(verdict);
            self.policies.clone_from(&d.policies);
            if !d.errors.is_empty() {
                self.error_policies.clone_from(&d.policies);
            }
        }
        if recording {
            self.describe(call);
        }
    }

    /// Whether the check's span is recorded (telemetry on, and not sampled
    /// out).
    fn recording(&self) -> bool {
        self.span.as_ref().is_some_and(|s| s.is_recording())
    }

    /// Starts the check's span. The sampler decides on the span alone; its
    /// attributes are set after, and only if it is recorded, so that a
    /// span sampled out (by the configured sampler, or because Envoy's
    /// trace is not sampled) costs little more than no telemetry.
    fn open_span(&mut self, t: &Telemetry) {
        let parent = self.parent.take().unwrap_or_default();
        // A shadow decision is what a rollout is read from: never sampled out.
        let kept = self.guarded || self.shadow.is_some();
        let span = t.start_check(&parent, self.started, kept);
        self.traceparent = crate::telemetry::traceparent(span.span_context());
        self.span = Some(span);
    }

    /// The span's attributes for the call as identified.
    fn describe(&mut self, call: &Call<'_>) {
        let Some(span) = self.span.as_mut() else {
            return;
        };
        let mut attributes = vec![
            KeyValue::new(attr::METHOD, call.method.to_owned()),
            KeyValue::new(attr::PATH, call.path_only().to_owned()),
            KeyValue::new(attr::HOST, call.host.to_owned()),
            KeyValue::new(attr::SCHEME, call.scheme.to_owned()),
            KeyValue::new(attr::REQUEST_ID, call.request_id.to_owned()),
            KeyValue::new(attr::GUARDED, self.guarded),
        ];
        if let Some((kind, policies)) = &self.shadow {
            attributes.extend([
                KeyValue::new(attr::SHADOW, true),
                KeyValue::new(attr::SHADOW_DECISION, kind.as_str()),
                KeyValue::new(attr::SHADOW_POLICIES, crate::telemetry::strings(policies)),
            ]);
        }
        if !call.source_address.is_empty() {
            attributes.push(KeyValue::new(attr::CLIENT, call.source_address.to_owned()));
        }
        if !self.principal.is_empty() {
            attributes.extend([
                KeyValue::new(attr::PRINCIPAL, self.principal.clone()),
                KeyValue::new(attr::ACTION, self.action.clone()),
                KeyValue::new(attr::RESOURCE, self.resource.clone()),
            ]);
        }
        if !self.on_behalf_of.is_empty() {
            attributes.push(KeyValue::new(attr::ON_BEHALF_OF, self.on_behalf_of.clone()));
        }
        if let Some([server, method, tool]) = &self.mcp {
            attributes.push(KeyValue::new(attr::MCP_SERVER, server.clone()));
            attributes.push(KeyValue::new(attr::MCP_METHOD, method.clone()));
            if !tool.is_empty() {
                attributes.push(KeyValue::new(attr::MCP_TOOL, tool.clone()));
            }
        }
        span.set_attributes(attributes);
    }

    /// A guarded decision's audit entry, but for the approval fields.
    pub fn decision_fields(
        &self,
        kind: DecisionKind,
        status_code: u16,
        call: &Call<'_>,
    ) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("event", "decision".to_owned()),
            ("decision", kind.as_str().to_owned()),
            ("status_code", status_code.to_string()),
            ("principal", self.principal.clone()),
            ("on_behalf_of", self.on_behalf_of.clone()),
            ("action", self.action.clone()),
            ("resource", self.resource.clone()),
            ("policies", self.policies.join(",")),
            ("method", call.method.to_owned()),
            ("path", call.path_only().to_owned()),
            ("request_id", call.request_id.to_owned()),
            ("trace", self.traceparent.clone()),
        ];
        if let Some((kind, policies)) = &self.shadow {
            fields.push(("shadow", "true".to_owned()));
            fields.push(("shadow_decision", kind.as_str().to_owned()));
            fields.push(("shadow_policies", policies.join(",")));
        }
        if let Some([server, method, tool]) = &self.mcp {
            fields.push(("mcp_server", server.clone()));
            fields.push(("mcp_method", method.clone()));
            if !tool.is_empty() {
                fields.push(("mcp_tool", tool.clone()));
            }
        }
        fields
    }

    /// As [`Self::decision_fields`], with the approval's.
    pub fn audit_entry(
        &self,
        outcome: &Outcome,
        status_code: u16,
        call: &Call<'_>,
        note: Option<&Note>,
    ) -> Vec<(&'static str, String)> {
        let mut fields = self.decision_fields(outcome.kind(), status_code, call);
        let (id, status) = note.map_or(("", ""), |n| (n.id.as_str(), status_str(n)));
        fields.push(("approval_id", id.to_owned()));
        fields.push(("approval_status", status.to_owned()));
        fields
    }

    /// The log line, and the span ended with the outcome.
    pub fn finish(
        mut self,
        telemetry: Option<&Telemetry>,
        outcome: &Outcome,
        status_code: u16,
        call: &Call<'_>,
        note: Option<&Note>,
        audited: Option<bool>,
    ) {
        let kind = outcome.kind();
        tracing::debug!(
            principal = %self.principal,
            action = %self.action,
            resource = %self.resource,
            decision = kind.as_str(),
            policies = ?self.policies,
            shadow = ?self.shadow,
            request_id = call.request_id,
            "check"
        );
        let Some(t) = telemetry else { return };
        if self.span.is_none() {
            // Refused before it could be identified: record what was sent.
            self.open_span(t);
            if self.recording() {
                self.describe(call);
            }
        }
        let Some(span) = self.span.take() else {
            return;
        };
        if !span.is_recording() {
            return;
        }
        let mut attributes = vec![
            KeyValue::new(attr::DECISION, kind.as_str()),
            KeyValue::new(attr::STATUS_CODE, i64::from(status_code)),
            KeyValue::new(attr::POLICIES, crate::telemetry::strings(&self.policies)),
        ];
        if !outcome.reason().is_empty() {
            attributes.push(KeyValue::new(attr::REASON, outcome.reason().to_owned()));
        }
        if !self.error_policies.is_empty() {
            attributes.push(KeyValue::new(
                attr::ERROR_POLICIES,
                crate::telemetry::strings(&self.error_policies),
            ));
        }
        if let Some(n) = note.filter(|n| !n.id.is_empty()) {
            attributes.push(KeyValue::new(attr::APPROVAL_ID, n.id.clone()));
            attributes.push(KeyValue::new(attr::APPROVAL_STATUS, status_str(n)));
        }
        if let Some(w) = audited {
            attributes.push(KeyValue::new(attr::AUDIT_WRITTEN, w));
        }
        crate::telemetry::end_check(span, attributes, kind == DecisionKind::Error);
    }
}

fn status_str(n: &Note) -> &'static str {
    n.status.map_or("", |s| s.as_str())
}

fn decision_of(v: &Verdict) -> &Decision {
    match v {
        Verdict::Allow(d) | Verdict::Deny(d) | Verdict::Approvable { denial: d, .. } => d,
    }
}

/// Field/value pairs as the store takes them.
pub fn borrowed<'a>(fields: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}
