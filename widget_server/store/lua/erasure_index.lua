-- Remove hash fields that still point at one visitor (an index such as email -> visitor id).
-- A field that another visitor took over in the meantime is left alone.
-- KEYS: 1 the index hash
-- ARGV: 1 visitor id, 2.. the fields found pointing at the visitor
-- Returns the number of fields removed.
local removed = 0
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] then
    removed = removed + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return removed
