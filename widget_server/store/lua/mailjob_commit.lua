-- The commit point right before an email is handed to the transport. Once this returns 'ok',
-- the step counts as sent: no worker will send it again, whatever happens to this one.
-- KEYS: 1 job, 2 leases, 3 sent steps, 4 daily counts, 5 suppressed emails, 6 withdrawn consent,
--       7 the visitor's budget (sorted set of committed messages by time)
-- ARGV: 1 job id, 2 lease token, 3 now, 4 step field ('flow:step'), 5 daily cap,
--       6 lower-cased email, 7 visitor id, 8 retention seconds, 9 UTC day,
--       10 budget per day, 11 budget per week, 12 start of the visitor's local day
--       (10-12 empty: outside the budget)
-- Returns 'ok', 'lost' (lease gone or job cancelled), 'suppressed', 'withdrawn', 'already_sent',
-- 'capped' or 'budget' (the visitor had their messages for the day or the week).
local job = KEYS[1]
if redis.call('HGET', job, 'token') ~= ARGV[2] or not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return 'lost'
end
if redis.call('HEXISTS', KEYS[5], ARGV[6]) == 1 then return 'suppressed' end
local withdrawn = tonumber(redis.call('HGET', KEYS[6], ARGV[7]) or '-1')
if withdrawn >= tonumber(redis.call('HGET', job, 'scheduled') or '0') then return 'withdrawn' end
if redis.call('HEXISTS', KEYS[3], ARGV[4]) == 1 then return 'already_sent' end
if tonumber(redis.call('HGET', KEYS[4], ARGV[9]) or '0') >= tonumber(ARGV[5]) then
  return 'capped'
end
local now = tonumber(ARGV[3])
local budgeted = ARGV[10] ~= ''
if budgeted then
  -- Every digit of the bound ('%.17g'; a number joined to a string keeps 14): a message that
  -- left the 7 days by a fraction of a millisecond must not count, as budget_frees says.
  local week = redis.call('ZCOUNT', KEYS[7], string.format('(%.17g', now - 7 * 86400), '+inf')
  local day = redis.call('ZCOUNT', KEYS[7], ARGV[12], '+inf')
  if week >= tonumber(ARGV[11]) or day >= tonumber(ARGV[10]) then return 'budget' end
end
redis.call('HSET', KEYS[3], ARGV[4], ARGV[2] .. '|' .. ARGV[3])
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[8]))
redis.call('HINCRBY', KEYS[4], ARGV[9], 1)
redis.call('EXPIRE', KEYS[4], 3 * 86400)
redis.call('HSET', job, 'committed_day', ARGV[9])
if budgeted then
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now - 8 * 86400)
  redis.call('ZADD', KEYS[7], now, ARGV[1] .. '|' .. ARGV[2])
  redis.call('EXPIRE', KEYS[7], 8 * 86400)
end
return 'ok'
