//! The Redis store, on one node or on Redis Cluster, by the same code.
//! Every state change is one Lua script (`lua/`), so concurrent sidecars and
//! retries see it atomically: idempotent opening per fingerprint, quorum of
//! distinct approvers, single-use consumption.
//!
//! Layout (see [`keys`]): requests are spread over [`super::SHARDS`] shards,
//! each under one hash tag, so a script touches one cluster slot and every
//! call on the hot path is one round trip to one primary.
//!
//! - [`conn`]: connections (one node or a cluster), timeouts, WAIT.
//! - [`keys`]: key and shard layout.
//! - [`requests`]: the [`crate::approval::ApprovalStore`] impl: opening, reading, listing,
//!   voting, consuming, sweeping.
//! - [`audit`]: the audit streams.
//! - [`outbox`]: durable delivery to notification channels (consumer
//!   groups on the audit streams), channel notes, replay marks.
//! - [`pubsub`]: change events over sharded pub/sub.
//! - [`record`]: a stored request back into an [`Approval`].

mod audit;
mod conn;
mod keys;
mod outbox;
mod pubsub;
mod record;
mod requests;

use std::time::Duration;

use tokio::sync::{OnceCell, broadcast, watch};

use super::store::Event;
use conn::{Client, Conn};

/// How to reach Redis and how long records live. `Debug` (in
/// `approval/redact.rs`) hides the password.
#[derive(Clone)]
pub struct StoreConfig {
    /// One node's URL; with `cluster`, one or more nodes' URLs separated by
    /// commas (seeds: the rest of the cluster is discovered).
    pub url: String,
    pub cluster: bool,
    /// Replicas that must acknowledge a consumed use, a denial or a
    /// revocation before it is relied on (`WAIT`), so that a failover to an
    /// asynchronous replica cannot bring back what was taken away.
    pub replica_acks: u32,
    pub prefix: String,
    /// Per operation; a guarded call must be answered well inside Envoy's
    /// ext_authz timeout even when Redis hangs.
    pub timeout: Duration,
    /// How long decided requests stay readable.
    pub retention: Duration,
    /// The memory guard of the audit streams (all shards together): past
    /// it the sweep trims the oldest entries whatever their age, after
    /// warning from 80% of it. Never applied on writing.
    pub audit_max_len: u64,
    /// Entries older than this are trimmed (`None`: no age limit).
    pub audit_max_age: Option<Duration>,
    /// Requests one principal may have pending at once.
    pub max_pending_per_principal: u32,
}

/// Approval requests in Redis. Connects lazily, so that a sidecar starts
/// (and answers unguarded calls) while Redis is down.
pub struct RedisStore {
    client: Client,
    conn: OnceCell<Conn>,
    /// A second connection for scripts followed by WAIT. Redis holds back
    /// a connection's later commands while its WAIT blocks, so on the main
    /// connection a slow or missing replica would stall every call, not
    /// only those that wait for it.
    waiting: OnceCell<Conn>,
    cfg: StoreConfig,
    events: broadcast::Sender<Event>,
    subscriber: OnceCell<()>,
    /// Whether the event subscription is live.
    live: watch::Sender<bool>,
    scripts: Scripts,
}

/// The Lua scripts, each behind the shared prelude.
struct Scripts {
    open: redis::Script,
    vote: redis::Script,
    consume: redis::Script,
    sweep: redis::Script,
    admit: redis::Script,
}

impl Scripts {
    fn load() -> Self {
        let script = |body: &str| {
            redis::Script::new(&format!("{}\n{body}", include_str!("lua/prelude.lua")))
        };
        Self {
            open: script(include_str!("lua/open.lua")),
            vote: script(include_str!("lua/vote.lua")),
            consume: script(include_str!("lua/consume.lua")),
            sweep: script(include_str!("lua/sweep.lua")),
            admit: script(include_str!("lua/admit.lua")),
        }
    }

    fn all(&self) -> [&redis::Script; 5] {
        [
            &self.open,
            &self.vote,
            &self.consume,
            &self.sweep,
            &self.admit,
        ]
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.cfg.prefix)
            .field("cluster", &self.cfg.cluster)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Checks the URL(s); does not connect.
    pub fn new(cfg: StoreConfig) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: Client::new(&cfg)?,
            conn: OnceCell::new(),
            waiting: OnceCell::new(),
            cfg,
            events: broadcast::channel(1024).0,
            subscriber: OnceCell::new(),
            live: watch::Sender::new(false),
            scripts: Scripts::load(),
        })
    }
}
