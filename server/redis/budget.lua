-- budget.lua - set or delete one budget definition and tell every replica.
--
--   EVALSHA <sha> 1 <tag>ver  id definition
--
-- id "" hands out the next id (<tag>bid); definition "" deletes the budget. The
-- definitions hash and the version change in one step, and the new version is
-- PUBLISHed on channel <tag>budgets: replicas subscribed reload at once, and every
-- reserve carries the version it was checked against, so a replica that missed the
-- message is told 'stale' on its next hold. Answers {id, version}.
local id, def = ARGV[1], ARGV[2]
if #ARGV ~= 2 then return redis.error_reply('bad_request budget arguments') end
if id == '' then
  if def == '' then return redis.error_reply('bad_request budget id missing') end
  id = tostring(redis.call('INCR', tag .. 'bid'))
end
if def == '' then
  redis.call('HDEL', tag .. 'budgets', id)
else
  redis.call('HSET', tag .. 'budgets', id, def)
end
local version = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', tag .. 'budgets', version)
return {id, version}
