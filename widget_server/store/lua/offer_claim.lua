-- Claim an offer for one visitor, atomically: caps, global cap, unique code, exposure.
-- All keys share the campaign's hash tag, so this runs on one slot of a cluster.
-- KEYS: 1 visitor state for the campaign, 2 impressions counter, 3 code pool, 4 issued codes,
--       5 stats of the day, 6 pending offers of the campaign (sorted set)
-- ARGV: 1 now, 2 message id (idempotent per session), 3 session id, 4 day key, 5 week key,
--       6 caps JSON {per_session, per_day, per_week, global_max}, 7 variant, 8 holdout (0/1),
--       9 code strategy (none|static|pool|generated), 10 static code, 11 candidate codes JSON,
--       12 code validity seconds, 13 state ttl seconds, 14 visitor id,
--       15 the campaign hands out pool codes (0/1), 16 experiment version, 17 token,
--       18 until (unix seconds: the reservation runs out unless offer_confirm.lua sees it),
--       19 the visitor's covariates known before the offer, comma-separated ('' = none kept)
-- Returns {status, variant, code, expires_at_ms, reason, codes left in the pool (-1: not
-- known), token}: status 'ok' | 'rejected' | 'replay'.
-- Every rule that can refuse an offer applies to every arm, the holdout included, so the arms
-- stay comparable. A visitor counts as exposed once per experiment version, at the claim (the
-- unit of the statistics is the visitor, and exposure must not depend on what the browser
-- does next). The offer itself is only reserved here: its caps count reservations until they
-- run out, and the impression and the caps are confirmed when the widget reports it painted
-- (offer_confirm.lua). The holdout shows nothing, so its caps are confirmed at once. The code
-- stays the visitor's even when the reservation runs out: the browser has received it.
-- At the first exposure in a version the covariates are frozen: kept in the visitor's state
-- (for offer_attribute.lua) and added to the arm's sums of the day (xn, x<i>, xx<i>_<j>), the
-- regression adjustment's inputs (experiments/adjust.py). The visitor's record among the
-- buyers is keyed by a random id ('bid'), never by the visitor id.
local now = tonumber(ARGV[1])
local v = KEYS[1]
local replay_field = 'm:' .. ARGV[3] .. ':' .. ARGV[2]
local previous = redis.call('HGET', v, replay_field)
if previous then
  local r = cjson.decode(previous)
  return {'replay', r[1], r[2], r[3], '', -1, val(r[4], '')}
end
local caps = cjson.decode(ARGV[6])
local sid_field, day_field, week_field = 's:' .. ARGV[3], 'd:' .. ARGV[4], 'w:' .. ARGV[5]
local got = redis.call('HMGET', v, sid_field, day_field, week_field)
local in_session, today, this_week = tonumber(got[1] or 0), tonumber(got[2] or 0), tonumber(got[3] or 0)
-- Reservations not yet seen count like seen ones until they run out; old ones go.
local flat = redis.call('HGETALL', v)
for i = 1, #flat, 2 do
  local field, value = flat[i], flat[i + 1]
  local marker = string.sub(field, 1, 2)
  if marker == 'p:' then
    local r = cjson.decode(value)
    if r.exp <= now - 86400 then
      redis.call('HDEL', v, field)  -- kept a day, for a report the visitor's slot already took
    elseif r.exp > now then
      if r.sid == ARGV[3] then in_session = in_session + 1 end
      if r.day == ARGV[4] then today = today + 1 end
      if r.week == ARGV[5] then this_week = this_week + 1 end
    end
  elseif marker == 'c:' and tonumber(value) < now - 86400 then
    redis.call('HDEL', v, field)
  end
end
if val(caps.per_session, 0) > 0 and in_session >= caps.per_session then
  return {'rejected', ARGV[7], '', 0, 'capped_session'}
end
if val(caps.per_day, 0) > 0 and today >= caps.per_day then
  return {'rejected', ARGV[7], '', 0, 'capped_day'}
end
if val(caps.per_week, 0) > 0 and this_week >= caps.per_week then
  return {'rejected', ARGV[7], '', 0, 'capped_week'}
end

local global_max = val(caps.global_max, 0)
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
if global_max > 0 and tonumber(redis.call('GET', KEYS[2]) or 0) + redis.call('ZCARD', KEYS[6])
    >= global_max then
  return {'rejected', ARGV[7], '', 0, 'global_cap'}
end
local held, held_until = unpack(redis.call('HMGET', v, 'code', 'code_expires'))
local holds_code = held and tonumber(held_until or 0) > now * 1000
if ARGV[15] == '1' and not holds_code and redis.call('LLEN', KEYS[3]) == 0 then
  return {'rejected', ARGV[7], '', 0, 'pool_exhausted', 0}
end

local holdout = ARGV[8] == '1'
local code, expires = '', 0
if not holdout then
  local strategy = ARGV[9]
  expires = (now + tonumber(ARGV[12])) * 1000
  -- A visitor who still holds a valid code of this campaign gets the same one again.
  if strategy ~= 'none' and holds_code then
    code, expires = held, tonumber(held_until)
  elseif strategy == 'static' then
    code = ARGV[10]
  elseif strategy == 'pool' then
    code = redis.call('LPOP', KEYS[3])
    if not code then return {'rejected', ARGV[7], '', 0, 'pool_exhausted', 0} end
  elseif strategy == 'generated' then
    for _, candidate in ipairs(cjson.decode(ARGV[11])) do
      if redis.call('HEXISTS', KEYS[4], candidate) == 0 then code = candidate break end
    end
    if code == '' then return {'rejected', ARGV[7], '', 0, 'code_collision'} end
  else
    expires = 0
  end
  if code ~= '' and (strategy == 'pool' or strategy == 'generated') and code ~= held then
    redis.call('HSET', KEYS[4], code, cjson.encode({visitor = ARGV[14], variant = ARGV[7],
      issued = now, expires = expires / 1000, session = ARGV[3]}))
  end
  local deadline = tonumber(ARGV[18])
  redis.call('HSET', v, 'p:' .. ARGV[17], cjson.encode({sid = ARGV[3], day = ARGV[4],
    week = ARGV[5], variant = ARGV[7], exp = deadline}))
  redis.call('ZADD', KEYS[6], deadline, ARGV[17])
  redis.call('EXPIRE', KEYS[6], 86400)
else
  redis.call('HINCRBY', v, sid_field, 1)
  redis.call('HINCRBY', v, day_field, 1)
  redis.call('HINCRBY', v, week_field, 1)
end

redis.call('HSET', v, 'variant', ARGV[7], 'exposed_at', now,
  replay_field, cjson.encode({ARGV[7], code, expires, holdout and '' or ARGV[17]}))
if code ~= '' then redis.call('HSET', v, 'code', code, 'code_expires', expires) end
redis.call('EXPIRE', v, tonumber(ARGV[13]))
if redis.call('HGET', v, 'xv') ~= ARGV[16] then
  -- First exposure in this experiment version: the attribution totals start again.
  redis.call('HSET', v, 'xv', ARGV[16], 'converted', 0, 'revenue', 0, 'bid', ARGV[17])
  local arm = ARGV[7]
  redis.call('HINCRBY', KEYS[5], 'exposures:' .. arm, 1)
  local x = {}
  for part in string.gmatch(ARGV[19] or '', '[^,]+') do x[#x + 1] = tonumber(part) end
  if #x > 0 then
    redis.call('HSET', v, 'x', ARGV[19])
    redis.call('HINCRBY', KEYS[5], 'xn:' .. arm, 1)
    for i = 1, #x do
      if x[i] ~= 0 then
        redis.call('HINCRBYFLOAT', KEYS[5], 'x' .. (i - 1) .. ':' .. arm, string.format('%.17g', x[i]))
        for j = i, #x do
          if x[j] ~= 0 then
            redis.call('HINCRBYFLOAT', KEYS[5], 'xx' .. (i - 1) .. '_' .. (j - 1) .. ':' .. arm,
              string.format('%.17g', x[i] * x[j]))
          end
        end
      end
    end
  else
    redis.call('HDEL', v, 'x')
  end
end
redis.call('EXPIRE', KEYS[5], 400 * 86400)
return {'ok', ARGV[7], code, expires, '', redis.call('LLEN', KEYS[3]),
  holdout and '' or ARGV[17]}
