-- keyring.lua - every API key a replica must know, read in one atomic step.
--
--   EVALSHA <sha> 1 <tag>ver
--
-- Answers {kver, id1, entry1, id2, entry2, ...} (see key.lua).
if #ARGV ~= 0 then return redis.error_reply('bad_request keyring arguments') end
local reply = {redis.call('GET', tag .. 'kver') or '0'}
local all = redis.call('HGETALL', tag .. 'keys')
for i = 1, #all do reply[#reply + 1] = all[i] end
return reply
