-- Confirm an offer the widget reported painted: its caps and one impression now count.
-- KEYS: 1 visitor state for the campaign, 2 impressions counter, 3 stats of the day,
--       4 pending offers of the campaign (sorted set)
-- ARGV: 1 now, 2 token, 3 state ttl seconds
-- Called only for a report the visitor's slot has judged seen in time (session_event.lua), so
-- the reservation's own time does not matter here: one that ran out is kept for a day for a
-- report sent again after a failure between the two slots.
-- Returns 'seen', 'replayed' (seen before) or 'unknown' (no such reservation: a report sent
-- again more than a day after the reservation ran out, or for another visitor or campaign).
local now, token = tonumber(ARGV[1]), ARGV[2]
local v = KEYS[1]
local raw = redis.call('HGET', v, 'p:' .. token)
if not raw then
  if redis.call('HEXISTS', v, 'c:' .. token) == 1 then return 'replayed' end
  return 'unknown'
end
local r = cjson.decode(raw)
redis.call('HDEL', v, 'p:' .. token)
redis.call('ZREM', KEYS[4], token)
if r.exp and r.exp < now - 86400 then
  return 'unknown'  -- kept a day after it ran out, as offer_claim.lua prunes it: forgotten now
end
redis.call('HSET', v, 'c:' .. token, now)
redis.call('HINCRBY', v, 's:' .. r.sid, 1)
redis.call('HINCRBY', v, 'd:' .. r.day, 1)
redis.call('HINCRBY', v, 'w:' .. r.week, 1)
redis.call('EXPIRE', v, tonumber(ARGV[3]))
redis.call('INCR', KEYS[2])
redis.call('HINCRBY', KEYS[3], 'impressions:' .. r.variant, 1)
redis.call('EXPIRE', KEYS[3], 400 * 86400)
return 'seen'
