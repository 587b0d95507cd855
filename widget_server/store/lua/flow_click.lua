-- A visitor followed a link of one of the flow's emails: count the visitor as a clicker once
-- per stage and remember when, for conversions after a click.
-- KEYS: 1 the visitor's state for the flow, 2 stats of the day
-- ARGV: 1 now, 2 stage
-- Returns 1 for the visitor's first click, 0 otherwise (or when the visitor is unknown).
local v = KEYS[1]
local stage, arm, clicked = unpack(redis.call('HMGET', v, 'stage', 'arm', 'clicked_at'))
if stage ~= ARGV[2] or not arm then return 0 end
redis.call('HSET', v, 'clicked_at', ARGV[1])
if clicked then return 0 end
redis.call('HINCRBY', KEYS[2], 'clicks:' .. arm, 1)
redis.call('EXPIRE', KEYS[2], 400 * 86400)
return 1
