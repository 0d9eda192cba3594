//! The store's contract on Redis: open, read, list, vote, consume, sweep
//! here (each state change is one script; see `lua/`); the audit streams
//! and pub/sub in their own files.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::broadcast;

use super::RedisStore;
use super::keys::fingerprint_shard;
use super::record::parse;
use crate::approval::approvers::Voter;
use crate::approval::store::{
    ApprovalStore, AuditCursor, AuditEntry, CheckRef, Consumed, Event, ListFilter, OutboxEntry,
    StoreError, Swept,
};
use crate::approval::{
    Approval, NewApproval, Opened, Ruling, SHARDS, Status, Vote, new_id, new_token, now_secs,
    shard_of, shard_of_id, token_hash,
};

/// Requests expired per sweep call, so that one call stays short.
const SWEEP_BATCH: usize = 500;

#[async_trait::async_trait]
impl ApprovalStore for RedisStore {
    /// Opens a request for an approvable call, or finds the one this exact
    /// call already opened (pending, approved, or denied).
    async fn open(&self, new: &NewApproval, check: CheckRef<'_>) -> Result<Opened, StoreError> {
        let shard = fingerprint_shard(&new.fingerprint);
        let id = new_id(shard);
        let (token, hash) = new_token(shard);
        let info =
            serde_json::to_string(&new.info).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let p = &new.params;
        let sp = self.shard(shard);
        let fp_key = format!("{sp}fp:{}", new.fingerprint);
        let index = format!("{sp}index");
        let (fp_key, index, sp, id, info, hash) = (&fp_key, &index, &sp, &id, &info, &hash);
        let open = |find_only: bool| {
            self.run(move |mut c| async move {
                self.scripts
                    .open
                    .key(fp_key)
                    .key(index)
                    .arg(sp)
                    .arg(id)
                    .arg(info)
                    .arg(&new.fingerprint)
                    .arg(p.pending_ttl.as_secs())
                    .arg(self.cfg.retention.as_secs())
                    .arg(p.approval_ttl.as_secs())
                    .arg(p.uses)
                    .arg(p.quorum)
                    // No hash: no token is issued.
                    .arg(if new.issue_token { hash.as_str() } else { "" })
                    .arg(self.audit_len())
                    .arg(check.request_id)
                    .arg(check.trace)
                    .arg(if find_only { "1" } else { "0" })
                    .invoke_async::<Vec<String>>(&mut c)
                    .await
            })
        };
        // The identical call finds its request on the request's own shard,
        // whatever the state of the principal's: only a new request takes
        // a place among the principal's pending (and at the cap, a request
        // opened meanwhile by another sidecar is still found).
        let mut full = None;
        let mut reply = open(true).await?;
        if reply.first().is_some_and(|k| k == "full") {
            full = self.admit(new).await?;
            reply = open(full.is_some()).await?;
        }
        let (created, id, issued) = match reply.as_slice() {
            [kind, ..] if kind == "full" => {
                return Err(StoreError::TooManyPending {
                    principal: new.info.principal.clone(),
                    pending: full.unwrap_or_default(),
                });
            }
            [kind, id, issued] => (kind == "created", id.clone(), issued == "token"),
            other => return Err(StoreError::Corrupt(format!("open returned {other:?}"))),
        };
        let approval = self
            .get(&id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        if approval.status != Status::Pending {
            // Found decided: it holds no place among the pending.
            self.release(&new.info.principal, &new.fingerprint).await;
        }
        Ok(Opened {
            approval,
            token: issued.then_some(token),
            created,
        })
    }

    /// One request, with its status as of now.
    async fn get(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        let Some(key) = self.key(id) else {
            return Ok(None);
        };
        let votes_key = format!("{key}:votes");
        // Expiry is judged by Redis' clock, as the scripts judge it, so that
        // every sidecar agrees whatever its own clock says.
        type Reply = (HashMap<String, String>, Vec<String>, (i64, i64));
        let (fields, votes, (now, _)): Reply = self
            .run(|mut c| async move {
                redis::pipe()
                    .hgetall(key)
                    .lrange(votes_key, 0, -1)
                    .cmd("TIME")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        parse(id, &fields, &votes, now).map(Some)
    }

    /// Requests, newest first.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Approval>, StoreError> {
        let limit = filter.limit();
        // Filters apply after reading, so read a wider window than `limit`:
        // the newest 5,000 of each shard, merged by creation time.
        let per_shard: Vec<Vec<(String, i64)>> = self
            .each_shard(|sp| {
                let mut c = redis::cmd("ZRANGE");
                c.arg(format!("{sp}index"))
                    .arg(0)
                    .arg(4999)
                    .arg("REV")
                    .arg("WITHSCORES");
                c
            })
            .await?;
        let mut ids: Vec<(String, i64)> = per_shard.into_iter().flatten().collect();
        ids.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (id, _) in ids {
            match self.get(&id).await? {
                None => gone.push(id),
                Some(a) if filter.keeps(&a) => {
                    out.push(a);
                    if out.len() >= limit {
                        break;
                    }
                }
                Some(_) => {}
            }
        }
        if !gone.is_empty() {
            // Retention ended for these: drop them from their shard's index.
            let drops = gone.iter().filter_map(|id| {
                let index = format!("{}index", self.shard(shard_of_id(id)?));
                Some(self.run(move |mut c| async move {
                    redis::cmd("ZREM")
                        .arg(index)
                        .arg(id)
                        .query_async::<()>(&mut c)
                        .await
                }))
            });
            let _ = futures_util::future::join_all(drops).await;
        }
        Ok(out)
    }

    /// Approve, deny or revoke, as `approver`. Separation of duties is
    /// checked by the caller; the store enforces distinct approvers, the
    /// quorum, and the lifecycle.
    async fn vote(
        &self,
        id: &str,
        voter: Voter<'_>,
        ruling: Ruling,
        reason: &str,
    ) -> Result<Approval, StoreError> {
        let (Some(shard), Some(hash)) = (shard_of_id(id), self.key(id)) else {
            return Err(StoreError::NotFound(id.into()));
        };
        let key = &hash;
        let approver = voter.name;
        let vote = Vote::cast(voter, ruling, reason, now_secs());
        let vote = serde_json::to_string(&vote).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut eval = redis::cmd("EVALSHA");
        eval.arg(self.scripts.vote.get_hash())
            .arg(3)
            .arg(key)
            .arg(format!("{key}:voters"))
            .arg(format!("{key}:votes"))
            .arg(self.shard(shard))
            .arg(id)
            .arg(approver)
            .arg(ruling.as_str())
            .arg(vote)
            .arg(self.audit_len())
            .arg(reason)
            .arg(voter.signed_in.method.as_str())
            .arg(&voter.signed_in.issuer)
            .arg(&voter.signed_in.subject)
            .arg(voter.person().unwrap_or_default());
        let (reply, acks) = self.invoke_confirmed(&self.scripts.vote, eval).await?;
        let status =
            |s: &str| Status::parse(s).ok_or_else(|| StoreError::Corrupt(format!("status `{s}`")));
        let reply: Vec<&str> = reply.iter().map(String::as_str).collect();
        // Decided: no longer pending, so no longer counted against its
        // principal's cap.
        let decided = match reply.as_slice() {
            ["ok", "denied" | "approved", fingerprint] => Some(*fingerprint),
            _ => None,
        };
        match reply.as_slice() {
            // What a failover must not undo: a denial or a revocation
            // (an approval it loses only fails closed).
            ["ok", "denied" | "revoked", ..] => self.confirmed(acks)?,
            ["ok", ..] => {}
            ["not_found"] => return Err(StoreError::NotFound(id.into())),
            ["not_pending", s] => {
                return Err(StoreError::NotPending {
                    id: id.into(),
                    status: status(s)?,
                });
            }
            ["not_approved", s] => {
                return Err(StoreError::NotApproved {
                    id: id.into(),
                    status: status(s)?,
                });
            }
            ["already_voted", _] => {
                return Err(StoreError::AlreadyVoted {
                    id: id.into(),
                    approver: approver.into(),
                });
            }
            other => return Err(StoreError::Corrupt(format!("vote returned {other:?}"))),
        }
        let approval = self
            .get(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.into()))?;
        if let Some(fingerprint) = decided {
            self.release(&approval.info.principal, fingerprint).await;
        }
        Ok(approval)
    }

    /// Takes one use of an approval for a call with `fingerprint`, found by
    /// the caller's token or (hold mode) by id.
    async fn consume(
        &self,
        token: Option<&str>,
        id: Option<&str>,
        fingerprint: &str,
        check: CheckRef<'_>,
    ) -> Result<Consumed, StoreError> {
        // The token (or the id) names the shard: one round trip. A token
        // of another call is then found and refused as that call's.
        let shard = match (token, id) {
            (Some(t), _) => shard_of(t),
            (None, Some(id)) => shard_of_id(id),
            (None, None) => Some(fingerprint_shard(fingerprint)),
        };
        let Some(shard) = shard else {
            return Ok(Consumed::Unknown);
        };
        let sp = self.shard(shard);
        let hash = token.map(token_hash).unwrap_or_default();
        let mut eval = redis::cmd("EVALSHA");
        eval.arg(self.scripts.consume.get_hash())
            .arg(1)
            .arg(format!("{sp}approved"))
            .arg(&sp)
            .arg(id.unwrap_or_default())
            .arg(hash)
            .arg(fingerprint)
            .arg(self.audit_len())
            .arg(check.request_id)
            .arg(check.trace)
            .arg(check.decision);
        let (reply, acks) = self.invoke_confirmed(&self.scripts.consume, eval).await?;
        Ok(
            match reply
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice()
            {
                ["used", id, left, trace] => {
                    // Taken on the primary; a replica must have it too before
                    // the call goes ahead, or a failover could hand the use
                    // out again. If it does not come, the call is refused and
                    // the use is spent: closed, at the cost of a re-approval.
                    if let Err(e) = self.confirmed(acks) {
                        self.correct_unconfirmed(id, check, &e).await;
                        return Err(e);
                    }
                    Consumed::Used {
                        id: (*id).into(),
                        uses_left: left.parse().unwrap_or(0),
                        opened_by: (*trace).into(),
                    }
                }
                ["unknown", _] => Consumed::Unknown,
                ["mismatch", id] => Consumed::Mismatch { id: (*id).into() },
                [s, id] => match Status::parse(s) {
                    Some(status) => Consumed::NotUsable {
                        id: (*id).into(),
                        status,
                    },
                    None => return Err(StoreError::Corrupt(format!("consume returned `{s}`"))),
                },
                other => return Err(StoreError::Corrupt(format!("consume returned {other:?}"))),
            },
        )
    }

    /// Expires due requests (recording each in the audit stream once) and
    /// trims the streams by age, shard by shard. Returns the ids it expired
    /// and the errors of the shards it could not sweep.
    async fn sweep(&self) -> Swept {
        let min_id = self.cfg.audit_max_age.map_or(0, |age| {
            (now_millis() as u64).saturating_sub(age.as_millis() as u64)
        });
        let per_shard = (0..SHARDS).map(|shard| {
            let sp = self.shard(shard);
            self.run(move |mut c| async move {
                self.scripts
                    .sweep
                    .key(format!("{sp}pending"))
                    .arg(&sp)
                    .arg(self.audit_len())
                    .arg(min_id)
                    .arg(SWEEP_BATCH)
                    .invoke_async::<Vec<String>>(&mut c)
                    .await
            })
        });
        let mut swept = Swept {
            audit_guard: self.audit_len(),
            ..Swept::default()
        };
        for r in futures_util::future::join_all(per_shard).await {
            match r {
                Ok(reply) => {
                    let mut reply = reply.into_iter();
                    let mut number = || reply.next().and_then(|n| n.parse::<u64>().ok());
                    let (len, trimmed) = (number().unwrap_or(0), number().unwrap_or(0));
                    swept.audit_longest = swept.audit_longest.max(len);
                    swept.audit_trimmed += trimmed;
                    swept.expired.extend(reply);
                }
                Err(e) => swept.errors.push(e),
            }
        }
        swept
    }

    /// Requests waiting for a decision (not yet expired).
    async fn pending_count(&self) -> Result<u64, StoreError> {
        let now = now_secs();
        let counts: Vec<u64> = self
            .each_shard(|sp| {
                let mut c = redis::cmd("ZCOUNT");
                c.arg(format!("{sp}pending")).arg(now).arg("+inf");
                c
            })
            .await?;
        Ok(counts.iter().sum())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }

    async fn append_audit(
        &self,
        place: &str,
        fields: &[(&str, &str)],
    ) -> Result<String, StoreError> {
        self.append_entry(place, fields).await
    }

    async fn audit_range(
        &self,
        cursor: &mut AuditCursor,
        end: &str,
        count: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.read_range(cursor, end, count).await
    }

    async fn audit_end(&self) -> Result<AuditCursor, StoreError> {
        self.end_cursor().await
    }

    async fn outbox_take(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.take_new(group, consumer, count).await
    }

    async fn outbox_reclaim(
        &self,
        group: &str,
        consumer: &str,
        stalled: Duration,
        count: usize,
    ) -> Result<(Vec<OutboxEntry>, usize), StoreError> {
        self.take_stalled(group, consumer, stalled, count).await
    }

    async fn outbox_ack(&self, group: &str, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        self.acknowledge(group, entries).await
    }

    async fn set_channel_note(
        &self,
        id: &str,
        channel: &str,
        note: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.put_note(id, channel, note, ttl).await
    }

    async fn channel_note(&self, id: &str, channel: &str) -> Result<Option<String>, StoreError> {
        self.read_note(id, channel).await
    }

    async fn first_sight(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.mark_seen(key, ttl).await
    }

    async fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.subscribe_live().await
    }
}

impl RedisStore {
    /// Takes a place for `new` among its principal's pending requests (the
    /// identical call has one already). `Some(pending)` when the principal
    /// is at its cap: then `open` may only find.
    async fn admit(&self, new: &NewApproval) -> Result<Option<u64>, StoreError> {
        let key = self.pending_of(&new.info.principal);
        let reply: (String, u64) = self
            .run(|mut c| async move {
                self.scripts
                    .admit
                    .key(key)
                    .arg(&new.fingerprint)
                    .arg(new.params.pending_ttl.as_secs())
                    .arg(self.cfg.max_pending_per_principal)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok((reply.0 == "full").then_some(reply.1))
    }

    /// Frees the place of `fingerprint` among `principal`'s pending. If
    /// this fails the place frees itself when the request would have
    /// expired: the cap errs on the closed side.
    async fn release(&self, principal: &str, fingerprint: &str) {
        let key = self.pending_of(principal);
        let freed = self
            .run(|mut c| async move {
                redis::cmd("ZREM")
                    .arg(key)
                    .arg(fingerprint)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        if let Err(e) = freed {
            tracing::warn!(
                "approval store: a decided request still counts as pending until it would have expired: {e}"
            );
        }
    }
}

fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}
