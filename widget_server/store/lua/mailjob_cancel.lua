-- Cancel a visitor's scheduled emails. Cancelling a claimed job deletes its hash, so the
-- worker holding it is refused at the commit point and sends nothing.
-- KEYS: 1 due, 2 leases, 3 visitor jobs
-- ARGV: 1 job key prefix, 2 mode ('all' | 'flows' | 'email'), 3 JSON list of flow names
--       (mode 'flows') or a lower-cased email (mode 'email')
-- Returns the number of jobs cancelled.
local flows = {}
if ARGV[2] == 'flows' then
  for _, name in ipairs(cjson.decode(ARGV[3])) do flows[name] = true end
end
local cancelled = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local job = ARGV[1] .. id
  local fields = redis.call('HMGET', job, 'flow', 'email')
  local match = ARGV[2] == 'all'
    or (ARGV[2] == 'flows' and flows[fields[1]] == true)
    or (ARGV[2] == 'email' and fields[2] and string.lower(fields[2]) == ARGV[3])
  if fields[1] == false then
    redis.call('SREM', KEYS[3], id)
  elseif match then
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('DEL', job)
    redis.call('SREM', KEYS[3], id)
    cancelled = cancelled + 1
  end
end
return cancelled
