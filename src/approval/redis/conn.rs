//! Connections to one node or a cluster: made lazily, every call within the
//! store's timeout, state changes confirmed by replicas when asked.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::{RedisStore, StoreConfig};
use crate::approval::SHARDS;
use crate::approval::store::StoreError;

/// One node or a cluster, as named by the configuration. One per store,
/// so the variants' sizes do not matter.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
pub(super) enum Client {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

impl Client {
    pub(super) fn new(cfg: &StoreConfig) -> Result<Self, redis::RedisError> {
        Ok(if cfg.cluster {
            // Enough retries to follow the MOVED redirects of a failover
            // (each counts as one), with short waits: response_timeout
            // also bounds a command's retries in all. A script re-run
            // after a lost reply finds its own effect (e.g. "consumed"):
            // a spent use, never a second pass.
            Client::Cluster(
                cluster_builder(cfg)
                    .connection_timeout(cfg.timeout)
                    .response_timeout(cfg.timeout)
                    .retries(4)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()?,
            )
        } else {
            Client::Single(redis::Client::open(cfg.url.as_str())?)
        })
    }
}

/// A cluster client for the seed nodes in `cfg.url` (comma-separated).
pub(super) fn cluster_builder(cfg: &StoreConfig) -> redis::cluster::ClusterClientBuilder {
    redis::cluster::ClusterClientBuilder::new(cfg.url.split(',').map(str::trim))
}

/// A connection to either; commands and scripts run the same on both.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}
impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisStore {
    /// The main connection, made on first use, and with it the WAIT
    /// connection (now, rather than at a first use that may come at a bad
    /// moment, such as a replica down).
    pub(super) async fn conn(&self) -> Result<Conn, StoreError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let conn = self.connect().await?;
                if self.cfg.replica_acks > 0 {
                    let _ = self.waiting.get_or_try_init(|| self.connect()).await;
                }
                Ok::<_, StoreError>(conn)
            })
            .await?;
        Ok(conn.clone())
    }

    /// The connection for scripts followed by WAIT.
    async fn waiting(&self) -> Result<Conn, StoreError> {
        let conn = self.waiting.get_or_try_init(|| self.connect()).await?;
        Ok(conn.clone())
    }

    /// A new connection to the store, the scripts loaded.
    async fn connect(&self) -> Result<Conn, StoreError> {
        let connect = async {
            match &self.client {
                Client::Single(c) => {
                    let cfg = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.cfg.timeout))
                        .set_response_timeout(Some(self.cfg.timeout))
                        .set_number_of_retries(1)
                        .set_max_delay(Duration::from_secs(1));
                    c.get_connection_manager_with_config(cfg)
                        .await
                        .map(Conn::Single)
                }
                Client::Cluster(c) => c.get_async_connection().await.map(Conn::Cluster),
            }
        };
        let mut conn = tokio::time::timeout(self.cfg.timeout * 2, connect)
            .await
            .map_err(|_| StoreError::Unavailable("connection timed out".into()))?
            .map_err(unavailable)?;
        // Every primary learns the scripts now, so that a call's
        // first use of one is not also a SCRIPT LOAD inside its
        // time budget. Best effort: a node without one (a promoted
        // replica, a restarted Redis) learns it when a call needs it.
        for script in self.scripts.all() {
            let invocation = script.prepare_invoke();
            let load = invocation.load_async(&mut conn);
            let _ = tokio::time::timeout(self.cfg.timeout, load).await;
        }
        Ok(conn)
    }

    /// Runs one command or script within the store's timeout.
    pub(super) async fn run<T, F>(&self, f: impl FnOnce(Conn) -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn().await?;
        self.timed(f(conn)).await
    }

    /// Runs `op` within the store's timeout.
    pub(super) async fn timed<T>(
        &self,
        op: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.cfg.timeout, op)
            .await
            .map_err(|_| StoreError::timed_out())?
            .map_err(unavailable)
    }

    /// Runs a state-changing script (`eval`, an EVALSHA of `script`) with,
    /// when `replica_acks > 0`, a WAIT right behind it in one pipeline; the
    /// script's reply and how many replicas confirmed (`None`: none asked
    /// for). WAIT counts the writes of the connection it arrives on, so it
    /// vouches for the script only on the same connection: sent apart, a
    /// reconnect or a redirect in between could put it on a connection that
    /// wrote nothing, which confirms at once. A pipeline goes as one; a
    /// cluster redirect or retry moves the pair together.
    pub(super) async fn invoke_confirmed(
        &self,
        script: &redis::Script,
        eval: Cmd,
    ) -> Result<(Vec<String>, Option<u32>), StoreError> {
        let wanted = self.cfg.replica_acks;
        let mut pipe = redis::pipe();
        pipe.add_command(eval);
        if wanted > 0 {
            // Half the operation timeout, so that Redis' own answer ("not
            // enough replicas") comes before the client gives up on it.
            pipe.cmd("WAIT")
                .arg(wanted)
                .arg((self.cfg.timeout.as_millis() as u64 / 2).max(1));
        }
        let pipe = &pipe;
        let mut c = match wanted {
            0 => self.conn().await?,
            _ => self.waiting().await?,
        };
        let replies: Vec<redis::Value> = self
            .timed(async move {
                match pipe.query_async(&mut c).await {
                    // A node that has not seen the script (a promoted
                    // replica, a restarted Redis) learns it, and the pair
                    // goes again: the script did not run.
                    Err(e)
                        if e.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                    {
                        script.prepare_invoke().load_async(&mut c).await?;
                        pipe.query_async(&mut c).await
                    }
                    other => other,
                }
            })
            .await?;
        let corrupt = |e: redis::ParsingError| StoreError::Corrupt(e.to_string());
        let mut replies = replies.into_iter();
        let reply = replies
            .next()
            .ok_or_else(|| StoreError::Corrupt("no script reply".into()))?;
        let reply: Vec<String> = redis::from_redis_value(reply).map_err(corrupt)?;
        let acks = match replies.next() {
            Some(v) => Some(
                u32::try_from(redis::from_redis_value::<i64>(v).map_err(corrupt)?).unwrap_or(0),
            ),
            None => None,
        };
        Ok((reply, acks))
    }

    /// Refuses a change that fewer than `replica_acks` replicas confirmed.
    pub(super) fn confirmed(&self, acks: Option<u32>) -> Result<(), StoreError> {
        match acks {
            Some(got) if got < self.cfg.replica_acks => Err(StoreError::NotReplicated {
                wanted: self.cfg.replica_acks,
                got,
            }),
            _ => Ok(()),
        }
    }

    /// Runs one command per shard, all at once, in shard order. Not a
    /// pipeline: a cluster cannot pipeline across slots, and both kinds of
    /// connection multiplex concurrent commands anyway.
    pub(super) async fn each_shard<T: redis::FromRedisValue>(
        &self,
        cmd: impl Fn(String) -> Cmd,
    ) -> Result<Vec<T>, StoreError> {
        self.each_shard_at(|_, sp| cmd(sp)).await
    }

    pub(super) async fn each_shard_at<T: redis::FromRedisValue>(
        &self,
        cmd: impl Fn(u8, String) -> Cmd,
    ) -> Result<Vec<T>, StoreError> {
        let calls = (0..SHARDS).map(|shard| {
            let cmd = cmd(shard, self.shard(shard));
            self.run(move |mut c| async move { cmd.query_async(&mut c).await })
        });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .collect()
    }
}

pub(super) fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}
