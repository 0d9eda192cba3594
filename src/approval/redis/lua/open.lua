-- Opens a request, or finds the one this exact call opened.
-- KEYS: fingerprint pointer, index. ARGV: shard prefix, id, info json,
-- fingerprint, pending ttl, retention, approval ttl, uses, quorum, token
-- hash ('' to issue none), (unused), opening check's request id, its
-- traceparent, '1' to only find (the principal is at its cap of pending
-- requests: returns 'full' rather than open one).
local p = ARGV[1]
local now = tonumber(redis.call('TIME')[1])
local existing = redis.call('GET', KEYS[1])
if existing then
  local st = redis.call('HMGET', p .. 'a:' .. existing, 'status', 'expires_at', 'use_until', 'uses_left')
  if st[1] then
    local status = effective(st[1], now, st[2], st[3], st[4])
    if status == 'pending' or status == 'approved' then
      if ARGV[10] == '' then return {'existing', existing, ''} end
      local ttl = redis.call('TTL', p .. 'a:' .. existing)
      if ttl > 0 then redis.call('SET', p .. 'tok:' .. ARGV[10], existing, 'EX', ttl) end
      return {'existing', existing, 'token'}
    end
    if status == 'denied' then
      return {'existing', existing, ''}
    end
  end
end
if ARGV[14] == '1' then return {'full', '', ''} end
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
if ARGV[10] ~= '' then redis.call('SET', p .. 'tok:' .. ARGV[10], id, 'EX', ttl) end
redis.call('HSET', h, 'trace', ARGV[13])
redis.call('ZADD', KEYS[2], now, id)
redis.call('ZADD', p .. 'pending', now + pending_ttl, id)
-- Entries older than any record can live are gone: keep the index bounded.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl * 2)
audit(p, h, id, 'requested', {status = 'pending', request_id = ARGV[12], trace = ARGV[13]})
redis.call('SPUBLISH', p .. 'events', 'requested ' .. id)
if ARGV[10] == '' then return {'created', id, ''} end
return {'created', id, 'token'}
