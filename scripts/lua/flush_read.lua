-- flush_read.lua: take one shard's changed domains as one consistent snapshot for the flusher.
--
-- The caller passes the domains it got from SMEMBERS changed (plus any it still owes the
-- database). Atomically, this script checks that the shard is hydrated and that `changed`
-- holds no domain beyond those passed, then returns every passed domain's hash as a
-- stats line together with the shard's acks, and deletes `changed`. The data and the
-- acks therefore describe the same instant, which is what lets the database's acks
-- stop a chunk retried after a Redis data loss from counting twice.
--
-- KEYS[1]   changed set      fedtrack:{<ns>:<SS>}:changed
-- KEYS[2]   hydrated marker  fedtrack:{<ns>:<SS>}:hydrated
-- KEYS[3]   acks hash        fedtrack:{<ns>:<SS>}:acks      (worker -> last seq applied)
-- KEYS[4]   acks seen        fedtrack:{<ns>:<SS>}:ackseen   (worker -> unix s of last apply)
-- KEYS[5..] domain hashes    fedtrack:{<ns>:<SS>}:d:<domain>, the domains passed
-- ARGV[1]   counter field names in stats-line order, comma-separated
-- ARGV[2]   length of the domain hash keys' prefix "fedtrack:{<ns>:<SS>}:d:"; the domain
--           of KEYS[i] is what follows it (parsed, never used to build a key)
--
-- Returns {0}                   the marker is missing: nothing read, nothing changed
--         {1, domain, ...}      `changed` holds these domains beyond those passed: call
--                               again with them added (nothing changed)
--         {2, acks, lines}      the snapshot; `changed` is deleted. `acks` is
--                               "worker,seq,seen,worker,seq,seen..."; `lines` holds one stats line
--                               per passed domain that has a hash, joined by "\n":
--                               "domain\t<counters>\t<last_active|\N>\t<bucket:count,...>"
--                               (increasing buckets, zeros left out). A domain without a
--                               hash has no line: it is never written.
-- Clock: none (last_active is copied as stored).

if redis.call('EXISTS', KEYS[2]) == 0 then
  return {0}
end
local skip = tonumber(ARGV[2]) + 1
local sub = string.sub
local domains = {}
local passed = {}
for i = 5, #KEYS do
  local domain = sub(KEYS[i], skip)
  domains[i] = domain
  passed[domain] = true
end
local extra = {1}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not passed[member] then
    extra[#extra + 1] = member
  end
end
if #extra > 1 then
  return extra
end
local column = {}
local ncounters = 0
for name in string.gmatch(ARGV[1], '[^,]+') do
  ncounters = ncounters + 1
  column[name] = ncounters
end
local byte, concat, sort = string.byte, table.concat, table.sort
local lines = {}
local nout = 0
local row = {}
for i = 5, #KEYS do
  local flat = redis.call('HGETALL', KEYS[i])
  if #flat > 0 then
    nout = nout + 1
    for c = 1, ncounters do
      row[c] = '0'
    end
    local last_active = '\\N'
    local buckets, counts, nh = nil, nil, 0
    for j = 1, #flat, 2 do
      local field = flat[j]
      local c = column[field]
      if c then
        row[c] = flat[j + 1]
      elseif field == 'last_active' then
        if flat[j + 1] ~= '0' then
          last_active = flat[j + 1]
        end
      elseif byte(field, 1) == 104 and flat[j + 1] ~= '0' then
        local bucket = tonumber(sub(field, 2))
        if bucket then
          if nh == 0 then
            buckets, counts = {}, {}
          end
          nh = nh + 1
          buckets[nh] = bucket
          counts[bucket] = flat[j + 1]
        end
      end
    end
    local histogram = ''
    if nh == 1 then
      histogram = buckets[1] .. ':' .. counts[buckets[1]]
    elseif nh > 1 then
      sort(buckets)
      for k = 1, nh do
        buckets[k] = buckets[k] .. ':' .. counts[buckets[k]]
      end
      histogram = concat(buckets, ',')
    end
    lines[nout] = domains[i] .. '\t' .. concat(row, '\t') .. '\t' .. last_active .. '\t' .. histogram
  end
end
local seen = {}
local scored = redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')
for j = 1, #scored, 2 do
  seen[scored[j]] = scored[j + 1]
end
local pairs_ = redis.call('HGETALL', KEYS[3])
local triples = {}
for j = 1, #pairs_, 2 do
  triples[#triples + 1] = pairs_[j] .. ',' .. pairs_[j + 1] .. ',' .. (seen[pairs_[j]] or '0')
end
local acks = concat(triples, ',')
redis.call('DEL', KEYS[1])
return {2, acks, concat(lines, '\n')}
