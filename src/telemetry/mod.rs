//! OpenTelemetry spans for decisions and approval events, exported over
//! OTLP/gRPC off the hot path.
//!
//! Configured by the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns export on, `OTEL_SERVICE_NAME`
//! names the service (default `countersign`), `OTEL_TRACES_SAMPLER(_ARG)`
//! samples ordinary decisions; `OTEL_SDK_DISABLED=true` turns it off.
//! Decisions on guarded actions and approval events are always sampled.
//!
//! Attributes are set from an allow-list only (see [`attr`]): identities,
//! action, resource, method, path, policy ids, approval id and status, shown
//! parameters. Never headers, tokens or bodies.

mod export;
pub mod propagate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::trace::{
    Config, SamplingDecision, SamplingResult, SdkTracer, SdkTracerProvider, ShouldSample,
    Span as SdkSpan,
};

pub use propagate::{parent_from, parse_traceparent, traceparent};

/// Attribute keys: the documented schema (docs/operations.md, "Traces").
pub mod attr {
    pub const PRINCIPAL: &str = "countersign.principal";
    pub const ON_BEHALF_OF: &str = "countersign.on_behalf_of";
    pub const ACTION: &str = "countersign.action";
    pub const RESOURCE: &str = "countersign.resource";
    pub const DECISION: &str = "countersign.decision";
    pub const REASON: &str = "countersign.reason";
    pub const POLICIES: &str = "countersign.policies";
    pub const ERROR_POLICIES: &str = "countersign.evaluation_errors";
    pub const GUARDED: &str = "countersign.guarded";
    pub const REQUEST_ID: &str = "countersign.request_id";
    pub const AUDIT_WRITTEN: &str = "countersign.audit.written";
    pub const APPROVAL_ID: &str = "countersign.approval.id";
    pub const APPROVAL_STATUS: &str = "countersign.approval.status";
    pub const APPROVAL_EVENT: &str = "countersign.approval.event";
    pub const APPROVER: &str = "countersign.approval.approver";
    /// How the approver signed in: `certificate`, `token` or `oidc`.
    pub const APPROVER_METHOD: &str = "countersign.approval.approver.method";
    /// For `oidc`: the identity provider and the approver's subject there.
    pub const APPROVER_ISSUER: &str = "countersign.approval.approver.issuer";
    pub const APPROVER_SUBJECT: &str = "countersign.approval.approver.subject";
    pub const APPROVAL_REASON: &str = "countersign.approval.reason";
    pub const QUORUM: &str = "countersign.approval.quorum";
    pub const USES_LEFT: &str = "countersign.approval.uses_left";
    /// Prefix of the shown parameters (`@show` body fields, allow-listed query).
    pub const PARAMETER: &str = "countersign.approval.parameter.";
    /// On MCP endpoints: the server, the JSON-RPC method and the tool.
    pub const MCP_SERVER: &str = "countersign.mcp.server";
    pub const MCP_METHOD: &str = "countersign.mcp.method";
    pub const MCP_TOOL: &str = "countersign.mcp.tool";
    /// On a shadow decision: the call was let through (or refused) other
    /// than the whole policy set decides; what it decides, and by which.
    pub const SHADOW: &str = "countersign.shadow";
    pub const SHADOW_DECISION: &str = "countersign.shadow.decision";
    pub const SHADOW_POLICIES: &str = "countersign.shadow.policies";
    pub const METHOD: &str = "http.request.method";
    pub const PATH: &str = "url.path";
    pub const SCHEME: &str = "url.scheme";
    pub const HOST: &str = "server.address";
    pub const CLIENT: &str = "client.address";
    pub const STATUS_CODE: &str = "http.response.status_code";
    /// Set on spans that must never be sampled out.
    pub const AUDIT: &str = "countersign.audit";
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

/// Spans for decisions and approvals; cheap to clone.
#[derive(Clone, Debug)]
pub struct Telemetry {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    exporter: export::Handle,
}

impl Telemetry {
    /// From the standard OTel variables; `None` when no endpoint is set or
    /// the SDK is disabled. Must run inside the tokio runtime.
    pub fn from_env() -> Result<Option<Self>, TelemetryError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        if var("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
            && var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        Ok(Some(Self::with_exporter(exporter)))
    }

    /// With any exporter (tests use an in-memory one).
    pub fn with_exporter(exporter: impl opentelemetry_sdk::trace::SpanExporter + 'static) -> Self {
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("countersign");
        }
        let resource = resource.build();
        let (processor, handle) = export::Processor::start(exporter, &resource);
        let provider = SdkTracerProvider::builder()
            .with_sampler(AuditSampler(Config::default().sampler))
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "countersign");
        Self {
            tracer,
            provider,
            exporter: handle,
        }
    }

    /// Spans dropped because the queue was full or the export failed.
    pub fn dropped(&self) -> Arc<AtomicU64> {
        self.exporter.dropped.clone()
    }

    /// Exports what is queued; waits at most `timeout`.
    pub async fn flush(&self, timeout: Duration) {
        self.exporter.flush(timeout).await;
    }

    /// Flushes, then stops the provider.
    pub async fn shutdown(&self, timeout: Duration) {
        self.flush(timeout).await;
        let _ = self
            .provider
            .shutdown_with_timeout(Duration::from_millis(100));
    }

    /// Starts a check span, as a server span under `parent`, from `started`.
    /// The sampler sees only `countersign.audit`; set the others on the
    /// span if it is recording.
    pub fn start_check(&self, parent: &Context, started: SystemTime, audit: bool) -> SdkSpan {
        self.tracer
            .span_builder("countersign.check")
            .with_kind(SpanKind::Server)
            .with_start_time(started)
            .with_attributes([KeyValue::new(attr::AUDIT, audit)])
            .start_with_context(&self.tracer, parent)
    }

    /// One approval event (`requested`, `approved`, `denied`, `voted`,
    /// `consumed`, `revoked`, `expired`): a child of `parent` when the event
    /// happens inside a check, else a root; linked to the check span that
    /// opened the request. Always sampled.
    pub fn approval_event(
        &self,
        event: &str,
        parent: Option<&SpanContext>,
        opened_by: Option<&SpanContext>,
        attributes: Vec<KeyValue>,
    ) {
        let mut attributes = attributes;
        attributes.push(KeyValue::new(attr::APPROVAL_EVENT, event.to_owned()));
        attributes.push(KeyValue::new(attr::AUDIT, true));
        let links = opened_by
            .filter(|c| c.is_valid())
            .map(|c| vec![Link::with_context(c.clone())])
            .unwrap_or_default();
        let parent = match parent.filter(|c| c.is_valid()) {
            Some(p) => Context::new().with_remote_span_context(p.clone()),
            None => Context::new(),
        };
        let mut span = self
            .tracer
            .span_builder(format!("countersign.approval.{event}"))
            .with_kind(SpanKind::Internal)
            .with_attributes(attributes)
            .with_links(links)
            .start_with_context(&self.tracer, &parent);
        span.end();
    }
}

/// Attributes describing an approval request, for lifecycle spans.
pub fn approval_attributes(a: &crate::approval::Approval) -> Vec<KeyValue> {
    let mut out = vec![
        KeyValue::new(attr::APPROVAL_ID, a.id.clone()),
        KeyValue::new(attr::APPROVAL_STATUS, a.status.as_str()),
        KeyValue::new(attr::PRINCIPAL, a.info.principal.clone()),
        KeyValue::new(attr::ACTION, a.info.action.clone()),
        KeyValue::new(attr::RESOURCE, a.info.resource.clone()),
        KeyValue::new(attr::QUORUM, i64::from(a.info.quorum)),
        KeyValue::new(attr::USES_LEFT, i64::from(a.uses_left)),
    ];
    if let Some(o) = &a.info.on_behalf_of {
        out.push(KeyValue::new(attr::ON_BEHALF_OF, o.clone()));
    }
    out.extend(parameters(&a.info.parameters));
    out
}

/// Shown parameters as attributes.
pub fn parameters(p: &BTreeMap<String, String>) -> impl Iterator<Item = KeyValue> + '_ {
    p.iter()
        .map(|(k, v)| KeyValue::new(format!("{}{k}", attr::PARAMETER), v.clone()))
}

/// A list of strings as an attribute value.
pub fn strings(v: &[String]) -> Value {
    Value::Array(opentelemetry::Array::String(
        v.iter().map(|s| s.clone().into()).collect(),
    ))
}

/// Ends a check span with its outcome.
pub fn end_check(mut span: SdkSpan, attributes: Vec<KeyValue>, failed: bool) {
    span.set_attributes(attributes);
    if failed {
        span.set_status(Status::error("decision failed"));
    }
    span.end();
}

/// The configured sampler (`OTEL_TRACES_SAMPLER`), except that spans marked
/// `countersign.audit = true` are always recorded and sampled: an auditor
/// must find every guarded decision and approval event.
#[derive(Debug, Clone)]
struct AuditSampler(Box<dyn ShouldSample>);

impl ShouldSample for AuditSampler {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        trace_id: opentelemetry::trace::TraceId,
        name: &str,
        kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let audit = attributes
            .iter()
            .any(|kv| kv.key.as_str() == attr::AUDIT && kv.value == Value::Bool(true));
        if audit {
            return SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: parent
                    .map(|c| c.span().span_context().trace_state().clone())
                    .unwrap_or_default(),
            };
        }
        self.0
            .should_sample(parent, trace_id, name, kind, attributes, links)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceId;
    use opentelemetry_sdk::trace::Sampler;

    fn decide(sampler: Sampler, audit: bool) -> SamplingDecision {
        AuditSampler(Box::new(sampler))
            .should_sample(
                None,
                TraceId::from_bytes([7; 16]),
                "countersign.check",
                &SpanKind::Server,
                &[KeyValue::new(attr::AUDIT, audit)],
                &[],
            )
            .decision
    }

    #[test]
    fn audited_spans_are_sampled_whatever_the_configured_sampler_says() {
        assert_eq!(
            decide(Sampler::AlwaysOff, true),
            SamplingDecision::RecordAndSample
        );
        assert_eq!(
            decide(Sampler::TraceIdRatioBased(0.0), true),
            SamplingDecision::RecordAndSample
        );
    }

    #[test]
    fn other_spans_follow_the_configured_sampler() {
        assert_eq!(decide(Sampler::AlwaysOff, false), SamplingDecision::Drop);
        assert_eq!(
            decide(Sampler::AlwaysOn, false),
            SamplingDecision::RecordAndSample
        );
    }
}
