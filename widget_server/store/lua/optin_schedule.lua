-- Queue a once-only email (the double opt-in confirmation: at most one per address, visitor and
-- UTC day; an email capture's code: one per campaign and visitor) unless KEYS[4] holds the mark.
-- KEYS: 1 due, 2 leases, 3 the job, 4 the marks (confirmations: digest -> day; rewards:
--       campaign -> 1)
-- ARGV: 1 job id, 2 mark field, 3 mark value, 4 now, 5 job TTL seconds, 6 job fields JSON
-- Returns 'scheduled', 'already_sent' (one was queued for this address today) or 'pending'
-- (a worker holds the visitor's previous confirmation job right now).
if redis.call('HGET', KEYS[4], ARGV[2]) == ARGV[3] then return 'already_sent' end
if redis.call('ZSCORE', KEYS[2], ARGV[1]) and redis.call('EXISTS', KEYS[3]) == 1 then
  return 'pending'
end
local flat = {}
for name, value in pairs(cjson.decode(ARGV[6])) do
  flat[#flat + 1] = name
  flat[#flat + 1] = tostring(value)
end
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], unpack(flat))
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[5]))
redis.call('ZADD', KEYS[1], tonumber(ARGV[4]), ARGV[1])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[4], 2 * 86400)
return 'scheduled'
