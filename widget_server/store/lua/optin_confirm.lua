-- Confirm a pending email consent from a double opt-in link, once.
-- KEYS: 1 profile
-- ARGV: 1 lower-cased email the link was sent to, 2 the consent time the link names, 3 now
-- Returns 'confirmed', 'already' (confirmed before: nothing changes), 'stale' (the profile
-- holds another address, no consent, or a later consent) or 'gone' (no profile any more).
local f = redis.call('HMGET', KEYS[1], 'email', 'email_consent', 'email_consent_at',
  'email_confirmed_at')
if not f[1] then return 'gone' end
if string.lower(f[1]) ~= ARGV[1] or f[2] ~= '1' or f[3] ~= ARGV[2] then return 'stale' end
if f[4] then return 'already' end
redis.call('HSET', KEYS[1], 'email_confirmed_at', ARGV[3])
return 'confirmed'
