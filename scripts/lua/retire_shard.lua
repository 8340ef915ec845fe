-- retire_shard.lua: retire one shard of the previous key schema (version 2) once it holds
-- nothing the database lacks, so no process of that release writes into it again.
--
-- KEYS[1]   hydrated marker  fedtrack:{<ns>:<SS>.<salt>}:hydrated    (schema 2's tag)
-- KEYS[2]   changed          fedtrack:{<ns>:<SS>.<salt>}:changed
-- KEYS[3]   flushstate       fedtrack:{<ns>:<SS>.<salt>}:flushstate
-- ARGV[1]   the identity of the retiring leader's database
-- ARGV[2]   the retired marker: an identity no database has (upgrade.RETIRED)
-- ARGV[3]   "1": retire even with changes not yet flushed (they are dropped); else "0"
--
-- A shard of this database (its marker names it, or a legacy stamp) whose `changed` set is
-- empty and which has no epoch closing has had every applied push flushed: its marker
-- becomes ARGV[2], which workers and flushers of that release refuse as another
-- database's data (G11). Checking and setting in one call leaves no gap for a push.
-- Returns 1 retired (or nothing to retire: no marker, already retired, or another
-- database's shard, left alone); 0 not retired: changes wait for a flush of that release.
-- Clock: none.

local marker = redis.call('GET', KEYS[1])
if not marker or marker == ARGV[2] then
  return 1
end
if marker ~= ARGV[1] and string.match(marker, '^[0-9a-f]+$') and #marker == 32 then
  return 1
end
if ARGV[3] ~= '1' and (redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[3]) == 1) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
