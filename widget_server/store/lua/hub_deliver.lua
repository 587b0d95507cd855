-- Relay a message to every live socket of one visitor, whichever node holds it: each node gets
-- one delivery envelope, {"to": [its connection ids], "msg": <ARGV[2]>} (wire/nodes.py Delivery).
-- The message's JSON is spliced in as given, never decoded and encoded again here.
-- KEYS: 1 connections (connection id -> node id)
-- ARGV: 1 node channel prefix, 2 the relayed message's JSON (wire/nodes.py encode)
-- Returns the number of sockets the message was addressed to.
local conns = redis.call('HGETALL', KEYS[1])
local by_node = {}
for i = 1, #conns, 2 do
  local node = conns[i + 1]
  by_node[node] = by_node[node] or {}
  table.insert(by_node[node], conns[i])
end
for node, ids in pairs(by_node) do
  redis.call('PUBLISH', ARGV[1] .. node, '{"to":' .. cjson.encode(ids) .. ',"msg":' .. ARGV[2] .. '}')
end
return #conns / 2
