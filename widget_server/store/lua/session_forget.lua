-- Erase everything stored about one visitor (consent withdrawn or an erasure request).
-- KEYS: 1 profile, 2 session ids, 3 orders, 4 opening, then per session its hash and its
--       seen-messages set, in the order of ARGV (live connections are left to presence)
-- ARGV: the visitor's session ids as the caller read them
-- When the session ids changed since they were read (a session opened meanwhile), nothing is
-- deleted and {-1, ''} asks the caller to read them again.
local sids = redis.call('SMEMBERS', KEYS[2])
if #sids ~= #ARGV then return {-1, ''} end
local expected = {}
for _, sid in ipairs(ARGV) do expected[sid] = true end
for _, sid in ipairs(sids) do
  if not expected[sid] then return {-1, ''} end
end
local email = redis.call('HGET', KEYS[1], 'email') or ''
local deleted = 0
for i = 1, #KEYS do
  deleted = deleted + redis.call('DEL', KEYS[i])
end
return {deleted, email}
