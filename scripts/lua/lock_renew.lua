-- lock_renew.lua: extend the flusher lock, only while we still hold it (compare-and-pexpire).
--
-- KEYS[1]  flusher lock   fedtrack:{<ns>:flusher}:lock  (string: the leader's random token)
-- ARGV[1]  token          the random token this flusher stored when it won the lock
-- ARGV[2]  ttl            new time to live, milliseconds
--
-- Returns 1 when the lock is ours and now expires ARGV[2] ms from now, 0 when it is not
-- ours (expired, taken by another flusher, or lost with Redis's data).
-- Clock: the server's (PEXPIRE counts from the server's own clock).

if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
