-- Record an order reported by the shop's backend on the visitor's profile, once per order id.
-- KEYS: 1 profile, 2 order ids
-- ARGV: 1 now, 2 order id, 3 value, 4 profile ttl
-- Returns 1 for a new order, 0 when the order was already recorded.
if redis.call('SADD', KEYS[2], ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'purchases', 1)
redis.call('HINCRBYFLOAT', KEYS[1], 'revenue', ARGV[3])
redis.call('HSET', KEYS[1], 'last_purchase', ARGV[1], 'kept', 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
return 1
