-- hydrate.lua: add one chunk of the database's stats back into a shard that lost its data.
--
-- A shard is hydrated in chunks applied strictly in order; the `hydrating` hash records
-- the next chunk expected, so each chunk is applied exactly once even with several
-- hydrators at work or one dying midway. Chunks are deterministic (rows sorted by
-- domain; the rows of a shard cannot change while it is not hydrated, since no flush of
-- it runs), and `digest` identifies the whole plan so chunks of two different reads are
-- never mixed. Everything is ADDITIVE: counters with HINCRBY (or one HSET when the hash
-- does not exist yet, which is the same thing), `last_active` as a maximum. The
-- hydrator sends each domain's fields ready to write, and the shard's totals and top
-- lists (computed from all its rows) with the last chunk, so the script only writes.
--
-- KEYS[1]   hydrated marker   fedtrack:{<ns>:<SS>}:hydrated  (string, set by the last chunk)
-- KEYS[2]   progress hash     fedtrack:{<ns>:<SS>}:hydrating (next, chunks, digest)
-- KEYS[3]   activity index    fedtrack:{<ns>:<SS>}:active    (domain -> last_active)
-- KEYS[4]   acks hash         fedtrack:{<ns>:<SS>}:acks      (worker -> last seq applied)
-- KEYS[5]   acks seen         fedtrack:{<ns>:<SS>}:ackseen   (worker -> unix seconds)
-- KEYS[6]   totals            fedtrack:{<ns>:<SS>}:totals    (the shard's sums)
-- KEYS[7]   top failures      fedtrack:{<ns>:<SS>}:top:failures
-- KEYS[8]   top latency       fedtrack:{<ns>:<SS>}:top:latency
-- KEYS[9..] domain hashes     fedtrack:{<ns>:<SS>}:d:<domain>, one per domain record
-- ARGV[1]   chunk index (0-based)
-- ARGV[2]   number of chunks in the plan (>= 1; an empty shard is one empty chunk)
-- ARGV[3]   plan digest (same for every hydrator reading the same rows)
-- ARGV[4]   read_at: this server's TIME (seconds) taken before the database was read
-- ARGV[5]   max age (seconds) of a read that may still be applied
-- ARGV[6]   acks to restore, "worker,seq,worker,seq..." (last chunk only, else "")
-- ARGV[7]   the identity of the database read (G11): the marker's value once hydrated
-- ARGV[8]   size of each top list
-- ARGV[9]   the shard's totals, "field\tsum\t..." (last chunk only, else "")
-- ARGV[10]  the shard's most failing domains, "failures\tdomain\t..." (last chunk only)
-- ARGV[11]  the shard's slowest domains, "mean latency\tdomain\t..." (last chunk only)
-- ARGV[12..] one record per domain hash, in KEYS[9..] order: the domain, its last_active
--           ("" when never active), the number n of field arguments, then n arguments:
--           field, value, ... (the non-zero counters except queued_messages, a gauge that
--           live workers re-assert, and the non-zero latency buckets h<bucket>). Arguments,
--           not a text to split: splitting in Lua took half the script's time.
--
-- Returns  2  the marker is present: the shard is hydrated, nothing done
--          1  chunk applied (the last chunk also restored the acks and set the marker)
--          0  chunk already applied by someone: skip it
--         -1  progress gap (the progress hash was lost): re-read and start over
--         -2  the read is older than ARGV[5]: re-read
--         -3  the chunk belongs to a different plan than the one in progress
-- Clock: the server's TIME (age of the read, ackseen scores).

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 2
end

local index = tonumber(ARGV[1])
local chunks = tonumber(ARGV[2])
local progress = redis.call('HMGET', KEYS[2], 'next', 'chunks', 'digest')
local expected = 0
if progress[1] then
  if tonumber(progress[2]) ~= chunks or progress[3] ~= ARGV[3] then
    return -3
  end
  expected = tonumber(progress[1])
end
if index < expected then
  return 0
end
if index > expected then
  return -1
end

local now = tonumber(redis.call('TIME')[1])
if now - tonumber(ARGV[4]) > tonumber(ARGV[5]) then
  return -2
end

local function split(text, sep)
  local out, start = {}, 1
  while true do
    local at = string.find(text, sep, start, true)
    if not at then
      out[#out + 1] = string.sub(text, start)
      return out
    end
    out[#out + 1] = string.sub(text, start, at - 1)
    start = at + 1
  end
end

local call = redis.call
local scored, nscored = {}, 0
local at = 12
for i = 9, #KEYS do
  local key, domain, last_active = KEYS[i], ARGV[at], ARGV[at + 1]
  local first = at + 3
  at = first + tonumber(ARGV[at + 2])
  local active = last_active ~= ''
  if call('EXISTS', key) == 0 then
    if active and at > first then
      call('HSET', key, 'a', last_active, unpack(ARGV, first, at - 1))
    elseif active then
      call('HSET', key, 'a', last_active)
    elseif at > first then
      call('HSET', key, unpack(ARGV, first, at - 1))
    end
  else
    for j = first, at - 1, 2 do
      call('HINCRBY', key, ARGV[j], ARGV[j + 1])
    end
    if active then
      local current = tonumber(call('HGET', key, 'a') or '0')
      if tonumber(last_active) > current then
        call('HSET', key, 'a', last_active)
      end
    end
  end
  if active then
    scored[nscored + 1] = last_active
    scored[nscored + 2] = domain
    nscored = nscored + 2
  end
end
if nscored > 0 then
  call('ZADD', KEYS[3], 'GT', unpack(scored, 1, nscored))
end

if index < chunks - 1 then
  redis.call('HSET', KEYS[2], 'next', index + 1, 'chunks', chunks, 'digest', ARGV[3])
  return 1
end

if ARGV[9] ~= '' then
  local sums = split(ARGV[9], '\t')
  for j = 1, #sums, 2 do
    call('HINCRBY', KEYS[6], sums[j], sums[j + 1])
  end
end
local top = tonumber(ARGV[8])
for k, list in pairs({[7] = ARGV[10], [8] = ARGV[11]}) do
  if list ~= '' then
    local members = split(list, '\t')
    for j = 1, #members, 1000 do  -- ZADD in slices: unpack has a limit
      call('ZADD', KEYS[k], unpack(members, j, math.min(j + 999, #members)))
    end
    local size = call('ZCARD', KEYS[k])
    if size > top then
      call('ZREMRANGEBYRANK', KEYS[k], 0, size - top - 1)
    end
  end
end

if ARGV[6] ~= '' then
  local acks = split(ARGV[6], ',')
  for j = 1, #acks, 2 do
    -- decimal strings compared by length then text: exact beyond 2^53
    local current = redis.call('HGET', KEYS[4], acks[j])
    local seq = acks[j + 1]
    if not current or #seq > #current or (#seq == #current and seq > current) then
      redis.call('HSET', KEYS[4], acks[j], acks[j + 1])
    end
    redis.call('ZADD', KEYS[5], 'NX', now, acks[j])
  end
end
redis.call('SET', KEYS[1], ARGV[7])
redis.call('DEL', KEYS[2])
return 1
