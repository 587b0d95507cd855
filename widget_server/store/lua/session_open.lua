-- Open or resume a visitor session and register the connection; one round trip per hello.
-- KEYS: 1 resume session, 2 new session, 3 profile, 4 session ids, 5 connections,
--       6 opening (which channel opened which session last for the visitor, for a few seconds)
-- ARGV: 1 now, 2 session ttl, 3 profile ttl, 4 resume id ('' = none), 5 new id,
--       6 context JSON {page, device, lang, tz, consent, landing}, 7 connection id ('' = none),
--       8 node id, 9 presence ttl, 10 opening window (ms), 11 '1' when joining ARGV[4] after a
--       race ('' otherwise), 12 the channel opening ('ws' a hello, 'http' a beacon)
-- A hello and a beacon of one visitor without a session id that race (the page was left before
-- the hello's welcome arrived, and the widget sent its queue by beacon) are one visit: the second
-- joins the session the first opened within the window. Two hellos never join (two tabs that
-- share no storage are two sessions). The script only names the session to join
-- ({'', -1, id}); the caller runs it again with that session as KEYS[1] and ARGV[11] = '1', and
-- the join happens only if the opening still names it then.
local now = tonumber(ARGV[1])
local session_ttl = tonumber(ARGV[2])
local profile_ttl = tonumber(ARGV[3])
local ctx = cjson.decode(ARGV[6])
local key, sid, resumed = KEYS[2], ARGV[5], 0
local racing = redis.call('GET', KEYS[6])
local channel, other = string.match(racing or '', '^(%a+):(.+)$')
local raced = other and channel ~= ARGV[12]
if ARGV[11] == '1' then
  if raced and other == ARGV[4] and redis.call('EXISTS', KEYS[1]) == 1 then
    key, sid, resumed = KEYS[1], ARGV[4], 1
    -- the session has its hello now: a further hello is another tab, and does not join
    redis.call('SET', KEYS[6], 'ws:' .. sid, 'KEEPTTL')
  end
elseif ARGV[4] ~= '' and redis.call('EXISTS', KEYS[1]) == 1 then
  key, sid, resumed = KEYS[1], ARGV[4], 1
elseif raced then
  return {'', -1, other}
end

if resumed == 0 then
  local landing = val(ctx.landing, {})
  redis.call('HSET', key,
    'id', sid, 'started', now, 'pages', 0, 'cart', '[]', 'cart_value', 0, 'cart_items', 0,
    'signals', 0, 'hesitations', 0, 'products_viewed', 0, 'viewed', '[]',
    'offers_shown', 0, 'offers_clicked', 0, 'offers_dismissed', 0,
    'checkout', 0, 'left_checkout', 0, 'purchased', 0,
    'landing', val(landing.url, ''), 'referrer', val(landing.referrer, ''),
    'utm_source', val(landing.utm_source, ''), 'utm_medium', val(landing.utm_medium, ''),
    'utm_campaign', val(landing.utm_campaign, ''))
  if redis.call('HSETNX', KEYS[3], 'first_seen', now) == 1 then
    redis.call('HSET', KEYS[3], 'visits', 0, 'purchases', 0, 'revenue', 0, 'viewed', '[]')
  end
  redis.call('HINCRBY', KEYS[3], 'visits', 1)
  redis.call('SADD', KEYS[4], sid)
  redis.call('EXPIRE', KEYS[4], profile_ttl_for(KEYS[3], profile_ttl))
  redis.call('SET', KEYS[6], ARGV[12] .. ':' .. sid, 'PX', ARGV[10])
end

redis.call('HSET', key, 'last', now)
if val(ctx.device, '') ~= '' then redis.call('HSET', key, 'device', ctx.device) end
if val(ctx.lang, '') ~= '' then redis.call('HSET', key, 'lang', ctx.lang) end
-- The profile keeps the latest language and time zone: the emails' words and quiet hours.
if val(ctx.lang, '') ~= '' then redis.call('HSET', KEYS[3], 'lang', ctx.lang) end
if val(ctx.tz, '') ~= '' then redis.call('HSET', KEYS[3], 'tz', ctx.tz) end
local page = val(ctx.page, nil)
if page then
  redis.call('HSET', key, 'page_url', val(page.url, ''), 'page_type', val(page.page_type, 'other'),
    'page_title', val(page.title, ''), 'page_started', now)
end
redis.call('HSET', KEYS[3], 'last_seen', now)
local consent = val(ctx.consent, nil)
if consent then
  redis.call('HSET', KEYS[3], 'consent_analytics', val(consent.analytics, false) and 1 or 0,
    'consent_marketing', val(consent.marketing, false) and 1 or 0)
end
redis.call('EXPIRE', key, session_ttl)
redis.call('EXPIRE', KEYS[3], profile_ttl_for(KEYS[3], profile_ttl))

if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[5], ARGV[7], ARGV[8])
  redis.call('EXPIRE', KEYS[5], tonumber(ARGV[9]))
end
return {sid, resumed, view(key, KEYS[3], 0)}
