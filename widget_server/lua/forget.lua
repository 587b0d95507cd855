-- Erase everything stored about one visitor (consent withdrawn or an erasure request).
-- KEYS: 1 profile, 2 session ids, 3 orders, 4 opening (live connections are left to presence)
-- ARGV: 1 key prefix of the visitor ("<prefix>:{site:visitor}")
-- Session keys are derived from the visitor's own hash tag, so they live in the same slot as
-- KEYS and the script stays valid on a Redis Cluster.
local email = redis.call('HGET', KEYS[1], 'email') or ''
local sids = redis.call('SMEMBERS', KEYS[2])
local deleted = 0
for _, sid in ipairs(sids) do
  deleted = deleted + redis.call('DEL', ARGV[1] .. ':s:' .. sid, ARGV[1] .. ':seen:' .. sid)
end
deleted = deleted + redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return {deleted, email}
