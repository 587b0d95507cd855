-- Apply one client message to the session and profile, at most once per message id.
-- KEYS: 1 session, 2 seen message ids, 3 profile, 4 order ids, 5 the visitor's reservations
--       under the site's frequency policy (offer_reserve.lua)
-- ARGV: 1 now, 2 session ttl, 3 profile ttl, 4 message id, 5 message name, 6 payload JSON,
--       7 (exit_intent, hesitation, scroll_depth, time_on_page: optional) the places to reserve for the offers the
--       signal may show, best first: JSON {sid, day, until, policy, offers = [{token, offer,
--       rule, check, disc}]} (the arguments of offer_reserve.lua)
-- Returns the session view JSON, or the error reply 'expired' when the session is gone. For
-- offer_shown the view's note says what it did: 'seen' (counted), or 'forged' (a claim this
-- visitor was never given), 'replayed' (already seen), 'late' (its reservation ran out): those
-- change nothing. With ARGV[7], and the message not applied before: {view JSON, the number of
-- the offer a place was reserved for (0: none), JSON [[number, reason, limit], ...] of the
-- offers refused before it}. As offer_reserve.lua would one after another: a place for the
-- first offer the policy allows; a holdout (check) holds nothing and ends the search.
local now = tonumber(ARGV[1])
local session_ttl = tonumber(ARGV[2])
local profile_ttl = tonumber(ARGV[3])
local name = ARGV[5]
local s, p = KEYS[1], KEYS[3]

if redis.call('EXISTS', s) == 0 then
  return redis.error_reply('expired')
end
-- The id is marked as applied at the end: a script error leaves it free for the retry.
if redis.call('SISMEMBER', KEYS[2], ARGV[4]) == 1 then
  return view(s, p, 1)
end
local m = cjson.decode(ARGV[6])

local function load_cart()
  local cart = cjson.decode(val(redis.call('HGET', s, 'cart'), '[]'))
  if cart[1] == nil then cart = {} end
  return cart
end

local function save_cart(cart)
  local value, items = 0, 0
  for _, line in ipairs(cart) do
    value = value + val(line.price, 0) * line.quantity
    items = items + line.quantity
  end
  redis.call('HSET', s, 'cart', encode_list(cart), 'cart_value', value, 'cart_items', items,
    'cart_changed', now)
end

local function cart_line(item)
  return {id = item.id, quantity = val(item.quantity, 1), price = val(item.price, 0),
          title = val(item.title, ''), category = val(item.category, ''),
          brand = val(item.brand, '')}
end

local function campaign_of(offer_id)
  return string.match(offer_id, '^([^.]+)') or offer_id
end

local activity = true
local note = ''
if name == 'page_view' then
  local pt = val(m.page_type, 'other')
  redis.call('HINCRBY', s, 'pages', 1)
  redis.call('HSET', s, 'page_url', val(m.url, ''), 'page_type', pt,
    'page_title', val(m.title, ''), 'page_started', now)
  local checkout = redis.call('HGET', s, 'checkout')
  local purchased = redis.call('HGET', s, 'purchased')
  if pt == 'checkout' or pt == 'payment' then
    redis.call('HSET', s, 'checkout', 1, 'left_checkout', 0)
  elseif checkout == '1' and purchased ~= '1' and pt ~= 'thank_you' then
    redis.call('HSET', s, 'left_checkout', 1)
  end
elseif name == 'product_view' then
  local product = m.product
  redis.call('HINCRBY', s, 'products_viewed', 1)
  redis.call('HSET', s, 'viewed', push_recent(redis.call('HGET', s, 'viewed'), product.id, 20),
    'last_product', cjson.encode(product))
  redis.call('HSET', p, 'viewed', push_recent(redis.call('HGET', p, 'viewed'), product.id, 50))
elseif name == 'cart_add' then
  local cart, item, found = load_cart(), m.item, false
  for _, line in ipairs(cart) do
    if line.id == item.id then
      line.quantity = line.quantity + val(item.quantity, 1)
      if val(item.price, 0) > 0 then line.price = item.price end
      found = true
    end
  end
  if not found and #cart < 100 then cart[#cart + 1] = cart_line(item) end
  save_cart(cart)
elseif name == 'cart_remove' then
  local cart, item, out = load_cart(), m.item, {}
  for _, line in ipairs(cart) do
    if line.id == item.id then
      local q = val(item.quantity, nil)
      if q ~= nil and line.quantity > q then
        line.quantity = line.quantity - q
        out[#out + 1] = line
      end
    else
      out[#out + 1] = line
    end
  end
  save_cart(out)
elseif name == 'cart_update' then
  local cart = {}
  for _, item in ipairs(m.items) do cart[#cart + 1] = cart_line(item) end
  save_cart(cart)
elseif name == 'checkout_start' then
  redis.call('HSET', s, 'checkout', 1, 'left_checkout', 0, 'checkout_step', val(m.step, 1))
elseif name == 'purchase' then
  local new_order = redis.call('SADD', KEYS[4], m.order_id)
  redis.call('HSET', s, 'order_new', new_order)
  if new_order == 1 then
    redis.call('HINCRBY', p, 'purchases', 1)
    redis.call('HINCRBYFLOAT', p, 'revenue', m.value)
    redis.call('HSET', p, 'last_purchase', now)
    redis.call('HINCRBYFLOAT', s, 'revenue', m.value)
  end
  redis.call('EXPIRE', KEYS[4], profile_ttl)
  redis.call('HSET', s, 'purchased', 1, 'left_checkout', 0, 'last_order', m.order_id,
    'coupon', val(m.coupon, ''), 'currency', val(m.currency, ''), 'cart', '[]', 'cart_value', 0, 'cart_items', 0,
    'cart_changed', now)
elseif name == 'identify' then
  -- The consent record belongs to the address: a new address starts a new record (and needs
  -- a new confirmation). A consent repeated for the same address keeps the first record.
  local old = redis.call('HGET', p, 'email')
  local same = old and string.lower(old) == string.lower(m.email)
  local had = same and redis.call('HGET', p, 'email_consent') == '1'
  if not same or (m.consent and not had) then
    redis.call('HDEL', p, 'email_consent_at', 'email_consent_source', 'email_consent_wording',
      'email_consent_country', 'email_consent_withdrawn_at', 'email_confirm_required',
      'email_confirmed_at')
  end
  if m.consent and not had then
    redis.call('HSET', p, 'email_consent_at', now, 'email_consent_source', val(m.source, 'shop'),
      'email_confirm_required', val(m.confirm, false) and 1 or 0)
    if val(m.wording, '') ~= '' then redis.call('HSET', p, 'email_consent_wording', m.wording) end
    if val(m.country, '') ~= '' then redis.call('HSET', p, 'email_consent_country', m.country) end
  elseif had and not m.consent then
    redis.call('HSET', p, 'email_consent_withdrawn_at', now)
  end
  redis.call('HSET', p, 'email', m.email, 'email_consent', m.consent and 1 or 0,
    'identified_at', now)
  redis.call('HSET', s, 'identified', 1)
elseif name == 'exit_intent' then
  redis.call('HINCRBY', s, 'signals', 1)
  redis.call('HSET', s, 'last_signal', now, 'last_signal_kind', m.kind)
  activity = false
elseif name == 'hesitation' then
  redis.call('HINCRBY', s, 'hesitations', 1)
  redis.call('HSET', s, 'last_hesitation', now, 'last_hesitation_s', m.seconds)
  activity = false
elseif name == 'scroll_depth' then
  redis.call('HSET', s, 'last_scroll', now, 'last_scroll_percent', m.percent)
  activity = false
elseif name == 'time_on_page' then
  redis.call('HSET', s, 'last_time_on_page', now, 'last_time_on_page_s', m.seconds)
  activity = false
elseif name == 'offer_shown' then
  -- Counted only against the reservation the claim made for it (see offer_reserve.lua).
  local held, token = KEYS[5], val(m.claim, '')
  local raw = token ~= '' and redis.call('HGET', held, token)
  local r = raw and cjson.decode(raw)
  note = 'forged'
  if r and r.o ~= m.offer then
    note = 'forged'
  elseif r and r.exp <= now then
    note = 'late'
    redis.call('HDEL', held, token)
    redis.call('HSET', held, 'gone:' .. token, now)
  elseif r then
    note = 'seen'
  elseif token ~= '' and redis.call('HEXISTS', held, 'done:' .. token) == 1 then
    note = 'replayed'
  elseif token ~= '' and redis.call('HEXISTS', held, 'gone:' .. token) == 1 then
    note = 'late'
  end
  if note == 'seen' then
    redis.call('HDEL', held, token)
    redis.call('HSET', held, 'done:' .. token, now)
    local live = r.kind == 'live'
    redis.call('HINCRBY', s, live and 'fq_live' or 'fq_overlays', 1)
    local counted_day = redis.call('HGET', p, 'fq_day')
    if not counted_day or r.day > counted_day then
      redis.call('HSET', p, 'fq_day', r.day, 'fq_day_overlays', 0, 'fq_day_live', 0)
      counted_day = r.day
    end
    if counted_day == r.day then
      redis.call('HINCRBY', p, live and 'fq_day_live' or 'fq_day_overlays', 1)
    end
    if r.disc == 1 then redis.call('HSET', p, 'fq_discount_at', now) end
    local campaign = campaign_of(m.offer)
    redis.call('HINCRBY', s, 'offers_shown', 1)
    redis.call('HINCRBY', s, 'shown:' .. campaign, 1)
    redis.call('HSET', s, 'last_offer', m.offer, 'last_offer_shown', now)
    local times = cjson.decode(val(redis.call('HGET', p, 'shown:' .. campaign), '[]'))
    times[#times + 1] = now
    while #times > 20 do table.remove(times, 1) end
    redis.call('HSET', p, 'shown:' .. campaign, cjson.encode(times))
  else
    activity = false
  end
elseif name == 'offer_clicked' then
  redis.call('HINCRBY', s, 'offers_clicked', 1)
  redis.call('HSET', s, 'last_offer_click', now, 'last_offer_action', val(m.action, 'cta'))
elseif name == 'offer_dismissed' then
  redis.call('HINCRBY', s, 'offers_dismissed', 1)
  redis.call('HSET', s, 'last_dismiss', now)
  redis.call('HINCRBY', p, 'dismissals', 1)
  local key = 'dismiss:' .. campaign_of(m.offer)
  local count = tonumber((string.match(val(redis.call('HGET', p, key), '0:0'), '^(%d+):')) or 0)
  redis.call('HSET', p, 'last_dismiss', now, key, (count + 1) .. ':' .. now)
elseif name == 'consent' then
  redis.call('HSET', p, 'consent_analytics', m.analytics and 1 or 0,
    'consent_marketing', val(m.marketing, false) and 1 or 0, 'consent_changed', now)
else
  return redis.error_reply('unknown message name ' .. name)
end

redis.call('SADD', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[2], session_ttl)
if activity then redis.call('HSET', s, 'last', now) end
redis.call('HSET', p, 'last_seen', now)
-- Page views, signals, consent changes and refused reports alone are not worth keeping a
-- visitor for months.
local signal = name == 'exit_intent' or name == 'hesitation' or name == 'scroll_depth'
  or name == 'time_on_page'
if name ~= 'page_view' and not signal and name ~= 'consent' and (note == '' or note == 'seen') then
  redis.call('HSET', p, 'kept', 1)
end
redis.call('EXPIRE', s, session_ttl)
redis.call('EXPIRE', p, profile_ttl_for(p, profile_ttl))
if ARGV[7] and signal then
  local r = cjson.decode(ARGV[7])
  local pending = pending_places(KEYS[5], now, r.sid, r.day, false)
  local chosen, refused = 0, {}
  for i, o in ipairs(r.offers) do
    local no = place_refused(s, p, now, false, r.day, r.policy, o.rule == 1, pending)
    if no then
      refused[#refused + 1] = {i, no[1], no[2]}
      if o.check == 1 then break end
    else
      if o.check ~= 1 then
        hold_place(KEYS[5], o.token, o.offer, 'overlay', o.disc, r.sid, r.day, r['until'])
      end
      chosen = i
      break
    end
  end
  return {view(s, p, 0, note), chosen, encode_list(refused)}
end
return view(s, p, 0, note)
