//! What happens to an approval request, as one enum: the lifecycle emits
//! each event once, and the audit sink (`crate::audit::EventSink`) turns it
//! into its span, metric, webhook and log line.

use super::{Approval, Ruling, Status};

/// The kinds of approval event, as named in the audit stream, spans,
/// metrics, webhooks and the admin API's watch stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Requested,
    Voted,
    Approved,
    Denied,
    Consumed,
    Revoked,
    Expired,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::Requested,
        EventKind::Voted,
        EventKind::Approved,
        EventKind::Denied,
        EventKind::Consumed,
        EventKind::Revoked,
        EventKind::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Requested => "requested",
            EventKind::Voted => "voted",
            EventKind::Approved => "approved",
            EventKind::Denied => "denied",
            EventKind::Consumed => "consumed",
            EventKind::Revoked => "revoked",
            EventKind::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The event an approver's ruling comes to, given the status after it.
    pub fn of_ruling(ruling: Ruling, after: Status) -> EventKind {
        match (ruling, after) {
            (Ruling::Revoke, _) => EventKind::Revoked,
            (Ruling::Deny, _) => EventKind::Denied,
            (Ruling::Approve, Status::Approved) => EventKind::Approved,
            (Ruling::Approve, _) => EventKind::Voted,
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a used call was, for the `consumed` event (the request itself is not
/// read again on the hot path).
#[derive(Debug, Clone, Copy)]
pub struct Parties<'a> {
    pub principal: &'a str,
    pub on_behalf_of: &'a str,
    pub action: &'a str,
    pub resource: &'a str,
}

/// One approval event. `check_trace` is the traceparent of the check it
/// happened in ("" outside a check).
#[derive(Debug, Clone, Copy)]
pub enum ApprovalEvent<'a> {
    /// A call opened the request.
    Requested {
        approval: &'a Approval,
        check_trace: &'a str,
    },
    /// An approver ruled; `approval` is as the ruling left it.
    Ruled {
        approval: &'a Approval,
        ruling: Ruling,
        approver: super::approvers::Voter<'a>,
        reason: &'a str,
    },
    /// A call took one use.
    Consumed {
        id: &'a str,
        uses_left: u32,
        /// Traceparent of the check that opened the request.
        opened_by: &'a str,
        parties: Parties<'a>,
        check_trace: &'a str,
    },
    /// Past its deadline; `approval` as read back, if it still could be.
    Expired {
        id: &'a str,
        approval: Option<&'a Approval>,
    },
}

impl ApprovalEvent<'_> {
    pub fn kind(&self) -> EventKind {
        match self {
            ApprovalEvent::Requested { .. } => EventKind::Requested,
            ApprovalEvent::Ruled {
                approval, ruling, ..
            } => EventKind::of_ruling(*ruling, approval.status),
            ApprovalEvent::Consumed { .. } => EventKind::Consumed,
            ApprovalEvent::Expired { .. } => EventKind::Expired,
        }
    }

    /// The request's id.
    pub fn id(&self) -> &str {
        match self {
            ApprovalEvent::Requested { approval, .. } | ApprovalEvent::Ruled { approval, .. } => {
                &approval.id
            }
            ApprovalEvent::Consumed { id, .. } | ApprovalEvent::Expired { id, .. } => id,
        }
    }

    /// The status after a use: consumed when none is left.
    pub fn status_after_use(uses_left: u32) -> Status {
        if uses_left == 0 {
            Status::Consumed
        } else {
            Status::Approved
        }
    }
}
