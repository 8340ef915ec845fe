-- policy_replace.lua: replace the whole policy state with a database snapshot.
--
-- KEYS[1]  rules hash        fedtrack:{<ns>:policy}:rules   (domain -> created_at)
-- KEYS[2]  meta hash         fedtrack:{<ns>:policy}:meta    (version, policy, enabled)
-- ARGV[1]  version           version of the snapshot (from the database)
-- ARGV[2]  policy            ACCEPT | REJECT
-- ARGV[3]  enabled           1 | 0
-- ARGV[4]  channel           pub/sub channel to publish on
-- ARGV[5]  message           the JSON message to publish when replaced
-- ARGV[6..] domain, created_at, domain, created_at, ...
--
-- Returns 1 when replaced and published, 0 when Redis already holds this version or a
-- newer one (nothing done). Also used with the current version when the meta hash is
-- missing (Redis lost its data): a missing meta counts as version -1.
-- Clock: none (versions come from the database).

local version = tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[2], 'version') or '-1')
if version <= current then
  return 0
end
redis.call('DEL', KEYS[1])
for i = 6, #ARGV, 2000 do
  local last = math.min(i + 1999, #ARGV)
  redis.call('HSET', KEYS[1], unpack(ARGV, i, last))
end
redis.call('HSET', KEYS[2], 'version', version, 'policy', ARGV[2], 'enabled', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
