-- health_claim.lua: claim the probe of a held-back domain whose next attempt is due.
--
-- KEYS[1]  health      fedtrack:{<ns>:<SS>}:health       hash domain -> health record
-- KEYS[2]  held        fedtrack:{<ns>:<SS>}:held         zset domain -> next attempt (unix ms)
-- KEYS[3]  healthmeta  fedtrack:{<ns>:<SS>}:healthmeta   hash: rev, n:<state>
-- ARGV[1]  the normalized domain
-- ARGV[2]  health settings, as push.lua's ARGV[8] ("<seed>;<failures>,<min_ms>,<max_ms>,
--          <unavailable_after>,<period_ms>;<publish command>;<feed channel>;<retention>")
--
-- A claim advances the schedule as a failure would: the next attempt moves to now plus
-- the next, doubled, interval (jittered by the seed), or exactly backoff_max when the
-- domain is unavailable. So among any number of callers, one claims each probe.
-- Returns {1, next_ms, feed} claimed (feed is what was published); {0, next_ms, ""} not
-- due yet; {-1, 0, ""} the domain is not held back (or the settings are malformed).
-- Clock: the Redis server's TIME.

local domain = ARGV[1]
local score = redis.call('ZSCORE', KEYS[2], domain)
if not score then
  return {-1, 0, ''}
end
local a, _, c, d, _, _, g, h = string.match(ARGV[2],
  '^(%d+);(%d+),(%d+),(%d+),(%d+),(%d+);(%u+);([^;]+);(%d+)$')
if not a then
  return {-1, 0, ''}
end
local seed, MIN, MAX = tonumber(a), tonumber(c), tonumber(d)
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if tonumber(score) > now_ms then
  return {0, score, ''}
end
local record = redis.call('HGET', KEYS[1], domain) or ''
local st, cnt, since, nxt, periods, lastp, step = string.match(record,
  '^(%a),(%d+),(%d+),(%d+),(%d+),(-?%d+),(%d+)$')
if not st or st == 'h' then
  return {-1, 0, ''}
end
step = tonumber(step) + 1
local state = 'backoff'
if st == 'u' then
  nxt = now_ms + MAX
  state = 'unavailable'
else
  local interval = MIN * 2 ^ math.min(step, 60)
  if interval > MAX then
    interval = MAX
  end
  local x = (seed * 48271) % 2147483647
  x = (x * 48271) % 2147483647
  nxt = now_ms + math.floor(interval * (0.8 + 0.6 * x / 2147483647))
end
redis.call('HSET', KEYS[1], domain,
  st .. ',' .. cnt .. ',' .. since .. ',' .. nxt .. ',' .. periods .. ',' .. lastp .. ',' .. step)
redis.call('ZADD', KEYS[2], nxt, domain)
local rev = redis.call('HINCRBY', KEYS[3], 'rev', 1)
local feed = rev .. '\n' .. domain .. '|' .. state .. '|' .. nxt
redis.call(g, h, feed)
return {1, nxt, feed}
