//! The approval lifecycle in one place: open, rule (approve with separation
//! of duties and quorum, deny, revoke), consume, wait for a decision, expire.
//! Every transition goes through here, and each emits its one
//! [`ApprovalEvent`] to the [`EventSink`]; front doors (the Check path, the
//! admin API) call these and translate, nothing more.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::approvers::{Approver, Approvers};
use super::events::{ApprovalEvent, Parties};
use super::store::{ApprovalStore, CheckRef, Consumed, ListFilter, StoreError, Swept};
use super::{Approval, NewApproval, Opened, Ruling, Status};
use crate::audit::EventSink;

/// Why an approver's ruling was not recorded.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    /// Separation of duties, approver groups or policy: not this approver.
    #[error("{0}")]
    NotPermitted(String),
    #[error("approval `{0}` requires a reason (--reason TEXT)")]
    ReasonRequired(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How often a hold looks at its request when no event arrives (pub/sub
/// delivers at most once).
const HOLD_POLL: Duration = Duration::from_secs(1);

/// The lifecycle over one store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    store: Arc<dyn ApprovalStore>,
    sink: EventSink,
    approvers: Approvers,
}

impl Lifecycle {
    /// The lifecycle over `store`, its events going to `sink`, rulings
    /// judged by `approvers`.
    pub fn new(store: Arc<dyn ApprovalStore>, sink: EventSink, approvers: Approvers) -> Self {
        Self {
            store,
            sink,
            approvers,
        }
    }

    pub fn store(&self) -> &Arc<dyn ApprovalStore> {
        &self.store
    }

    pub fn sink(&self) -> &EventSink {
        &self.sink
    }

    /// Opens (or finds) the request for an approvable call.
    pub async fn open(&self, new: &NewApproval, check: CheckRef<'_>) -> Result<Opened, StoreError> {
        let opened = self.store.open(new, check).await?;
        if opened.created {
            self.sink.emit(&ApprovalEvent::Requested {
                approval: &opened.approval,
                check_trace: check.trace,
            });
        }
        Ok(opened)
    }

    /// Takes one use for a call, by token or (after a hold) by id.
    pub async fn consume(
        &self,
        token: Option<&str>,
        id: Option<&str>,
        fingerprint: &str,
        check: CheckRef<'_>,
        parties: Parties<'_>,
    ) -> Result<Consumed, StoreError> {
        let consumed = self.store.consume(token, id, fingerprint, check).await?;
        if let Consumed::Used {
            id,
            uses_left,
            opened_by,
        } = &consumed
        {
            self.sink.emit(&ApprovalEvent::Consumed {
                id,
                uses_left: *uses_left,
                opened_by,
                parties,
                check_trace: check.trace,
            });
        }
        Ok(consumed)
    }

    /// One request, as of now.
    pub async fn get(&self, id: &str) -> Result<Approval, StoreError> {
        self.store
            .get(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.into()))
    }

    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<Approval>, StoreError> {
        self.store.list(filter).await
    }

    /// An approver's ruling. Authorised first: someone who may not rule
    /// learns nothing more (not even that a reason is missing).
    pub async fn rule(
        &self,
        approver: &Approver,
        id: &str,
        ruling: Ruling,
        reason: &str,
    ) -> Result<Approval, RuleError> {
        let a = self.get(id).await?;
        if let Some(why) = self.approvers.refusal(approver, &a) {
            return Err(RuleError::NotPermitted(why));
        }
        let reason = reason.trim();
        if ruling != Ruling::Revoke && a.info.reason_required && reason.is_empty() {
            return Err(RuleError::ReasonRequired(id.into()));
        }
        let a = self
            .store
            .vote(id, approver.voter(), ruling, reason)
            .await?;
        self.sink.emit(&ApprovalEvent::Ruled {
            approval: &a,
            ruling,
            approver: approver.voter(),
            reason,
        });
        Ok(a)
    }

    /// Waits for a decision on `id` until `deadline` or until `stop` turns
    /// true; `None` if none came. Pub/sub wakes it at once; polling covers
    /// lost messages.
    pub async fn await_decision(
        &self,
        id: &str,
        deadline: Instant,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<Approval>, StoreError> {
        // Subscribing waits for a live subscription, but never past the
        // deadline nor a drain.
        let mut events = tokio::select! {
            events = self.store.subscribe() => events,
            () = tokio::time::sleep_until(deadline) => return Ok(None),
            _ = stop.wait_for(|d| *d) => return Ok(None),
        };
        let mut poll = tokio::time::interval(HOLD_POLL);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Ok(None),
                _ = stop.wait_for(|d| *d) => return Ok(None),
                ev = events.recv() => match ev {
                    Ok(ev) if ev.id != id => continue,
                    _ => {}
                },
                _ = poll.tick() => {}
            }
            if let Some(a) = self.store.get(id).await?
                && a.status != Status::Pending
            {
                return Ok(Some(a));
            }
        }
    }

    /// Expires what is due (each recorded once, whichever sidecar sweeps
    /// first), and says when the audit streams near or pass their memory
    /// guard; returns the errors of the parts that could not be swept.
    pub async fn expire(&self) -> Vec<StoreError> {
        let swept = self.store.sweep().await;
        self.sink.metrics().audit_guard(&swept);
        warn_of_guard(&swept);
        let Swept {
            expired, errors, ..
        } = swept;
        for id in &expired {
            let approval = if self.sink.telemetry().is_some() {
                self.store.get(id).await.ok().flatten()
            } else {
                None
            };
            self.sink.emit(&ApprovalEvent::Expired {
                id,
                approval: approval.as_ref(),
            });
        }
        errors
    }
}
/// The audit streams are trimmed by age; the count is only a memory guard.
/// From 80% of it, a warning at each sweep; past it, the oldest entries go
/// whatever their age, and the log says so loudly.
fn warn_of_guard(swept: &Swept) {
    let (longest, guard) = (swept.audit_longest, swept.audit_guard);
    if swept.audit_trimmed > 0 {
        tracing::error!(
            trimmed = swept.audit_trimmed,
            longest,
            guard,
            "audit stream past its memory guard: its {} oldest entries were trimmed before audit.max_age; raise audit.max_entries (and Redis memory) or lower audit.max_age",
            swept.audit_trimmed
        );
    } else if guard > 0 && longest.saturating_mul(5) >= guard.saturating_mul(4) {
        tracing::warn!(
            longest,
            guard,
            "audit stream at {longest} of the {guard} entries its memory guard allows a shard: past it the oldest entries are trimmed whatever their age; raise audit.max_entries (and Redis memory) or lower audit.max_age"
        );
    }
}
