-- Schedule the steps of one email flow for a visitor, replacing whatever was pending of the
-- flows named (the abandonment flows replace each other; other flows only themselves). Steps
-- already sent and jobs a worker holds right now are left alone.
-- KEYS: 1 due, 2 leases, 3 sent steps, 4 visitor jobs, then the hash of each job in ARGV[5..]
--       (the visitor's jobs as the caller read them), then the hash of each step, in order
-- ARGV: 1 job TTL slack seconds, 2 now, 3 JSON [{id, field, due, fields = {...}}, ...],
--       4 JSON list of the flow names whose pending jobs this replaces,
--       5.. the visitor's job ids as the caller read them
-- Returns the ids of the jobs scheduled, or -1 when the visitor's jobs changed since they were
-- read (the caller reads them again).
local now = tonumber(ARGV[2])
local given = {}
for i = 5, #ARGV do given[ARGV[i]] = true end
local members = redis.call('SMEMBERS', KEYS[4])
if #members ~= #ARGV - 4 then return -1 end
for _, id in ipairs(members) do
  if not given[id] then return -1 end
end
local replaced = {}
for _, name in ipairs(cjson.decode(ARGV[4])) do replaced[name] = true end
for i = 5, #ARGV do
  local id, job = ARGV[i], KEYS[i]
  local flow = redis.call('HGET', job, 'flow')
  if flow == false then
    redis.call('SREM', KEYS[4], id)
  elseif replaced[flow] and not redis.call('ZSCORE', KEYS[2], id) then
    redis.call('ZREM', KEYS[1], id)
    redis.call('DEL', job)
    redis.call('SREM', KEYS[4], id)
  end
end
local first_step = 4 + (#ARGV - 4)
local scheduled = {}
for j, step in ipairs(cjson.decode(ARGV[3])) do
  if redis.call('HEXISTS', KEYS[3], step.field) == 0 and not redis.call('ZSCORE', KEYS[2], step.id) then
    local job = KEYS[first_step + j]
    local flat = {}
    for name, value in pairs(step.fields) do
      flat[#flat + 1] = name
      flat[#flat + 1] = tostring(value)
    end
    redis.call('DEL', job)
    redis.call('HSET', job, unpack(flat))
    redis.call('EXPIRE', job, math.ceil(step.due - now + tonumber(ARGV[1])))
    redis.call('ZADD', KEYS[1], step.due, step.id)
    redis.call('SADD', KEYS[4], step.id)
    scheduled[#scheduled + 1] = step.id
  end
end
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[1]) + 90 * 86400)
return scheduled
