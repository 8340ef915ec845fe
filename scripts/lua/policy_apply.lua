-- policy_apply.lua: apply one committed policy change to Redis and announce it.
--
-- KEYS[1]  rules hash        fedtrack:{<ns>:policy}:rules   (rule text -> JSON record)
-- KEYS[2]  meta hash         fedtrack:{<ns>:policy}:meta    (version, policy, enabled,
--                                                            database_id)
-- ARGV[1]  version           the change's version from the database transaction
-- ARGV[2]  op                add | remove | expire | flush | policy | enabled
-- ARGV[3]  value             ACCEPT/REJECT (policy), 1/0 (enabled), else ""
-- ARGV[4]  channel           pub/sub channel to publish on
-- ARGV[5]  message           the JSON message to publish when applied
-- ARGV[6]  publish command   PUBLISH, or SPUBLISH on Redis Cluster
-- ARGV[7]  database identity of the database the change committed to (G11)
-- ARGV[8…] add: rule text, record, rule text, record, … (each overwrites: a re-added
--          rule's new fields must reach Redis); remove / expire: the rule texts
--          (at most 1,000 rules per call)
--
-- Returns 1 when applied and published, 0 when Redis already holds this version or a
-- newer one (nothing done), -1 when Redis is behind by more than one version (a change
-- is missing, or Redis lost its data): the caller then replaces the whole state from the
-- database with policy_replace.lua; -2 when the meta hash names another database
-- (nothing done). A meta hash written before identities existed adopts ARGV[7].
-- Clock: none (versions come from the database).

local version = tonumber(ARGV[1])
local meta = redis.call('HMGET', KEYS[2], 'version', 'database_id')
if meta[2] and meta[2] ~= ARGV[7] then
  return -2
end
local current = tonumber(meta[1] or '0')
if not meta[1] then
  return -1
end
if version <= current then
  return 0
end
if version ~= current + 1 then
  return -1
end
local op = ARGV[2]
if op == 'add' then
  if #ARGV < 9 then
    return redis.error_reply('add without a rule')
  end
  redis.call('HSET', KEYS[1], unpack(ARGV, 8))
elseif op == 'remove' or op == 'expire' then
  if #ARGV >= 8 then
    redis.call('HDEL', KEYS[1], unpack(ARGV, 8))
  end
elseif op == 'flush' then
  redis.call('UNLINK', KEYS[1])
elseif op == 'policy' then
  redis.call('HSET', KEYS[2], 'policy', ARGV[3])
elseif op == 'enabled' then
  redis.call('HSET', KEYS[2], 'enabled', ARGV[3])
else
  return redis.error_reply('unknown policy op ' .. op)
end
redis.call('HSET', KEYS[2], 'version', version, 'database_id', ARGV[7])
redis.call(ARGV[6], ARGV[4], ARGV[5])
return 1
