-- push.lua: apply one chunk of one worker's batched deltas to one shard, at most once.
--
-- KEYS[1]    hydrated  fedtrack:{<ns>:<SS>}:hydrated         string; absent: refuse the chunk
-- KEYS[2]    acks      fedtrack:{<ns>:<SS>}:acks             hash worker -> last applied seq
-- KEYS[3]    ackseen   fedtrack:{<ns>:<SS>}:ackseen          zset worker -> unix s of last apply
-- KEYS[4]    active    fedtrack:{<ns>:<SS>}:active           zset domain -> last_active
-- KEYS[5]    changed   fedtrack:{<ns>:<SS>}:changed          set of domains changed this flush epoch
-- KEYS[6]    leases    fedtrack:{<ns>:<SS>}:leases           zset worker -> lease expiry (unix ms)
-- KEYS[7]    lease     fedtrack:{<ns>:<SS>}:lease:<worker>   hash domain -> this worker's in-flight count
-- KEYS[8]    flushing  fedtrack:{<ns>:<SS>}:flushing         set: the closing epoch's domains not yet copied
-- KEYS[9]    snap      fedtrack:{<ns>:<SS>}:snap             hash domain -> its hash at the epoch's close
-- KEYS[10]   epochacks fedtrack:{<ns>:<SS>}:epochacks        hash worker -> last seq applied this epoch
-- KEYS[11]   totals    fedtrack:{<ns>:<SS>}:totals           hash: the shard's sums of every counter
-- KEYS[12]   leaseages fedtrack:{<ns>:<SS>}:lease:<worker>:ages hash "<domain>|<column>" ->
--                      this worker's in-flight messages of that age (columns 1..9, > 0)
-- KEYS[13]   qshape    fedtrack:{<ns>:<SS>}:qshape           hash "<domain>|<column>" -> live workers' sum
-- KEYS[14]   qshapetop fedtrack:{<ns>:<SS>}:qshape:top       zset domain -> queued_messages (T), when > 0
-- KEYS[15]   qshapesum fedtrack:{<ns>:<SS>}:qshape:total     hash column index 1..9 -> the shard's sum
-- KEYS[15+i] the hash  fedtrack:{<ns>:<SS>}:d:<domain i> of the i-th domain of ARGV[5]
-- ARGV[1]    worker id
-- ARGV[2]    seq, strictly increasing per (worker, shard); applied only when > acks[worker]
-- ARGV[3]    lease TTL in milliseconds
-- ARGV[4]    ack retention in seconds: acks of workers silent for longer are pruned, and
--            the oldest beyond ARGV[7] acks per shard (a few per call)
-- ARGV[5]    the chunk's domains, one line per domain i (line i goes with KEYS[15+i]),
--            lines separated by "\n", each "<domain>|<queued>|<counters>|<histogram>",
--            optionally followed by "|<health>" and "|<ages>" (absent = nothing):
--   domain     the normalized domain (member of active/changed, field of the lease hash)
--   queued     the worker's ABSOLUTE in-flight count for the domain, or "" when unchanged;
--              the difference with the lease hash is applied to queued_messages (never < 0)
--   counters   nine comma-separated non-negative deltas: failed_http, failed_https,
--              failed_smtp, success_http, success_https, success_smtp,
--              successful_deliveries, inbound_deliveries, total_latency_ms
--   histogram  "" or "<bucket>:<count>" items separated by commas (fields h<bucket>)
--   health     ignored here (no "|" or newline inside)
--   ages       "" or "<column>:<count>" items separated by commas, column 1..9 of the qshape
--              ages (1 = [5, 10) min … 9 = 1280 min or more), count the worker's ABSOLUTE
--              number of in-flight messages of that age; the differences with the lease's
--              ages go to the shard's qshape sums (never < 0). Column 0 (under 5 min) is
--              never sent: it is T minus the others, and T is queued_messages, mirrored
--              into KEYS[14] here. A leading "=" marks a line that only carries ages
--              (messages moved column): the domain is not touched (no last_active, not
--              marked changed)
-- ARGV[6]    the database identity the worker expects the shard to hold (G11), or "" when it
--            knows none yet; a marker naming another identity refuses the chunk
-- ARGV[7]    most acks kept per shard
--
-- Flush epochs (copy on write): while the flusher reads the closing epoch, `flushing` holds
-- its domains; the first write to one of them copies its hash, as it was at the close, into
-- `snap` (HGETALL joined by tabs; "" when it had none) and removes it from `flushing`, so
-- the flusher sees every domain exactly as at the close, with `epochacks` renamed at the
-- same instant: totals and acks of one instant, without one long call.
--
-- Returns {status, lease_absent, fields, ack, marker}:
--   status        1 applied; 2 duplicate (seq <= acks[worker]: nothing done; the worker
--                 acknowledges it when ack == seq, and renumbers its chunks when ack > seq,
--                 since with one chunk in flight per shard only a seq reused from an earlier
--                 life of the worker id can be below the stored ack);
--                 0 refused, the shard is not hydrated (nothing done, retry unchanged);
--                 3 refused, the marker names another database than ARGV[6] (nothing done);
--                 -1 malformed chunk (nothing done)
--   lease_absent  1 when the worker held no lease on this shard before the chunk (it must
--                 re-send all its in-flight counts for the shard), else 0
--   fields        number of domain-hash fields written (counters, h<b>, queued, last_active)
--   ack           the worker's stored seq after the call (as a string; "" when none)
--   marker        the hydrated marker's value (the database identity; "" when refused as
--                 not hydrated)
-- Every argument is checked before the first write, so a chunk applies whole or not at all.
-- Clock: the Redis server's TIME (last_active and ackseen in seconds, lease expiry in ms).
-- The ages' columns come from the worker's clock (it holds the enqueue times); no clock here.

local unpack = table.unpack or unpack
local call = redis.call

local marker = call('GET', KEYS[1])
if not marker then
  return {0, 0, 0, '', ''}
end
local worker = ARGV[1]
local seq = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local retention = tonumber(ARGV[4])
local cap = tonumber(ARGV[7])
if not seq or not string.match(ARGV[2], '^[1-9]%d*$') or not ttl or not retention
    or not cap or #ARGV ~= 7 then
  return {-1, 0, 0, '', marker}
end
if ARGV[6] ~= '' and marker ~= ARGV[6] and string.match(marker, '^%x+$') and #marker == 32 then
  return {3, 0, 0, '', marker}
end
-- Sequence numbers are compared as decimal strings (length, then text), which is exact
-- for any size, where Lua's doubles are exact only up to 2^53.
local last = call('HGET', KEYS[2], worker)
local given = ARGV[2]
if last and (#last > #given or (#last == #given and last >= given)) then
  return {2, 0, 0, last, marker}
end

local LINE = '([a-z0-9.:-]+)|(%d*)|(%d+),(%d+),(%d+),(%d+),(%d+),(%d+),(%d+),(%d+),(%d+)|([%d:,]*)'
  .. '|?[^|\n]*|?(=?[%d:,]*)'
local FIXED = 15

-- 1. check the whole chunk before writing anything: every character must belong to a
--    well-formed line, and there must be one line per domain key
local rest, lines = string.gsub(ARGV[5], LINE .. '\n?', '')
if rest ~= '' or lines ~= #KEYS - FIXED then
  return {-1, 0, 0, last or '', marker}
end

-- 2. apply
local time = call('TIME')
-- `stamp` is TIME's own string: a Lua number passed to redis.call is formatted anew on
-- every call, which costs more than the HSET it goes into
local stamp = time[1]
local now = tonumber(stamp)
local now_ms = now * 1000 + math.floor(tonumber(time[2]) / 1000)
local lease_absent = 0
if not call('ZSCORE', KEYS[6], worker) then
  lease_absent = 1
end
local closing = call('EXISTS', KEYS[8]) == 1
local fields = 0
local scored, members = {}, {}
local s1, s2, s3, s4, s5, s6, s7, s8, s9 = 0, 0, 0, 0, 0, 0, 0, 0, 0
local buckets = {}
local queued_delta = 0
local age_sums = {0, 0, 0, 0, 0, 0, 0, 0, 0}

local scored_queued, unqueued = {}, {}

-- apply one line's ages to the worker's lease and the shard's sums (fields
-- "<domain>|<column>", absent when 0)
local function apply_ages(domain, ages)
  for column, count in string.gmatch(ages, '(%d):(%d+)') do
    local k = tonumber(column)
    if k >= 1 then
      local field = domain .. '|' .. column
      local held = tonumber(call('HGET', KEYS[12], field) or '0')
      local wanted = tonumber(count)
      local delta = wanted - held
      if delta ~= 0 then
        if wanted == 0 then
          call('HDEL', KEYS[12], field)
        else
          call('HSET', KEYS[12], field, count)
        end
        local updated = call('HINCRBY', KEYS[13], field, delta)
        if updated <= 0 then
          call('HDEL', KEYS[13], field)
          delta = delta - updated -- never below 0
        end
        age_sums[k] = age_sums[k] + delta
      end
    end
  end
end

-- the qshape index mirrors queued_messages (batched like the activity index)
local function flush_queued()
  if #scored_queued > 0 then
    call('ZADD', KEYS[14], unpack(scored_queued))
    scored_queued = {}
  end
  if #unqueued > 0 then
    call('ZREM', KEYS[14], unpack(unqueued))
    unqueued = {}
  end
end

local function flush_members()
  if #members > 0 then
    call('ZADD', KEYS[4], unpack(scored))
    call('SADD', KEYS[5], unpack(members))
    scored, members = {}, {}
  end
end

local i = FIXED
for domain, queued, c1, c2, c3, c4, c5, c6, c7, c8, c9, histogram, ages
    in string.gmatch(ARGV[5], LINE) do
  i = i + 1
  local key = KEYS[i]
  local touched = true
  if ages ~= '' then
    if string.byte(ages) == 61 then -- "=": only ages, the domain is not touched
      touched = false
      apply_ages(domain, string.sub(ages, 2))
    else
      apply_ages(domain, ages)
    end
  end
  if touched and closing and call('SREM', KEYS[8], domain) == 1 then
    call('HSET', KEYS[9], domain, table.concat(call('HGETALL', key), '\t'))
  end
  if c1 ~= '0' then call('HINCRBY', key, 'failed_http', c1); s1 = s1 + c1; fields = fields + 1 end
  if c2 ~= '0' then call('HINCRBY', key, 'failed_https', c2); s2 = s2 + c2; fields = fields + 1 end
  if c3 ~= '0' then call('HINCRBY', key, 'failed_smtp', c3); s3 = s3 + c3; fields = fields + 1 end
  if c4 ~= '0' then call('HINCRBY', key, 'success_http', c4); s4 = s4 + c4; fields = fields + 1 end
  if c5 ~= '0' then call('HINCRBY', key, 'success_https', c5); s5 = s5 + c5; fields = fields + 1 end
  if c6 ~= '0' then call('HINCRBY', key, 'success_smtp', c6); s6 = s6 + c6; fields = fields + 1 end
  if c7 ~= '0' then
    call('HINCRBY', key, 'successful_deliveries', c7); s7 = s7 + c7; fields = fields + 1
  end
  if c8 ~= '0' then call('HINCRBY', key, 'inbound_deliveries', c8); s8 = s8 + c8; fields = fields + 1 end
  if c9 ~= '0' then call('HINCRBY', key, 'total_latency_ms', c9); s9 = s9 + c9; fields = fields + 1 end
  if histogram ~= '' then
    for bucket, count in string.gmatch(histogram, '(%d+):(%d+)') do
      call('HINCRBY', key, 'h' .. bucket, count)
      buckets[bucket] = (buckets[bucket] or 0) + count
      fields = fields + 1
    end
  end
  local stamped = false
  if queued ~= '' then
    local wanted = tonumber(queued)
    local held = tonumber(call('HGET', KEYS[7], domain) or '0')
    if wanted ~= held then
      local current = tonumber(call('HGET', key, 'queued_messages') or '0')
      local updated = current + wanted - held
      if updated < 0 then
        updated = 0
      end
      queued_delta = queued_delta + updated - current
      call('HSET', key, 'queued_messages', updated, 'last_active', stamp)
      if updated > 0 then
        scored_queued[#scored_queued + 1] = updated
        scored_queued[#scored_queued + 1] = domain
      else
        unqueued[#unqueued + 1] = domain
      end
      stamped = true
      fields = fields + 1
      if wanted == 0 then
        call('HDEL', KEYS[7], domain)
      else
        call('HSET', KEYS[7], domain, queued)
      end
    end
  end
  if touched then -- a line is a touch: last_active, the activity index, changed
    if not stamped then
      call('HSET', key, 'last_active', stamp)
    end
    fields = fields + 1
    scored[#scored + 1] = stamp
    scored[#scored + 1] = domain
    members[#members + 1] = domain
    if #members >= 1000 then
      flush_members()
      flush_queued()
    end
  end
end
flush_members()
flush_queued()

-- the shard's totals, kept as pushes arrive (reads never add up every domain); the top
-- lists are the flusher's, refreshed from each epoch it reads
local sums = {s1, s2, s3, s4, s5, s6, s7, s8, s9}
local NAMES = {'failed_http', 'failed_https', 'failed_smtp', 'success_http', 'success_https',
  'success_smtp', 'successful_deliveries', 'inbound_deliveries', 'total_latency_ms'}
for f = 1, 9 do
  if sums[f] ~= 0 then
    call('HINCRBY', KEYS[11], NAMES[f], sums[f])
  end
end
for bucket, count in pairs(buckets) do
  call('HINCRBY', KEYS[11], 'h' .. bucket, count)
end
if queued_delta ~= 0 then
  call('HINCRBY', KEYS[11], 'queued_messages', queued_delta)
end
for k = 1, 9 do
  if age_sums[k] ~= 0 then
    call('HINCRBY', KEYS[15], k, age_sums[k])
  end
end
call('HSET', KEYS[2], worker, given)
call('HSET', KEYS[10], worker, given)
call('ZADD', KEYS[3], stamp, worker)
local stale = call('ZRANGEBYSCORE', KEYS[3], '-inf', now - retention, 'LIMIT', 0, 8)
if #stale == 0 and call('ZCARD', KEYS[3]) > cap then
  stale = call('ZRANGE', KEYS[3], 0, 7)
end
for _, old in ipairs(stale) do
  if old ~= worker then
    call('HDEL', KEYS[2], old)
    call('ZREM', KEYS[3], old)
  end
end
if call('EXISTS', KEYS[7]) == 1 or call('EXISTS', KEYS[12]) == 1 then
  call('ZADD', KEYS[6], now_ms + ttl, worker)
else
  call('ZREM', KEYS[6], worker)
end
return {1, lease_absent, fields, given, marker}
