-- Claim due email jobs for one worker, after putting back jobs whose lease ran out.
-- KEYS: 1 due (zset), 2 leases (zset)
-- ARGV: 1 now, 2 lease seconds, 3 limit, 4 job key prefix, 5 token seed (unique per call)
-- Returns {{job id, lease token, flat job hash}, ...}. Job hashes carry the queue's hash tag,
-- so they live in the same slot as KEYS and the script stays valid on a Redis Cluster.
local now = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  local job = ARGV[4] .. id
  if redis.call('EXISTS', job) == 1 then
    -- The holder's token dies with its lease: a late commit or finish from it is refused.
    redis.call('HDEL', job, 'token', 'committed_day')
    redis.call('HINCRBY', job, 'reaped', 1)
    redis.call('ZADD', KEYS[1], now, id)
  end
end
local out = {}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for i, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local job = ARGV[4] .. id
  if redis.call('EXISTS', job) == 1 then
    local token = ARGV[5] .. ':' .. i
    redis.call('HSET', job, 'token', token, 'claimed', now)
    redis.call('HINCRBY', job, 'claims', 1)
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), id)
    out[#out + 1] = {id, token, redis.call('HGETALL', job)}
  end
end
return out
