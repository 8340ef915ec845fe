-- flush_begin.lua: close one shard's flush epoch (or resume the one already closing).
--
-- Closing an epoch is one instant: the set of domains changed in it becomes `flushing` and
-- the acks applied in it become `flushacks`, both by RENAME (constant time), and from then
-- on push.lua and lease_release.lua copy each such domain's hash into `snap` before their
-- first write to it. The flusher then reads the epoch in short pages at leisure, commits it
-- to the database, and ends it with flush_end.lua. An epoch left open by a flusher that
-- died is resumed as it is: the same snapshot, read again.
--
-- KEYS[1]   hydrated marker  fedtrack:{<ns>:<SS>}:hydrated
-- KEYS[2]   changed          fedtrack:{<ns>:<SS>}:changed     (set: this epoch's domains)
-- KEYS[3]   flushing         fedtrack:{<ns>:<SS>}:flushing    (set: the closing epoch's)
-- KEYS[4]   epochacks        fedtrack:{<ns>:<SS>}:epochacks   (hash worker -> seq, this epoch)
-- KEYS[5]   flushacks        fedtrack:{<ns>:<SS>}:flushacks   (hash worker -> seq, closing)
-- KEYS[6]   flushstate       fedtrack:{<ns>:<SS>}:flushstate  (hash: fence, at)
-- ARGV[1]   the flusher's fencing token (it owns the closing epoch from now on)
--
-- Returns 0  the marker is missing: nothing done (no flush of an unhydrated shard)
--         1  a new epoch was closed
--         2  an epoch was already closing: resumed, now owned by ARGV[1]
--         3  nothing changed since the last epoch: nothing to do
-- Clock: the server's TIME (flushstate.at, for operators).

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local at = redis.call('TIME')[1]
if redis.call('EXISTS', KEYS[6]) == 1 then
  redis.call('HSET', KEYS[6], 'fence', ARGV[1])
  return 2
end
local changed = redis.call('EXISTS', KEYS[2]) == 1
local acked = redis.call('EXISTS', KEYS[4]) == 1
if not changed and not acked then
  return 3
end
if changed then
  redis.call('RENAME', KEYS[2], KEYS[3])
end
if acked then
  redis.call('RENAME', KEYS[4], KEYS[5])
end
redis.call('HSET', KEYS[6], 'fence', ARGV[1], 'at', at)
return 1
