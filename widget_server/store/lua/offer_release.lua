-- Release a reservation made by offer_reserve.lua whose offer will not be sent (the
-- campaign's claim refused it). KEYS: 1 the visitor's reservations. ARGV: 1 token.
-- Returns 1 when it was still held.
return redis.call('HDEL', KEYS[1], ARGV[1])
