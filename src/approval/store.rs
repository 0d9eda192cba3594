//! The approval store's contract: what the lifecycle needs from wherever
//! requests live. Every state change is atomic in the store, and the audit
//! entry for a change is written in the same step as the change, so that a
//! use is never spent unrecorded. Implementations: [`super::RedisStore`]
//! (one node or a cluster) and [`super::MemoryStore`] (one process; tests).

use std::time::Duration;

use tokio::sync::broadcast;

use super::approvers::Voter;
use super::{Approval, EventKind, NewApproval, Opened, Ruling, SHARDS, Status};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("approvals are unavailable: the approval store cannot be reached ({0})")]
    Unavailable(String),
    #[error("approval `{0}` does not exist (or its retention ended)")]
    NotFound(String),
    #[error("approval `{id}` is {status}, not pending")]
    NotPending { id: String, status: Status },
    #[error("approval `{id}` is {status}; only an approved request with uses left can be revoked")]
    NotApproved { id: String, status: Status },
    #[error("`{approver}` has already decided approval `{id}`")]
    AlreadyVoted { id: String, approver: String },
    #[error(
        "the approval store's primary got {got} of the {wanted} replica confirmation(s) that \
         redis.replica_acks asks for within half of redis.timeout_ms, so the change is not \
         relied on: check that primary's replicas (`INFO replication`), or lower \
         redis.replica_acks"
    )]
    NotReplicated { wanted: u32, got: u32 },
    #[error(
        "principal `{principal}` has {pending} approval requests pending; no more are opened \
         until approvers decide some or they expire (approvals.max_pending_per_principal)"
    )]
    TooManyPending { principal: String, pending: u64 },
    #[error("the approval store returned something unexpected: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// A store that did not answer in time.
    pub fn timed_out() -> Self {
        StoreError::Unavailable("timed out".into())
    }
}

/// How many requests one principal may have pending at once, unless
/// `approvals.max_pending_per_principal` says otherwise: an agent that
/// varies what approvers do not see cannot flood them.
pub const DEFAULT_MAX_PENDING_PER_PRINCIPAL: u32 = 20;

/// What one sweep did.
#[derive(Debug, Default)]
pub struct Swept {
    /// The requests it expired.
    pub expired: Vec<String>,
    /// The errors of the parts (shards) it could not sweep.
    pub errors: Vec<StoreError>,
    /// Entries in the longest audit stream (one per shard), before the
    /// guard trimmed it.
    pub audit_longest: u64,
    /// The memory guard of one stream, in entries (0: none).
    pub audit_guard: u64,
    /// Entries the guard trimmed, the oldest, whatever their age.
    pub audit_trimmed: u64,
}

/// The outcome of presenting an approval for a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumed {
    /// One use taken; the call may proceed. `opened_by` is the traceparent
    /// of the check that opened the request ("" if none was recorded).
    Used {
        id: String,
        uses_left: u32,
        opened_by: String,
    },
    /// The token names no request.
    Unknown,
    /// The approval belongs to another call.
    Mismatch { id: String },
    /// Not (or no longer) usable.
    NotUsable { id: String, status: Status },
}

/// A change to a request, as every sidecar on the store hears of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub id: String,
}

/// The check on whose behalf a change runs, for the audit entry it writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckRef<'a> {
    pub request_id: &'a str,
    /// W3C traceparent of the check span, or "".
    pub trace: &'a str,
    /// For `consume`: the decision entry to append when a use is taken
    /// (the store adds `approval_id` and `approval_status`).
    pub decision: &'a [(&'a str, &'a str)],
}

/// One audit stream entry: its stream id (milliseconds-sequence) and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: String,
    pub fields: Vec<(String, String)>,
}

impl AuditEntry {
    /// An entry with its fields in reading order: the ones people look at
    /// first, then the rest by name (stores need not keep field order).
    pub fn new(id: String, mut fields: Vec<(String, String)>) -> Self {
        const FIRST: [&str; 6] = [
            "event",
            "decision",
            "principal",
            "action",
            "resource",
            "approval_id",
        ];
        let rank = |k: &str| FIRST.iter().position(|f| *f == k).unwrap_or(FIRST.len());
        fields.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then(a.0.cmp(&b.0)));
        Self { id, fields }
    }
}

/// One audit entry taken for delivery to a channel (see
/// [`ApprovalStore::outbox_take`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The shard whose stream holds it.
    pub shard: u8,
    pub entry: AuditEntry,
}

impl OutboxEntry {
    /// The entry's value for `field` ("" if it has none).
    pub fn field(&self, field: &str) -> &str {
        self.entry
            .fields
            .iter()
            .find(|(k, _)| k == field)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Unique across shards, and the same on every redelivery.
    pub fn key(&self) -> String {
        format!("{:02}-{}", self.shard, self.entry.id)
    }

    /// Milliseconds since the epoch at which it was appended.
    pub fn appended_ms(&self) -> u64 {
        StreamId::parse(&self.entry.id).0
    }
}

/// A stream id as numbers, for ordering entries of several streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct StreamId(pub u64, pub u64);

impl StreamId {
    pub(crate) fn parse(id: &str) -> Self {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        Self(ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    }
}

/// Which requests to list.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// `None` lists every status.
    pub status: Option<Status>,
    pub principal: Option<String>,
    pub action: Option<String>,
    pub limit: usize,
}

impl ListFilter {
    /// Whether `a` passes the filter.
    pub fn keeps(&self, a: &Approval) -> bool {
        self.status.is_none_or(|s| s == a.status)
            && self
                .principal
                .as_ref()
                .is_none_or(|p| *p == a.info.principal)
            && self.action.as_ref().is_none_or(|x| *x == a.info.action)
    }

    /// At most this many (100 when unset).
    pub fn limit(&self) -> usize {
        if self.limit == 0 { 100 } else { self.limit }
    }
}

/// Where a reader of the audit streams is: per shard, the range start
/// (`-`, a stream id, or `(id` for "after id").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCursor {
    pub(crate) after: Vec<String>,
}

impl AuditCursor {
    /// From `start` (`-` or a stream id) in every shard.
    pub fn from(start: &str) -> Self {
        Self {
            after: vec![start.to_owned(); usize::from(SHARDS)],
        }
    }
}

/// How often `audit_follow` looks again.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// Where approval requests and the audit stream live.
#[async_trait::async_trait]
pub trait ApprovalStore: Send + Sync + std::fmt::Debug {
    /// Opens a request for an approvable call, or finds the one this exact
    /// call already opened (pending, approved, or denied). Refuses to open
    /// one more for a principal at its cap of pending requests
    /// ([`StoreError::TooManyPending`]); finding is never refused.
    async fn open(&self, new: &NewApproval, check: CheckRef<'_>) -> Result<Opened, StoreError>;

    /// One request, with its status as of now.
    async fn get(&self, id: &str) -> Result<Option<Approval>, StoreError>;

    /// Requests, newest first.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Approval>, StoreError>;

    /// Records `approver`'s ruling, with how they signed in. Separation of
    /// duties is the lifecycle's; the store enforces distinct approvers, the
    /// quorum, and the states.
    async fn vote(
        &self,
        id: &str,
        approver: Voter<'_>,
        ruling: Ruling,
        reason: &str,
    ) -> Result<Approval, StoreError>;

    /// Takes one use of an approval for a call with `fingerprint`, found by
    /// the caller's token, by id (hold mode), or with neither by the
    /// fingerprint itself (MCP: the identical call is the proof).
    async fn consume(
        &self,
        token: Option<&str>,
        id: Option<&str>,
        fingerprint: &str,
        check: CheckRef<'_>,
    ) -> Result<Consumed, StoreError>;

    /// Marks due requests expired (each once, whichever sidecar gets there
    /// first, recorded in the audit stream), trims the stream by age, and
    /// by count only past its memory guard.
    async fn sweep(&self) -> Swept;

    /// Requests waiting for a decision (not yet expired).
    async fn pending_count(&self) -> Result<u64, StoreError>;

    /// Whether the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Appends one entry to the audit stream, beside `place`: an approval
    /// id, else any text (a request id) that spreads entries.
    async fn append_audit(
        &self,
        place: &str,
        fields: &[(&str, &str)],
    ) -> Result<String, StoreError>;

    /// The next audit entries after `cursor`, up to `end` (a stream id or
    /// `+`), oldest first, at most `count`; moves the cursor past them.
    async fn audit_range(
        &self,
        cursor: &mut AuditCursor,
        end: &str,
        count: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;

    /// A cursor at the end of the stream: what `audit_follow` returns from
    /// it was appended after this call.
    async fn audit_end(&self) -> Result<AuditCursor, StoreError>;

    /// Audit entries after `cursor`, waiting up to `block` for the first.
    async fn audit_follow(
        &self,
        cursor: &mut AuditCursor,
        block: Duration,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let until = tokio::time::Instant::now() + block;
        loop {
            let page = self.audit_range(cursor, "+", 1000).await?;
            if !page.is_empty() || tokio::time::Instant::now() >= until {
                return Ok(page);
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }

    /// Durable delivery (the outbox): audit entries not yet taken for
    /// channel `group` by any consumer, at most `count`, now held by
    /// `consumer` until it acknowledges them. A group first read starts at
    /// the end of the stream; its progress is kept in the store.
    async fn outbox_take(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Entries of `group` taken `stalled` or longer ago and never
    /// acknowledged (the delivery failed, or its consumer died), now held
    /// by `consumer`. Entries trimmed from the stream meanwhile are
    /// acknowledged and counted in the reply's second part.
    async fn outbox_reclaim(
        &self,
        group: &str,
        consumer: &str,
        stalled: Duration,
        count: usize,
    ) -> Result<(Vec<OutboxEntry>, usize), StoreError>;

    /// Delivered (or given up): never handed out again.
    async fn outbox_ack(&self, group: &str, entries: &[OutboxEntry]) -> Result<(), StoreError>;

    /// A channel's note on request `id` (Slack: where its message is), kept
    /// for `ttl`.
    async fn set_channel_note(
        &self,
        id: &str,
        channel: &str,
        note: &str,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    async fn channel_note(&self, id: &str, channel: &str) -> Result<Option<String>, StoreError>;

    /// True the first time `key` is seen within `ttl`, on any sidecar: a
    /// replayed message is refused by it.
    async fn first_sight(&self, key: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Every change, from every sidecar on this store. Returns once the
    /// subscription is live (or the store's timeout passed: delivery is at
    /// most once, so waiters also poll).
    async fn subscribe(&self) -> broadcast::Receiver<Event>;
}
