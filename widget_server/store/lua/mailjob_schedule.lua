-- Schedule the steps of one email flow for a visitor who just left, replacing whatever was
-- pending. Steps already sent and jobs a worker holds right now are left alone.
-- KEYS: 1 due, 2 leases, 3 sent steps, 4 visitor jobs
-- ARGV: 1 job key prefix, 2 job TTL slack seconds, 3 now,
--       4 JSON [{id, field, due, fields = {name = value, ...}}, ...]
-- Returns the ids of the jobs scheduled.
local now = tonumber(ARGV[3])
for _, id in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  if not redis.call('ZSCORE', KEYS[2], id) then
    redis.call('ZREM', KEYS[1], id)
    redis.call('DEL', ARGV[1] .. id)
    redis.call('SREM', KEYS[4], id)
  end
end
local scheduled = {}
for _, step in ipairs(cjson.decode(ARGV[4])) do
  if redis.call('HEXISTS', KEYS[3], step.field) == 0 and not redis.call('ZSCORE', KEYS[2], step.id) then
    local job = ARGV[1] .. step.id
    local flat = {}
    for name, value in pairs(step.fields) do
      flat[#flat + 1] = name
      flat[#flat + 1] = tostring(value)
    end
    redis.call('DEL', job)
    redis.call('HSET', job, unpack(flat))
    redis.call('EXPIRE', job, math.ceil(step.due - now + tonumber(ARGV[2])))
    redis.call('ZADD', KEYS[1], step.due, step.id)
    redis.call('SADD', KEYS[4], step.id)
    scheduled[#scheduled + 1] = step.id
  end
end
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[2]) + 90 * 86400)
return scheduled
