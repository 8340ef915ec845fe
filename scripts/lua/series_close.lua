-- series_close.lua: keep or drop finished 5-minute buckets of some domains of one shard.
--
-- KEYS[1]       closed  fedtrack:{<ns>:<SS>}:series:closed   hash "<bucket>|<domain>" -> nine counts
-- KEYS[2]       held    fedtrack:{<ns>:<SS>}:held            zset of the shard's domains not healthy
-- KEYS[1+2j]    the hash  fedtrack:{<ns>:<SS>}:d:<domain j>        of entry j (ARGV[1+j]); its
--                         field B is its history base "<bucket>|<nine counters>"
-- KEYS[2+2j]    its day   fedtrack:{<ns>:<SS>}:s:<domain j>:<day>  string of kept buckets, the day
--                         of entry j's bucket (records "<bucket % 288>|<nine counts>;")
-- ARGV[1]       the open bucket (5-minute number) on this shard's clock: only older ones close
-- ARGV[1+j]     entry j: "<bucket>|<domain>|<keep>|<ttl>": keep 1 when the domain is among
--               the bucket's most active or watched (a held domain is kept whatever it
--               says); ttl: seconds the day string lives (7 days after the day ends)
--
-- For each entry: the bucket's counts are the domain's `closed` entry, or, while its base
-- still is of that bucket, its live counters minus the base (no write since); the entry
-- is removed in the same call as the counts are kept, so a retried or resumed closing
-- never keeps a bucket twice. Closing a base removes it and its `b<bucket>` field from the
-- domain's hash, so the domain's next write is a first write again. An entry already
-- gone (closed by an earlier call) is skipped.
-- Returns {closed, kept}: entries closed by this call, buckets kept.
-- Clock: none (the caller passes the shard's open bucket, read from the shard's TIME).

local call = redis.call
local unpack = table.unpack or unpack
local open = tonumber(ARGV[1])
-- the nine counters' fields in a domain hash (stats.COUNTER_HASH_FIELDS)
local COUNTED = {'fh', 'fs', 'fm', 'sh', 'ss', 'sm', 'd', 'i', 'l'}
local closed, kept = 0, 0

for j = 1, #ARGV - 1 do
  local bucket, domain, keep, ttl = string.match(ARGV[1 + j], '^(%d+)|([a-z0-9.:-]+)|([01])|(%d+)$')
  if bucket and tonumber(bucket) < open then
    local hash, day = KEYS[1 + 2 * j], KEYS[2 + 2 * j]
    local counts = nil
    local based = call('HGET', hash, 'B')
    if based and string.find(based, bucket .. '|', 1, true) == 1 then
      local live = call('HMGET', hash, unpack(COUNTED))
      local values, f, any = {}, 0, false
      for value in string.gmatch(string.sub(based, #bucket + 2), '%d+') do
        f = f + 1
        local count = tonumber(live[f] or '0') - tonumber(value)
        if count < 0 then
          count = 0
        end
        if count ~= 0 then
          any = true
        end
        values[f] = string.format('%d', count)
      end
      call('HDEL', hash, 'B', 'b' .. bucket) -- the base, and push.lua's field naming its bucket
      closed = closed + 1
      if any then
        counts = table.concat(values, ',')
      end
    else
      local field = bucket .. '|' .. domain
      counts = call('HGET', KEYS[1], field)
      if counts then
        call('HDEL', KEYS[1], field)
        closed = closed + 1
      end
    end
    if counts and (keep == '1' or call('ZSCORE', KEYS[2], domain)) then
      call('APPEND', day, string.format('%d|', tonumber(bucket) % 288) .. counts .. ';')
      call('EXPIRE', day, ttl)
      kept = kept + 1
    end
  end
end
return {closed, kept}
