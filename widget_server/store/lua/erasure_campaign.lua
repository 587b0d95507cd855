-- Erase one visitor's state for one campaign and unlink the codes issued to them.
-- KEYS: 1 visitor state for the campaign, 2 issued codes (both on the campaign's slot)
-- ARGV: 1 visitor id, 2 JSON list of codes found issued to the visitor (the held code is added)
-- Unlinked codes keep their variant, validity and redemption, so the shop can still check and
-- redeem them and the campaign's counts stay right; only the visitor and session ids go.
-- Returns {state keys deleted, codes unlinked}.
local codes = cjson.decode(ARGV[2])
local held = redis.call('HGET', KEYS[1], 'code')
if held then table.insert(codes, held) end
local unlinked = 0
for _, code in ipairs(codes) do
  local raw = redis.call('HGET', KEYS[2], code)
  if raw then
    local record = cjson.decode(raw)
    if record.visitor == ARGV[1] then
      record.visitor = nil
      record.session = nil
      redis.call('HSET', KEYS[2], code, cjson.encode(record))
      unlinked = unlinked + 1
    end
  end
end
return {redis.call('DEL', KEYS[1]), unlinked}
