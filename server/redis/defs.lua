-- defs.lua - every budget definition and the version they are at, read in one
-- atomic step (a replica's copy is then exactly that version).
--
--   EVALSHA <sha> 1 <tag>ver
--
-- Answers {version, id1, definition1, id2, definition2, ...}.
if #ARGV ~= 0 then return redis.error_reply('bad_request defs arguments') end
local reply = {redis.call('GET', KEYS[1]) or '0'}
local all = redis.call('HGETALL', tag .. 'budgets')
for i = 1, #all do reply[#reply + 1] = all[i] end
return reply
