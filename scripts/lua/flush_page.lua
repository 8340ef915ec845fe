-- flush_page.lua: read one page of a closing epoch's domains that no write has touched.
--
-- A domain still in `flushing` has not been written since the epoch closed (the first write
-- moves it to `snap`), so its live hash IS its value at the close; checking membership and
-- reading the hash in one call keeps the two together. Domains no longer in `flushing` are
-- skipped: their value at the close is in `snap`.
--
-- KEYS[1]   hydrated marker  fedtrack:{<ns>:<SS>}:hydrated
-- KEYS[2]   flushing         fedtrack:{<ns>:<SS>}:flushing
-- KEYS[3]   flushstate       fedtrack:{<ns>:<SS>}:flushstate
-- KEYS[4..] domain hashes    fedtrack:{<ns>:<SS>}:d:<domain>, the page's domains
-- ARGV[1]   length of the domain hash keys' prefix "fedtrack:{<ns>:<SS>}:d:"; the domain of
--           KEYS[i] is what follows it (parsed, never used to build a key)
--
-- Returns {0}                          the shard lost its marker or its epoch: abort the flush
--         {1, domain, hash, domain, …} each page domain still in `flushing` that has a hash,
--                                      with HGETALL joined by tabs
-- Clock: none.

if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('EXISTS', KEYS[3]) == 0 then
  return {0}
end
local skip = tonumber(ARGV[1]) + 1
local domains = {}
for i = 4, #KEYS do
  domains[i - 3] = string.sub(KEYS[i], skip)
end
local out = {1}
if #domains == 0 then
  return out
end
local still = redis.call('SMISMEMBER', KEYS[2], unpack(domains))
for j = 1, #domains do
  if still[j] == 1 then
    local flat = redis.call('HGETALL', KEYS[j + 3])
    if #flat > 0 then
      out[#out + 1] = domains[j]
      out[#out + 1] = table.concat(flat, '\t')
    end
  end
end
return out
