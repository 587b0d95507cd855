-- Claim due email jobs for one worker, after putting back jobs whose lease ran out.
-- KEYS: 1 due (zset), 2 leases (zset), then the hash of each job in ARGV[5..], in order
-- ARGV: 1 now, 2 lease seconds, 3 limit, 4 token seed (unique per call), then n = ARGV[5]
--       ids whose lease the caller saw run out, then the ids the caller saw due
--       (ARGV[6 .. 5 + n] expired, ARGV[6 + n ..] due; the job hash of ARGV[i] is KEYS[i - 3])
-- The caller read both lists just before; each id is checked again here, so a job another
-- worker claimed meanwhile, or one cancelled, is skipped.
-- Returns {{job id, lease token, flat job hash}, ...}.
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[5])
local candidates = {}
for i = 6 + n, #ARGV do candidates[#candidates + 1] = i end
for i = 6, 5 + n do
  local id, job = ARGV[i], KEYS[i - 3]
  local until_ = redis.call('ZSCORE', KEYS[2], id)
  if until_ and tonumber(until_) <= now then
    redis.call('ZREM', KEYS[2], id)
    if redis.call('EXISTS', job) == 1 then
      -- The holder's token dies with its lease: a late commit or finish from it is refused.
      redis.call('HDEL', job, 'token', 'committed_day')
      redis.call('HINCRBY', job, 'reaped', 1)
      redis.call('ZADD', KEYS[1], now, id)
      candidates[#candidates + 1] = i
    end
  end
end
local out = {}
local limit = tonumber(ARGV[3])
for _, i in ipairs(candidates) do
  if #out >= limit then break end
  local id, job = ARGV[i], KEYS[i - 3]
  local due = redis.call('ZSCORE', KEYS[1], id)
  if due and tonumber(due) <= now then
    redis.call('ZREM', KEYS[1], id)
    if redis.call('EXISTS', job) == 1 then
      local token = ARGV[4] .. ':' .. (#out + 1)
      redis.call('HSET', job, 'token', token, 'claimed', now)
      redis.call('HINCRBY', job, 'claims', 1)
      redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), id)
      out[#out + 1] = {id, token, redis.call('HGETALL', job)}
    end
  end
end
return out
