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
local h = load_hold(ARGV[1])
if not h then return {'unknown'} end
return {h[H_ST], h[H_OW], int(h[H_EX]), h[H_FACTS]}
