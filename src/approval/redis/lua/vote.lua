-- An approver's ruling: approve (quorum of distinct approvers), deny, revoke.
-- KEYS: hash, voters, votes. ARGV: shard prefix, id, approver, verdict, vote
-- json, (unused), reason, and how the approver signed in: method, issuer,
-- subject (the last two "" but for an identity provider), and the person
-- behind an identity provider's name ("" otherwise), a voter too. A request
-- that stops being pending returns its fingerprint too: the caller frees its
-- place in the principal's cap.
local p, id, approver, verdict = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = tonumber(redis.call('TIME')[1])
local st = redis.call('HMGET', KEYS[1], 'status', 'expires_at', 'use_until', 'uses_left', 'quorum', 'approval_ttl')
if not st[1] then return {'not_found'} end
-- Past its deadline: refused here; the sweep records the expiry (once).
local status = effective(st[1], now, st[2], st[3], st[4])
local function event(kind, new_status)
  audit(p, KEYS[1], id, kind, {status = new_status, approver = approver, reason = ARGV[7],
    approver_method = ARGV[8] or '', approver_issuer = ARGV[9] or '', approver_subject = ARGV[10] or ''})
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
-- One vote per name, and per person behind a provider's name (who may
-- sign in again under a changed e-mail).
local person = ARGV[11] or ''
if redis.call('SISMEMBER', KEYS[2], approver) == 1 or
   (person ~= '' and redis.call('SISMEMBER', KEYS[2], person) == 1) then
  return {'already_voted', status}
end
redis.call('SADD', KEYS[2], approver)
if person ~= '' then redis.call('SADD', KEYS[2], person) end
record()
if verdict == 'deny' then
  redis.call('HSET', KEYS[1], 'status', 'denied')
  redis.call('ZREM', p .. 'pending', id)
  event('denied', 'denied')
  redis.call('SPUBLISH', p .. 'events', 'denied ' .. id)
  return {'ok', 'denied', redis.call('HGET', KEYS[1], 'fingerprint')}
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
  return {'ok', 'approved', redis.call('HGET', KEYS[1], 'fingerprint')}
end
event('voted', 'pending')
redis.call('SPUBLISH', p .. 'events', 'voted ' .. id)
return {'ok', 'pending'}
