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
-- KEYS[12]   health    fedtrack:{<ns>:<SS>}:health           hash domain -> health record (failing domains only)
-- KEYS[13]   held      fedtrack:{<ns>:<SS>}:held             zset domain -> next attempt (unix ms), the held-back domains
-- KEYS[14]   healthmeta fedtrack:{<ns>:<SS>}:healthmeta      hash: rev, n:backoff, n:unavailable
-- KEYS[15]   healthevents fedtrack:{<ns>:<SS>}:healthevents  stream of state changes, trimmed by time
-- KEYS[16]   minutes   fedtrack:{<ns>:<SS>}:series:m1        hash "<minute>:<c>" -> the shard's sum of
--                                                         counter c (1-9, order below), "last"
-- KEYS[17]   closed    fedtrack:{<ns>:<SS>}:series:closed    hash "<bucket>|<domain>" -> its nine counts
--                                                         in that finished 5-min bucket
-- KEYS[18]   leaseages fedtrack:{<ns>:<SS>}:lease:<worker>:ages hash "<domain>|<column>" ->
--                      this worker's in-flight messages of that age (columns 1..9, > 0)
-- KEYS[19]   qshape    fedtrack:{<ns>:<SS>}:qshape           hash "<domain>|<column>" -> live workers' sum
-- KEYS[20]   qshapetop fedtrack:{<ns>:<SS>}:qshape:top       zset domain -> queued_messages (T), when > 0
-- KEYS[21]   qshapesum fedtrack:{<ns>:<SS>}:qshape:total     hash column index 1..9 -> the shard's sum
-- KEYS[21+i] the hash  fedtrack:{<ns>:<SS>}:d:<domain i> of the i-th domain of ARGV[5] (fields:
--                      docs/redis-keys.md; B, its history base, see History below)
-- ARGV[1]    worker id
-- ARGV[2]    seq, strictly increasing per (worker, shard); applied only when > acks[worker]
-- ARGV[3]    lease TTL in milliseconds
-- ARGV[4]    ack retention in seconds: acks of workers silent for longer are pruned, and
--            the oldest beyond ARGV[7] acks per shard (a few per call)
-- ARGV[5]    the chunk's domains, one line per domain i (line i goes with KEYS[21+i]),
--            lines separated by "\n", each "<domain>|<queued>|<counters>|<histogram>",
--            optionally followed by "|<health>" and "|<ages>" (absent or empty: nothing):
--   domain     the normalized domain (member of active/changed, field of the lease hash)
--   queued     the worker's ABSOLUTE in-flight count for the domain, or "" when unchanged;
--              the difference with the lease hash is applied to queued_messages (field q, never < 0)
--   counters   nine comma-separated non-negative deltas: failed_http, failed_https,
--              failed_smtp, success_http, success_https, success_smtp,
--              successful_deliveries, inbound_deliveries, total_latency_ms
--   histogram  "" or "<bucket>:<count>" items separated by commas (fields h<bucket>)
--   health     "<n>": n temporary outbound failures; "s<n>": an outbound success, then n
--              temporary outbound failures (in the order recorded); see docs/health.md
--   ages       "" or "<column>:<count>" items separated by commas, column 1..9 of the qshape
--              ages (1 = [5, 10) min … 9 = 1280 min or more), count the worker's ABSOLUTE
--              number of in-flight messages of that age; the differences with the lease's
--              ages go to the shard's qshape sums (never < 0). Column 0 (under 5 min) is
--              never sent: it is T minus the others, and T is queued_messages, mirrored
--              into KEYS[20] here. A leading "=" marks a line that only carries ages
--              (messages moved column): the domain is not touched (no last_active, not
--              marked changed)
-- ARGV[6]    the database identity the worker expects the shard to hold (G11), or "" when it
--            knows none yet; a marker naming another identity refuses the chunk
-- ARGV[7]    most acks kept per shard
-- ARGV[8]    health settings, "" (or absent) when no line carries health data:
--            "<seed>;<failures>,<backoff_min_ms>,<backoff_max_ms>,<unavailable_after>,
--            <period_ms>;<publish command>;<feed channel>;<event retention ms>"; the seed
--            (an integer below 2^31, chosen when the chunk is sealed) makes the jitter of
--            a byte-for-byte retry the same
--
-- Health (docs/health.md): a line with health data runs the state machine of its domain
-- atomically with its counters. `health` holds "<state>,<count>,<since_ms>,<next_ms>,
-- <periods>,<last_period>,<step>" for failing domains only (state h, b or u), `held` the
-- domains in backoff or unavailable. Changes to `held` bump healthmeta's rev and are
-- published on the feed channel as "<rev>\n<domain>|<state>|<next_ms>..." (state
-- healthy, backoff, unavailable); each state change is an entry of `healthevents`.
--
-- Flush epochs (copy on write): while the flusher reads the closing epoch, `flushing` holds
-- its domains; the first write to one of them copies its hash, as it was at the close, into
-- `snap` (HGETALL joined by tabs; "" when it had none) and removes it from `flushing`, so
-- the flusher sees every domain exactly as at the close, with `epochacks` renamed at the
-- same instant: totals and acks of one instant, without one long call.
--
-- Returns {status, lease_absent, fields, ack, marker, feed}:
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
--   feed          what was published on the feed channel ("" when nothing), so the
--                 pushing worker's own view follows before its push returns
-- History (docs/history.md): the chunk's sums go into the shard's 1-minute bucket of the
-- cluster series (5-minute buckets are their sums; shard buckets older than MINUTES_KEPT
-- are trimmed when a new minute opens); a domain's first write in a 5-minute bucket records
-- its counters before the write in its hash's field B, "<bucket>|<nine counters>" (and,
-- when B held an older bucket, that bucket's counts in `closed`), so a domain's bucket is
-- its counters minus its base: found by a `b<bucket>` field set with last_active, a few
-- calls per domain and bucket, nothing per event. Both are written inside the at-most-once apply, so every series sum is exact.
-- The blocks between the series:begin and series:end marks are the history's alone (the
-- benchmark cuts them out to measure the push without the series).
-- Every argument is checked before the first write, so a chunk applies whole or not at all.
-- Clock: the Redis server's TIME (last_active and ackseen in seconds, lease expiry in ms,
-- the history buckets).
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
    or not cap or (#ARGV ~= 7 and #ARGV ~= 8) then
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
  .. '%|?(s?%d*)%|?(=?[%d:,]*)'
local FIXED = 21

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

-- health settings (parsed only when the chunk carries health data)
local seed, F, MIN, MAX, U, PERIOD, PUBLISH, CHANNEL, RETAIN
if ARGV[8] and ARGV[8] ~= '' then
  local a, b, c, d, e, f, g, h, k, m = string.match(ARGV[8],
    '^(%d+);(%d+),(%d+),(%d+),(%d+),(%d+);(%u+);([^;]+);(%d+)$')
  if not a then
    return {-1, 0, 0, last or '', marker}
  end
  seed, F, MIN, MAX, U, PERIOD = tonumber(a), tonumber(b), tonumber(c), tonumber(d),
    tonumber(e), tonumber(f)
  PUBLISH, CHANNEL, RETAIN = g, h, tonumber(k)
end
-- the tail of a fresh streak's record at this push: since, next, periods, last period, step
local FRESH = ''
if seed then
  FRESH = ',' .. string.format('%d', now_ms) .. ',0,1,' .. string.format('%d', math.floor(now_ms / PERIOD)) .. ',0'
end
-- fresh streaks' records written, and healed records removed, by one call each
local fresh_set, fresh_del = {}, {}
local feed = {}
local state_delta = {b = 0, u = 0}
local STATES = {h = 'healthy', b = 'backoff', u = 'unavailable'}

-- a jitter factor in [0.8, 1.4) for the n-th line: Park-Miller on the chunk's seed
local function jitter(n)
  local x = (seed + n * 7919) % 2147483647
  x = (x * 48271) % 2147483647
  x = (x * 48271) % 2147483647
  return 0.8 + 0.6 * x / 2147483647
end

-- the state machine of the domain of KEYS[n]; `cur` is its health record (false: none)
local function health_line(n, domain, h, cur)
  local healed = string.sub(h, 1, 1) == 's'
  local failures = tonumber(healed and string.sub(h, 2) or h) or 0
  if not cur and failures == 0 then
    return -- a success of a domain that was not failing: nothing to do
  end
  if healed and (not cur or string.sub(cur, 1, 1) == 'h') and failures < F then
    -- the common case of a failing domain: a success, then fewer failures than the
    -- threshold: a fresh streak that holds nothing back (no parse, one write at most)
    if failures == 0 then
      fresh_del[#fresh_del + 1] = domain
    else
      fresh_set[#fresh_set + 1] = domain
      fresh_set[#fresh_set + 1] = 'h,' .. failures .. FRESH
    end
    return
  end
  local st, cnt, since, nxt, periods, lastp, step = 'h', 0, 0, 0, 0, -1, 0
  if cur then
    local a, b, c, d, e, f, g = string.match(cur, '^(%a),(%d+),(%d+),(%d+),(%d+),(-?%d+),(%d+)$')
    if a then
      st, cnt, since, nxt = a, tonumber(b), tonumber(c), tonumber(d)
      periods, lastp, step = tonumber(e), tonumber(f), tonumber(g)
    end
  end
  local before, before_next = st, nxt
  if healed then
    st, cnt, since, nxt, periods, lastp, step = 'h', 0, 0, 0, 0, -1, 0
  end
  if failures > 0 then
    if cnt == 0 then
      since, periods, lastp = now_ms, 0, -1
    end
    cnt = cnt + failures
    local p = math.floor(now_ms / PERIOD)
    if p ~= lastp then
      periods, lastp = periods + 1, p
    end
    if cnt >= F then
      if cnt - F > step then
        step = cnt - F
      end
      if periods >= U then
        st, nxt = 'u', now_ms + MAX
      else
        local interval = MIN * 2 ^ math.min(step, 60)
        if interval > MAX then
          interval = MAX
        end
        st, nxt = 'b', now_ms + math.floor(interval * jitter(n - FIXED))
      end
    end
  end
  if cnt == 0 then
    if cur then
      call('HDEL', KEYS[12], domain)
    end
  else
    call('HSET', KEYS[12], domain,
      st .. ',' .. cnt .. ',' .. since .. ',' .. nxt .. ',' .. periods .. ',' .. lastp .. ',' .. step)
  end
  if st ~= 'h' then
    if nxt ~= before_next or before == 'h' then
      call('ZADD', KEYS[13], nxt, domain)
      feed[#feed + 1] = domain .. '|' .. STATES[st] .. '|' .. nxt
    end
  elseif before ~= 'h' then
    call('ZREM', KEYS[13], domain)
    feed[#feed + 1] = domain .. '|healthy|0'
  end
  if st ~= before then
    if before ~= 'h' then state_delta[before] = state_delta[before] - 1 end
    if st ~= 'h' then state_delta[st] = state_delta[st] + 1 end
    call('XADD', KEYS[15], 'MINID', '~', tostring(now_ms - RETAIN), '*',
      'domain', domain, 'from', STATES[before], 'to', STATES[st], 'at', stamp,
      'count', cnt, 'since', since, 'next', nxt, 'periods', periods,
      'stats', table.concat(call('HGETALL', KEYS[n]), '\t'))
  end
end

-- series:begin
local MINUTES_KEPT = 180
local minute = math.floor(now / 60)
local five = math.floor(now / 300)
local fprefix = string.format('%d|', five)
-- A domain's hash holds a field `b<bucket>` naming the 5-minute bucket its base is of:
-- the touch's HSET of last_active sets it too and answers how many fields were new, so
-- its first write in a bucket costs nothing more to find (last_active is new only with
-- that field: a new hash has neither).
local based_field = 'b' .. string.format('%d', five)
-- the nine counters' fields in a domain hash (stats.COUNTER_HASH_FIELDS)
local COUNTED = {'fh', 'fs', 'fm', 'sh', 'ss', 'sm', 'd', 'i', 'l'}
-- the domain's counters now (before this chunk's write) become its base in this bucket;
-- an older base closes that bucket's counts for the leader to keep or drop
local function rebase(key, domain)
  local old = call('HGET', key, 'B')
  if old and string.find(old, fprefix, 1, true) == 1 then
    return -- based in this bucket already (its b<bucket> field was removed by hand)
  end
  local now_values = call('HMGET', key, unpack(COUNTED))
  for f = 1, 9 do
    now_values[f] = now_values[f] or '0'
  end
  if old then
    local bucket, values = string.match(old, '^(%d+)|(.*)$')
    local counts, f, any = {}, 0, false
    for value in string.gmatch(values, '%d+') do
      f = f + 1
      local count = tonumber(now_values[f]) - tonumber(value)
      if count < 0 then
        count = 0
      end
      if count ~= 0 then
        any = true
      end
      counts[f] = string.format('%d', count)
    end
    if any then
      call('HSET', KEYS[17], bucket .. '|' .. domain, table.concat(counts, ','))
    end
    call('HDEL', key, 'b' .. bucket)
  end
  call('HSET', key, 'B', fprefix .. table.concat(now_values, ','))
end
-- a new bucket in a shard series trims the buckets that fell out of what it keeps
local function trim(key, bucket, kept)
  local last = tonumber(call('HGET', key, 'last') or '0')
  if bucket <= last then
    return
  end
  if bucket - last >= kept then
    call('DEL', key)
  else
    for old = last - kept + 1, bucket - kept do
      local gone = {}
      for f = 1, 9 do
        gone[f] = string.format('%d:%d', old, f)
      end
      call('HDEL', key, unpack(gone))
    end
  end
  call('HSET', key, 'last', string.format('%d', bucket))
end
-- series:end
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
      local held = tonumber(call('HGET', KEYS[18], field) or '0')
      local wanted = tonumber(count)
      local delta = wanted - held
      if delta ~= 0 then
        if wanted == 0 then
          call('HDEL', KEYS[18], field)
        else
          call('HSET', KEYS[18], field, count)
        end
        local updated = call('HINCRBY', KEYS[19], field, delta)
        if updated <= 0 then
          call('HDEL', KEYS[19], field)
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
    call('ZADD', KEYS[20], unpack(scored_queued))
    scored_queued = {}
  end
  if #unqueued > 0 then
    call('ZREM', KEYS[20], unpack(unqueued))
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

-- lines with health data, run after the counters (one HMGET reads all their records)
local hn, h_domain, h_data, h_line = 0, {}, {}, {}
local i = FIXED
for domain, queued, c1, c2, c3, c4, c5, c6, c7, c8, c9, histogram, health, ages
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
  local stamped = false
  -- series:begin
  if touched then
    if call('HSET', key, 'a', stamp, based_field, '1') > 0 then
      rebase(key, domain)
    end
    stamped = true
  end
  -- series:end
  if c1 ~= '0' then call('HINCRBY', key, 'fh', c1); s1 = s1 + c1; fields = fields + 1 end
  if c2 ~= '0' then call('HINCRBY', key, 'fs', c2); s2 = s2 + c2; fields = fields + 1 end
  if c3 ~= '0' then call('HINCRBY', key, 'fm', c3); s3 = s3 + c3; fields = fields + 1 end
  if c4 ~= '0' then call('HINCRBY', key, 'sh', c4); s4 = s4 + c4; fields = fields + 1 end
  if c5 ~= '0' then call('HINCRBY', key, 'ss', c5); s5 = s5 + c5; fields = fields + 1 end
  if c6 ~= '0' then call('HINCRBY', key, 'sm', c6); s6 = s6 + c6; fields = fields + 1 end
  if c7 ~= '0' then
    call('HINCRBY', key, 'd', c7); s7 = s7 + c7; fields = fields + 1
  end
  if c8 ~= '0' then call('HINCRBY', key, 'i', c8); s8 = s8 + c8; fields = fields + 1 end
  if c9 ~= '0' then call('HINCRBY', key, 'l', c9); s9 = s9 + c9; fields = fields + 1 end
  if histogram ~= '' then
    for bucket, count in string.gmatch(histogram, '(%d+):(%d+)') do
      call('HINCRBY', key, 'h' .. bucket, count)
      buckets[bucket] = (buckets[bucket] or 0) + count
      fields = fields + 1
    end
  end
  if queued ~= '' then
    local wanted = tonumber(queued)
    local held = tonumber(call('HGET', KEYS[7], domain) or '0')
    if wanted ~= held then
      local current = tonumber(call('HGET', key, 'q') or '0')
      local updated = current + wanted - held
      if updated < 0 then
        updated = 0
      end
      queued_delta = queued_delta + updated - current
      if stamped then
        call('HSET', key, 'q', updated)
      else
        call('HSET', key, 'q', updated, 'a', stamp)
      end
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
  if health ~= '' and seed then
    hn = hn + 1
    h_domain[hn], h_data[hn], h_line[hn] = domain, health, i
  end
  if touched then -- a line is a touch: last_active, the activity index, changed
    if not stamped then
      call('HSET', key, 'a', stamp)
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
if hn > 0 then
  local records = call('HMGET', KEYS[12], unpack(h_domain))
  for j = 1, hn do
    local cur = records[j]
    if cur or h_data[j] ~= 's0' then -- else a success of a domain not failing: nothing
      health_line(h_line[j], h_domain[j], h_data[j], cur)
    end
  end
  if #fresh_set > 0 then
    call('HSET', KEYS[12], unpack(fresh_set))
  end
  if #fresh_del > 0 then
    call('HDEL', KEYS[12], unpack(fresh_del))
  end
end

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
-- series:begin
trim(KEYS[16], minute, MINUTES_KEPT)
local mprefix = string.format('%d:', minute)
for f = 1, 9 do
  if sums[f] ~= 0 then
    call('HINCRBY', KEYS[16], mprefix .. f, sums[f])
  end
end
-- series:end
if queued_delta ~= 0 then
  call('HINCRBY', KEYS[11], 'queued_messages', queued_delta)
end
for k = 1, 9 do
  if age_sums[k] ~= 0 then
    call('HINCRBY', KEYS[21], k, age_sums[k])
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
if call('EXISTS', KEYS[7]) == 1 or call('EXISTS', KEYS[18]) == 1 then
  call('ZADD', KEYS[6], now_ms + ttl, worker)
else
  call('ZREM', KEYS[6], worker)
end
local published = ''
if #feed > 0 then
  local rev = call('HINCRBY', KEYS[14], 'rev', 1)
  if state_delta.b ~= 0 then call('HINCRBY', KEYS[14], 'n:backoff', state_delta.b) end
  if state_delta.u ~= 0 then call('HINCRBY', KEYS[14], 'n:unavailable', state_delta.u) end
  published = rev .. '\n' .. table.concat(feed, '\n')
  call(PUBLISH, CHANNEL, published)
end
return {1, lease_absent, fields, given, marker, published}
