-- Cancel a visitor's scheduled emails. Cancelling a claimed job deletes its hash, so the
-- worker holding it is refused at the commit point and sends nothing.
-- KEYS: 1 due, 2 leases, 3 visitor jobs, then the hash of each job in ARGV[3..], in order
-- ARGV: 1 mode ('all' | 'flows' | 'email'), 2 JSON list of flow names (mode 'flows') or a
--       lower-cased email (mode 'email'), 3.. the visitor's job ids as the caller read them
-- Returns the number of jobs cancelled, or -1 when the visitor's jobs changed since they were
-- read (the caller reads them again).
local given = {}
for i = 3, #ARGV do given[ARGV[i]] = true end
local members = redis.call('SMEMBERS', KEYS[3])
if #members ~= #ARGV - 2 then return -1 end
for _, id in ipairs(members) do
  if not given[id] then return -1 end
end
local flows = {}
if ARGV[1] == 'flows' then
  for _, name in ipairs(cjson.decode(ARGV[2])) do flows[name] = true end
end
local cancelled = 0
for i = 3, #ARGV do
  local id, job = ARGV[i], KEYS[i + 1]
  local fields = redis.call('HMGET', job, 'flow', 'email')
  local match = ARGV[1] == 'all'
    or (ARGV[1] == 'flows' and flows[fields[1]] == true)
    or (ARGV[1] == 'email' and fields[2] and string.lower(fields[2]) == ARGV[2])
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
