-- cancel.lua - release a hold without charging it.
--
--   EVALSHA <sha> 1 <tag>ver  id owner retain_s journal_maxlen
--
-- Answers {'cancelled'} when the hold was released now, {'unknown'} for an id
-- Redis does not know, {'forbidden'} for another owner's (owner '*' is any key: an
-- admin), and {'<state>'} (settled, cancelled, expired, released) for one that is no
-- longer held, changing nothing.
local id, owner, retain_s, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local h, old = load_hold(id)
if not h then return {'unknown'} end
if h[H_OW] ~= '' and owner ~= '*' and h[H_OW] ~= owner then return {'forbidden'} end
if h[H_ST] ~= 'held' then return {h[H_ST]} end
release_hold(h, now_us(), nil)
finish(id, h, 'cancelled', {}, retain_s, true, old)
journal(maxlen, 'cancel', id, '')
return {'cancelled'}
