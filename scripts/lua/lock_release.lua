-- lock_release.lua: give up the flusher lock, only if we still hold it (compare-and-del).
--
-- KEYS[1]  flusher lock   fedtrack:{<ns>:flusher}:lock  (string: the leader's random token)
-- ARGV[1]  token          the random token this flusher stored when it won the lock
--
-- Returns 1 when the lock was ours and is deleted, 0 when it was not ours (nothing done).
-- Clock: none.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
