-- Token bucket for sends to one recipient domain.
-- KEYS: 1 bucket hash
-- ARGV: 1 now, 2 tokens per second, 3 burst
-- Returns 0 when a token was taken, else the milliseconds until one is available.
local now, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1] or burst)
local at = tonumber(state[2] or now)
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return wait
