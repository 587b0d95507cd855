-- A visitor followed a link of one of the flow's messages (ARGV[3]: its channel, 'email' or
-- 'sms'): count the visitor as a clicker once per stage, and once per channel, and remember
-- when, for conversions after a click.
-- KEYS: 1 the visitor's state for the flow, 2 stats of the day
-- ARGV: 1 now, 2 stage, 3 channel
-- Returns 1 for the visitor's first click, 0 otherwise (or when the visitor is unknown).
local v = KEYS[1]
local channel_field = 'clicked_' .. ARGV[3] .. '_at'
local stage, arm, clicked, clicked_here = unpack(redis.call('HMGET', v, 'stage', 'arm',
  'clicked_at', channel_field))
if stage ~= ARGV[2] or not arm then return 0 end
redis.call('HSET', v, 'clicked_at', ARGV[1], channel_field, ARGV[1])
if not clicked_here then
  redis.call('HINCRBY', KEYS[2], 'clicks_' .. ARGV[3] .. ':' .. arm, 1)
  redis.call('EXPIRE', KEYS[2], 400 * 86400)
end
if clicked then return 0 end
redis.call('HINCRBY', KEYS[2], 'clicks:' .. arm, 1)
redis.call('EXPIRE', KEYS[2], 400 * 86400)
return 1
