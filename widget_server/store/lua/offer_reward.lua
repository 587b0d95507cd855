-- An address captured by an email_capture offer the visitor saw: count it, and give the
-- campaign's code for it (the code of an email capture is issued here, not at the claim).
-- KEYS: 1 visitor state for the campaign, 2 code pool, 3 issued codes, 4 stats of the day
-- ARGV: 1 now, 2 the offer's claim token, 3 code strategy (none|static|pool|generated),
--       4 static code, 5 candidate codes JSON, 6 code validity seconds, 7 visitor id,
--       8 variant, 9 consent (0/1), 10 state ttl seconds, 11 session id
-- Returns {status, code, expires_at_ms}: 'ok' (first capture), 'again' (captured before: the
-- same code), 'unseen' (no painted offer with this claim for this visitor: nothing happens).
-- A visitor counts once as captured, and once as captured with consent (a later submission
-- that ticks the box adds the consent).
local v = KEYS[1]
if redis.call('HEXISTS', v, 'c:' .. ARGV[2]) == 0 then return {'unseen', '', 0} end
local now = tonumber(ARGV[1])
local strategy, variant = ARGV[3], ARGV[8]
local held, held_until = unpack(redis.call('HMGET', v, 'code', 'code_expires'))
local code, expires = '', 0
if strategy ~= 'none' then
  if held and tonumber(held_until or 0) > now * 1000 then
    code, expires = held, tonumber(held_until)
  else
    expires = (now + tonumber(ARGV[6])) * 1000
    if strategy == 'static' then
      code = ARGV[4]
    elseif strategy == 'pool' then
      code = redis.call('LPOP', KEYS[2]) or ''
    elseif strategy == 'generated' then
      for _, candidate in ipairs(cjson.decode(ARGV[5])) do
        if redis.call('HEXISTS', KEYS[3], candidate) == 0 then code = candidate break end
      end
    end
    if code == '' then
      expires = 0
    else
      if strategy ~= 'static' then
        redis.call('HSET', KEYS[3], code, cjson.encode({visitor = ARGV[7], variant = variant,
          issued = now, expires = expires / 1000, session = ARGV[11], channel = 'capture'}))
      end
      redis.call('HSET', v, 'code', code, 'code_expires', expires)
    end
  end
end
local status = 'again'
local captured, consented = unpack(redis.call('HMGET', v, 'captured', 'captured_consent'))
if not captured then
  status = 'ok'
  redis.call('HSET', v, 'captured', now)
  redis.call('HINCRBY', KEYS[4], 'captures:' .. variant, 1)
end
if ARGV[9] == '1' and consented ~= '1' then
  redis.call('HSET', v, 'captured_consent', 1)
  redis.call('HINCRBY', KEYS[4], 'consented_captures:' .. variant, 1)
end
redis.call('EXPIRE', KEYS[4], 400 * 86400)
redis.call('EXPIRE', v, tonumber(ARGV[10]))
return {status, code, expires}
