-- policy_replace.lua: replace the whole policy state with a database snapshot whose rules
-- the caller has already written, in small HSET batches, into a staging hash.
--
-- KEYS[1]  rules hash        fedtrack:{<ns>:policy}:rules            (rule text -> record)
-- KEYS[2]  meta hash         fedtrack:{<ns>:policy}:meta             (version, policy, enabled,
--                                                                     database_id)
-- KEYS[3]  staging hash      fedtrack:{<ns>:policy}:staging:<token>  (the snapshot's rules;
--                                                                     may be absent: no rules)
-- ARGV[1]  version           version of the snapshot (from the database)
-- ARGV[2]  policy            ACCEPT | REJECT
-- ARGV[3]  enabled           1 | 0
-- ARGV[4]  channel           pub/sub channel to publish on
-- ARGV[5]  message           the JSON message to publish when replaced
-- ARGV[6]  publish command   PUBLISH, or SPUBLISH on Redis Cluster
-- ARGV[7]  database identity of the snapshot's database (G11)
--
-- Returns 1 when replaced and published; 0 when Redis already holds this version or a
-- newer one (nothing done, the staging hash is deleted); -2 when the meta hash names
-- another database (nothing done, staging deleted). A missing meta counts as version -1.
-- The staging hash carries a TTL while it is written (a writer that dies mid-way leaves
-- nothing behind for long); the swapped-in hash is made persistent.
-- The old rules hash is UNLINKed (freed in the background), so the call stays short
-- whatever the number of rules.
-- Clock: none (versions come from the database).

local version = tonumber(ARGV[1])
local meta = redis.call('HMGET', KEYS[2], 'version', 'database_id')
local current = tonumber(meta[1] or '-1')
if meta[2] and meta[2] ~= ARGV[7] then
  redis.call('UNLINK', KEYS[3])
  return -2
end
if version <= current then
  redis.call('UNLINK', KEYS[3])
  return 0
end
redis.call('UNLINK', KEYS[1])
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('RENAME', KEYS[3], KEYS[1])
  redis.call('PERSIST', KEYS[1])  -- the staging hash had a TTL in case its writer died
end
redis.call('HSET', KEYS[2], 'version', version, 'policy', ARGV[2], 'enabled', ARGV[3],
  'database_id', ARGV[7])
redis.call(ARGV[6], ARGV[4], ARGV[5])
return 1
