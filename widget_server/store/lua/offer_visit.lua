-- Count a visit in the site-wide experiment: the tool (every offer and message) against the
-- site-wide holdout (none). All keys share the site's experiment tag: one slot of a cluster.
-- KEYS: 1 the visitor's record in the experiment, 2 its stats of the day,
--       3 the visitors the tool reached that day (HyperLogLog; the holdout is not reached)
-- ARGV: 1 now, 2 experiment version, 3 arm ('holdout' | 'tool'), 4 record ttl seconds,
--       5 visitor id, 6 a random id for the visitor's record among the buyers
-- A visitor is exposed once per version, at their first visit; every visit restarts the
-- attribution window (offer_attribute.lua reads 'exposed_at'). Returns 1 for a first exposure.
local v = KEYS[1]
local first = 0
if ARGV[3] ~= 'holdout' then
  redis.call('PFADD', KEYS[3], ARGV[5])
  redis.call('EXPIRE', KEYS[3], 400 * 86400)
end
if redis.call('HGET', v, 'xv') ~= ARGV[2] then
  redis.call('HSET', v, 'xv', ARGV[2], 'variant', ARGV[3], 'converted', 0, 'revenue', 0,
    'bid', ARGV[6])
  redis.call('HINCRBY', KEYS[2], 'exposures:' .. ARGV[3], 1)
  redis.call('EXPIRE', KEYS[2], 400 * 86400)
  first = 1
end
redis.call('HSET', v, 'exposed_at', ARGV[1])
redis.call('EXPIRE', v, tonumber(ARGV[4]))
return first
