-- marker_adopt.lua: give a legacy hydration marker (written before database identities
-- existed) the identity of the flusher leader's database, once (G11).
--
-- KEYS[1]  hydrated marker  fedtrack:{<ns>:<SS>}:hydrated
-- ARGV[1]  the legacy value the caller read (compare-and-set: adopted only if unchanged)
-- ARGV[2]  the database identity (32 hex digits)
--
-- Returns 1 when adopted, 0 when the marker changed meanwhile (or is gone): nothing done.
-- Clock: none.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
