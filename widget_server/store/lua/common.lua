-- Shared helpers, prepended to every script by widget_server.store.scripts.
-- Missing values: nil, JSON null, and the false that Redis returns for a missing field.
local function val(x, default)
  if x == nil or x == false or x == cjson.null then return default end
  return x
end

local function hash_to_table(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

local function view(session_key, profile_key, dup, note)
  local s = hash_to_table(redis.call('HGETALL', session_key))
  local p = hash_to_table(redis.call('HGETALL', profile_key))
  return cjson.encode({s = s, p = p, dup = dup, note = note})
end

-- Keep the last `limit` distinct ids of a JSON list, newest last.
local function push_recent(json_list, id, limit)
  local list = cjson.decode(val(json_list, '[]'))
  local out = {}
  for _, v in ipairs(list) do
    if v ~= id then out[#out + 1] = v end
  end
  out[#out + 1] = id
  while #out > limit do table.remove(out, 1) end
  return cjson.encode(out)
end

local function encode_list(list)
  if #list == 0 then return '[]' end
  return cjson.encode(list)
end

-- An unknown visitor's profile is a short-lived marker (MARKER_TTL) until they do something
-- worth remembering (``kept``); then it lives for the retention TTL.
local MARKER_TTL = 86400
local function profile_ttl_for(profile_key, retention)
  if redis.call('HGET', profile_key, 'kept') == '1' then return retention end
  return math.min(MARKER_TTL, retention)
end

-- Places under the site's frequency policy (offer_reserve.lua, and session_event.lua for the
-- offer of an exit signal). A visitor's reservations hash holds one JSON entry per pending
-- place, by token: {o = offer, kind = 'overlay'|'live', disc = 0|1, sid, day, exp}; and markers
-- ('done:' / 'gone:' .. token -> when) for reports of seen offers.

-- The pending places of `live` kind in session `sid` and on `day`, and pending discounts of
-- any kind; expired places are forgotten (marked gone), markers older than a day dropped.
local function pending_places(held, now, sid, day, live)
  local in_session, on_day, discounts = 0, 0, 0
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
          if r.sid == sid then in_session = in_session + 1 end
          if r.day == day then on_day = on_day + 1 end
        end
        if r.disc == 1 then discounts = discounts + 1 end
      end
    end
  end
  return {in_session, on_day, discounts}
end

-- Whether the policy refuses one more place: nil, or {reason, limit}. `pending`: from
-- pending_places; `discount_rule`: the campaign offers a discount (the discount rule applies).
local function place_refused(s, p, now, live, day, policy, discount_rule, pending)
  local per_session = val(live and policy.live_per_session or policy.per_session, 0)
  local per_day = val(live and policy.live_per_day or policy.per_day, 0)
  local prefix = live and 'site_live_' or 'site_'
  local in_session = tonumber(redis.call('HGET', s, live and 'fq_live' or 'fq_overlays') or 0)
  if per_session > 0 and in_session + pending[1] >= per_session then
    return {prefix .. 'session', per_session}
  end
  local counted_day, counted = unpack(redis.call('HMGET', p, 'fq_day',
    live and 'fq_day_live' or 'fq_day_overlays'))
  local today = counted_day == day and tonumber(counted or 0) or 0
  if per_day > 0 and today + pending[2] >= per_day then
    return {prefix .. 'day', per_day}
  end
  local discount_days = val(policy.discount_days, 0)
  if not live and discount_rule and discount_days > 0 then
    local last = tonumber(redis.call('HGET', p, 'fq_discount_at') or 0)
    if pending[3] > 0 or now - last < discount_days * 86400 then
      return {'site_discount', discount_days}
    end
  end
  return nil
end

local function hold_place(held, token, offer, kind, shows_discount, sid, day, expires)
  redis.call('HSET', held, token, cjson.encode({o = offer, kind = kind, disc = shows_discount,
    sid = sid, day = day, exp = expires}))
  redis.call('EXPIRE', held, 2 * 86400)
end
