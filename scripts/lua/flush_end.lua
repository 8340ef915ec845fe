-- flush_end.lua: end a closing epoch once the database committed it (fenced).
--
-- KEYS[1]   flushstate  fedtrack:{<ns>:<SS>}:flushstate
-- KEYS[2]   flushing    fedtrack:{<ns>:<SS>}:flushing
-- KEYS[3]   snap        fedtrack:{<ns>:<SS>}:snap
-- KEYS[4]   flushacks   fedtrack:{<ns>:<SS>}:flushacks
-- ARGV[1]   the fencing token of the flusher that committed it
--
-- Returns 1 ended (the epoch's keys are freed, in the background for large ones); 0 the
-- epoch belongs to another flusher now (a newer leader resumed it): nothing done, so a
-- stalled former leader can never end an epoch its successor is still reading.
-- Clock: none.

if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then
  return 0
end
redis.call('UNLINK', KEYS[2], KEYS[3], KEYS[4])
redis.call('DEL', KEYS[1])
return 1
