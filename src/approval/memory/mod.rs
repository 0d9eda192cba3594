//! Approval requests in this process' memory: the same contract as the Redis
//! store (`tests/approval_store.rs` runs one test body against both), for
//! unit tests, the fuzzer and the benches. Not for production: requests and
//! the audit trail live and die with one process, and nothing is shared
//! between sidecars. It keeps the newest [`KEEP`] requests and audit
//! entries (as the Redis store keeps its retention and stream length), so a
//! long fuzzing or benchmark run stays bounded.

mod audit;
mod side;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::broadcast;

use super::approvers::Voter;
use super::store::{
    ApprovalStore, AuditCursor, AuditEntry, CheckRef, Consumed, DEFAULT_MAX_PENDING_PER_PRINCIPAL,
    Event, ListFilter, OutboxEntry, StoreError, StreamId, Swept,
};
use super::{
    Approval, EventKind, NewApproval, Opened, RequestInfo, Ruling, Status, Vote, new_id, new_token,
    now_secs, shard_of, token_hash,
};

/// How many requests, and how many audit entries, the store keeps.
pub const KEEP: usize = 10_000;

/// An in-memory [`ApprovalStore`].
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
    /// Pending requests one principal may have at once.
    max_pending: u32,
}

#[derive(Debug, Default)]
struct State {
    requests: HashMap<String, Record>,
    /// Fingerprint -> (id, until when the same call finds it).
    by_fingerprint: HashMap<String, (String, i64)>,
    /// Token hash -> id.
    tokens: HashMap<String, String>,
    audit: VecDeque<AuditEntry>,
    last_id: StreamId,
    side: side::Side,
    /// Request ids, oldest first: the first to go past [`KEEP`].
    order: VecDeque<String>,
}

#[derive(Debug)]
struct Record {
    info: RequestInfo,
    fingerprint: String,
    /// As stored; [`Status::effective`] judges it against the clock.
    status: Status,
    created_at: i64,
    expires_at: i64,
    use_until: i64,
    uses_left: i64,
    quorum: u32,
    approval_ttl: i64,
    voters: HashSet<String>,
    votes: Vec<Vote>,
    trace: String,
    /// The hashes of the tokens issued for it.
    tokens: Vec<String>,
}

impl Record {
    fn effective(&self, now: i64) -> Status {
        self.status
            .effective(now, self.expires_at, self.use_until, self.uses_left)
    }

    fn approval(&self, id: &str, now: i64) -> Approval {
        Approval {
            id: id.to_owned(),
            status: self.effective(now),
            info: self.info.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            use_until: self.use_until,
            uses_left: self.uses_left.max(0) as u32,
            votes: self.votes.clone(),
            opened_by: self.trace.clone(),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store with the default cap of pending requests per principal.
    pub fn new() -> Self {
        Self::with_max_pending(DEFAULT_MAX_PENDING_PER_PRINCIPAL)
    }

    /// A store where one principal may have `max_pending` requests pending.
    pub fn with_max_pending(max_pending: u32) -> Self {
        Self {
            state: Mutex::new(State::default()),
            events: broadcast::channel(1024).0,
            max_pending,
        }
    }

    /// The state; a panic elsewhere while it was held does not poison the
    /// store for every later call.
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish(&self, kind: EventKind, id: &str) {
        let _ = self.events.send(Event {
            kind,
            id: id.to_owned(),
        });
    }
}

impl State {
    /// Appends an entry; empty values are left out, as in Redis.
    fn append(&mut self, fields: Vec<(&str, &str)>) -> String {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_id = if ms > self.last_id.0 {
            StreamId(ms, 0)
        } else {
            StreamId(self.last_id.0, self.last_id.1 + 1)
        };
        let id = format!("{}-{}", self.last_id.0, self.last_id.1);
        let fields = fields
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        self.audit.push_back(AuditEntry::new(id.clone(), fields));
        if self.audit.len() > KEEP {
            self.audit.pop_front();
        }
        id
    }

    /// How many requests `principal` has pending, counted up to `cap`.
    fn pending_of(&self, principal: &str, now: i64, cap: u32) -> u64 {
        if self.requests.len() < cap as usize {
            return 0; // Fewer requests in all than the cap: no need to count.
        }
        self.requests
            .values()
            .filter(|r| r.info.principal == principal && r.effective(now) == Status::Pending)
            .count() as u64
    }

    /// A token for request `id`, by its hash.
    fn issue(&mut self, id: &str, hash: String) {
        if let Some(r) = self.requests.get_mut(id) {
            r.tokens.push(hash.clone());
            self.tokens.insert(hash, id.to_owned());
        }
    }

    /// Drops the oldest requests past [`KEEP`], with their pointers.
    fn forget_past_keep(&mut self) {
        while self.order.len() > KEEP {
            let Some(id) = self.order.pop_front() else {
                return;
            };
            let Some(r) = self.requests.remove(&id) else {
                continue;
            };
            for hash in &r.tokens {
                self.tokens.remove(hash);
            }
            if self
                .by_fingerprint
                .get(&r.fingerprint)
                .is_some_and(|(p, _)| *p == id)
            {
                self.by_fingerprint.remove(&r.fingerprint);
            }
        }
    }

    /// A lifecycle event's entry: who and what, then `extra`.
    fn event(&mut self, id: &str, kind: EventKind, extra: &[(&str, &str)]) {
        let Some(r) = self.requests.get(id) else {
            return;
        };
        let info = r.info.clone();
        let mut fields = vec![
            ("event", kind.as_str()),
            ("approval_id", id),
            ("principal", info.principal.as_str()),
            ("action", info.action.as_str()),
            ("resource", info.resource.as_str()),
            ("on_behalf_of", info.on_behalf_of.as_deref().unwrap_or("")),
        ];
        fields.extend_from_slice(extra);
        self.append(fields);
    }
}

#[async_trait::async_trait]
impl ApprovalStore for MemoryStore {
    async fn open(&self, new: &NewApproval, check: CheckRef<'_>) -> Result<Opened, StoreError> {
        let now = now_secs();
        let shard = shard_of(&new.fingerprint).unwrap_or(0);
        let (token, hash) = new_token(shard);
        let mut s = self.state();
        if let Some((existing, until)) = s.by_fingerprint.get(&new.fingerprint).cloned()
            && until >= now
            && let Some(r) = s.requests.get(&existing)
        {
            let approval = r.approval(&existing, now);
            match approval.status {
                Status::Pending | Status::Approved => {
                    if new.issue_token {
                        s.issue(&existing, hash);
                    }
                    return Ok(Opened {
                        approval,
                        token: new.issue_token.then_some(token),
                        created: false,
                    });
                }
                Status::Denied => {
                    return Ok(Opened {
                        approval,
                        token: None,
                        created: false,
                    });
                }
                _ => {}
            }
        }
        let pending = s.pending_of(&new.info.principal, now, self.max_pending);
        if pending >= u64::from(self.max_pending) {
            return Err(StoreError::TooManyPending {
                principal: new.info.principal.clone(),
                pending,
            });
        }
        let id = new_id(shard);
        let p = &new.params;
        let pending_ttl = p.pending_ttl.as_secs() as i64;
        let approval_ttl = p.approval_ttl.as_secs() as i64;
        s.requests.insert(
            id.clone(),
            Record {
                info: new.info.clone(),
                fingerprint: new.fingerprint.clone(),
                status: Status::Pending,
                created_at: now,
                expires_at: now + pending_ttl,
                use_until: 0,
                uses_left: i64::from(p.uses),
                quorum: p.quorum,
                approval_ttl,
                voters: HashSet::new(),
                votes: Vec::new(),
                trace: check.trace.to_owned(),
                tokens: Vec::new(),
            },
        );
        s.order.push_back(id.clone());
        s.by_fingerprint.insert(
            new.fingerprint.clone(),
            (id.clone(), now + pending_ttl + approval_ttl),
        );
        if new.issue_token {
            s.issue(&id, hash);
        }
        s.event(
            &id,
            EventKind::Requested,
            &[
                ("status", Status::Pending.as_str()),
                ("request_id", check.request_id),
                ("trace", check.trace),
            ],
        );
        let approval = s.requests[&id].approval(&id, now);
        s.forget_past_keep();
        drop(s);
        self.publish(EventKind::Requested, &id);
        Ok(Opened {
            approval,
            token: new.issue_token.then_some(token),
            created: true,
        })
    }

    async fn get(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        let now = now_secs();
        Ok(self.state().requests.get(id).map(|r| r.approval(id, now)))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Approval>, StoreError> {
        let now = now_secs();
        let s = self.state();
        let mut all: Vec<Approval> = s
            .requests
            .iter()
            .map(|(id, r)| r.approval(id, now))
            .filter(|a| filter.keeps(a))
            .collect();
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        all.truncate(filter.limit());
        Ok(all)
    }

    async fn vote(
        &self,
        id: &str,
        voter: Voter<'_>,
        ruling: Ruling,
        reason: &str,
    ) -> Result<Approval, StoreError> {
        let now = now_secs();
        let approver = voter.name;
        let mut s = self.state();
        let r = s
            .requests
            .get_mut(id)
            .ok_or_else(|| StoreError::NotFound(id.into()))?;
        let status = r.effective(now);
        let vote = Vote::cast(voter, ruling, reason, now);
        let kind = if ruling == Ruling::Revoke {
            if status != Status::Approved || r.uses_left <= 0 {
                return Err(StoreError::NotApproved {
                    id: id.into(),
                    status,
                });
            }
            r.status = Status::Revoked;
            r.votes.push(vote);
            EventKind::Revoked
        } else {
            if status != Status::Pending {
                return Err(StoreError::NotPending {
                    id: id.into(),
                    status,
                });
            }
            let person = voter.person();
            if r.voters.contains(approver) || person.as_ref().is_some_and(|p| r.voters.contains(p))
            {
                return Err(StoreError::AlreadyVoted {
                    id: id.into(),
                    approver: approver.into(),
                });
            }
            r.voters.insert(approver.to_owned());
            r.voters.extend(person);
            r.votes.push(vote);
            let approvals = r
                .votes
                .iter()
                .filter(|v| v.verdict == Ruling::Approve)
                .count();
            if ruling == Ruling::Deny {
                r.status = Status::Denied;
            } else if approvals >= r.quorum as usize {
                r.status = Status::Approved;
                r.use_until = now + r.approval_ttl;
            }
            EventKind::of_ruling(ruling, r.status)
        };
        let after = r.status;
        s.event(
            id,
            kind,
            &[
                ("status", after.as_str()),
                ("approver", approver),
                ("approver_method", voter.signed_in.method.as_str()),
                ("approver_issuer", &voter.signed_in.issuer),
                ("approver_subject", &voter.signed_in.subject),
                ("reason", reason),
            ],
        );
        let approval = s.requests[id].approval(id, now);
        drop(s);
        self.publish(kind, id);
        Ok(approval)
    }

    async fn consume(
        &self,
        token: Option<&str>,
        id: Option<&str>,
        fingerprint: &str,
        check: CheckRef<'_>,
    ) -> Result<Consumed, StoreError> {
        let now = now_secs();
        let mut s = self.state();
        let id = match (id, token) {
            (Some(id), _) => id.to_owned(),
            (None, Some(t)) => match s.tokens.get(&token_hash(t)) {
                Some(id) => id.clone(),
                None => return Ok(Consumed::Unknown),
            },
            (None, None) => match s.by_fingerprint.get(fingerprint) {
                Some((id, until)) if *until >= now => id.clone(),
                _ => return Ok(Consumed::Unknown),
            },
        };
        let Some(r) = s.requests.get_mut(&id) else {
            return Ok(Consumed::Unknown);
        };
        if r.fingerprint != fingerprint {
            return Ok(Consumed::Mismatch { id });
        }
        let status = r.effective(now);
        if status != Status::Approved {
            return Ok(Consumed::NotUsable { id, status });
        }
        r.uses_left -= 1;
        if r.uses_left <= 0 {
            r.status = Status::Consumed;
        }
        let (left, after, opened_by) = (r.uses_left, r.status, r.trace.clone());
        let left_text = left.to_string();
        s.event(
            &id,
            EventKind::Consumed,
            &[
                ("status", after.as_str()),
                ("uses_left", &left_text),
                ("request_id", check.request_id),
                ("trace", check.trace),
            ],
        );
        if !check.decision.is_empty() {
            let mut fields = check.decision.to_vec();
            fields.push(("approval_id", &id));
            fields.push(("approval_status", after.as_str()));
            s.append(fields);
        }
        drop(s);
        self.publish(EventKind::Consumed, &id);
        Ok(Consumed::Used {
            id,
            uses_left: left.max(0) as u32,
            opened_by,
        })
    }

    async fn sweep(&self) -> Swept {
        let now = now_secs();
        let mut s = self.state();
        let due: Vec<String> = s
            .requests
            .iter()
            .filter(|(_, r)| {
                matches!(r.status, Status::Pending | Status::Approved)
                    && r.effective(now) == Status::Expired
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &due {
            if let Some(r) = s.requests.get_mut(id) {
                r.status = Status::Expired;
            }
            s.event(
                id,
                EventKind::Expired,
                &[("status", Status::Expired.as_str())],
            );
        }
        drop(s);
        for id in &due {
            self.publish(EventKind::Expired, id);
        }
        // The audit trail here is bounded by [`KEEP`], not a guard.
        Swept {
            expired: due,
            ..Swept::default()
        }
    }

    async fn pending_count(&self) -> Result<u64, StoreError> {
        let now = now_secs();
        Ok(self
            .state()
            .requests
            .values()
            .filter(|r| r.effective(now) == Status::Pending)
            .count() as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn append_audit(
        &self,
        _place: &str,
        fields: &[(&str, &str)],
    ) -> Result<String, StoreError> {
        Ok(self.state().append(fields.to_vec()))
    }

    /// One stream: the cursor's first place says where this reader is.
    async fn audit_range(
        &self,
        cursor: &mut AuditCursor,
        end: &str,
        count: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(audit::range(&self.state().audit, cursor, end, count))
    }

    async fn audit_end(&self) -> Result<AuditCursor, StoreError> {
        let mut cursor = AuditCursor::from("-");
        if let Some(e) = self.state().audit.back() {
            cursor.after[0] = format!("({}", e.id);
        }
        Ok(cursor)
    }

    async fn outbox_take(
        &self,
        g: &str,
        _: &str,
        n: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let state = &mut *self.state();
        Ok(state.side.take(g, &state.audit, n))
    }

    async fn outbox_reclaim(
        &self,
        g: &str,
        _: &str,
        stalled: Duration,
        n: usize,
    ) -> Result<(Vec<OutboxEntry>, usize), StoreError> {
        Ok((self.state().side.reclaim(g, stalled, n), 0))
    }

    async fn outbox_ack(&self, g: &str, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        self.state().side.ack(g, entries);
        Ok(())
    }

    async fn set_channel_note(
        &self,
        id: &str,
        ch: &str,
        note: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.state().side.set_note(id, ch, note, ttl);
        Ok(())
    }

    async fn channel_note(&self, id: &str, ch: &str) -> Result<Option<String>, StoreError> {
        Ok(self.state().side.note(id, ch))
    }

    async fn first_sight(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.state().side.first_sight(key, ttl))
    }

    async fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests;
