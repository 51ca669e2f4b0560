-- hold.lua - what a reservation was for, for a settle through any replica.
--
--   EVALSHA <sha> 1 <tag>ver  id
--
-- Answers {'unknown'} for an id Redis does not know (never reserved, or forgotten
-- after retain_s), else {state, owner, expires_us, facts}: facts are what the hold
-- is for (subject, provider, model, zone, purpose; server/redis_ledger.h packs
-- them), '' when it was charged without a hold. A hold taken by an earlier version
-- has the journal text of its check (JSON) there instead.
if #ARGV ~= 1 then return redis.error_reply('bad_request hold arguments') end
local h = redis.call('HMGET', tag .. 'h:' .. ARGV[1], 'st', 'd', 'j')
if not h[1] then return {'unknown'} end
local d = cjson.decode(h[2])
return {h[1], d.ow or '', d.ex or '0', h[3] or ''}
