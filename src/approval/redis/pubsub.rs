//! Change events over sharded pub/sub (one channel per shard), forwarded to
//! every subscriber in this process. Pub/sub delivers at most once, so
//! waiters also poll.

use std::time::Duration;

use tokio::sync::broadcast;

use super::conn::{Conn, cluster_builder};
use super::{RedisStore, StoreConfig};
use crate::approval::store::Event;
use crate::approval::{EventKind, SHARDS};

impl RedisStore {
    /// Every change, from every sidecar on this store. Returns once the
    /// subscription is live, or after the store's timeout if Redis cannot
    /// be reached (the background task keeps trying).
    pub(super) async fn subscribe_live(&self) -> broadcast::Receiver<Event> {
        let rx = self.events.subscribe();
        self.subscriber
            .get_or_init(|| async {
                let channels = (0..SHARDS)
                    .map(|s| format!("{}events", self.shard(s)))
                    .collect();
                tokio::spawn(forward_events(
                    self.cfg.clone(),
                    channels,
                    self.events.clone(),
                    self.live.clone(),
                ));
            })
            .await;
        let mut live = self.live.subscribe();
        let _ = tokio::time::timeout(self.cfg.timeout * 2, live.wait_for(|l| *l)).await;
        rx
    }
}

/// Forwards the shards' change events to `tx`, for as long as the process
/// lives, and says in `live` whether the subscription stands. RESP3 pushes:
/// the connection resubscribes by itself after a reconnect; a ping every
/// second makes it notice a lost one.
async fn forward_events(
    cfg: StoreConfig,
    channels: Vec<String>,
    tx: broadcast::Sender<Event>,
    live: tokio::sync::watch::Sender<bool>,
) {
    let push = move |info: redis::PushInfo| -> Result<(), std::convert::Infallible> {
        if info.kind == redis::PushKind::SMessage
            && let Some(Ok(payload)) = info.data.get(1).map(redis::from_redis_value_ref::<String>)
            && let Some((kind, id)) = payload.split_once(' ')
            && let Some(kind) = EventKind::parse(kind)
        {
            let _ = tx.send(Event {
                kind,
                id: id.into(),
            });
        }
        Ok(())
    };
    loop {
        match subscribed(&cfg, &channels, push.clone()).await {
            Ok(mut conn) => {
                live.send_replace(true);
                let mut healthy = true;
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let ok = redis::cmd("PING")
                        .query_async::<()>(&mut conn)
                        .await
                        .is_ok();
                    if healthy && !ok {
                        tracing::warn!("approval event subscription lost; reconnecting");
                    } else if !healthy && ok {
                        tracing::info!("approval event subscription restored");
                    }
                    healthy = ok;
                    live.send_replace(ok);
                }
            }
            Err(e) => tracing::debug!("approval event subscription: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A RESP3 connection (one node's, or a cluster's) subscribed to every
/// shard's channel, its pushes going to `push`.
async fn subscribed(
    cfg: &StoreConfig,
    channels: &[String],
    push: impl redis::aio::AsyncPushSender + Clone,
) -> redis::RedisResult<Conn> {
    use redis::IntoConnectionInfo;
    let mut conn = if cfg.cluster {
        let client = cluster_builder(cfg)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(push)
            .connection_timeout(cfg.timeout * 2)
            .build()?;
        Conn::Cluster(client.get_async_connection().await?)
    } else {
        let info = cfg.url.as_str().into_connection_info()?;
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(resp3))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout * 2))
            .set_push_sender(push)
            .set_automatic_resubscription();
        Conn::Single(client.get_connection_manager_with_config(config).await?)
    };
    // One channel per command: a cluster refuses channels of several slots
    // in one SSUBSCRIBE.
    for channel in channels {
        match &mut conn {
            Conn::Cluster(c) => c.ssubscribe(channel).await?,
            Conn::Single(c) => redis::cmd("SSUBSCRIBE").arg(channel).exec_async(c).await?,
        }
    }
    Ok(conn)
}
