-- policy_apply.lua: apply one committed policy change to Redis and announce it.
--
-- KEYS[1]  rules hash        fedtrack:{<ns>:policy}:rules   (domain -> created_at)
-- KEYS[2]  meta hash         fedtrack:{<ns>:policy}:meta    (version, policy, enabled)
-- ARGV[1]  version           the change's version from the database transaction
-- ARGV[2]  op                add | remove | flush | policy | enabled
-- ARGV[3]  value             domain (add/remove), ACCEPT/REJECT (policy), 1/0 (enabled)
-- ARGV[4]  created_at        unix seconds (add), else ""
-- ARGV[5]  channel           pub/sub channel to publish on
-- ARGV[6]  message           the JSON message to publish when applied
-- ARGV[7]  publish command   PUBLISH, or SPUBLISH on Redis Cluster
-- ARGV[8]  database identity of the database the change committed to (G11)
--
-- Returns 1 when applied and published, 0 when Redis already holds this version or a
-- newer one (nothing done), -1 when Redis is behind by more than one version (a change
-- is missing, or Redis lost its data): the caller then replaces the whole state from the
-- database with policy_replace.lua; -2 when the meta hash names another database
-- (nothing done). A meta hash written before identities existed adopts ARGV[8].
-- Clock: none (versions come from the database).

local version = tonumber(ARGV[1])
local meta = redis.call('HMGET', KEYS[2], 'version', 'database_id')
if meta[2] and meta[2] ~= ARGV[8] then
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
  redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
elseif op == 'remove' then
  redis.call('HDEL', KEYS[1], ARGV[3])
elseif op == 'flush' then
  redis.call('UNLINK', KEYS[1])
elseif op == 'policy' then
  redis.call('HSET', KEYS[2], 'policy', ARGV[3])
elseif op == 'enabled' then
  redis.call('HSET', KEYS[2], 'enabled', ARGV[3])
else
  return redis.error_reply('unknown policy op ' .. op)
end
redis.call('HSET', KEYS[2], 'version', version, 'database_id', ARGV[8])
redis.call(ARGV[7], ARGV[5], ARGV[6])
return 1
