//! The Redis store. Every state change is one Lua script, so concurrent
//! sidecars and retries see it atomically: idempotent opening per
//! fingerprint, quorum of distinct approvers, single-use consumption.
//!
//! Keys (prefix `countersign:` by default): `{p}{<id>}` hash of the request,
//! `{p}{<id>}:voters` set, `{p}{<id>}:votes` list, `{p}fp:<fingerprint>` and
//! `{p}tok:<token hash>` pointers to the id, `{p}index` sorted by creation;
//! changes are published on `{p}events` as `<kind> <id>`.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::{OnceCell, broadcast};

use super::{
    Approval, NewApproval, Opened, RequestInfo, Status, Vote, new_id, new_token, token_hash,
};

/// How to reach Redis and how long records live.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: String,
    pub prefix: String,
    /// Per operation; a guarded call must be answered well inside Envoy's
    /// ext_authz timeout even when Redis hangs.
    pub timeout: Duration,
    /// How long decided requests stay readable.
    pub retention: Duration,
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
    #[error("the approval store returned something unexpected: {0}")]
    Corrupt(String),
}

/// The outcome of presenting an approval for a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumed {
    /// One use taken; the call may proceed.
    Used { id: String, uses_left: u32 },
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

/// Which requests to list.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// `None` lists every status.
    pub status: Option<Status>,
    pub principal: Option<String>,
    pub action: Option<String>,
    pub limit: usize,
}

const OPEN: &str = r#"
local p = ARGV[1]
local now = tonumber(redis.call('TIME')[1])
local existing = redis.call('GET', KEYS[1])
if existing then
  local st = redis.call('HMGET', p .. '{' .. existing .. '}', 'status', 'expires_at', 'use_until', 'uses_left')
  if st[1] then
    local status = st[1]
    if status == 'pending' and now > tonumber(st[2]) then status = 'expired' end
    if status == 'approved' and (now > tonumber(st[3]) or tonumber(st[4]) <= 0) then status = 'expired' end
    if status == 'pending' or status == 'approved' then
      local ttl = redis.call('TTL', p .. '{' .. existing .. '}')
      if ttl > 0 then redis.call('SET', p .. 'tok:' .. ARGV[10], existing, 'EX', ttl) end
      return {'existing', existing, 'token'}
    end
    if status == 'denied' then
      return {'existing', existing, ''}
    end
  end
end
local id = ARGV[2]
local h = p .. '{' .. id .. '}'
local pending_ttl = tonumber(ARGV[5])
local ttl = pending_ttl + tonumber(ARGV[7]) + tonumber(ARGV[6])
redis.call('HSET', h, 'info', ARGV[3], 'fingerprint', ARGV[4], 'status', 'pending',
  'created_at', now, 'expires_at', now + pending_ttl, 'use_until', 0,
  'uses_left', ARGV[8], 'quorum', ARGV[9], 'approval_ttl', ARGV[7])
redis.call('EXPIRE', h, ttl)
-- The same call finds this request while it can be decided or used.
redis.call('SET', KEYS[1], id, 'EX', pending_ttl + tonumber(ARGV[7]))
redis.call('SET', p .. 'tok:' .. ARGV[10], id, 'EX', ttl)
redis.call('ZADD', KEYS[2], now, id)
-- Entries older than any record can live are gone: keep the index bounded.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl * 2)
redis.call('PUBLISH', p .. 'events', 'requested ' .. id)
return {'created', id, 'token'}
"#;

/// KEYS: hash, voters, votes. ARGV: prefix, id, approver, verdict, vote json.
const VOTE: &str = r#"
local p, id, approver, verdict = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = tonumber(redis.call('TIME')[1])
local st = redis.call('HMGET', KEYS[1], 'status', 'expires_at', 'use_until', 'uses_left', 'quorum', 'approval_ttl')
if not st[1] then return {'not_found'} end
local status = st[1]
if status == 'pending' and now > tonumber(st[2]) then
  status = 'expired'
  redis.call('HSET', KEYS[1], 'status', status)
end
if status == 'approved' and now > tonumber(st[3]) then
  status = 'expired'
  redis.call('HSET', KEYS[1], 'status', status)
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
  record()
  redis.call('PUBLISH', p .. 'events', 'revoked ' .. id)
  return {'ok', 'revoked'}
end
if status ~= 'pending' then return {'not_pending', status} end
if redis.call('SADD', KEYS[2], approver) == 0 then return {'already_voted', status} end
record()
if verdict == 'deny' then
  redis.call('HSET', KEYS[1], 'status', 'denied')
  redis.call('PUBLISH', p .. 'events', 'denied ' .. id)
  return {'ok', 'denied'}
end
local approvals = 0
for _, v in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  if string.find(v, '"verdict":"approve"', 1, true) then approvals = approvals + 1 end
end
if approvals >= tonumber(st[5]) then
  redis.call('HSET', KEYS[1], 'status', 'approved', 'use_until', now + tonumber(st[6]))
  redis.call('PUBLISH', p .. 'events', 'approved ' .. id)
  return {'ok', 'approved'}
end
redis.call('PUBLISH', p .. 'events', 'voted ' .. id)
return {'ok', 'pending'}
"#;

/// ARGV: prefix, id or "", token hash or "", fingerprint.
const CONSUME: &str = r#"
local p = ARGV[1]
local id = ARGV[2]
if id == '' then
  id = redis.call('GET', p .. 'tok:' .. ARGV[3])
  if not id then return {'unknown', ''} end
end
local h = p .. '{' .. id .. '}'
local now = tonumber(redis.call('TIME')[1])
local st = redis.call('HMGET', h, 'status', 'fingerprint', 'use_until', 'uses_left', 'expires_at')
if not st[1] then return {'unknown', id} end
if st[2] ~= ARGV[4] then return {'mismatch', id} end
local status = st[1]
if status == 'pending' and now > tonumber(st[5]) then status = 'expired' end
if status == 'approved' and now > tonumber(st[3]) then status = 'expired' end
if status ~= st[1] then redis.call('HSET', h, 'status', status) end
if status ~= 'approved' then return {status, id} end
local left = redis.call('HINCRBY', h, 'uses_left', -1)
if left <= 0 then redis.call('HSET', h, 'status', 'consumed') end
redis.call('PUBLISH', p .. 'events', 'consumed ' .. id)
return {'used', id, tostring(left)}
"#;

/// Approval requests in Redis. Connects lazily, so that a sidecar starts
/// (and answers unguarded calls) while Redis is down.
pub struct RedisStore {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    cfg: StoreConfig,
    events: broadcast::Sender<Event>,
    subscriber: OnceCell<()>,
    scripts: Scripts,
}

struct Scripts {
    open: redis::Script,
    vote: redis::Script,
    consume: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.cfg.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Checks the URL; does not connect.
    pub fn new(cfg: StoreConfig) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(cfg.url.as_str())?;
        Ok(Self {
            client,
            conn: OnceCell::new(),
            cfg,
            events: broadcast::channel(1024).0,
            subscriber: OnceCell::new(),
            scripts: Scripts {
                open: redis::Script::new(OPEN),
                vote: redis::Script::new(VOTE),
                consume: redis::Script::new(CONSUME),
            },
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.cfg.timeout))
            .set_response_timeout(Some(self.cfg.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = self
            .conn
            .get_or_try_init(|| async {
                tokio::time::timeout(
                    self.cfg.timeout * 2,
                    self.client.get_connection_manager_with_config(cfg),
                )
                .await
                .map_err(|_| StoreError::Unavailable("connection timed out".into()))?
                .map_err(unavailable)
            })
            .await?;
        Ok(conn.clone())
    }

    /// Runs one command or script within the store's timeout.
    async fn run<T, F>(&self, f: impl FnOnce(ConnectionManager) -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn().await?;
        tokio::time::timeout(self.cfg.timeout, f(conn))
            .await
            .map_err(|_| StoreError::Unavailable("timed out".into()))?
            .map_err(unavailable)
    }

    fn key(&self, id: &str) -> String {
        format!("{}{{{id}}}", self.cfg.prefix)
    }

    /// Opens a request for an approvable call, or finds the one this exact
    /// call already opened (pending, approved, or denied).
    pub async fn open(&self, new: &NewApproval) -> Result<Opened, StoreError> {
        let id = new_id();
        let (token, hash) = new_token();
        let info =
            serde_json::to_string(&new.info).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let p = &new.params;
        let fp_key = format!("{}fp:{}", self.cfg.prefix, new.fingerprint);
        let index = format!("{}index", self.cfg.prefix);
        let reply: Vec<String> = self
            .run(|mut c| async move {
                self.scripts
                    .open
                    .key(fp_key)
                    .key(index)
                    .arg(&self.cfg.prefix)
                    .arg(&id)
                    .arg(info)
                    .arg(&new.fingerprint)
                    .arg(p.pending_ttl.as_secs())
                    .arg(self.cfg.retention.as_secs())
                    .arg(p.approval_ttl.as_secs())
                    .arg(p.uses)
                    .arg(p.quorum)
                    .arg(&hash)
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
        let key = self.key(id);
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
        let index = format!("{}index", self.cfg.prefix);
        let limit = if filter.limit == 0 { 100 } else { filter.limit };
        // Filters apply after reading, so read a wider window than `limit`.
        let ids: Vec<String> = self
            .run(|mut c| async move {
                redis::cmd("ZRANGE")
                    .arg(&index)
                    .arg(0)
                    .arg(4999)
                    .arg("REV")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for id in ids {
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
            let index = format!("{}index", self.cfg.prefix);
            // Retention ended for these: drop them from the index.
            let _: Result<(), _> = self
                .run(|mut c| async move {
                    redis::cmd("ZREM")
                        .arg(index)
                        .arg(gone)
                        .query_async(&mut c)
                        .await
                })
                .await;
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
        let key = self.key(id);
        let vote = Vote {
            approver: approver.into(),
            verdict: verdict.as_str().into(),
            reason: reason.into(),
            at: now(),
        };
        let vote = serde_json::to_string(&vote).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let reply: Vec<String> = self
            .run(|mut c| async move {
                self.scripts
                    .vote
                    .key(&key)
                    .key(format!("{key}:voters"))
                    .key(format!("{key}:votes"))
                    .arg(&self.cfg.prefix)
                    .arg(id)
                    .arg(approver)
                    .arg(verdict.as_str())
                    .arg(vote)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let status =
            |s: &str| Status::parse(s).ok_or_else(|| StoreError::Corrupt(format!("status `{s}`")));
        match reply
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
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
    ) -> Result<Consumed, StoreError> {
        let hash = token.map(token_hash).unwrap_or_default();
        let reply: Vec<String> = self
            .run(|mut c| async move {
                self.scripts
                    .consume
                    .arg(&self.cfg.prefix)
                    .arg(id.unwrap_or_default())
                    .arg(hash)
                    .arg(fingerprint)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(
            match reply
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice()
            {
                ["used", id, left] => Consumed::Used {
                    id: (*id).into(),
                    uses_left: left.parse().unwrap_or(0),
                },
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

    /// Every change, from every sidecar on this Redis. Pub/sub delivers at
    /// most once, so waiters also poll.
    pub async fn subscribe(&self) -> broadcast::Receiver<Event> {
        let rx = self.events.subscribe();
        self.subscriber
            .get_or_init(|| async {
                let client = self.client.clone();
                let channel = format!("{}events", self.cfg.prefix);
                let tx = self.events.clone();
                tokio::spawn(forward_events(client, channel, tx));
            })
            .await;
        rx
    }
}

async fn forward_events(client: redis::Client, channel: String, tx: broadcast::Sender<Event>) {
    use futures_util::StreamExt;
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                if pubsub.subscribe(&channel).await.is_ok() {
                    let mut stream = pubsub.on_message();
                    while let Some(msg) = stream.next().await {
                        let Ok(payload) = msg.get_payload::<String>() else {
                            continue;
                        };
                        if let Some((kind, id)) = payload.split_once(' ') {
                            let _ = tx.send(Event {
                                kind: kind.into(),
                                id: id.into(),
                            });
                        }
                    }
                }
                tracing::warn!("approval event subscription lost; reconnecting");
            }
            Err(e) => tracing::debug!("approval event subscription: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
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
    })
}
