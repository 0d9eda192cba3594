-- Takes one use of an approval, and records it with the allow it leads to.
-- KEYS: the shard's `approved` set (routes the script to the shard).
-- ARGV: shard prefix, id or "", token hash or "" (neither: the request
-- this fingerprint opened), fingerprint, (unused), the consuming check's request id and traceparent, then the
-- field/value pairs of its decision entry. Returns the status and id, plus,
-- when used, the uses left and the opening check's traceparent.
local p = ARGV[1]
local id = ARGV[2]
if id == '' and ARGV[3] == '' then
  id = redis.call('GET', p .. 'fp:' .. ARGV[4])
  if not id then return {'unknown', ''} end
elseif id == '' then
  id = redis.call('GET', p .. 'tok:' .. ARGV[3])
  if not id then return {'unknown', ''} end
end
local h = p .. 'a:' .. id
local now = tonumber(redis.call('TIME')[1])
local st = redis.call('HMGET', h, 'status', 'fingerprint', 'use_until', 'uses_left', 'expires_at')
if not st[1] then return {'unknown', id} end
if st[2] ~= ARGV[4] then return {'mismatch', id} end
-- Past its deadline: refused here; the sweep records the expiry (once).
local status = effective(st[1], now, st[5], st[3], st[4])
if status ~= 'approved' then return {status, id} end
local left = redis.call('HINCRBY', h, 'uses_left', -1)
local after = 'approved'
if left <= 0 then
  after = 'consumed'
  redis.call('HSET', h, 'status', 'consumed')
  redis.call('ZREM', p .. 'approved', id)
end
audit(p, h, id, 'consumed', {status = after, uses_left = left, request_id = ARGV[6], trace = ARGV[7]})
if #ARGV > 7 then
  local d = {p .. 'audit', '*'}
  for i = 8, #ARGV - 1, 2 do
    if ARGV[i + 1] ~= '' then d[#d + 1] = ARGV[i]; d[#d + 1] = ARGV[i + 1] end
  end
  d[#d + 1] = 'approval_id'; d[#d + 1] = id
  d[#d + 1] = 'approval_status'; d[#d + 1] = after
  redis.call('XADD', unpack(d))
end
redis.call('SPUBLISH', p .. 'events', 'consumed ' .. id)
return {'used', id, tostring(left), redis.call('HGET', h, 'trace') or ''}
