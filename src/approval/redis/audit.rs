//! The audit streams, one per shard: appended to by the scripts in the same
//! step as the change each entry records, and by the checks of guarded
//! calls; read back merged in time order.

use super::RedisStore;
use super::keys::spread;
use crate::approval::shard_of_id;
use crate::approval::store::{AuditCursor, AuditEntry, CheckRef, StoreError, StreamId};

/// Fields of the allow that its correction states anew.
const CORRECTED: [&str; 7] = [
    "event",
    "decision",
    "status_code",
    "approval_id",
    "request_id",
    "trace",
    "reason",
];

impl RedisStore {
    /// Appends one entry to the audit stream of the shard of `place`.
    pub(super) async fn append_entry(
        &self,
        place: &str,
        fields: &[(&str, &str)],
    ) -> Result<String, StoreError> {
        let shard = shard_of_id(place).unwrap_or_else(|| spread(place));
        let key = format!("{}audit", self.shard(shard));
        self.run(|mut c| async move {
            // No MAXLEN: a flood must not trim what came before it (the
            // sweep trims by age, and past the memory guard by count).
            let mut cmd = redis::cmd("XADD");
            cmd.arg(key).arg("*");
            for (k, v) in fields.iter().filter(|(_, v)| !v.is_empty()) {
                cmd.arg(*k).arg(*v);
            }
            cmd.query_async(&mut c).await
        })
        .await
    }

    /// The consume script recorded a use of `id` and the allow it leads
    /// to, but the replicas did not confirm it, so the caller is refused
    /// (503). The entry right after that allow says so; if even this write
    /// fails, the log does.
    pub(super) async fn correct_unconfirmed(
        &self,
        id: &str,
        check: CheckRef<'_>,
        why: &StoreError,
    ) {
        let reason = format!(
            "the use was not confirmed, so the caller was refused (503) and the use is spent: {why}"
        );
        let mut fields: Vec<(&str, &str)> = check
            .decision
            .iter()
            .filter(|(k, _)| !CORRECTED.contains(k))
            .copied()
            .collect();
        fields.extend([
            ("event", "use_unconfirmed"),
            ("decision", "error"),
            ("status_code", "503"),
            ("approval_id", id),
            ("request_id", check.request_id),
            ("trace", check.trace),
            ("reason", reason.as_str()),
        ]);
        if let Err(e) = self.append_entry(id, &fields).await {
            tracing::error!(
                approval_id = id,
                request_id = check.request_id,
                "the audit trail shows an allow for approval `{id}` that the caller did not get (503: {reason}), and the correction could not be written: {e}"
            );
        }
    }

    /// The next audit entries after `cursor`, up to `end` (a stream id or
    /// `+`), oldest first across every shard, at most `count`; moves the
    /// cursor past them.
    pub(super) async fn read_range(
        &self,
        cursor: &mut AuditCursor,
        end: &str,
        count: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let replies: Vec<redis::streams::StreamRangeReply> = self
            .each_shard_at(|shard, sp| {
                let mut c = redis::cmd("XRANGE");
                c.arg(format!("{sp}audit"))
                    .arg(&cursor.after[usize::from(shard)])
                    .arg(end)
                    .arg("COUNT")
                    .arg(count);
                c
            })
            .await?;
        let mut all: Vec<(StreamId, usize, AuditEntry)> = replies
            .into_iter()
            .enumerate()
            .flat_map(|(shard, r)| r.ids.into_iter().map(move |e| (shard, e)))
            .map(|(shard, e)| (StreamId::parse(&e.id), shard, entry(e)))
            .collect();
        // Stream ids are each primary's clock: merged, they read in time
        // order (ties by shard, so paging never skips one).
        all.sort_by_key(|(id, shard, _)| (*id, *shard));
        all.truncate(count);
        for (_, shard, e) in &all {
            cursor.after[*shard] = format!("({}", e.id);
        }
        Ok(all.into_iter().map(|(_, _, e)| e).collect())
    }

    /// A cursor at the end of every shard's stream: what `audit_follow`
    /// returns from it was appended after this call.
    pub(super) async fn end_cursor(&self) -> Result<AuditCursor, StoreError> {
        let replies: Vec<redis::streams::StreamRangeReply> = self
            .each_shard(|sp| {
                let mut c = redis::cmd("XREVRANGE");
                c.arg(format!("{sp}audit"))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1);
                c
            })
            .await?;
        Ok(AuditCursor {
            after: replies
                .into_iter()
                .map(|r| r.ids.first().map_or("-".into(), |e| format!("({}", e.id)))
                .collect(),
        })
    }
}

fn entry(e: redis::streams::StreamId) -> AuditEntry {
    let fields = e
        .map
        .into_iter()
        .map(|(k, v)| (k, redis::from_redis_value(v).unwrap_or_default()))
        .collect();
    AuditEntry::new(e.id, fields)
}
