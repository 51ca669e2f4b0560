-- hold.lua - what a reservation was for, for a settle through any replica.
--
--   EVALSHA <sha> 1 <tag>ver  id
--
-- Answers {'unknown'} for an id Redis does not know (never reserved, or forgotten
-- after retain_s), else {state, owner, expires_us, detail}: detail is the journal
-- text of the check that took it (subject, provider, model, zone, purpose), ''
-- when it was charged without a hold.
if #ARGV ~= 1 then return redis.error_reply('bad_request hold arguments') end
local h = redis.call('HMGET', tag .. 'h:' .. ARGV[1], 'st', 'd', 'j')
if not h[1] then return {'unknown'} end
local d = cjson.decode(h[2])
return {h[1], d.ow or '', d.ex or '0', h[3] or ''}
