//! A call that an approval would allow: use the approval it presents, or
//! open (or find) its request and hold or refuse it.

use std::time::Duration;

use tokio::time::Instant;

use super::{
    AccessRequest, Approach, BodyState, Call, Gate, Outcome, Requestable, UNAVAILABLE, Unapplied,
};
use crate::approval::events::{ApprovalEvent, Parties};
use crate::approval::store::{CheckRef, Consumed, StoreError};
use crate::approval::{
    Approval, ApprovalParams, FingerprintInput, Mode, NewApproval, RequestInfo, Ruling, Status,
    now_secs,
};
use crate::audit::Trail;
use crate::audit::trail::borrowed;
use crate::metrics::DecisionKind;
use crate::request::Shown;

/// What became of the approval side of a call, for its trail.
#[derive(Debug, Clone, Default)]
pub struct Note {
    /// The request involved ("" if none was reached).
    pub id: String,
    pub status: Option<Status>,
    /// The call waited in a hold.
    pub held: bool,
    /// The call took a use: the store recorded the decision with it.
    pub used: bool,
}

impl Note {
    /// The call took a use of request `id`, which has `uses_left`.
    pub(super) fn took(&mut self, id: String, uses_left: u32) {
        self.used = true;
        self.id = id;
        self.status = Some(ApprovalEvent::status_after_use(uses_left));
    }
}

impl Gate {
    pub(super) async fn approvable(
        &self,
        req: &AccessRequest<'_>,
        trail: &Trail,
        policies: Vec<String>,
        params: ApprovalParams,
    ) -> (Outcome, Note) {
        let mut note = Note::default();
        let call = &req.call;
        let refuse = |reason: String| Outcome::Deny {
            reason,
            policies: policies.clone(),
        };
        let unavailable = |e: StoreError| self.store_unavailable(e, &policies);
        // The approval must bind the whole body.
        if let BodyState::Incomplete(why) = call.body_state {
            return (refuse(why.to_owned()), note);
        }
        // Nor a body sent as something countersign does not read as JSON.
        if let Some(why) = req
            .mapped
            .unread_body
            .as_ref()
            .filter(|_| !call.body.is_empty())
        {
            let reason = format!("bad request: {why}");
            return (Outcome::Invalid { reason }, note);
        }
        // Approvers approve only what they can see: a call carrying more
        // than its guard shows is refused before any approval is used.
        let shown = req
            .mapped
            .shown(&params.show, call.query(), call.body.len());
        if !shown.unshown.is_empty() {
            return (refuse(unshown(&shown.unshown)), note);
        }
        let parties = trail.parties();
        let principal = parties.principal;
        let rules = params.rules(&policies);
        let fingerprint = &self.fingerprint_of(req, trail, &rules, false);
        let budget = self.settings.store_budget;
        // The allow a use of the approval leads to: recorded by the store
        // with the use it takes, so that a use is never spent unrecorded.
        let allowed = Outcome::Allow {
            principal: principal.to_owned(),
        };
        let allow = allow_fields(trail, call, &allowed);
        let allow = borrowed(&allow);
        let here = CheckRef {
            request_id: call.request_id,
            trace: trail.traceparent(),
            decision: &allow,
        };
        let approvals = &self.approvals;
        let described = || Requestable {
            policies: policies.clone(),
            fingerprint: fingerprint.clone(),
            unapplied: None,
        };
        match req.approach {
            Approach::Describe => return (Outcome::Requestable(Box::new(described())), note),
            Approach::Use(id) => {
                let outcome = self
                    .use_named(id, fingerprint, here, parties, described(), &mut note)
                    .await;
                return (outcome, note);
            }
            Approach::Submit { binds } if !binds(fingerprint) => {
                let unbound = Requestable {
                    unapplied: Some((String::new(), Unapplied::Unbound)),
                    ..described()
                };
                return (Outcome::Requestable(Box::new(unbound)), note);
            }
            Approach::Submit { .. } | Approach::Open => {}
        }

        if let Some(token) = call.token {
            let used = within(budget, async {
                let consumed = approvals
                    .consume(Some(token), None, fingerprint, here, parties)
                    .await?;
                // A pending request is answered as one; a denied one names
                // who denied it and why, as the token-less retry does.
                let found = match &consumed {
                    Consumed::NotUsable {
                        id,
                        status: Status::Pending | Status::Denied,
                    }
                    | Consumed::Mismatch { id } => approvals.store().get(id).await?,
                    _ => None,
                };
                Ok::<_, StoreError>((consumed, found))
            })
            .await;
            let outcome = match used {
                Ok((Consumed::Used { id, uses_left, .. }, _)) => {
                    note.took(id, uses_left);
                    allowed
                }
                Ok((Consumed::Unknown, _)) => refuse("the approval token is not valid".into()),
                Ok((Consumed::Mismatch { id }, found)) => {
                    let reason = match found.filter(|a| a.info.rules != rules) {
                        Some(a) => changed_rules(&id, &a.info.rules, &rules),
                        None => format!(
                            "approval `{id}` was granted for a different request: principal, method, host, path, query, content type and body must be identical"
                        ),
                    };
                    note.id = id;
                    refuse(reason)
                }
                Ok((Consumed::NotUsable { id, status }, found)) => {
                    note.status = Some(status);
                    let outcome = match found {
                        Some(approval) if approval.status == Status::Denied => {
                            refuse(denied(&approval))
                        }
                        Some(approval) if approval.status == Status::Pending => {
                            Outcome::ApprovalRequired {
                                approval: Box::new(approval),
                                token: None,
                                reason: "the approval is still pending".into(),
                            }
                        }
                        _ => refuse(not_usable(&id, status)),
                    };
                    note.id = id;
                    outcome
                }
                Err(e) => unavailable(e),
            };
            return (outcome, note);
        }

        // On MCP the identical call is the proof: an approved request is
        // used at once, in one store step, before anything is opened.
        if req.mapped.mcp.is_some() {
            let used = within(
                budget,
                approvals.consume(None, None, fingerprint, here, parties),
            )
            .await;
            match used {
                Ok(Consumed::Used { id, uses_left, .. }) => {
                    note.took(id, uses_left);
                    return (allowed, note);
                }
                // Not approved (yet): find or open its request below.
                Ok(_) => {}
                Err(e) => return (unavailable(e), note),
            }
        }
        let binding = (fingerprint.clone(), rules);
        let new = self.request_of(req, trail, &policies, params, binding, shown, false);
        let opened = match within(budget, approvals.open(&new, here)).await {
            Ok(o) => o,
            // A refusal the agent can act on, not an outage.
            Err(e @ StoreError::TooManyPending { .. }) => {
                approvals.sink().metrics().pending_cap_refusal();
                return (refuse(e.to_string()), note);
            }
            Err(e) => return (unavailable(e), note),
        };
        note.id.clone_from(&opened.approval.id);
        note.status = Some(opened.approval.status);
        let mut approval = opened.approval;
        // An access request is polled, not held.
        let holds = matches!(req.approach, Approach::Open);
        if holds && new.params.mode == Mode::Hold && approval.status == Status::Pending {
            note.held = true;
            let deadline = self.hold_deadline(&approval, req.answer_by);
            let mut stop = self.draining.subscribe();
            match approvals
                .await_decision(&approval.id, deadline, &mut stop)
                .await
            {
                Ok(Some(a)) => approval = a,
                Ok(None) => {}
                Err(e) => return (unavailable(e), note),
            }
        }
        // A held call released by an approval takes the use itself. So does
        // an MCP tool call approved since the step above: an MCP client
        // cannot add a header to one call, so the identical call (same
        // principal, on-behalf-of, server, tool and arguments) is the proof.
        if approval.status == Status::Approved && (note.held || req.mapped.mcp.is_some()) {
            let outcome = self
                .use_approved(
                    &approval.id,
                    fingerprint,
                    here,
                    parties,
                    &policies,
                    &mut note,
                )
                .await;
            return (outcome, note);
        }
        note.status = Some(approval.status);
        let outcome = match approval.status {
            Status::Pending => Outcome::ApprovalRequired {
                approval: Box::new(approval),
                token: opened.token,
                reason: "this call needs an approval".into(),
            },
            Status::Approved => Outcome::ApprovalRequired {
                approval: Box::new(approval),
                token: opened.token,
                reason: "approved: retry the identical request with the approval token".into(),
            },
            Status::Denied => refuse(denied(&approval)),
            status => refuse(not_usable(&approval.id, status)),
        };
        (outcome, note)
    }

    /// What binds an approval to the call exactly; a shadow request binds
    /// apart from the enforced one.
    fn fingerprint_of(
        &self,
        req: &AccessRequest<'_>,
        trail: &Trail,
        rules: &str,
        shadow: bool,
    ) -> String {
        let call = &req.call;
        // Identified by the trail: a guarded call always is.
        let parties = trail.parties();
        let (path, query) = (call.path_only(), call.query());
        FingerprintInput {
            principal: parties.principal,
            on_behalf_of: parties.on_behalf_of,
            action: parties.action,
            resource: parties.resource,
            method: call.method,
            host: call.host,
            path,
            query,
            body: call.body,
            content_type: call.content_type,
            content_encoding: call.content_encoding,
            shadow,
            rules,
        }
        .digest()
    }

    /// The approval request a call opens, bound by `fingerprint` under
    /// `rules`, showing what `shown` holds.
    #[allow(clippy::too_many_arguments)]
    fn request_of(
        &self,
        req: &AccessRequest<'_>,
        trail: &Trail,
        policies: &[String],
        params: ApprovalParams,
        (fingerprint, rules): (String, String),
        shown: Shown,
        shadow: bool,
    ) -> NewApproval {
        let call = &req.call;
        let parties = trail.parties();
        let on_behalf_of = Some(parties.on_behalf_of).filter(|o| !o.is_empty());
        let path = call.path_only();
        NewApproval {
            // An MCP client cannot present a token: its identical call is
            // the proof (see `use_approved`). A shadow request is never used.
            // Nor does an access request: its approval is named by id.
            issue_token: req.mapped.mcp.is_none()
                && !shadow
                && matches!(req.approach, Approach::Open),
            fingerprint,
            info: RequestInfo {
                principal: parties.principal.to_owned(),
                on_behalf_of: on_behalf_of.map(str::to_owned),
                action: parties.action.to_owned(),
                resource: parties.resource.to_owned(),
                method: call.method.to_owned(),
                path: path.to_owned(),
                host: call.host.to_owned(),
                source_address: call.source_address.to_owned(),
                policies: policies.to_vec(),
                parameters: shown.parameters,
                approver_groups: params.approver_groups.clone(),
                quorum: params.quorum,
                uses: params.uses,
                reason_required: params.reason_required,
                mode: params.mode,
                shadow,
                rules,
            },
            params,
        }
    }

    /// A call that the whole policy set would hold for an approval, let
    /// through in shadow: opens (or finds) its shadow request, so that
    /// approvers see what enforcement would ask of them. Never held, never
    /// used, and off the call's path: the answer and its audit entry do
    /// not wait for it or share its budget; a store that fails is logged.
    pub(super) fn open_shadow(
        &self,
        req: &AccessRequest<'_>,
        trail: &Trail,
        policies: &[String],
        params: ApprovalParams,
    ) {
        if let BodyState::Incomplete(_) = req.call.body_state {
            return;
        }
        // Enforced, the call would be refused, not asked about.
        let shown = req
            .mapped
            .shown(&params.show, req.call.query(), req.call.body.len());
        if !shown.unshown.is_empty() {
            return;
        }
        let rules = params.rules(policies);
        let fingerprint = self.fingerprint_of(req, trail, &rules, true);
        let binding = (fingerprint, rules);
        let new = self.request_of(req, trail, policies, params, binding, shown, true);
        let call = &req.call;
        let allowed = Outcome::Allow {
            principal: new.info.principal.clone(),
        };
        let allow = allow_fields(trail, call, &allowed);
        let request_id = call.request_id.to_owned();
        let trace = trail.traceparent().to_owned();
        let approvals = self.approvals.clone();
        let budget = self.settings.store_budget;
        tokio::spawn(async move {
            let decision = borrowed(&allow);
            let here = CheckRef {
                request_id: &request_id,
                trace: &trace,
                decision: &decision,
            };
            match within(budget, approvals.open(&new, here)).await {
                Ok(_) => {}
                Err(e @ StoreError::TooManyPending { .. }) => {
                    tracing::warn!("shadow approval request not opened: {e}");
                    approvals.sink().metrics().pending_cap_refusal();
                }
                Err(e) => {
                    tracing::warn!("approval store: shadow approval request not opened: {e}");
                    approvals.sink().metrics().redis_error();
                }
            }
        });
    }

    /// The store failed: the detail (hosts, Redis errors) is for
    /// operators, not callers.
    pub(super) fn store_unavailable(&self, e: StoreError, policies: &[String]) -> Outcome {
        tracing::warn!("approval store: {e}");
        self.approvals.sink().metrics().redis_error();
        Outcome::unavailable(UNAVAILABLE, policies)
    }

    /// Takes one use of the approved request `id` for this call.
    async fn use_approved(
        &self,
        id: &str,
        fingerprint: &str,
        here: CheckRef<'_>,
        parties: Parties<'_>,
        policies: &[String],
        note: &mut Note,
    ) -> Outcome {
        let consumed = within(
            self.settings.store_budget,
            self.approvals
                .consume(None, Some(id), fingerprint, here, parties),
        )
        .await;
        let refuse = |reason: String| Outcome::Deny {
            reason,
            policies: policies.to_vec(),
        };
        match consumed {
            Ok(Consumed::Used { id, uses_left, .. }) => {
                note.took(id, uses_left);
                Outcome::Allow {
                    principal: parties.principal.to_owned(),
                }
            }
            // Approved, but another identical call used it first.
            Ok(Consumed::NotUsable { id, status }) => refuse(not_usable(&id, status)),
            Ok(_) => refuse(format!("approval `{id}` could not be used for this call")),
            Err(e) => self.store_unavailable(e, policies),
        }
    }

    /// Until when a held call waits: the hold limit, the request's own
    /// expiry, and room before the caller's deadline to consume the
    /// approval, record the decision and answer.
    fn hold_deadline(&self, approval: &Approval, answer_by: Option<Instant>) -> Instant {
        let left =
            Duration::from_secs(approval.expires_at.saturating_sub(now_secs()).max(0) as u64);
        let deadline = Instant::now() + self.settings.hold_max.min(left);
        match answer_by {
            Some(by) => {
                let reserve = self.settings.store_budget * 2;
                deadline.min(by.checked_sub(reserve).unwrap_or(by))
            }
            None => deadline,
        }
    }
}

/// The audit fields of `allowed`, the allow an approval leads to.
fn allow_fields(trail: &Trail, call: &Call<'_>, allowed: &Outcome) -> Vec<(&'static str, String)> {
    trail.decision_fields(DecisionKind::Allow, (call.status_of)(allowed), call)
}

/// `op` within `budget`; past it, the store is unavailable.
pub(super) async fn within<T>(
    budget: Duration,
    op: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(budget, op)
        .await
        .unwrap_or_else(|_| Err(StoreError::timed_out()))
}

/// A denied request in plain words, with who denied it and why.
fn denied(a: &Approval) -> String {
    let by = a.votes.iter().rev().find(|v| v.verdict == Ruling::Deny);
    let why = by.map_or(String::new(), |v| {
        format!(" by {}: {}", v.approver, v.reason)
    });
    format!("approval `{}` was denied{why}", a.id)
}

/// A call that carries what an approver would not be shown, in plain words.
fn unshown(what: &[String]) -> String {
    const LISTED: usize = 5;
    let mut list = what
        .iter()
        .take(LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if what.len() > LISTED {
        list.push_str(&format!(" and {} more", what.len() - LISTED));
    }
    format!(
        "this call cannot be approved: it carries what an approver would not be shown ({list}); the guarding policies show only their `@show` fields and the allow-listed query parameters (`@show(\"*\")` shows everything)"
    )
}

/// An approval whose guard changed since it was opened, in plain words.
fn changed_rules(id: &str, then: &str, now: &str) -> String {
    let then = if then.is_empty() {
        "not recorded"
    } else {
        then
    };
    format!(
        "approval `{id}` was granted under other rules: the policies that require it or their approval parameters have changed since (then: {then}; now: {now}); ask for a new approval"
    )
}

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
