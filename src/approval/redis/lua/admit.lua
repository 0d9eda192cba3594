-- Admits one more pending request for a principal, up to its cap; the
-- identical call (same fingerprint) is in already. Runs on the principal's
-- shard, before `open` runs on the fingerprint's: a cluster script touches
-- one slot. KEYS: the principal's set of pending fingerprints (scored by
-- when each stops being pending). ARGV: fingerprint, pending ttl, cap.
-- Returns 'ok' or 'full', and how many the principal has pending.
local now = tonumber(redis.call('TIME')[1])
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
local added = redis.call('ZADD', KEYS[1], 'NX', now + ttl, ARGV[1])
local count = redis.call('ZCOUNT', KEYS[1], '-inf', '+inf')
if added == 1 and count > tonumber(ARGV[3]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return {'full', tostring(count - 1)}
end
if redis.call('TTL', KEYS[1]) < ttl then redis.call('EXPIRE', KEYS[1], ttl) end
return {'ok', tostring(count)}
