//! The decision core every front door calls: evaluate with Cedar, then for
//! a call an approval would allow, use the approval it presents or open (or
//! find) its request and hold or refuse it; record the check (span, audit
//! entry, metric) and say what it came to as an [`Outcome`]. Knows nothing
//! of Envoy, gRPC or HTTP status codes: each front door translates its
//! request into an [`AccessRequest`] and the outcome into its answer.

mod approvable;
mod reference;

pub use approvable::Note;
pub use reference::{Approach, Requestable, Unapplied};

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::approval::{Approval, Lifecycle};
use crate::audit::Trail;
use crate::metrics::DecisionKind;
use crate::policy::{Enforced, PolicyStore, Verdict};
use crate::request::MappedRequest;

/// What the gate is told about the call itself: what an approval binds
/// (method, host, path with query, body) and what the trail records.
/// `Debug` leaves out the token and the body.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub scheme: &'a str,
    /// The path with its query string.
    pub path: &'a str,
    pub body: &'a [u8],
    /// How the body says it is to be read (`content-type`,
    /// `content-encoding`, "" when absent): an approval binds them.
    pub content_type: &'a str,
    pub content_encoding: &'a str,
    /// Whether the front door has the whole body the caller sent.
    pub body_state: BodyState,
    pub source_address: &'a str,
    pub request_id: &'a str,
    /// An approval token the caller presented for this call.
    pub token: Option<&'a str>,
    /// How the front door will present an outcome, as a status code, for
    /// the trail (the audit entry and the span say what the caller got).
    pub status_of: fn(&Outcome) -> u16,
}

impl std::fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("method", &self.method)
            .field("host", &self.host)
            .field("path", &self.path_only())
            .field("body_bytes", &self.body.len())
            .field("body_state", &self.body_state)
            .field("request_id", &self.request_id)
            .field("token", &self.token.map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl Call<'_> {
    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        self.path.split_once('?').map_or(self.path, |p| p.0)
    }

    /// The raw query string, "" when there is none.
    pub fn query(&self) -> &str {
        self.path.split_once('?').map_or("", |p| p.1)
    }
}

/// Whether the body that an approval must bind is all there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyState {
    /// All of it (or the call has none).
    Complete,
    /// Part or none of what the caller sent: an approvable call is refused
    /// with this reason, in the front door's words (what to fix where).
    Incomplete(&'static str),
}

/// When a call arrived (its latency and its span start there) and in which
/// trace.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Instant,
    pub wall: SystemTime,
    /// The caller's trace (only read when telemetry is on).
    pub parent: Option<opentelemetry::Context>,
}

impl Arrival {
    pub fn now(parent: Option<opentelemetry::Context>) -> Self {
        Self {
            at: Instant::now(),
            wall: SystemTime::now(),
            parent,
        }
    }
}

/// One call to decide.
pub struct AccessRequest<'a> {
    pub call: Call<'a>,
    pub arrival: Arrival,
    pub mapped: &'a MappedRequest,
    /// Until when the caller waits for an answer, if it said.
    pub answer_by: Option<Instant>,
    /// What to do when an approval would allow the call.
    pub approach: Approach<'a>,
}

/// What a call comes to. `Debug` leaves out the approval token.
#[derive(Clone, PartialEq, Eq)]
pub enum Outcome {
    Allow {
        principal: String,
    },
    /// A policy denies it, or the approval presented or found does not
    /// allow it.
    Deny {
        reason: String,
        policies: Vec<String>,
    },
    ApprovalRequired {
        approval: Box<Approval>,
        /// Only in the answer that opened (or found) the request: present
        /// it on the identical retry.
        token: Option<String>,
        reason: String,
    },
    /// Approvals or the audit trail are needed but the store cannot be
    /// reached: fail closed, visibly.
    Unavailable {
        reason: String,
        policies: Vec<String>,
    },
    /// The request cannot be decided as sent.
    Invalid {
        reason: String,
    },
    /// An approval would allow it, and nothing was opened (see
    /// [`Approach::Describe`]); or the approval the caller named does not
    /// apply to it ([`Approach::Use`]).
    Requestable(Box<Requestable>),
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::ApprovalRequired {
                approval,
                token,
                reason,
            } => f
                .debug_struct("ApprovalRequired")
                .field("approval", &approval.id)
                .field("status", &approval.status)
                .field("token", &token.as_ref().map(|_| "***"))
                .field("reason", reason)
                .finish(),
            Outcome::Allow { principal } => f
                .debug_struct("Allow")
                .field("principal", principal)
                .finish(),
            Outcome::Deny { reason, policies } => f
                .debug_struct("Deny")
                .field("reason", reason)
                .field("policies", policies)
                .finish(),
            Outcome::Unavailable { reason, policies } => f
                .debug_struct("Unavailable")
                .field("reason", reason)
                .field("policies", policies)
                .finish(),
            Outcome::Invalid { reason } => {
                f.debug_struct("Invalid").field("reason", reason).finish()
            }
            Outcome::Requestable(r) => r.fmt(f),
        }
    }
}

impl Outcome {
    pub fn kind(&self) -> DecisionKind {
        match self {
            Outcome::Allow { .. } => DecisionKind::Allow,
            Outcome::ApprovalRequired { .. } => DecisionKind::ApprovalRequired,
            Outcome::Requestable(r) if r.unapplied.is_none() => DecisionKind::ApprovalRequired,
            Outcome::Requestable(_) => DecisionKind::Deny,
            Outcome::Unavailable { .. } => DecisionKind::Error,
            Outcome::Deny { .. } | Outcome::Invalid { .. } => DecisionKind::Deny,
        }
    }

    /// What the caller is told, in a few words ("" for an allow).
    pub fn reason(&self) -> &str {
        match self {
            Outcome::Allow { .. } => "",
            Outcome::ApprovalRequired { .. } => "approval required",
            Outcome::Requestable(r) => r.reason(),
            Outcome::Deny { reason, .. }
            | Outcome::Unavailable { reason, .. }
            | Outcome::Invalid { reason } => reason,
        }
    }

    fn unavailable(reason: &str, policies: &[String]) -> Self {
        Outcome::Unavailable {
            reason: reason.to_owned(),
            policies: policies.to_vec(),
        }
    }
}

thread_local! {
    /// Per worker thread, so that checks take no lock.
    static FITTING: std::cell::RefCell<Fitting> = std::cell::RefCell::new(Fitting::default());
}

/// Tool-call shapes (action, principal and resource types, the context's
/// optional parts and argument types) seen to fit a policy set's schema.
#[derive(Default)]
struct Fitting {
    /// Held, so that a set's address is never another's while remembered.
    set: Option<Arc<crate::policy::Loaded>>,
    shapes: std::collections::HashSet<String>,
}

impl Fitting {
    const KEEP: usize = 1024;

    fn fits(&self, set: &Arc<crate::policy::Loaded>, key: &str) -> bool {
        self.set.as_ref().is_some_and(|s| Arc::ptr_eq(s, set)) && self.shapes.contains(key)
    }

    fn remember(&mut self, set: &Arc<crate::policy::Loaded>, key: String) {
        let same = self.set.as_ref().is_some_and(|s| Arc::ptr_eq(s, set));
        if !same || self.shapes.len() >= Self::KEEP {
            self.shapes.clear();
            self.set = Some(set.clone());
        }
        self.shapes.insert(key);
    }
}

/// What a caller is told when the audit stream cannot be written.
pub const AUDIT_UNAVAILABLE: &str =
    "the audit trail cannot be written, so guarded calls are refused; retry later";

/// What a caller is told when the approval store cannot be reached.
pub const UNAVAILABLE: &str =
    "approvals are unavailable: the approval store cannot be reached; retry later";

/// Settings the gate reads per call.
#[derive(Debug, Clone)]
pub struct GateSettings {
    /// Longest a hold-mode call waits; below Envoy's timeout on held routes.
    pub hold_max: Duration,
    /// Longest the approval store may take on one check (outside a hold),
    /// so that the caller gets countersign's answer before it gives up.
    pub store_budget: Duration,
}

impl GateSettings {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Self {
            hold_max: c.hold_max,
            store_budget: c.store_budget,
        }
    }
}

/// The decision core. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gate {
    policies: Arc<PolicyStore>,
    approvals: Lifecycle,
    settings: Arc<GateSettings>,
    /// Set on shutdown: holds end at once (see [`Self::drain`]).
    draining: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Gate {
    pub fn new(policies: Arc<PolicyStore>, approvals: Lifecycle, settings: GateSettings) -> Self {
        Self {
            policies,
            approvals,
            settings: Arc::new(settings),
            draining: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }

    /// Whether checks are traced (front doors then read the caller's trace).
    pub fn traced(&self) -> bool {
        self.approvals.sink().telemetry().is_some()
    }

    /// Ends every hold, now and from now on: a held call is answered at once
    /// as in deny mode (its approval id, and the token for a retry), rather
    /// than keeping shutdown waiting.
    pub fn drain(&self) {
        self.draining.send_replace(true);
    }

    /// Decides one call. Never fails: anything that prevents a decision is
    /// a denial.
    pub async fn decide(&self, mut req: AccessRequest<'_>) -> Outcome {
        let started = req.arrival.at;
        let mut trail = Trail::new(req.arrival.wall, req.arrival.parent.take());
        let mapped = req.mapped;
        if let Some(reason) = self.misfit(mapped) {
            let outcome = Outcome::Deny {
                reason,
                policies: Vec::new(),
            };
            self.record(trail, &req.call, started, &outcome, None, None);
            return outcome;
        }
        // A body key the upstream may read as a declared attribute that
        // the policy, matching exactly, does not see.
        if let Some(body) = &mapped.body
            && let Err(e) = self.policies.current().declared.check_body(body)
        {
            let outcome = Outcome::Invalid {
                reason: format!("bad request: {e}"),
            };
            self.record(trail, &req.call, started, &outcome, None, None);
            return outcome;
        }
        // Entity data beside the policies: the principal's groups, the
        // resource's attributes. Nothing to do (and nothing spent) without.
        let merged = match self
            .policies
            .with_directory(&mapped.entities, &mapped.resource)
        {
            Ok(merged) => merged,
            Err(e) => {
                let outcome = Outcome::Deny {
                    reason: e.to_string(),
                    policies: Vec::new(),
                };
                self.record(trail, &req.call, started, &outcome, None, None);
                return outcome;
            }
        };
        let decided = self.policies.decide_enforced(
            |granted| mapped.request(granted),
            merged.as_ref().unwrap_or(&mapped.entities),
            &mapped.action,
            mapped.shadow,
        );
        let Enforced {
            verdict,
            guarded,
            would,
        } = match decided {
            Ok(v) => v,
            Err(e) => {
                let outcome = Outcome::Invalid {
                    reason: format!("bad request: {e}"),
                };
                self.record(trail, &req.call, started, &outcome, None, None);
                return outcome;
            }
        };
        let sink = self.approvals.sink();
        if let Some(would) = &would {
            trail.shadowed(would);
        }
        trail.identify(sink.telemetry(), mapped, &verdict, guarded, &req.call);
        let (outcome, note) = match verdict {
            Verdict::Allow(_) => (
                Outcome::Allow {
                    principal: mapped.principal.to_string(),
                },
                None,
            ),
            Verdict::Deny(d) => (
                Outcome::Deny {
                    reason: d.reason(),
                    policies: d.policies,
                },
                None,
            ),
            // Boxed: its state (a hold, the store's calls) would otherwise
            // be copied with every check's future, guarded or not.
            Verdict::Approvable { denial, params } => {
                let (outcome, note) =
                    Box::pin(self.approvable(&req, &trail, denial.policies, params)).await;
                (outcome, Some(note))
            }
        };
        // A call let through that enforcement would hold for an approval
        // opens a shadow request: approvers see what they would be asked.
        if let Some(Verdict::Approvable { denial, params }) = would
            && matches!(outcome, Outcome::Allow { .. })
        {
            self.open_shadow(&req, &trail, &denial.policies, params);
        }
        if note.is_none() && !trail.guarded() {
            self.record(trail, &req.call, started, &outcome, None, None);
            return outcome;
        }
        let answer_by = req.answer_by;
        Box::pin(self.finish_guarded(trail, &req.call, started, answer_by, outcome, note)).await
    }

    /// Why a call whose action and context the caller chose (an MCP tool
    /// call) cannot be decided: its action must be declared, apply to its
    /// principal and resource, and its arguments fit the declaration. The
    /// route table's requests were checked against the schema at load.
    /// Without it a tool named like another action (`read`) would meet
    /// that action's policies, and an argument of another type (`"true"`
    /// for `true`) would pass a condition the server then reads otherwise.
    fn misfit(&self, mapped: &MappedRequest) -> Option<String> {
        let call = mapped.mcp.as_ref()?;
        let tool = call.tool.as_ref()?;
        let loaded = self.policies.current();
        // Whether a request fits depends on its types, not its values: a
        // shape seen to fit this policy set fits again. Asking Cedar was
        // most of an MCP check's extra cost.
        if FITTING.with_borrow(|f| f.fits(&loaded, &call.shape)) {
            return None;
        }
        if mapped.fits(&loaded.schema) {
            FITTING.with_borrow_mut(|f| f.remember(&loaded, call.shape.clone()));
            return None;
        }
        let action = &mapped.action;
        Some(if loaded.schema.actions().any(|a| a == action) {
            format!(
                "the call to tool `{tool}` does not fit {action} in the policy schema: the action must apply to {} and declare every argument with its type",
                mapped.resource.type_name()
            )
        } else {
            format!("no policy can allow {action}: the policy schema does not declare it")
        })
    }

    /// Records a call the front door could not turn into a request: it is
    /// refused as [`Outcome::Invalid`] with `reason`.
    pub fn reject(&self, call: &Call<'_>, reason: String, arrival: Arrival) -> Outcome {
        let outcome = Outcome::Invalid { reason };
        let trail = Trail::new(arrival.wall, arrival.parent);
        self.record(trail, call, arrival.at, &outcome, None, None);
        outcome
    }

    /// The budget left for the audit write: what the store calls left of
    /// the check's (or, after a hold, of the caller's deadline).
    fn audit_budget(
        &self,
        started: Instant,
        answer_by: Option<Instant>,
        note: Option<&approvable::Note>,
    ) -> Instant {
        let held = note.is_some_and(|n| n.held);
        match answer_by {
            Some(by) if held => by,
            Some(by) => by.min(started + self.settings.store_budget),
            // Held with no deadline from the caller: the budget starts
            // when the hold ends, not when the check arrived.
            None if held => Instant::now() + self.settings.store_budget,
            None => started + self.settings.store_budget,
        }
    }

    /// Writes the audit entry of a guarded decision (unless the store wrote
    /// it with the use it took), then records the check.
    async fn finish_guarded(
        &self,
        trail: Trail,
        call: &Call<'_>,
        started: Instant,
        answer_by: Option<Instant>,
        mut outcome: Outcome,
        note: Option<approvable::Note>,
    ) -> Outcome {
        let note_ref = note.as_ref();
        let mut audited = None;
        if note_ref.is_some_and(|n| n.used) {
            audited = Some(true);
        // Store down: the answer is already a refusal, and writing would
        // only delay it past the caller's deadline.
        } else if trail.guarded() && outcome.kind() != DecisionKind::Error {
            let status = (call.status_of)(&outcome);
            let fields = trail.audit_entry(&outcome, status, call, note_ref);
            let place = note_ref
                .map(|n| n.id.as_str())
                .filter(|id| !id.is_empty())
                .unwrap_or(call.request_id);
            let until = self.audit_budget(started, answer_by, note_ref);
            let written = tokio::time::timeout_at(
                until,
                self.approvals
                    .store()
                    .append_audit(place, &crate::audit::trail::borrowed(&fields)),
            )
            .await;
            let failed = match written {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("timed out".to_owned()),
            };
            if let Some(why) = &failed {
                tracing::warn!("audit stream not written, guarded call refused: {why}");
                let metrics = self.approvals.sink().metrics();
                metrics.redis_error();
                metrics.audit_failure();
            }
            let written = failed.is_none();
            // An audit device that cannot write refuses what it would allow.
            if !written && matches!(outcome, Outcome::Allow { .. }) {
                outcome = Outcome::unavailable(AUDIT_UNAVAILABLE, trail.policies());
            }
            audited = Some(written);
        }
        self.record(trail, call, started, &outcome, note_ref, audited);
        outcome
    }

    /// The metric, the log line and the span of one check.
    fn record(
        &self,
        trail: Trail,
        call: &Call<'_>,
        started: Instant,
        outcome: &Outcome,
        note: Option<&approvable::Note>,
        audited: Option<bool>,
    ) {
        let sink = self.approvals.sink();
        sink.metrics()
            .check(outcome.kind(), trail.shadow_kind(), started.elapsed());
        trail.finish(
            sink.telemetry(),
            outcome,
            (call.status_of)(outcome),
            call,
            note,
            audited,
        );
    }
}

#[cfg(test)]
mod binding_tests;
#[cfg(test)]
mod directory_tests;
#[cfg(test)]
mod shadow_tests;
#[cfg(test)]
mod tests;
