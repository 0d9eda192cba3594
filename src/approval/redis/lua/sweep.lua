-- Marks due requests expired (each once, whichever sidecar gets there
-- first) and trims the audit stream by age, then, only past the memory
-- guard, by count. KEYS: the shard's `pending` set. ARGV: shard prefix,
-- guard (entries), oldest audit entry to keep (ms, 0: none), batch size.
-- Returns the stream's length before the guard, the entries the guard
-- trimmed, then the ids expired.
local function expire(p, h, id)
  redis.call('HSET', h, 'status', 'expired')
  redis.call('ZREM', p .. 'pending', id)
  redis.call('ZREM', p .. 'approved', id)
  audit(p, h, id, 'expired', {status = 'expired'})
  redis.call('SPUBLISH', p .. 'events', 'expired ' .. id)
end
local p = ARGV[1]
local now = tonumber(redis.call('TIME')[1])
local out = {}
for _, set in ipairs({'pending', 'approved'}) do
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. set, '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[4]))) do
    local h = p .. 'a:' .. id
    local st = redis.call('HMGET', h, 'status', 'expires_at', 'use_until', 'uses_left')
    redis.call('ZREM', p .. set, id)
    -- Only a live request expires, and so only once.
    local live = st[1] == 'pending' or st[1] == 'approved'
    if live and effective(st[1], now, st[2], st[3], st[4]) == 'expired' then
      expire(p, h, id)
      out[#out + 1] = id
    end
  end
end
if tonumber(ARGV[3]) > 0 then
  redis.call('XTRIM', p .. 'audit', 'MINID', '~', ARGV[3])
end
local len = redis.call('XLEN', p .. 'audit')
local trimmed = 0
if len > tonumber(ARGV[2]) then
  trimmed = redis.call('XTRIM', p .. 'audit', 'MAXLEN', '~', ARGV[2])
end
table.insert(out, 1, tostring(trimmed))
table.insert(out, 1, tostring(len))
return out
