-- Shared helpers, prepended to every script by widget_server.store.scripts.
-- Missing values: nil, JSON null, and the false that Redis returns for a missing field.
local function val(x, default)
  if x == nil or x == false or x == cjson.null then return default end
  return x
end

local function hash_to_table(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

local function view(session_key, profile_key, dup, note)
  local s = hash_to_table(redis.call('HGETALL', session_key))
  local p = hash_to_table(redis.call('HGETALL', profile_key))
  return cjson.encode({s = s, p = p, dup = dup, note = note})
end

-- Keep the last `limit` distinct ids of a JSON list, newest last.
local function push_recent(json_list, id, limit)
  local list = cjson.decode(val(json_list, '[]'))
  local out = {}
  for _, v in ipairs(list) do
    if v ~= id then out[#out + 1] = v end
  end
  out[#out + 1] = id
  while #out > limit do table.remove(out, 1) end
  return cjson.encode(out)
end

local function encode_list(list)
  if #list == 0 then return '[]' end
  return cjson.encode(list)
end

-- An unknown visitor's profile is a short-lived marker (MARKER_TTL) until they do something
-- worth remembering (``kept``); then it lives for the retention TTL.
local MARKER_TTL = 86400
local function profile_ttl_for(profile_key, retention)
  if redis.call('HGET', profile_key, 'kept') == '1' then return retention end
  return math.min(MARKER_TTL, retention)
end
