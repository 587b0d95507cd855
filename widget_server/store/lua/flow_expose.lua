-- A visitor qualified for a flow (left with a cart or after browsing, address and consent
-- given, not suppressed): count the exposure once per visitor and stage, for the arm that gets
-- the messages and for the holdout alike; the last exposure starts the window. A visitor who
-- could get texts at their first exposure (a confirmed SMS consent) also counts in the
-- ``sms_reach`` segment, under their arm there (the holdout, the messages, or emails only for
-- the flow's SMS holdout): decided before any message, so the segment's arms compare like
-- with like.
-- KEYS: 1 the visitor's state for the flow, 2 stats of the day
-- ARGV: 1 now, 2 stage, 3 arm, 4 state ttl seconds, 5 the segment's arm ('' when the visitor
-- cannot get texts)
-- Returns 1 for a first exposure, 0 otherwise.
local v = KEYS[1]
local first = redis.call('HGET', v, 'stage') ~= ARGV[2]
if first then
  redis.call('DEL', v)
  redis.call('HSET', v, 'stage', ARGV[2], 'arm', ARGV[3])
  redis.call('HINCRBY', KEYS[2], 'exposures:' .. ARGV[3], 1)
  if ARGV[5] ~= '' then
    redis.call('HSET', v, 'sms_reach', ARGV[5])
    redis.call('HINCRBY', KEYS[2], 'exposures_sms_reach:' .. ARGV[5], 1)
  end
  redis.call('EXPIRE', KEYS[2], 400 * 86400)
end
redis.call('HSET', v, 'exposed_at', ARGV[1])
redis.call('EXPIRE', v, tonumber(ARGV[4]))
return first and 1 or 0
