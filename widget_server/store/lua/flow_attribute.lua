-- Attribute a new order to an email flow the visitor was exposed to within its window.
-- KEYS: 1 the visitor's state for the flow, 2 stats of the day
-- ARGV: 1 now, 2 window seconds, 3 stage, 4 order value
-- A visitor converts once (and once more as a converter after a click, when they clicked
-- within the window); revenue adds up per visitor and the sum of squares of revenue per
-- visitor grows by v * (2 * total - v). Returns the arm, or '' when the order is not attributed.
local v = KEYS[1]
local now, window, value = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local stage, arm, exposed_at, clicked_at, converted = unpack(redis.call('HMGET', v, 'stage',
  'arm', 'exposed_at', 'clicked_at', 'converted'))
if stage ~= ARGV[3] or not arm or now - tonumber(exposed_at or 0) > window then return '' end
if not converted then
  redis.call('HSET', v, 'converted', now)
  redis.call('HINCRBY', KEYS[2], 'conversions:' .. arm, 1)
  if clicked_at and now - tonumber(clicked_at) <= window then
    redis.call('HINCRBY', KEYS[2], 'click_conversions:' .. arm, 1)
  end
end
local total = tonumber(redis.call('HINCRBYFLOAT', v, 'revenue', ARGV[4]))
redis.call('HINCRBYFLOAT', KEYS[2], 'revenue:' .. arm, ARGV[4])
redis.call('HINCRBYFLOAT', KEYS[2], 'revenue_sq:' .. arm,
  string.format('%.17g', value * (2 * total - value)))
redis.call('EXPIRE', KEYS[2], 400 * 86400)
return arm
