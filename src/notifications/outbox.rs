//! Delivery from the store's outbox (the audit trail, read per channel):
//! each channel has its own progress, so a dead endpoint holds back only
//! itself; an event is handed to one of the sidecars sharing a store, and
//! acknowledged only once its channel took it. A failed delivery is tried a
//! few times at once, then again after `retry_after` by whichever sidecar
//! claims it, until `give_up_after`. At least once: a sidecar that dies
//! between delivering and acknowledging leaves the event to be delivered
//! again, with the same [`Notice::id`].

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Channel, ChannelError, Notice};
use crate::approval::EventKind;
use crate::approval::store::{ApprovalStore, OutboxEntry};
use crate::metrics::Metrics;

/// How hard delivery tries (`[notifications]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// An event taken and not delivered is taken again after this long.
    pub retry_after: Duration,
    /// An event still undelivered this long after it happened is dropped
    /// (counted as `gave_up`, logged as an error).
    pub give_up_after: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            retry_after: Duration::from_secs(30),
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

/// How many events one read takes per shard.
const BATCH: usize = 32;
/// How often a channel looks for new events when it found none.
const POLL: Duration = Duration::from_millis(250);
/// Pauses between the attempts made at once: a blip is ridden out without
/// waiting for `retry_after`.
const QUICK_RETRIES: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(1)];

/// Starts one delivery task per channel; they run as long as the runtime
/// does. Each channel's first read is made before this returns (within the
/// store's timeout), so every event after it is delivered.
pub async fn start(
    store: Arc<dyn ApprovalStore>,
    channels: Vec<Arc<dyn Channel>>,
    metrics: Metrics,
    settings: Settings,
) {
    let consumer = consumer_name();
    for channel in channels {
        let worker = Worker {
            store: store.clone(),
            channel,
            metrics: metrics.clone(),
            settings,
            consumer: consumer.clone(),
        };
        let first = worker.take_new().await;
        tokio::spawn(worker.run(first));
    }
}

/// Unique per process: a restarted sidecar is a new consumer, and what the
/// old one held is claimed after `retry_after`.
fn consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    format!(
        "{}-{}-{:08x}",
        if host.is_empty() {
            "countersign"
        } else {
            &host
        },
        std::process::id(),
        rand::random::<u32>()
    )
}

struct Worker {
    store: Arc<dyn ApprovalStore>,
    channel: Arc<dyn Channel>,
    metrics: Metrics,
    settings: Settings,
    consumer: String,
}

/// What became of one event.
enum Fate {
    /// Nothing to deliver (a check's entry, an event the channel does not
    /// want): acknowledged with the next delivery.
    Skipped,
    /// Delivered: acknowledged at once.
    Delivered,
    /// Not delivered: left for a retry, and the rest of the batch with it.
    Failed,
    /// Given up: acknowledged.
    GaveUp,
    /// Not attempted: taken too long ago to be sent now (another sidecar
    /// may claim it soon). Left for a retry, and the rest of the batch
    /// with it.
    Late,
}

impl Worker {
    async fn take_new(&self) -> Vec<OutboxEntry> {
        let name = self.channel.name();
        match self.store.outbox_take(name, &self.consumer, BATCH).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::debug!(channel = %name, "notification outbox: {e}");
                Vec::new()
            }
        }
    }

    async fn run(self, first: Vec<OutboxEntry>) {
        let name = self.channel.name().to_owned();
        let mut last_reclaim = Instant::now();
        let mut batch = first;
        let mut taken_at = Instant::now();
        loop {
            // Stalled events first (the oldest), at most every quarter of
            // `retry_after`; then new ones.
            if last_reclaim.elapsed() >= self.settings.retry_after / 4 {
                last_reclaim = Instant::now();
                match self
                    .store
                    .outbox_reclaim(&name, &self.consumer, self.settings.retry_after, BATCH)
                    .await
                {
                    Ok((entries, lost)) => {
                        if lost > 0 {
                            tracing::error!(channel = %name, lost, "notifications trimmed from the audit stream before they could be delivered");
                            self.metrics.notification(&name, "lost", lost as u64);
                        }
                        batch.extend(entries);
                    }
                    Err(e) => tracing::debug!(channel = %name, "notification outbox: {e}"),
                }
            }
            if batch.is_empty() {
                taken_at = Instant::now();
            }
            batch.extend(self.take_new().await);
            if batch.is_empty() {
                tokio::time::sleep(POLL).await;
                continue;
            }
            // Stream order within a shard; across shards, by time.
            batch.sort_by_key(|e| (e.appended_ms(), e.shard));
            self.deliver_batch(&name, std::mem::take(&mut batch), taken_at)
                .await;
        }
    }

    /// Delivers in order, stopping at the first failure: what follows waits
    /// for its retry with it, so a dead endpoint is not hammered. Stops too
    /// when the batch was taken half of `retry_after` ago: another sidecar
    /// may claim what is left after `retry_after`, and must not find an
    /// event this one is still sending.
    async fn deliver_batch(&self, name: &str, batch: Vec<OutboxEntry>, taken_at: Instant) {
        let mut settled = Vec::new();
        for entry in batch {
            if taken_at.elapsed() >= self.settings.retry_after / 2 {
                break;
            }
            let fate = self.deliver(name, &entry, taken_at).await;
            match fate {
                Fate::Skipped => {
                    settled.push(entry);
                    continue;
                }
                Fate::Failed => {
                    self.metrics.notification(name, "failed", 1);
                    break;
                }
                Fate::Late => break,
                Fate::Delivered => self.metrics.notification(name, "delivered", 1),
                Fate::GaveUp => self.metrics.notification(name, "gave_up", 1),
            }
            // Acknowledged right away: a sidecar that dies later does not
            // leave this one to be sent twice.
            settled.push(entry);
            self.acknowledge(name, &mut settled).await;
        }
        self.acknowledge(name, &mut settled).await;
    }

    async fn acknowledge(&self, name: &str, settled: &mut Vec<OutboxEntry>) {
        if settled.is_empty() {
            return;
        }
        if let Err(e) = self.store.outbox_ack(name, settled).await {
            // Delivered again after `retry_after`, with the same id.
            tracing::warn!(channel = %name, "delivered notifications not acknowledged: {e}");
        }
        settled.clear();
    }

    async fn deliver(&self, name: &str, entry: &OutboxEntry, taken_at: Instant) -> Fate {
        let Some(kind) = EventKind::parse(entry.field("event")) else {
            // A check's entry, not an approval event.
            return Fate::Skipped;
        };
        if !self.channel.wants(kind) {
            return Fate::Skipped;
        }
        let id = entry.field("approval_id");
        let approval = match self.store.get(id).await {
            Ok(Some(a)) => a,
            // Its retention ended: nothing left to describe.
            Ok(None) => return Fate::Skipped,
            Err(e) => return self.failed(name, entry, &ChannelError::Unreachable(e.to_string())),
        };
        let notice = Notice {
            id: entry.key(),
            kind,
            approval,
        };
        // An attempt begins before half of `retry_after` since the take,
        // the pause before it included (and the read above): it ends, at
        // most a quarter later, before another sidecar may claim the event.
        let in_time = |pause: Duration| taken_at.elapsed() + pause < self.settings.retry_after / 2;
        if !in_time(Duration::ZERO) {
            return Fate::Late;
        }
        let mut result = self.attempt(&notice).await;
        for pause in QUICK_RETRIES {
            match &result {
                Err(e) if e.retryable() && in_time(pause) => {
                    tokio::time::sleep(pause).await;
                    result = self.attempt(&notice).await;
                }
                _ => break,
            }
        }
        match result {
            Ok(()) => {
                tracing::debug!(channel = %name, approval = %id, event = %kind, "notification delivered");
                Fate::Delivered
            }
            Err(e) => self.failed(name, entry, &e),
        }
    }

    /// One attempt, cut off at a quarter of `retry_after`: begun before
    /// half of it, it ends before anyone may claim the event.
    async fn attempt(&self, notice: &Notice) -> Result<(), ChannelError> {
        let limit = self.settings.retry_after / 4;
        tokio::time::timeout(limit, self.channel.deliver(notice))
            .await
            .unwrap_or_else(|_| {
                Err(ChannelError::Unreachable(format!(
                    "no answer within {} ms (a quarter of notifications.retry_after)",
                    limit.as_millis()
                )))
            })
    }

    fn failed(&self, name: &str, entry: &OutboxEntry, e: &ChannelError) -> Fate {
        let now_ms = u64::try_from(crate::clock::now_secs()).unwrap_or(0) * 1000;
        let age = now_ms.saturating_sub(entry.appended_ms());
        let id = entry.field("approval_id");
        if !e.retryable() || Duration::from_millis(age) >= self.settings.give_up_after {
            tracing::error!(channel = %name, approval = %id, event = entry.field("event"), "notification given up: {e}");
            return Fate::GaveUp;
        }
        tracing::warn!(channel = %name, approval = %id, event = entry.field("event"), retry_after = ?self.settings.retry_after, "notification not delivered: {e}");
        Fate::Failed
    }
}
