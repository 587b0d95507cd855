-- Claim an offer for one visitor, atomically: caps, global cap, unique code, exposure.
-- All keys share the campaign's hash tag, so this runs on one slot of a cluster.
-- KEYS: 1 visitor state for the campaign, 2 impressions counter, 3 code pool, 4 issued codes,
--       5 stats of the day
-- ARGV: 1 now, 2 message id (idempotent per session), 3 session id, 4 day key, 5 week key,
--       6 caps JSON {per_session, per_day, per_week, global_max}, 7 variant, 8 holdout (0/1),
--       9 code strategy (none|static|pool|generated), 10 static code, 11 candidate codes JSON,
--       12 code validity seconds, 13 state ttl seconds, 14 visitor id,
--       15 the campaign hands out pool codes (0/1), 16 experiment version
-- Returns {status, variant, code, expires_at_ms, reason[, codes left in the pool]}:
-- status 'ok' | 'rejected' | 'replay'.
-- Every rule that can refuse an offer applies to every arm, the holdout included, so the arms
-- stay comparable. A visitor counts as exposed once per experiment version (the unit of the
-- statistics is the visitor); impressions count every offer shown.
local now = tonumber(ARGV[1])
local v = KEYS[1]
local replay_field = 'm:' .. ARGV[3] .. ':' .. ARGV[2]
local previous = redis.call('HGET', v, replay_field)
if previous then
  local r = cjson.decode(previous)
  return {'replay', r[1], r[2], r[3], ''}
end
local caps = cjson.decode(ARGV[6])
local sid_field, day_field, week_field = 's:' .. ARGV[3], 'd:' .. ARGV[4], 'w:' .. ARGV[5]
local got = redis.call('HMGET', v, sid_field, day_field, week_field)
local in_session, today, this_week = tonumber(got[1] or 0), tonumber(got[2] or 0), tonumber(got[3] or 0)
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
if global_max > 0 and tonumber(redis.call('GET', KEYS[2]) or 0) >= global_max then
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
  redis.call('INCR', KEYS[2])
  redis.call('HINCRBY', KEYS[5], 'impressions:' .. ARGV[7], 1)
end

redis.call('HINCRBY', v, sid_field, 1)
redis.call('HINCRBY', v, day_field, 1)
redis.call('HINCRBY', v, week_field, 1)
redis.call('HSET', v, 'variant', ARGV[7], 'exposed_at', now,
  replay_field, cjson.encode({ARGV[7], code, expires}))
if code ~= '' then redis.call('HSET', v, 'code', code, 'code_expires', expires) end
redis.call('EXPIRE', v, tonumber(ARGV[13]))
if redis.call('HGET', v, 'xv') ~= ARGV[16] then
  -- First exposure in this experiment version: the attribution totals start again.
  redis.call('HSET', v, 'xv', ARGV[16], 'converted', 0, 'revenue', 0)
  redis.call('HINCRBY', KEYS[5], 'exposures:' .. ARGV[7], 1)
end
redis.call('EXPIRE', KEYS[5], 400 * 86400)
return {'ok', ARGV[7], code, expires, '', redis.call('LLEN', KEYS[3])}
