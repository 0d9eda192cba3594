//! Durable delivery from the audit streams: one consumer group per channel
//! on every shard's stream, so each event goes to one of N sidecars, and an
//! entry taken and never acknowledged (a failed delivery, a sidecar that
//! died) is taken again after a while. Also the channels' notes on requests
//! and replay marks.

use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamReadReply};

use super::RedisStore;
use super::keys::spread;
use crate::approval::SHARDS;
use crate::approval::shard_of_id;
use crate::approval::store::{AuditEntry, OutboxEntry, StoreError};

impl RedisStore {
    fn group_name(channel: &str) -> String {
        format!("notify:{channel}")
    }

    pub(super) async fn take_new(
        &self,
        channel: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let group = Self::group_name(channel);
        let reads = (0..SHARDS).map(|shard| {
            let key = format!("{}audit", self.shard(shard));
            let mut read = redis::cmd("XREADGROUP");
            read.arg("GROUP")
                .arg(&group)
                .arg(consumer)
                .arg("COUNT")
                .arg(count);
            read.arg("STREAMS").arg(&key).arg(">");
            // A group first read starts at the end: what happened before
            // this channel existed is not news.
            let mut create = redis::cmd("XGROUP");
            create
                .arg("CREATE")
                .arg(&key)
                .arg(&group)
                .arg("$")
                .arg("MKSTREAM");
            async move {
                let reply = self
                    .run(|mut c| async move {
                        let r: redis::RedisResult<Option<StreamReadReply>> =
                            read.query_async(&mut c).await;
                        match r {
                            Err(e) if e.code() == Some("NOGROUP") => {
                                match create.query_async::<()>(&mut c).await {
                                    Err(e) if e.code() != Some("BUSYGROUP") => Err(e),
                                    _ => Ok(None),
                                }
                            }
                            other => other,
                        }
                    })
                    .await?;
                Ok::<_, StoreError>(
                    reply
                        .into_iter()
                        .flat_map(|r| r.keys)
                        .flat_map(|k| k.ids)
                        .map(|e| taken(shard, e))
                        .collect::<Vec<_>>(),
                )
            }
        });
        let mut all = Vec::new();
        for shard in futures_util::future::join_all(reads).await {
            all.extend(shard?);
        }
        Ok(all)
    }

    pub(super) async fn take_stalled(
        &self,
        channel: &str,
        consumer: &str,
        stalled: Duration,
        count: usize,
    ) -> Result<(Vec<OutboxEntry>, usize), StoreError> {
        let group = Self::group_name(channel);
        let idle = u64::try_from(stalled.as_millis()).unwrap_or(u64::MAX);
        let claims = (0..SHARDS).map(|shard| {
            let key = format!("{}audit", self.shard(shard));
            let mut claim = redis::cmd("XAUTOCLAIM");
            claim
                .arg(&key)
                .arg(&group)
                .arg(consumer)
                .arg(idle)
                .arg("0-0");
            claim.arg("COUNT").arg(count);
            let group = &group;
            async move {
                let reply = self
                    .run(|mut c| async move {
                        let r: redis::RedisResult<StreamAutoClaimReply> =
                            claim.query_async(&mut c).await;
                        match r {
                            // Not read yet on this shard: nothing to claim.
                            Err(e) if e.code() == Some("NOGROUP") => Ok(None),
                            other => other.map(Some),
                        }
                    })
                    .await?;
                let Some(reply) = reply else {
                    return Ok((Vec::new(), 0));
                };
                // Trimmed by the sweep before delivery: acknowledged, so
                // they are not claimed forever, and counted.
                let gone = reply.deleted_ids.len();
                if gone > 0 {
                    let mut ack = redis::cmd("XACK");
                    ack.arg(&key).arg(group).arg(&reply.deleted_ids);
                    self.run(|mut c| async move { ack.query_async::<()>(&mut c).await })
                        .await?;
                }
                let entries: Vec<OutboxEntry> =
                    reply.claimed.into_iter().map(|e| taken(shard, e)).collect();
                Ok::<_, StoreError>((entries, gone))
            }
        });
        let mut all = Vec::new();
        let mut gone = 0;
        for shard in futures_util::future::join_all(claims).await {
            let (entries, n) = shard?;
            all.extend(entries);
            gone += n;
        }
        Ok((all, gone))
    }

    pub(super) async fn acknowledge(
        &self,
        channel: &str,
        entries: &[OutboxEntry],
    ) -> Result<(), StoreError> {
        let group = Self::group_name(channel);
        for shard in 0..SHARDS {
            let ids: Vec<&str> = entries
                .iter()
                .filter(|e| e.shard == shard)
                .map(|e| e.entry.id.as_str())
                .collect();
            if ids.is_empty() {
                continue;
            }
            let mut ack = redis::cmd("XACK");
            ack.arg(format!("{}audit", self.shard(shard)))
                .arg(&group)
                .arg(ids);
            self.run(|mut c| async move { ack.query_async::<()>(&mut c).await })
                .await?;
        }
        Ok(())
    }

    fn note_key(&self, id: &str, channel: &str) -> String {
        let shard = shard_of_id(id).unwrap_or_else(|| spread(id));
        format!("{}note:{channel}:{id}", self.shard(shard))
    }

    pub(super) async fn put_note(
        &self,
        id: &str,
        channel: &str,
        note: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut set = redis::cmd("SET");
        set.arg(self.note_key(id, channel))
            .arg(note)
            .arg("PX")
            .arg(ttl_ms(ttl));
        self.run(|mut c| async move { set.query_async::<()>(&mut c).await })
            .await
    }

    pub(super) async fn read_note(
        &self,
        id: &str,
        channel: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut get = redis::cmd("GET");
        get.arg(self.note_key(id, channel));
        self.run(|mut c| async move { get.query_async(&mut c).await })
            .await
    }

    pub(super) async fn mark_seen(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut set = redis::cmd("SET");
        set.arg(format!("{}seen:{key}", self.shard(spread(key))))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms(ttl));
        let reply: Option<String> = self
            .run(|mut c| async move { set.query_async(&mut c).await })
            .await?;
        Ok(reply.is_some())
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn taken(shard: u8, e: redis::streams::StreamId) -> OutboxEntry {
    let fields = e
        .map
        .into_iter()
        .map(|(k, v)| (k, redis::from_redis_value(v).unwrap_or_default()))
        .collect();
    OutboxEntry {
        shard,
        entry: AuditEntry::new(e.id, fields),
    }
}
