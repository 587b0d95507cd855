-- Attribute a new order to a flow the visitor was exposed to within its window.
-- KEYS: 1 the visitor's state for the flow, 2 stats of the day
-- ARGV: 1 now, 2 window seconds, 3 stage, 4 order value
-- A visitor converts once (and once more as a converter after a click, when they clicked
-- within the window); revenue adds up per visitor and the sum of squares of revenue per
-- visitor grows by v * (2 * total - v). The same again for the ``sms_reach`` segment (visitors
-- who could get texts when they qualified), under their arm there; per channel, the conversions after a click of that
-- channel, and the conversions and revenue of the visitors who had got a message of it.
-- Returns the arm, or '' when the order is not attributed.
local v = KEYS[1]
local now, window, value = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local stage, arm, exposed_at, clicked_at, converted, reach, got_email, got_sms,
  clicked_email, clicked_sms = unpack(redis.call('HMGET', v, 'stage', 'arm', 'exposed_at',
  'clicked_at', 'converted', 'sms_reach', 'got_email', 'got_sms', 'clicked_email_at',
  'clicked_sms_at'))
if stage ~= ARGV[3] or not arm or now - tonumber(exposed_at or 0) > window then return '' end
local stats = KEYS[2]
local function within(at) return at and now - tonumber(at) <= window end
if not converted then
  redis.call('HSET', v, 'converted', now)
  redis.call('HINCRBY', stats, 'conversions:' .. arm, 1)
  if within(clicked_at) then
    redis.call('HINCRBY', stats, 'click_conversions:' .. arm, 1)
  end
  if reach then redis.call('HINCRBY', stats, 'conversions_sms_reach:' .. reach, 1) end
  if within(clicked_email) then
    redis.call('HINCRBY', stats, 'click_conversions_email:' .. arm, 1)
  end
  if within(clicked_sms) then
    redis.call('HINCRBY', stats, 'click_conversions_sms:' .. arm, 1)
  end
  if got_email then redis.call('HINCRBY', stats, 'recipient_conversions_email:' .. arm, 1) end
  if got_sms then redis.call('HINCRBY', stats, 'recipient_conversions_sms:' .. arm, 1) end
end
local total = tonumber(redis.call('HINCRBYFLOAT', v, 'revenue', ARGV[4]))
local square = string.format('%.17g', value * (2 * total - value))
redis.call('HINCRBYFLOAT', stats, 'revenue:' .. arm, ARGV[4])
redis.call('HINCRBYFLOAT', stats, 'revenue_sq:' .. arm, square)
if reach then
  redis.call('HINCRBYFLOAT', stats, 'revenue_sms_reach:' .. reach, ARGV[4])
  redis.call('HINCRBYFLOAT', stats, 'revenue_sq_sms_reach:' .. reach, square)
end
if got_email then redis.call('HINCRBYFLOAT', stats, 'recipient_revenue_email:' .. arm, ARGV[4]) end
if got_sms then redis.call('HINCRBYFLOAT', stats, 'recipient_revenue_sms:' .. arm, ARGV[4]) end
redis.call('EXPIRE', stats, 400 * 86400)
return arm
