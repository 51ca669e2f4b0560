-- cancel.lua - release a hold without charging it.
--
--   EVALSHA <sha> 1 <tag>ver  id owner retain_s journal_maxlen
--
-- Answers {'cancelled'} when the hold was released now, {'unknown'} for an id
-- Redis does not know, {'forbidden'} for another owner's (owner '*' is any key: an
-- admin), and {'<state>'} (settled, cancelled, expired, released) for one that is no
-- longer held, changing nothing.
local id, owner, retain_s, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local h = redis.call('HMGET', tag .. 'h:' .. id, 'st', 'd')
if not h[1] then return {'unknown'} end
local d = cjson.decode(h[2])
if d.ow and d.ow ~= '' and owner ~= '*' and d.ow ~= owner then return {'forbidden'} end
if h[1] ~= 'held' then return {h[1]} end
release_hold(d, now_us(), nil)
finish(id, d, 'cancelled', d.g or {}, retain_s)
journal(maxlen, 'cancel', id, '')
return {'cancelled'}
