-- lease_release.lua: release one expired worker lease of one shard, exactly once (G8).
--
-- KEYS[1]    leases   fedtrack:{<ns>:<SS>}:leases           zset worker -> lease expiry (unix ms)
-- KEYS[2]    lease    fedtrack:{<ns>:<SS>}:lease:<worker>   hash domain -> the worker's in-flight count
-- KEYS[3]    changed  fedtrack:{<ns>:<SS>}:changed          set of domains changed this flush epoch
-- KEYS[4]    flushing fedtrack:{<ns>:<SS>}:flushing         the closing epoch's domains not yet copied
-- KEYS[5]    snap     fedtrack:{<ns>:<SS>}:snap             domain -> its hash at the epoch's close
-- KEYS[6]    totals   fedtrack:{<ns>:<SS>}:totals           the shard's sums (queued_messages)
-- KEYS[7]    topqueue fedtrack:{<ns>:<SS>}:top:queued       zset domain -> queued messages
-- KEYS[8]    leaseages fedtrack:{<ns>:<SS>}:lease:<worker>:ages  "<domain>|<column>" -> the worker's count
-- KEYS[9]    qshape   fedtrack:{<ns>:<SS>}:qshape           "<domain>|<column>" -> live workers' sum
-- KEYS[10]   qshapetop fedtrack:{<ns>:<SS>}:qshape:top      zset domain -> queued_messages, when > 0
-- KEYS[11]   qshapesum fedtrack:{<ns>:<SS>}:qshape:total    column index 1..9 -> the shard's sum
-- KEYS[11+i] the hash fedtrack:{<ns>:<SS>}:d:<domain i> of ARGV[1+i]
-- ARGV[1]    worker id
-- ARGV[1+i]  domain i: every field of the lease hash, as the caller read it
--
-- Re-checks that the lease is still expired (a worker that pushed meanwhile renewed it),
-- removes it from the zset (so only one caller ever releases it), subtracts each
-- contribution from the domain's queued_messages (field q; never below 0; copying the hash into
-- `snap` first while a flush epoch is closing, as push.lua does), keeps the shard's totals
-- and top list of backlogs, marks those domains changed and deletes the lease hash.
-- Returns 1 released; 0 nothing to do (no such lease, someone else released it, or it
-- was renewed); -1 the lease hash holds a domain that is not in ARGV (read it again).
-- Clock: the Redis server's TIME in milliseconds, compared with the lease expiry.

local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry or tonumber(expiry) > now_ms then
  return 0
end
local FIXED = 11
if #KEYS ~= #ARGV + FIXED - 1 then
  return redis.error_reply('lease_release: KEYS and ARGV do not match')
end
local keys = {}
for i = 2, #ARGV do
  keys[ARGV[i]] = KEYS[i + FIXED - 1]
end
local lease = redis.call('HGETALL', KEYS[2])
for i = 1, #lease, 2 do
  if not keys[lease[i]] then
    return -1
  end
end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
local closing = redis.call('EXISTS', KEYS[4]) == 1
local delta = 0
for i = 1, #lease, 2 do
  local domain = lease[i]
  local held = tonumber(lease[i + 1]) or 0
  if held ~= 0 then
    local key = keys[domain]
    local current = tonumber(redis.call('HGET', key, 'q') or '0')
    local updated = current - held
    if updated < 0 then
      updated = 0
    end
    if updated ~= current then
      if closing and redis.call('SREM', KEYS[4], domain) == 1 then
        redis.call('HSET', KEYS[5], domain, table.concat(redis.call('HGETALL', key), '\t'))
      end
      redis.call('HSET', key, 'q', updated)
      redis.call('SADD', KEYS[3], domain)
      delta = delta + updated - current
      if updated > 0 then
        redis.call('ZADD', KEYS[7], updated, domain)
        redis.call('ZADD', KEYS[10], updated, domain)
      else
        redis.call('ZREM', KEYS[7], domain)
        redis.call('ZREM', KEYS[10], domain)
      end
    end
  end
end
if delta ~= 0 then
  redis.call('HINCRBY', KEYS[6], 'queued_messages', delta)
end
redis.call('DEL', KEYS[2])

-- the worker's share of the qshape ages (G8 for the ages)
local ages = redis.call('HGETALL', KEYS[8])
local column_sums = {0, 0, 0, 0, 0, 0, 0, 0, 0}
for i = 1, #ages, 2 do
  local field = ages[i]
  local k = tonumber(string.match(field, '|(%d)$'))
  local held = tonumber(ages[i + 1])
  if k and k >= 1 and held and held > 0 then
    local updated = redis.call('HINCRBY', KEYS[9], field, -held)
    local delta = -held
    if updated <= 0 then
      redis.call('HDEL', KEYS[9], field)
      delta = delta - updated -- never below 0
    end
    column_sums[k] = column_sums[k] + delta
  end
end
for k = 1, 9 do
  if column_sums[k] ~= 0 then
    redis.call('HINCRBY', KEYS[11], k, column_sums[k])
  end
end
redis.call('DEL', KEYS[8])
return 1
