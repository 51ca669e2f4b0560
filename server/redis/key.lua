-- key.lua - store one API key (created or revoked) and tell every replica.
--
--   EVALSHA <sha> 1 <tag>ver  id entry
--
-- entry is the key as JSON text: its SHA-256, role, scope, label, times; never its
-- token. <tag>keys maps key id -> entry; <tag>kver counts changes, and 'k<kver>' is
-- PUBLISHed on <tag>budgets: subscribed replicas read the keys again. Answers
-- {kver}.
if #ARGV ~= 2 or ARGV[1] == '' or ARGV[2] == '' then
  return redis.error_reply('bad_request key arguments')
end
redis.call('HSET', tag .. 'keys', ARGV[1], ARGV[2])
local kver = redis.call('INCR', tag .. 'kver')
redis.call('PUBLISH', tag .. 'budgets', 'k' .. kver)
return {kver}
