-- Shared by every script: one audit entry per lifecycle event, written in
-- the same atomic step as the change it records; and the one rule for the
-- status as of now. Entries are never trimmed by count on writing (a flood
-- would erase what came before it): the sweep trims by age, and by count
-- only as a memory guard, after warning.

local function audit(p, h, id, kind, extra)
  local ok, info = pcall(cjson.decode, redis.call('HGET', h, 'info') or '{}')
  if not ok or type(info) ~= 'table' then info = {} end
  local function s(v) if type(v) == 'string' then return v end return '' end
  local args = {p .. 'audit', '*', 'event', kind, 'approval_id', id,
    'principal', s(info.principal), 'action', s(info.action), 'resource', s(info.resource)}
  if s(info.on_behalf_of) ~= '' then
    args[#args + 1] = 'on_behalf_of'; args[#args + 1] = info.on_behalf_of
  end
  for k, v in pairs(extra) do
    if v ~= '' then args[#args + 1] = k; args[#args + 1] = tostring(v) end
  end
  redis.call('XADD', unpack(args))
end

-- Pending past its deadline, or approved past its use window, is expired;
-- approved with no use left is consumed. Twin of `Status::effective` in
-- Rust. A missing status stays missing.
local function effective(status, now, expires_at, use_until, uses_left)
  if status == 'pending' and now > tonumber(expires_at) then return 'expired' end
  if status == 'approved' then
    local left = tonumber(uses_left)
    if left and left <= 0 then return 'consumed' end
    if now > tonumber(use_until) then return 'expired' end
  end
  return status
end
