-- A message of a flow went out on a channel ('email' or 'sms'): count it, and the visitor as a
-- recipient of that channel once per stage (for conversions and revenue per recipient).
-- KEYS: 1 the visitor's state for the flow, 2 stats of the day
-- ARGV: 1 now, 2 stage, 3 channel
-- Returns 1 when the visitor is a new recipient of the channel, 0 otherwise.
local v = KEYS[1]
local channel = ARGV[3]
local metric = channel == 'email' and 'sent' or (channel .. '_sent')
redis.call('HINCRBY', KEYS[2], metric .. ':email', 1)
redis.call('EXPIRE', KEYS[2], 400 * 86400)
local stage, arm = unpack(redis.call('HMGET', v, 'stage', 'arm'))
if stage ~= ARGV[2] or not arm then return 0 end
if redis.call('HSETNX', v, 'got_' .. channel, ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[2], 'recipients_' .. channel .. ':' .. arm, 1)
return 1
