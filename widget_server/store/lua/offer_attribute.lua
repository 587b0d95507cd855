-- Attribute a new order to one campaign's experiment, and mark the code it carries redeemed.
-- KEYS: 1 visitor state for the campaign, 2 stats of the day, 3 issued codes,
--       4 the experiment version's buyers (hash)
-- ARGV: 1 now, 2 attribution window seconds, 3 experiment version, 4 order value,
--       5 coupon ('' = none), 6 order id, 7 day key (the stats' day),
--       8 '1' to count every attributed order too (orders:<arm>; the site-wide experiment)
-- The order counts when the visitor's last exposure in this version is within the window.
-- A visitor converts once; revenue adds up per visitor, and the sum of squares of revenue per
-- visitor grows by v * (2 * total - v), so it stays exact for visitors with several orders.
-- Each attributed buyer has a record among the version's buyers, under the random id the claim
-- gave them: {a = arm, x = covariates at exposure, d = {day = revenue total at its end}}, from
-- which a report caps revenue and computes the covariates' sums with the outcome at every
-- look (experiments/buyers.py).
-- Returns {attributed variant or '', redeemed code's variant or ''}.
local now, value = tonumber(ARGV[1]), tonumber(ARGV[4])
local v = KEYS[1]
local attributed, redeemed = '', ''
local variant, exposed_at, xv, converted, bid, x = unpack(redis.call('HMGET', v, 'variant',
  'exposed_at', 'xv', 'converted', 'bid', 'x'))
if variant and xv == ARGV[3] and now - tonumber(exposed_at or 0) <= tonumber(ARGV[2]) then
  attributed = variant
  if converted ~= '1' then
    redis.call('HSET', v, 'converted', 1)
    redis.call('HINCRBY', KEYS[2], 'conversions:' .. variant, 1)
  end
  if ARGV[8] == '1' then redis.call('HINCRBY', KEYS[2], 'orders:' .. variant, 1) end
  local total = tonumber(redis.call('HINCRBYFLOAT', v, 'revenue', ARGV[4]))
  redis.call('HINCRBYFLOAT', KEYS[2], 'revenue:' .. variant, ARGV[4])
  redis.call('HINCRBYFLOAT', KEYS[2], 'revenue_sq:' .. variant,
    string.format('%.17g', value * (2 * total - value)))
  redis.call('EXPIRE', KEYS[2], 400 * 86400)
  if bid then
    local raw = redis.call('HGET', KEYS[4], bid)
    local record = raw and cjson.decode(raw) or {a = variant, x = x or '', d = {}}
    record.d[ARGV[7]] = string.format('%.17g', total)
    redis.call('HSET', KEYS[4], bid, cjson.encode(record))
    redis.call('EXPIRE', KEYS[4], 400 * 86400)
  end
end
if ARGV[5] ~= '' then
  local issued = redis.call('HGET', KEYS[3], ARGV[5])
  if issued then
    local record = cjson.decode(issued)
    if not val(record.redeemed, nil) then
      record.redeemed = now
      record.order_id = ARGV[6]
      redis.call('HSET', KEYS[3], ARGV[5], cjson.encode(record))
      redeemed = val(record.variant, '')
      redis.call('HINCRBY', KEYS[2], 'redemptions:' .. redeemed, 1)
      redis.call('EXPIRE', KEYS[2], 400 * 86400)
    end
  end
end
return {attributed, redeemed}
