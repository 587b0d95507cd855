-- Reserve a place for one offer under the site's frequency policy, on the visitor's slot.
-- KEYS: 1 the visitor's reservations, 2 session, 3 profile
-- ARGV: 1 now, 2 token, 3 until (unix seconds), 4 kind ('overlay' | 'live'), 5 the campaign
--       offers a discount (0/1: the discount rule applies), 6 day key (site's time zone),
--       7 policy JSON {per_session, per_day, discount_days, live_per_session, live_per_day},
--       8 offer id, 9 session id, 10 check only (0/1), 11 this offer shows a discount (0/1)
-- Returns {'ok'} or {'refused', reason, limit}.
-- Seen offers are counted in the session (fq_overlays, fq_live) and the profile (fq_day with
-- fq_day_overlays, fq_day_live; fq_discount_at) by the offer_shown branch of session_event.lua.
-- Reservations count against the budget until they are seen or run out: a process that dies
-- between the steps leaves a reservation that refuses for a while and then counts nowhere, so
-- an interrupted offer errs towards fewer overlays, never more. `check only` is the holdout:
-- the same refusals, nothing held (it shows nothing). The offer of an exit signal is reserved
-- by the signal's own script (session_event.lua), with the same helpers (common.lua).
local now = tonumber(ARGV[1])
local live = ARGV[4] == 'live'
local sid, day = ARGV[9], ARGV[6]
local pending = pending_places(KEYS[1], now, sid, day, live)
local refused = place_refused(KEYS[2], KEYS[3], now, live, day, cjson.decode(ARGV[7]),
  ARGV[5] == '1', pending)
if refused then
  return {'refused', refused[1], refused[2]}
end
if ARGV[10] ~= '1' then
  hold_place(KEYS[1], ARGV[2], ARGV[8], ARGV[4], tonumber(ARGV[11]), sid, day,
    tonumber(ARGV[3]))
end
return {'ok'}
