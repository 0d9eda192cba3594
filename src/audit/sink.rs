//! Approval events fanned out: a span (linked to the check that opened the
//! request), a metric, a log line. (Notifications are read from the audit
//! stream, see [`crate::notifications::outbox`].)

use opentelemetry::KeyValue;

use crate::approval::events::ApprovalEvent;
use crate::metrics::Metrics;
use crate::telemetry::{Telemetry, approval_attributes, attr, parse_traceparent};

/// Where approval events go. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct EventSink {
    telemetry: Option<Telemetry>,
    metrics: Metrics,
}

impl EventSink {
    pub fn new(telemetry: Option<Telemetry>, metrics: Metrics) -> Self {
        Self { telemetry, metrics }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn telemetry(&self) -> Option<&Telemetry> {
        self.telemetry.as_ref()
    }

    /// Records one event everywhere it goes.
    pub fn emit(&self, event: &ApprovalEvent<'_>) {
        let kind = event.kind();
        self.metrics.approval_event(kind);
        self.log(event);
        if let Some(t) = &self.telemetry {
            span(t, event);
        }
    }

    fn log(&self, event: &ApprovalEvent<'_>) {
        let id = event.id();
        match event {
            ApprovalEvent::Requested { approval, .. } => {
                tracing::info!(approval = %id, principal = %approval.info.principal, "approval requested");
            }
            ApprovalEvent::Ruled {
                approval,
                ruling,
                approver,
                ..
            } => {
                tracing::info!(approval = %id, approver = %approver.name, method = approver.signed_in.method.as_str(), verdict = %ruling, status = %approval.status, "approval decided");
            }
            ApprovalEvent::Consumed {
                uses_left, parties, ..
            } => {
                tracing::info!(approval = %id, uses_left, principal = %parties.principal, "approval used");
            }
            ApprovalEvent::Expired { .. } => {
                tracing::info!(approval = %id, "approval request expired");
            }
        }
    }
}

/// The event's span: inside the check it happened in (if any), linked to
/// the check that opened the request.
fn span(t: &Telemetry, event: &ApprovalEvent<'_>) {
    let kind = event.kind();
    let (parent, opened_by, attributes) = match event {
        ApprovalEvent::Requested {
            approval,
            check_trace,
        } => {
            let here = parse_traceparent(check_trace);
            (here.clone(), here, approval_attributes(approval))
        }
        ApprovalEvent::Ruled {
            approval,
            approver,
            reason,
            ..
        } => {
            let mut attributes = approval_attributes(approval);
            attributes.push(KeyValue::new(attr::APPROVER, approver.name.to_owned()));
            let signed_in = approver.signed_in;
            attributes.push(KeyValue::new(
                attr::APPROVER_METHOD,
                signed_in.method.as_str(),
            ));
            if !signed_in.issuer.is_empty() {
                attributes.push(KeyValue::new(
                    attr::APPROVER_ISSUER,
                    signed_in.issuer.clone(),
                ));
                attributes.push(KeyValue::new(
                    attr::APPROVER_SUBJECT,
                    signed_in.subject.clone(),
                ));
            }
            if !reason.is_empty() {
                attributes.push(KeyValue::new(attr::APPROVAL_REASON, reason.to_string()));
            }
            (None, parse_traceparent(&approval.opened_by), attributes)
        }
        ApprovalEvent::Consumed {
            id,
            uses_left,
            opened_by,
            parties,
            check_trace,
        } => {
            let status = ApprovalEvent::status_after_use(*uses_left);
            let attributes = vec![
                KeyValue::new(attr::APPROVAL_ID, id.to_string()),
                KeyValue::new(attr::APPROVAL_STATUS, status.as_str()),
                KeyValue::new(attr::USES_LEFT, i64::from(*uses_left)),
                KeyValue::new(attr::PRINCIPAL, parties.principal.to_owned()),
                KeyValue::new(attr::ACTION, parties.action.to_owned()),
                KeyValue::new(attr::RESOURCE, parties.resource.to_owned()),
                KeyValue::new(attr::ON_BEHALF_OF, parties.on_behalf_of.to_owned()),
            ];
            (
                parse_traceparent(check_trace),
                parse_traceparent(opened_by),
                attributes,
            )
        }
        // Read back after the sweep; a request whose record is gone has
        // nothing left to describe.
        ApprovalEvent::Expired { approval, .. } => match approval {
            Some(a) => (
                None,
                parse_traceparent(&a.opened_by),
                approval_attributes(a),
            ),
            None => return,
        },
    };
    t.approval_event(
        kind.as_str(),
        parent.as_ref(),
        opened_by.as_ref(),
        attributes,
    );
}
