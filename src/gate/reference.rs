//! Approvals asked for and used by reference, as the AuthZEN Access Request
//! profile has it: an evaluation only says that an approval would allow the
//! call ([`Approach::Describe`]); the caller then submits an access request
//! ([`Approach::Submit`]), and after approval re-evaluates naming it
//! ([`Approach::Use`]). Envoy and MCP calls open their request at once
//! ([`Approach::Open`]).

use super::approvable::Note;
use super::{Gate, Outcome};
use crate::approval::Status;
use crate::approval::events::Parties;
use crate::approval::store::{CheckRef, Consumed};

/// What the gate does with a call that an approval would allow.
#[derive(Clone, Copy)]
pub enum Approach<'a> {
    /// Use the token the call presents, or open (or find) its request and
    /// answer or hold (Envoy, MCP).
    Open,
    /// Say that an approval would allow it, opening nothing.
    Describe,
    /// Open (or find) its request, issuing no token and holding nothing,
    /// if `binds` accepts the call's fingerprint: the caller proves that
    /// it was told of this very call.
    Submit {
        binds: &'a (dyn Fn(&str) -> bool + Sync),
    },
    /// Take one use of approval `id`, if it was granted for this very call.
    Use(&'a str),
}

impl std::fmt::Debug for Approach<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Approach::Open => f.write_str("Open"),
            Approach::Describe => f.write_str("Describe"),
            Approach::Submit { .. } => f.write_str("Submit"),
            Approach::Use(id) => f.debug_tuple("Use").field(id).finish(),
        }
    }
}

/// A call an approval would allow, described rather than opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requestable {
    /// The guarding policies.
    pub policies: Vec<String>,
    /// What binds an approval to this call exactly.
    pub fingerprint: String,
    /// The approval the caller named, and why it does not apply.
    pub unapplied: Option<(String, Unapplied)>,
}

impl Requestable {
    pub fn reason(&self) -> &'static str {
        match &self.unapplied {
            None => "an approval is required",
            Some((_, why)) => why.reason(),
        }
    }
}

/// Why an approval named by reference does not allow the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unapplied {
    /// No such approval, or one the caller cannot use.
    Unknown,
    /// Granted for another call (subject, action, resource or context).
    OutOfScope,
    /// Still waiting for approvers.
    Pending,
    Denied,
    /// Expired, revoked or used up.
    Spent,
    /// An access request whose denial binding is not this call's.
    Unbound,
}

impl Unapplied {
    fn of(status: Status) -> Self {
        match status {
            Status::Pending => Unapplied::Pending,
            Status::Denied => Unapplied::Denied,
            // Approved but not usable: another call took the last use.
            Status::Approved | Status::Consumed | Status::Expired | Status::Revoked => {
                Unapplied::Spent
            }
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Unapplied::Unknown => "the approval named in context.approval is not known",
            Unapplied::OutOfScope => {
                "the approval named in context.approval was granted for another subject, action, resource or context"
            }
            Unapplied::Pending => "the approval named in context.approval is still pending",
            Unapplied::Denied => "the approval named in context.approval was denied",
            Unapplied::Spent => {
                "the approval named in context.approval is expired, revoked or used up"
            }
            Unapplied::Unbound => {
                "the access request does not match the denied evaluation it names"
            }
        }
    }
}

impl Gate {
    /// Takes one use of approval `id` for this call, or says why it does
    /// not apply.
    pub(super) async fn use_named(
        &self,
        id: &str,
        fingerprint: &str,
        here: CheckRef<'_>,
        parties: Parties<'_>,
        described: Requestable,
        note: &mut Note,
    ) -> Outcome {
        let consumed = super::approvable::within(
            self.settings.store_budget,
            self.approvals
                .consume(None, Some(id), fingerprint, here, parties),
        )
        .await;
        let why = match consumed {
            Ok(Consumed::Used { id, uses_left, .. }) => {
                note.took(id, uses_left);
                return Outcome::Allow {
                    principal: parties.principal.to_owned(),
                };
            }
            Ok(Consumed::Unknown) => Unapplied::Unknown,
            Ok(Consumed::Mismatch { .. }) => Unapplied::OutOfScope,
            Ok(Consumed::NotUsable { status, .. }) => {
                note.status = Some(status);
                Unapplied::of(status)
            }
            Err(e) => return self.store_unavailable(e, &described.policies),
        };
        note.id = id.to_owned();
        Outcome::Requestable(Box::new(Requestable {
            unapplied: Some((id.to_owned(), why)),
            ..described
        }))
    }
}
