-- Reserve a place for one offer under the site's frequency policy, on the visitor's slot.
-- KEYS: 1 the visitor's reservations, 2 session, 3 profile
-- ARGV: 1 now, 2 token, 3 until (unix seconds), 4 kind ('overlay' | 'live'), 5 the campaign
--       offers a discount (0/1: the discount rule applies), 6 day key (site's time zone),
--       7 policy JSON {per_session, per_day, discount_days, live_per_session, live_per_day},
--       8 offer id, 9 session id, 10 check only (0/1), 11 this offer shows a discount (0/1)
-- Returns {'ok'} or {'refused', reason, limit}.
-- Seen offers are counted in the session (fq_overlays, fq_live) and the profile (fq_day with
-- fq_day_overlays, fq_day_live; fq_discount_at) by the offer_shown branch of session_event.lua.
-- Reservations count against the budget until they are seen or run out: a process that dies
-- between the steps leaves a reservation that refuses for a while and then counts nowhere, so
-- an interrupted offer errs towards fewer overlays, never more. `check only` is the holdout:
-- the same refusals, nothing held (it shows nothing).
local now = tonumber(ARGV[1])
local held = KEYS[1]
local live = ARGV[4] == 'live'
local sid, day = ARGV[9], ARGV[6]
local policy = cjson.decode(ARGV[7])

local pending_session, pending_day, pending_discount = 0, 0, 0
local flat = redis.call('HGETALL', held)
for i = 1, #flat, 2 do
  local field, value = flat[i], flat[i + 1]
  local marker = string.match(field, '^(%a+):')
  if marker then
    if tonumber(value) < now - 86400 then redis.call('HDEL', held, field) end
  else
    local r = cjson.decode(value)
    if r.exp <= now then
      redis.call('HDEL', held, field)
      redis.call('HSET', held, 'gone:' .. field, now)
    else
      if (r.kind == 'live') == live then
        if r.sid == sid then pending_session = pending_session + 1 end
        if r.day == day then pending_day = pending_day + 1 end
      end
      if r.disc == 1 then pending_discount = pending_discount + 1 end
    end
  end
end

local per_session = val(live and policy.live_per_session or policy.per_session, 0)
local per_day = val(live and policy.live_per_day or policy.per_day, 0)
local prefix = live and 'site_live_' or 'site_'
local in_session = tonumber(redis.call('HGET', KEYS[2], live and 'fq_live' or 'fq_overlays') or 0)
if per_session > 0 and in_session + pending_session >= per_session then
  return {'refused', prefix .. 'session', per_session}
end
local counted_day, counted = unpack(redis.call('HMGET', KEYS[3], 'fq_day',
  live and 'fq_day_live' or 'fq_day_overlays'))
local today = counted_day == day and tonumber(counted or 0) or 0
if per_day > 0 and today + pending_day >= per_day then
  return {'refused', prefix .. 'day', per_day}
end
local discount_days = val(policy.discount_days, 0)
if not live and ARGV[5] == '1' and discount_days > 0 then
  local last = tonumber(redis.call('HGET', KEYS[3], 'fq_discount_at') or 0)
  if pending_discount > 0 or now - last < discount_days * 86400 then
    return {'refused', 'site_discount', discount_days}
  end
end
if ARGV[10] ~= '1' then
  redis.call('HSET', held, ARGV[2], cjson.encode({o = ARGV[8], kind = ARGV[4],
    disc = tonumber(ARGV[11]), sid = sid, day = day, exp = tonumber(ARGV[3])}))
  redis.call('EXPIRE', held, 2 * 86400)
end
return {'ok'}
