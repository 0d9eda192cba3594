//! Approvals: which calls need one (Cedar annotations, see [`params`]), the
//! approval request and its lifecycle (pending -> approved | denied ->
//! consumed | revoked | expired, see [`lifecycle`]), and the stores it lives
//! in behind one trait ([`store::ApprovalStore`]): Redis for production,
//! memory for tests.

pub mod approvers;
pub mod events;
pub mod fingerprint;
pub mod ids;
pub mod lifecycle;
pub mod memory;
pub mod params;
mod redact;
pub mod redis;
pub mod store;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use events::{ApprovalEvent, EventKind};
pub use fingerprint::FingerprintInput;
pub use ids::{SHARD_TAGS, SHARDS, new_id, new_token, shard_of, shard_of_id, token_hash};
pub use lifecycle::Lifecycle;
pub use memory::MemoryStore;
pub use params::{ApprovalParams, Mode};
pub use redact::redacted_url;
pub use redis::{RedisStore, StoreConfig};
pub use store::{ApprovalStore, StoreError};

/// Where a request stands. `Expired` is computed from the clock: a pending
/// request past its deadline, or an approval past its use window (see
/// [`Status::effective`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Revoked,
    Consumed,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Revoked => "revoked",
            Status::Consumed => "consumed",
            Status::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Approved,
        Status::Denied,
        Status::Revoked,
        Status::Consumed,
        Status::Expired,
    ];

    /// The status as of `now` (Unix seconds): pending past `expires_at`, or
    /// approved past `use_until`, is expired; approved with no use left is
    /// consumed (whatever else says otherwise, it allows nothing more). The
    /// one rule; its Lua twin is `effective` in `redis/lua/prelude.lua`.
    pub fn effective(self, now: i64, expires_at: i64, use_until: i64, uses_left: i64) -> Status {
        match self {
            Status::Pending if now > expires_at => Status::Expired,
            Status::Approved if uses_left <= 0 => Status::Consumed,
            Status::Approved if now > use_until => Status::Expired,
            s => s,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An approver's act on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ruling {
    Approve,
    Deny,
    Revoke,
}

impl Ruling {
    pub fn as_str(self) -> &'static str {
        match self {
            Ruling::Approve => "approve",
            Ruling::Deny => "deny",
            Ruling::Revoke => "revoke",
        }
    }
}

impl std::fmt::Display for Ruling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an approver needs to judge a request; fixed when it opens. Never
/// holds credentials or a raw body: only what [`ApprovalParams::show`] names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestInfo {
    pub principal: String,
    #[serde(default)]
    pub on_behalf_of: Option<String>,
    pub action: String,
    pub resource: String,
    pub method: String,
    pub path: String,
    pub host: String,
    pub source_address: String,
    pub policies: Vec<String>,
    pub parameters: BTreeMap<String, String>,
    pub approver_groups: Vec<String>,
    pub quorum: u32,
    pub uses: u32,
    pub reason_required: bool,
    pub mode: Mode,
    /// Opened in shadow mode: for practice, never required and never used.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    /// The guarding policies and parameters it was opened under
    /// ([`ApprovalParams::rules`]); "" for requests opened before they were kept.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rules: String,
}

/// One approver's act on a request, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub approver: String,
    pub verdict: Ruling,
    pub reason: String,
    pub at: i64,
    /// How the approver signed in (absent from votes recorded before it
    /// was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<approvers::Method>,
    /// For an identity provider's token: its issuer and subject.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issuer: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
}

impl Vote {
    /// `voter`'s ruling now.
    pub fn cast(voter: approvers::Voter<'_>, verdict: Ruling, reason: &str, at: i64) -> Self {
        Self {
            approver: voter.name.to_owned(),
            verdict,
            reason: reason.to_owned(),
            at,
            method: Some(voter.signed_in.method),
            issuer: voter.signed_in.issuer.clone(),
            subject: voter.signed_in.subject.clone(),
        }
    }
}

/// An approval request as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub id: String,
    pub status: Status,
    pub info: RequestInfo,
    pub created_at: i64,
    pub expires_at: i64,
    /// 0 until approved.
    pub use_until: i64,
    pub uses_left: u32,
    pub votes: Vec<Vote>,
    /// W3C traceparent of the check span that opened the request ("" when
    /// telemetry was off), so that approval events link back to it.
    pub opened_by: String,
}

impl Approval {
    /// The approve votes so far.
    pub fn approvals(&self) -> usize {
        self.votes
            .iter()
            .filter(|v| v.verdict == Ruling::Approve)
            .count()
    }
}

/// What a new approvable call asks the store for.
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub fingerprint: String,
    pub info: RequestInfo,
    pub params: ApprovalParams,
    /// Whether the answer carries a token for the retry. Not where the
    /// caller cannot present one (MCP): each would live, unused, as long as
    /// the record.
    pub issue_token: bool,
}

/// The store's answer to an approvable call without a token.
#[derive(Debug, Clone)]
pub struct Opened {
    pub approval: Approval,
    /// A bearer token for the retry, fresh on every answer while the request
    /// is pending or approved (the store keeps only hashes, so a lost answer
    /// costs nothing: the identical call gets a new token).
    pub token: Option<String>,
    /// Whether this call opened the request.
    pub created: bool,
}

pub(crate) use crate::clock::now_secs;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_its_deadline_a_request_is_expired_and_with_no_use_left_consumed() {
        assert_eq!(Status::Pending.effective(10, 10, 0, 1), Status::Pending);
        assert_eq!(Status::Pending.effective(11, 10, 0, 1), Status::Expired);
        assert_eq!(Status::Approved.effective(20, 10, 20, 1), Status::Approved);
        assert_eq!(Status::Approved.effective(21, 10, 20, 1), Status::Expired);
        assert_eq!(Status::Approved.effective(20, 10, 20, 0), Status::Consumed);
        assert_eq!(Status::Denied.effective(99, 10, 20, 1), Status::Denied);
        assert_eq!(Status::Consumed.effective(99, 10, 20, 0), Status::Consumed);
    }

    #[test]
    fn a_vote_keeps_its_stored_shape() {
        let v = Vote::cast("dora".into(), Ruling::Approve, "", 1);
        let stored = serde_json::to_string(&v).unwrap();
        // The Redis scripts count approvals by this exact text.
        assert!(stored.contains(r#""verdict":"approve""#), "{stored}");
        assert!(stored.contains(r#""method":"certificate""#), "{stored}");
        // Votes stored before the method was kept still read.
        let old: Vote =
            serde_json::from_str(r#"{"approver":"dora","verdict":"deny","reason":"","at":1}"#)
                .unwrap();
        assert_eq!(old.method, None);
    }
}
