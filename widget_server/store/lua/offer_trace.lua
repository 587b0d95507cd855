-- Add a decision to a session's trace (newest first, the last ARGV[2] kept, for ARGV[3] s).
-- KEYS: 1 the session's trace. ARGV: 1 the entry (JSON), 2 entries kept, 3 TTL in seconds.
-- Returns the trace's length.
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return redis.call('LLEN', KEYS[1])
