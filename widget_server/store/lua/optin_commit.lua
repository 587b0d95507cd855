-- The once-only mark of a double opt-in confirmation email, checked with the lease.
-- KEYS: 1 job, 2 leases, 3 suppressed emails
-- ARGV: 1 job id, 2 lease token, 3 mode ('commit' | 'undo'), 4 lower-cased email, 5 now
-- 'commit' returns 'ok' (the job is marked sent: no worker sends it again), 'lost' (lease gone
-- or job replaced), 'suppressed' or 'already_sent' (a worker that died after its commit sent
-- it, or may have). 'undo' removes the mark after a failure that certainly sent nothing.
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] or not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return 'lost'
end
if ARGV[3] == 'undo' then
  redis.call('HDEL', KEYS[1], 'sent')
  return 'ok'
end
if redis.call('HEXISTS', KEYS[3], ARGV[4]) == 1 then return 'suppressed' end
if redis.call('HEXISTS', KEYS[1], 'sent') == 1 then return 'already_sent' end
redis.call('HSET', KEYS[1], 'sent', ARGV[2] .. '|' .. ARGV[5])
return 'ok'
