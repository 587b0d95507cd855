-- Finish a claimed job: drop it (sent, suppressed, given up) or put it back in the queue.
-- KEYS: 1 job, 2 leases, 3 due, 4 visitor jobs, 5 sent steps, 6 daily counts, 7 budget
-- ARGV: 1 job id, 2 lease token, 3 action ('done' | 'retry' | 'defer'), 4 next due time,
--       5 uncommit ('1' only when the email certainly did not go out), 6 step field, 7 error
-- Returns 1, or 0 when the token no longer holds the job (its lease ran out or it was cancelled).
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
local day = redis.call('HGET', KEYS[1], 'committed_day')
if ARGV[5] == '1' and day then
  local mark = redis.call('HGET', KEYS[5], ARGV[6])
  if mark and string.sub(mark, 1, #ARGV[2] + 1) == ARGV[2] .. '|' then
    redis.call('HDEL', KEYS[5], ARGV[6])
    if tonumber(redis.call('HGET', KEYS[6], day) or '0') > 0 then
      redis.call('HINCRBY', KEYS[6], day, -1)
    end
    redis.call('ZREM', KEYS[7], ARGV[1] .. '|' .. ARGV[2])
  end
end
if ARGV[3] == 'done' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[4], ARGV[1])
  return 1
end
redis.call('HDEL', KEYS[1], 'token', 'committed_day')
if ARGV[3] == 'retry' then redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
-- A claim that ended in a deliberate wait (quiet hours, budget, priority, rate) finished
-- cleanly: it does not count toward the claims that mark a job that never finishes as poison.
if ARGV[3] == 'defer' then redis.call('HSET', KEYS[1], 'claims', 0) end
redis.call('HSET', KEYS[1], 'due', ARGV[4], 'error', ARGV[7])
redis.call('ZADD', KEYS[3], tonumber(ARGV[4]), ARGV[1])
return 1
