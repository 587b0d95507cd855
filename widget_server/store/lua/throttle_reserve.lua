-- Reserve one attempt against a failure counter, atomically: count it, and refuse when the
-- counter is past its limit. A refused attempt is not counted. The caller keeps the reservation
-- as a failure, or releases it (DECR, or DEL after a correct password).
-- KEYS: 1 the counter
-- ARGV: 1 limit, 2 window (seconds; the counter expires that long after its first attempt)
-- Returns the counter after the reservation, or minus the seconds until the window ends.
local count = redis.call('INCR', KEYS[1])
if count == 1 or redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
if count > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  local ttl = redis.call('TTL', KEYS[1])
  if ttl < 1 then ttl = 1 end
  return -ttl
end
return count
