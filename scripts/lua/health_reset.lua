-- health_reset.lua: make one domain healthy again (an operator's reset).
--
-- KEYS[1]  health        fedtrack:{<ns>:<SS>}:health        hash domain -> health record
-- KEYS[2]  held          fedtrack:{<ns>:<SS>}:held          zset domain -> next attempt (unix ms)
-- KEYS[3]  healthmeta    fedtrack:{<ns>:<SS>}:healthmeta    hash: rev, n:<state>
-- KEYS[4]  healthevents  fedtrack:{<ns>:<SS>}:healthevents  stream of state changes
-- KEYS[5]  the domain's hash fedtrack:{<ns>:<SS>}:d:<domain> (its counters go in the event)
-- ARGV[1]  the normalized domain
-- ARGV[2]  publish command (PUBLISH, or SPUBLISH on Cluster)
-- ARGV[3]  the shard's feed channel
-- ARGV[4]  event retention in ms (the stream is trimmed by time)
--
-- Clears the consecutive failures; a domain held back goes back to healthy with an event
-- "<state> -> healthy" and a feed message, so every process attempts it again.
-- Returns {previous state ("healthy", "backoff", "unavailable"; "" when it had no
-- record), feed ("" when nothing was published)}.
-- Clock: the Redis server's TIME (the event's time).

local domain = ARGV[1]
local record = redis.call('HGET', KEYS[1], domain)
if not record then
  return {'', ''}
end
redis.call('HDEL', KEYS[1], domain)
local code = string.sub(record, 1, 1)
if code ~= 'b' and code ~= 'u' then
  return {'healthy', ''}
end
local NAMES = {b = 'backoff', u = 'unavailable'}
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREM', KEYS[2], domain)
redis.call('HINCRBY', KEYS[3], 'n:' .. NAMES[code], -1)
local rev = redis.call('HINCRBY', KEYS[3], 'rev', 1)
redis.call('XADD', KEYS[4], 'MINID', '~', tostring(now_ms - tonumber(ARGV[4])), '*',
  'domain', domain, 'from', NAMES[code], 'to', 'healthy', 'at', time[1],
  'count', 0, 'since', 0, 'next', 0, 'periods', 0,
  'stats', table.concat(redis.call('HGETALL', KEYS[5]), '\t'))
local feed = rev .. '\n' .. domain .. '|healthy|0'
redis.call(ARGV[2], ARGV[3], feed)
return {NAMES[code], feed}
