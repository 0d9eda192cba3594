//! The Redis store, on one node or on Redis Cluster, by the same code.
//! Every state change is one Lua script, so concurrent sidecars and retries
//! see it atomically: idempotent opening per fingerprint, quorum of
//! distinct approvers, single-use consumption.
//!
//! Requests are spread over [`SHARDS`] shards. Each keeps all its keys under
//! one hash tag, `{p}{tag}:` ([`super::SHARD_TAGS`]; prefix `countersign:`
//! by default), so a script touches one cluster slot: `a:<id>` hash of the
//! request, with
//! `a:<id>:voters` set and `a:<id>:votes` list; `fp:<fingerprint>` and
//! `tok:<token hash>` pointers to the id; `index` sorted by creation;
//! `pending` and `approved` sorted by when those requests expire; the audit
//! stream `audit`, appended to in the same script as the change it records;
//! and the sharded pub/sub channel `events` (`SPUBLISH <kind> <id>`). The
//! shard comes from the fingerprint, and ids and tokens carry it, so every
//! call on the hot path is one round trip to one primary.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::{OnceCell, broadcast};

use super::{
    Approval, NewApproval, Opened, RequestInfo, SHARDS, Status, Vote, new_id, new_token, shard_of,
    shard_of_id, token_hash,
};

/// How to reach Redis and how long records live. `Debug` (in `redact.rs`)
/// hides the password.
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
    /// The audit stream keeps about this many entries...
    pub audit_max_len: u64,
    /// ...and none older than this (`None`: no age limit).
    pub audit_max_age: Option<Duration>,
}

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
    #[error("the approval store returned something unexpected: {0}")]
    Corrupt(String),
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

/// An approver's act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Deny,
    Revoke,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
            Verdict::Revoke => "revoke",
        }
    }
}

/// A change to a request, as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: String,
    pub id: String,
}

/// The check on whose behalf a script runs, for the audit entry it writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckRef<'a> {
    pub request_id: &'a str,
    /// W3C traceparent of the check span, or "".
    pub trace: &'a str,
    /// For `consume`: the decision entry to append when a use is taken
    /// (the script adds `approval_id` and `approval_status`).
    pub decision: &'a [(&'a str, &'a str)],
}

/// One audit stream entry: its stream id (milliseconds-sequence) and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: String,
    pub fields: Vec<(String, String)>,
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

/// Shared by the scripts: one audit entry per lifecycle event, written in the
/// same atomic step as the change it records.
const PRELUDE: &str = r#"
local function audit(p, maxlen, h, id, kind, extra)
  local ok, info = pcall(cjson.decode, redis.call('HGET', h, 'info') or '{}')
  if not ok or type(info) ~= 'table' then info = {} end
  local function s(v) if type(v) == 'string' then return v end return '' end
  local args = {p .. 'audit', 'MAXLEN', '~', maxlen, '*', 'event', kind, 'approval_id', id,
    'principal', s(info.principal), 'action', s(info.action), 'resource', s(info.resource)}
  if s(info.on_behalf_of) ~= '' then
    args[#args + 1] = 'on_behalf_of'; args[#args + 1] = info.on_behalf_of
  end
  for k, v in pairs(extra) do
    if v ~= '' then args[#args + 1] = k; args[#args + 1] = tostring(v) end
  end
  redis.call('XADD', unpack(args))
end
"#;

/// KEYS: fingerprint pointer, index. ARGV: shard prefix, id, info json,
/// fingerprint, pending ttl, retention, approval ttl, uses, quorum, token
/// hash, audit max length, opening check's request id, its traceparent.
const OPEN: &str = r#"
local p = ARGV[1]
local now = tonumber(redis.call('TIME')[1])
local existing = redis.call('GET', KEYS[1])
if existing then
  local st = redis.call('HMGET', p .. 'a:' .. existing, 'status', 'expires_at', 'use_until', 'uses_left')
  if st[1] then
    local status = st[1]
    if status == 'pending' and now > tonumber(st[2]) then status = 'expired' end
    if status == 'approved' and (now > tonumber(st[3]) or tonumber(st[4]) <= 0) then status = 'expired' end
    if status == 'pending' or status == 'approved' then
      local ttl = redis.call('TTL', p .. 'a:' .. existing)
      if ttl > 0 then redis.call('SET', p .. 'tok:' .. ARGV[10], existing, 'EX', ttl) end
      return {'existing', existing, 'token'}
    end
    if status == 'denied' then
      return {'existing', existing, ''}
    end
  end
end
local id = ARGV[2]
local h = p .. 'a:' .. id
local pending_ttl = tonumber(ARGV[5])
local ttl = pending_ttl + tonumber(ARGV[7]) + tonumber(ARGV[6])
redis.call('HSET', h, 'info', ARGV[3], 'fingerprint', ARGV[4], 'status', 'pending',
  'created_at', now, 'expires_at', now + pending_ttl, 'use_until', 0,
  'uses_left', ARGV[8], 'quorum', ARGV[9], 'approval_ttl', ARGV[7])
redis.call('EXPIRE', h, ttl)
-- The same call finds this request while it can be decided or used.
redis.call('SET', KEYS[1], id, 'EX', pending_ttl + tonumber(ARGV[7]))
redis.call('SET', p .. 'tok:' .. ARGV[10], id, 'EX', ttl)
redis.call('HSET', h, 'trace', ARGV[13])
redis.call('ZADD', KEYS[2], now, id)
redis.call('ZADD', p .. 'pending', now + pending_ttl, id)
-- Entries older than any record can live are gone: keep the index bounded.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl * 2)
audit(p, ARGV[11], h, id, 'requested', {status = 'pending', request_id = ARGV[12], trace = ARGV[13]})
redis.call('SPUBLISH', p .. 'events', 'requested ' .. id)
return {'created', id, 'token'}
"#;

/// KEYS: hash, voters, votes. ARGV: shard prefix, id, approver, verdict, vote
/// json, audit max length, reason.
const VOTE: &str = r#"
local p, id, approver, verdict = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = tonumber(redis.call('TIME')[1])
local st = redis.call('HMGET', KEYS[1], 'status', 'expires_at', 'use_until', 'uses_left', 'quorum', 'approval_ttl')
if not st[1] then return {'not_found'} end
local status = st[1]
-- Past its deadline: refused here; the sweep records the expiry (once).
if (status == 'pending' and now > tonumber(st[2])) or (status == 'approved' and now > tonumber(st[3])) then
  status = 'expired'
end
local function event(kind, new_status)
  audit(p, ARGV[6], KEYS[1], id, kind, {status = new_status, approver = approver, reason = ARGV[7]})
end
local function record()
  local ttl = redis.call('PTTL', KEYS[1])
  redis.call('RPUSH', KEYS[3], ARGV[5])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[3], ttl)
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
end
if verdict == 'revoke' then
  if status ~= 'approved' or tonumber(st[4]) <= 0 then return {'not_approved', status} end
  redis.call('HSET', KEYS[1], 'status', 'revoked')
  redis.call('ZREM', p .. 'approved', id)
  record()
  event('revoked', 'revoked')
  redis.call('SPUBLISH', p .. 'events', 'revoked ' .. id)
  return {'ok', 'revoked'}
end
if status ~= 'pending' then return {'not_pending', status} end
if redis.call('SADD', KEYS[2], approver) == 0 then return {'already_voted', status} end
record()
if verdict == 'deny' then
  redis.call('HSET', KEYS[1], 'status', 'denied')
  redis.call('ZREM', p .. 'pending', id)
  event('denied', 'denied')
  redis.call('SPUBLISH', p .. 'events', 'denied ' .. id)
  return {'ok', 'denied'}
end
local approvals = 0
for _, v in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  if string.find(v, '"verdict":"approve"', 1, true) then approvals = approvals + 1 end
end
if approvals >= tonumber(st[5]) then
  redis.call('HSET', KEYS[1], 'status', 'approved', 'use_until', now + tonumber(st[6]))
  redis.call('ZREM', p .. 'pending', id)
  redis.call('ZADD', p .. 'approved', now + tonumber(st[6]), id)
  event('approved', 'approved')
  redis.call('SPUBLISH', p .. 'events', 'approved ' .. id)
  return {'ok', 'approved'}
end
event('voted', 'pending')
redis.call('SPUBLISH', p .. 'events', 'voted ' .. id)
return {'ok', 'pending'}
"#;

/// KEYS: the shard's `approved` set (routes the script to the shard).
/// ARGV: shard prefix, id or "", token hash or "", fingerprint, audit max length,
/// the consuming check's request id and traceparent, then the field/value
/// pairs of its decision entry. Returns the status and id, plus, when used,
/// the uses left and the opening check's traceparent.
const CONSUME: &str = r#"
local p = ARGV[1]
local id = ARGV[2]
if id == '' then
  id = redis.call('GET', p .. 'tok:' .. ARGV[3])
  if not id then return {'unknown', ''} end
end
local h = p .. 'a:' .. id
local now = tonumber(redis.call('TIME')[1])
local st = redis.call('HMGET', h, 'status', 'fingerprint', 'use_until', 'uses_left', 'expires_at')
if not st[1] then return {'unknown', id} end
if st[2] ~= ARGV[4] then return {'mismatch', id} end
local status = st[1]
-- Past its deadline: refused here; the sweep records the expiry (once).
if (status == 'pending' and now > tonumber(st[5])) or (status == 'approved' and now > tonumber(st[3])) then
  status = 'expired'
end
if status ~= 'approved' then return {status, id} end
local left = redis.call('HINCRBY', h, 'uses_left', -1)
local after = 'approved'
if left <= 0 then
  after = 'consumed'
  redis.call('HSET', h, 'status', 'consumed')
  redis.call('ZREM', p .. 'approved', id)
end
audit(p, ARGV[5], h, id, 'consumed', {status = after, uses_left = left, request_id = ARGV[6], trace = ARGV[7]})
if #ARGV > 7 then
  local d = {p .. 'audit', 'MAXLEN', '~', ARGV[5], '*'}
  for i = 8, #ARGV - 1, 2 do
    if ARGV[i + 1] ~= '' then d[#d + 1] = ARGV[i]; d[#d + 1] = ARGV[i + 1] end
  end
  d[#d + 1] = 'approval_id'; d[#d + 1] = id
  d[#d + 1] = 'approval_status'; d[#d + 1] = after
  redis.call('XADD', unpack(d))
end
redis.call('SPUBLISH', p .. 'events', 'consumed ' .. id)
return {'used', id, tostring(left), redis.call('HGET', h, 'trace') or ''}
"#;

/// Marks due requests expired (each once, whichever sidecar gets there
/// first) and trims the audit stream by age. KEYS: the shard's `pending`
/// set. ARGV: shard prefix, audit max length,
/// oldest audit entry to keep (ms, 0: none), batch size. Returns the ids.
const SWEEP: &str = r#"
local function expire(p, maxlen, h, id)
  redis.call('HSET', h, 'status', 'expired')
  redis.call('ZREM', p .. 'pending', id)
  redis.call('ZREM', p .. 'approved', id)
  audit(p, maxlen, h, id, 'expired', {status = 'expired'})
  redis.call('SPUBLISH', p .. 'events', 'expired ' .. id)
end
local p = ARGV[1]
local now = tonumber(redis.call('TIME')[1])
local out = {}
for _, set in ipairs({'pending', 'approved'}) do
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. set, '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[4]))) do
    local h = p .. 'a:' .. id
    local st = redis.call('HMGET', h, 'status', 'expires_at', 'use_until')
    redis.call('ZREM', p .. set, id)
    if (st[1] == 'pending' and now > tonumber(st[2])) or (st[1] == 'approved' and now > tonumber(st[3])) then
      expire(p, ARGV[2], h, id)
      out[#out + 1] = id
    end
  end
end
if tonumber(ARGV[3]) > 0 then
  redis.call('XTRIM', p .. 'audit', 'MINID', '~', ARGV[3])
end
return out
"#;

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
    scripts: Scripts,
}

/// One node or a cluster, as named by the configuration. One per store,
/// so the variants' sizes do not matter.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
enum Client {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

/// A connection to either; commands and scripts run the same on both.
#[derive(Clone)]
enum Conn {
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

struct Scripts {
    open: redis::Script,
    vote: redis::Script,
    consume: redis::Script,
    sweep: redis::Script,
}

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{PRELUDE}{body}"))
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
        let client = if cfg.cluster {
            Client::Cluster(
                // Enough retries to follow the MOVED redirects of a failover
                // (each counts as one), with short waits: response_timeout
                // also bounds a command's retries in all. A script re-run
                // after a lost reply finds its own effect (e.g. "consumed"):
                // a spent use, never a second pass.
                cluster_builder(&cfg)
                    .connection_timeout(cfg.timeout)
                    .response_timeout(cfg.timeout)
                    .retries(4)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()?,
            )
        } else {
            Client::Single(redis::Client::open(cfg.url.as_str())?)
        };
        Ok(Self {
            client,
            conn: OnceCell::new(),
            waiting: OnceCell::new(),
            cfg,
            events: broadcast::channel(1024).0,
            subscriber: OnceCell::new(),
            scripts: Scripts {
                open: script(OPEN),
                vote: script(VOTE),
                consume: script(CONSUME),
                sweep: script(SWEEP),
            },
        })
    }

    /// The main connection, made on first use, and with it the WAIT
    /// connection (now, rather than at a first use that may come at a bad
    /// moment, such as a replica down).
    async fn conn(&self) -> Result<Conn, StoreError> {
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
        let s = &self.scripts;
        for script in [&s.open, &s.vote, &s.consume, &s.sweep] {
            let invocation = script.prepare_invoke();
            let load = invocation.load_async(&mut conn);
            let _ = tokio::time::timeout(self.cfg.timeout, load).await;
        }
        Ok(conn)
    }

    /// Runs one command or script within the store's timeout.
    async fn run<T, F>(&self, f: impl FnOnce(Conn) -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn().await?;
        self.timed(f(conn)).await
    }

    /// Runs `op` within the store's timeout.
    async fn timed<T>(
        &self,
        op: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.cfg.timeout, op)
            .await
            .map_err(|_| StoreError::Unavailable("timed out".into()))?
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
    async fn invoke_confirmed(
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
    fn confirmed(&self, acks: Option<u32>) -> Result<(), StoreError> {
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
    async fn each_shard<T: redis::FromRedisValue>(
        &self,
        cmd: impl Fn(String) -> Cmd,
    ) -> Result<Vec<T>, StoreError> {
        self.each_shard_at(|_, sp| cmd(sp)).await
    }

    async fn each_shard_at<T: redis::FromRedisValue>(
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

    /// `{p}{tag}:`, the start of every key in `shard`.
    fn shard(&self, shard: u8) -> String {
        let (tag, _) = super::SHARD_TAGS[usize::from(shard & (SHARDS - 1))];
        format!("{}{{{tag}}}:", self.cfg.prefix)
    }

    /// The hash of request `id`, `None` if `id` is not an approval id.
    fn key(&self, id: &str) -> Option<String> {
        shard_of_id(id).map(|s| format!("{}a:{id}", self.shard(s)))
    }

    /// Opens a request for an approvable call, or finds the one this exact
    /// call already opened (pending, approved, or denied).
    pub async fn open(&self, new: &NewApproval, check: CheckRef<'_>) -> Result<Opened, StoreError> {
        let shard = fingerprint_shard(&new.fingerprint);
        let id = new_id(shard);
        let (token, hash) = new_token(shard);
        let info =
            serde_json::to_string(&new.info).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let p = &new.params;
        let sp = self.shard(shard);
        let fp_key = format!("{sp}fp:{}", new.fingerprint);
        let index = format!("{sp}index");
        let reply: Vec<String> = self
            .run(|mut c| async move {
                self.scripts
                    .open
                    .key(fp_key)
                    .key(index)
                    .arg(&sp)
                    .arg(&id)
                    .arg(info)
                    .arg(&new.fingerprint)
                    .arg(p.pending_ttl.as_secs())
                    .arg(self.cfg.retention.as_secs())
                    .arg(p.approval_ttl.as_secs())
                    .arg(p.uses)
                    .arg(p.quorum)
                    .arg(&hash)
                    .arg(self.audit_len())
                    .arg(check.request_id)
                    .arg(check.trace)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let (created, id, issued) = match reply.as_slice() {
            [kind, id, issued] => (kind == "created", id.clone(), issued == "token"),
            other => return Err(StoreError::Corrupt(format!("open returned {other:?}"))),
        };
        let approval = self
            .get(&id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        Ok(Opened {
            approval,
            token: issued.then_some(token),
            created,
        })
    }

    /// One request, with its status as of now.
    pub async fn get(&self, id: &str) -> Result<Option<Approval>, StoreError> {
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
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<Approval>, StoreError> {
        let limit = if filter.limit == 0 { 100 } else { filter.limit };
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
                Some(a) => {
                    let keep = filter.status.is_none_or(|s| s == a.status)
                        && filter
                            .principal
                            .as_ref()
                            .is_none_or(|p| *p == a.info.principal)
                        && filter.action.as_ref().is_none_or(|x| *x == a.info.action);
                    if keep {
                        out.push(a);
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
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
    pub async fn vote(
        &self,
        id: &str,
        approver: &str,
        verdict: Verdict,
        reason: &str,
    ) -> Result<Approval, StoreError> {
        let (Some(shard), Some(hash)) = (shard_of_id(id), self.key(id)) else {
            return Err(StoreError::NotFound(id.into()));
        };
        let key = &hash;
        let vote = Vote {
            approver: approver.into(),
            verdict: verdict.as_str().into(),
            reason: reason.into(),
            at: now(),
        };
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
            .arg(verdict.as_str())
            .arg(vote)
            .arg(self.audit_len())
            .arg(reason);
        let (reply, acks) = self.invoke_confirmed(&self.scripts.vote, eval).await?;
        let status =
            |s: &str| Status::parse(s).ok_or_else(|| StoreError::Corrupt(format!("status `{s}`")));
        match reply
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            // What a failover must not undo: a denial or a revocation
            // (an approval it loses only fails closed).
            ["ok", "denied" | "revoked"] => self.confirmed(acks)?,
            ["ok", _] => {}
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
        self.get(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.into()))
    }

    /// Takes one use of an approval for a call with `fingerprint`, found by
    /// the caller's token or (hold mode) by id.
    pub async fn consume(
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
            (None, None) => None,
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
                    self.confirmed(acks)?;
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
    pub async fn sweep(&self) -> (Vec<String>, Vec<StoreError>) {
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
        let (mut ids, mut errors) = (Vec::new(), Vec::new());
        for r in futures_util::future::join_all(per_shard).await {
            match r {
                Ok(expired) => ids.extend(expired),
                Err(e) => errors.push(e),
            }
        }
        (ids, errors)
    }

    /// Requests waiting for a decision (not yet expired).
    pub async fn pending_count(&self) -> Result<u64, StoreError> {
        let now = now();
        let counts: Vec<u64> = self
            .each_shard(|sp| {
                let mut c = redis::cmd("ZCOUNT");
                c.arg(format!("{sp}pending")).arg(now).arg("+inf");
                c
            })
            .await?;
        Ok(counts.iter().sum())
    }

    /// Whether Redis (every primary, on a cluster) answers within the
    /// store's timeout.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }

    /// Appends one entry to the audit stream of the shard of `place`: an
    /// approval id, else any text (a request id) that spreads entries.
    pub async fn append_audit(
        &self,
        place: &str,
        fields: &[(&str, &str)],
    ) -> Result<String, StoreError> {
        let shard = shard_of_id(place).unwrap_or_else(|| spread(place));
        let key = format!("{}audit", self.shard(shard));
        self.run(|mut c| async move {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.audit_len())
                .arg("*");
            for (k, v) in fields.iter().filter(|(_, v)| !v.is_empty()) {
                cmd.arg(*k).arg(*v);
            }
            cmd.query_async(&mut c).await
        })
        .await
    }

    /// Each shard's stream keeps its share of `audit_max_len`.
    fn audit_len(&self) -> u64 {
        self.cfg.audit_max_len.div_ceil(u64::from(SHARDS)).max(1)
    }

    /// The next audit entries after `cursor`, up to `end` (a stream id or
    /// `+`), oldest first across every shard, at most `count`; moves the
    /// cursor past them.
    pub async fn audit_range(
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
    pub async fn audit_end(&self) -> Result<AuditCursor, StoreError> {
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

    /// Audit entries after `cursor`, waiting up to `block` for the first.
    /// Polled, shard by shard, since a blocking read cannot span a
    /// cluster's slots.
    pub async fn audit_follow(
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

    /// Every change, from every sidecar on this store, over sharded pub/sub
    /// (one channel per shard). Pub/sub delivers at most once, so waiters
    /// also poll.
    pub async fn subscribe(&self) -> broadcast::Receiver<Event> {
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
                ));
            })
            .await;
        rx
    }
}

/// Where a reader of the audit streams is: per shard, the range start
/// (`-`, a stream id, or `(id` for "after id").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCursor {
    after: Vec<String>,
}

impl AuditCursor {
    /// From `start` (`-` or a stream id) in every shard.
    pub fn from(start: &str) -> Self {
        Self {
            after: vec![start.to_owned(); usize::from(SHARDS)],
        }
    }
}

/// A stream id as numbers, for ordering entries of several streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct StreamId(u64, u64);

impl StreamId {
    fn parse(id: &str) -> Self {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        Self(ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    }
}

/// How often `audit_follow` looks again.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// A shard for text that names none (FNV-1a, folded).
fn spread(text: &str) -> u8 {
    let h = text.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (h ^ (h >> 16)) as u8 & (SHARDS - 1)
}

/// The shard of a request, from its fingerprint (hex, as computed; any
/// other text is spread).
fn fingerprint_shard(fingerprint: &str) -> u8 {
    shard_of(fingerprint).unwrap_or_else(|| spread(fingerprint))
}

/// Forwards the shards' change events to `tx`, for as long as the process
/// lives. RESP3 pushes: the connection resubscribes by itself after a
/// reconnect; a ping every second makes it notice a lost one.
async fn forward_events(cfg: StoreConfig, channels: Vec<String>, tx: broadcast::Sender<Event>) {
    let push = move |info: redis::PushInfo| -> Result<(), std::convert::Infallible> {
        if info.kind == redis::PushKind::SMessage
            && let Some(Ok(payload)) = info.data.get(1).map(redis::from_redis_value_ref::<String>)
            && let Some((kind, id)) = payload.split_once(' ')
        {
            let _ = tx.send(Event {
                kind: kind.into(),
                id: id.into(),
            });
        }
        Ok(())
    };
    loop {
        match subscribed(&cfg, &channels, push.clone()).await {
            Ok(mut conn) => {
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
                }
            }
            Err(e) => tracing::debug!("approval event subscription: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A cluster client for the seed nodes in `cfg.url` (comma-separated).
fn cluster_builder(cfg: &StoreConfig) -> redis::cluster::ClusterClientBuilder {
    redis::cluster::ClusterClientBuilder::new(cfg.url.split(',').map(str::trim))
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

/// Requests expired per sweep call, so that one call stays short.
const SWEEP_BATCH: usize = 500;

fn entry(e: redis::streams::StreamId) -> AuditEntry {
    let mut fields: Vec<(String, String)> = e
        .map
        .into_iter()
        .map(|(k, v)| (k, redis::from_redis_value(v).unwrap_or_default()))
        .collect();
    // Redis keeps field order; the reply's map does not.
    fields.sort_by(|a, b| field_rank(&a.0).cmp(&field_rank(&b.0)).then(a.0.cmp(&b.0)));
    AuditEntry { id: e.id, fields }
}

/// Readable order for the fields people look at first.
fn field_rank(k: &str) -> usize {
    const FIRST: [&str; 6] = [
        "event",
        "decision",
        "principal",
        "action",
        "resource",
        "approval_id",
    ];
    FIRST.iter().position(|f| *f == k).unwrap_or(FIRST.len())
}

fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn parse(
    id: &str,
    f: &HashMap<String, String>,
    votes: &[String],
    t: i64,
) -> Result<Approval, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("approval `{id}`: {what}"));
    let num = |k: &str| {
        f.get(k)
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| corrupt(k))
    };
    let info: RequestInfo = serde_json::from_str(f.get("info").ok_or_else(|| corrupt("info"))?)
        .map_err(|e| corrupt(&e.to_string()))?;
    let stored = f
        .get("status")
        .and_then(|s| Status::parse(s))
        .ok_or_else(|| corrupt("status"))?;
    let (expires_at, use_until, uses_left) =
        (num("expires_at")?, num("use_until")?, num("uses_left")?);
    let status = match stored {
        Status::Pending if t > expires_at => Status::Expired,
        Status::Approved if t > use_until => Status::Expired,
        s => s,
    };
    Ok(Approval {
        id: id.into(),
        status,
        info,
        created_at: num("created_at")?,
        expires_at,
        use_until,
        uses_left: uses_left.max(0) as u32,
        votes: votes
            .iter()
            .filter_map(|v| serde_json::from_str(v).ok())
            .collect(),
        opened_by: f.get("trace").cloned().unwrap_or_default(),
    })
}
