//! The Redis store. Every state change is one Lua script, so concurrent
//! sidecars and retries see it atomically: idempotent opening per
//! fingerprint, quorum of distinct approvers, single-use consumption.
//!
//! Keys (prefix `countersign:` by default): `{p}{<id>}` hash of the request,
//! `{p}{<id>}:voters` set, `{p}{<id>}:votes` list, `{p}fp:<fingerprint>` and
//! `{p}tok:<token hash>` pointers to the id, `{p}index` sorted by creation,
//! `{p}pending` and `{p}approved` sorted by when those requests expire;
//! changes are published on `{p}events` as `<kind> <id>` and appended, in
//! the same script, to the audit stream `{p}audit`.

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

/// KEYS: fingerprint pointer, index. ARGV: prefix, id, info json,
/// fingerprint, pending ttl, retention, approval ttl, uses, quorum, token
/// hash, audit max length, opening check's request id, its traceparent.
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
redis.call('HSET', h, 'trace', ARGV[13])
redis.call('ZADD', KEYS[2], now, id)
redis.call('ZADD', p .. 'pending', now + pending_ttl, id)
-- Entries older than any record can live are gone: keep the index bounded.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl * 2)
audit(p, ARGV[11], h, id, 'requested', {status = 'pending', request_id = ARGV[12], trace = ARGV[13]})
redis.call('PUBLISH', p .. 'events', 'requested ' .. id)
return {'created', id, 'token'}
"#;

/// KEYS: hash, voters, votes. ARGV: prefix, id, approver, verdict, vote
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
  redis.call('PUBLISH', p .. 'events', 'revoked ' .. id)
  return {'ok', 'revoked'}
end
if status ~= 'pending' then return {'not_pending', status} end
if redis.call('SADD', KEYS[2], approver) == 0 then return {'already_voted', status} end
record()
if verdict == 'deny' then
  redis.call('HSET', KEYS[1], 'status', 'denied')
  redis.call('ZREM', p .. 'pending', id)
  event('denied', 'denied')
  redis.call('PUBLISH', p .. 'events', 'denied ' .. id)
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
  redis.call('PUBLISH', p .. 'events', 'approved ' .. id)
  return {'ok', 'approved'}
end
event('voted', 'pending')
redis.call('PUBLISH', p .. 'events', 'voted ' .. id)
return {'ok', 'pending'}
"#;

/// ARGV: prefix, id or "", token hash or "", fingerprint, audit max length,
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
local h = p .. '{' .. id .. '}'
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
redis.call('PUBLISH', p .. 'events', 'consumed ' .. id)
return {'used', id, tostring(left), redis.call('HGET', h, 'trace') or ''}
"#;

/// Marks due requests expired (each once, whichever sidecar gets there
/// first) and trims the audit stream by age. ARGV: prefix, audit max length,
/// oldest audit entry to keep (ms, 0: none), batch size. Returns the ids.
const SWEEP: &str = r#"
local function expire(p, maxlen, h, id)
  redis.call('HSET', h, 'status', 'expired')
  redis.call('ZREM', p .. 'pending', id)
  redis.call('ZREM', p .. 'approved', id)
  audit(p, maxlen, h, id, 'expired', {status = 'expired'})
  redis.call('PUBLISH', p .. 'events', 'expired ' .. id)
end
local p = ARGV[1]
local now = tonumber(redis.call('TIME')[1])
local out = {}
for _, set in ipairs({'pending', 'approved'}) do
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. set, '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[4]))) do
    local h = p .. '{' .. id .. '}'
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
    sweep: redis::Script,
}

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{PRELUDE}{body}"))
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
                open: script(OPEN),
                vote: script(VOTE),
                consume: script(CONSUME),
                sweep: script(SWEEP),
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
    pub async fn open(&self, new: &NewApproval, check: CheckRef<'_>) -> Result<Opened, StoreError> {
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
                    .arg(self.cfg.audit_max_len)
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
                    .arg(self.cfg.audit_max_len)
                    .arg(reason)
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
        check: CheckRef<'_>,
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
                    .arg(self.cfg.audit_max_len)
                    .arg(check.request_id)
                    .arg(check.trace)
                    .arg(check.decision)
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
                ["used", id, left, trace] => Consumed::Used {
                    id: (*id).into(),
                    uses_left: left.parse().unwrap_or(0),
                    opened_by: (*trace).into(),
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

    /// Expires due requests (recording each in the audit stream once) and
    /// trims the stream by age. Returns the ids it expired.
    pub async fn sweep(&self) -> Result<Vec<String>, StoreError> {
        let min_id = self.cfg.audit_max_age.map_or(0, |age| {
            (now_millis() as u64).saturating_sub(age.as_millis() as u64)
        });
        self.run(|mut c| async move {
            self.scripts
                .sweep
                .arg(&self.cfg.prefix)
                .arg(self.cfg.audit_max_len)
                .arg(min_id)
                .arg(SWEEP_BATCH)
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    /// Requests waiting for a decision (not yet expired).
    pub async fn pending_count(&self) -> Result<u64, StoreError> {
        let key = format!("{}pending", self.cfg.prefix);
        self.run(|mut c| async move {
            redis::cmd("ZCOUNT")
                .arg(key)
                .arg(now())
                .arg("+inf")
                .query_async(&mut c)
                .await
        })
        .await
    }

    /// Whether Redis answers within the store's timeout.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }

    /// Appends one entry to the audit stream.
    pub async fn append_audit(&self, fields: &[(&str, &str)]) -> Result<String, StoreError> {
        let key = self.audit_key();
        self.run(|mut c| async move {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.cfg.audit_max_len)
                .arg("*");
            for (k, v) in fields.iter().filter(|(_, v)| !v.is_empty()) {
                cmd.arg(*k).arg(*v);
            }
            cmd.query_async(&mut c).await
        })
        .await
    }

    /// Audit entries from `start` to `end` (stream ids or `-`/`+`), oldest
    /// first, at most `count`.
    pub async fn audit_range(
        &self,
        start: &str,
        end: &str,
        count: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let key = self.audit_key();
        let reply: redis::streams::StreamRangeReply = self
            .run(|mut c| async move {
                redis::cmd("XRANGE")
                    .arg(key)
                    .arg(start)
                    .arg(end)
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(reply.ids.into_iter().map(entry).collect())
    }

    /// Audit entries after `after` (a stream id, or `$` for "from now"),
    /// waiting up to `block` for the first.
    pub async fn audit_follow(
        &self,
        after: &str,
        block: Duration,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let key = self.audit_key();
        // A dedicated connection: a blocking read would stall the shared one,
        // and the store's per-command timeout is shorter than `block`.
        // The reply may take the whole `block`: the default response
        // timeout (0.5 s) would cut a quiet wait short.
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.cfg.timeout * 2))
            .set_response_timeout(Some(block + self.cfg.timeout * 2));
        let mut conn = tokio::time::timeout(
            self.cfg.timeout * 2,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| StoreError::Unavailable("connection timed out".into()))?
        .map_err(unavailable)?;
        let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(key)
            .arg(after)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(entry)
            .collect())
    }

    fn audit_key(&self) -> String {
        format!("{}audit", self.cfg.prefix)
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
