-- reserve.lua - hold an amount on every matching budget's counter, all or nothing.
--
--   EVALSHA <sha> 1 <tag>ver  version id request_id ttl_us tz_offset_s owner
--           journal_detail journal_maxlen n  then n times:
--           counter kind span_us rate_micro limit amount metric
--
-- The replica resolves which budgets match the subject from its copy of the budget
-- definitions and passes their counters; version is the budgets version that copy
-- was read at. A different version in Redis answers {'stale', version}: the replica
-- reloads the definitions and asks again, so a hold is never checked against a
-- limit that changed. A request_id seen before answers {'repeat', id, state,
-- expires_us} without holding twice, whichever replica took the first one; its
-- decision is journaled (event 'decision') naming that first reservation.
-- Otherwise every counter is brought to now (Redis TIME) and checked: when any
-- would exceed its limit nothing is held and the answer is {'refused', i, used,
-- held, resets_at} for the first counter i (1-based) that would; when all fit each
-- counter's held grows by its amount, the reservation is written with its expiry in
-- <tag>exp, and the answer is {'ok', id, expires_us, used1, held1, resets1, ...}.
-- journal_detail (the check's decision, JSON text) is kept with the hold (hold.lua
-- reads it for a settle through another replica) and journaled: as 'reserve', or
-- as 'refuse' when a counter refused (the policies allowed, the counters did not).
local version, id, request_id = ARGV[1], ARGV[2], ARGV[3]
local ttl_us, off = tonumber(ARGV[4]), tonumber(ARGV[5])
local owner, detail, maxlen, n = ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9])
if not ttl_us or ttl_us <= 0 or not off or not n or n < 0 or #ARGV ~= 9 + 7 * n then
  return redis.error_reply('bad_request reserve arguments')
end

if request_id ~= '' then
  local prior = redis.call('GET', tag .. 'rq:' .. request_id)
  if prior then
    local h = redis.call('HMGET', tag .. 'h:' .. prior, 'st', 'd')
    local ex = h[2] and cjson.decode(h[2]).ex or '0'
    if detail ~= '' then -- the repeated check is journaled, naming the first hold
      local named = string.gsub(detail, '"reservation_id":"' .. id .. '"',
                                '"reservation_id":"' .. prior .. '"', 1)
      journal(maxlen, 'decision', id, named)
    end
    return {'repeat', prior, h[1] or 'expired', ex}
  end
end
if redis.call('EXISTS', tag .. 'h:' .. id) == 1 then
  return redis.error_reply('bad_request reservation id in use')
end
local current = redis.call('GET', KEYS[1]) or '0'
if current ~= version then return {'stale', current} end

local now = now_us()
local counters, out = {}, {}
for i = 1, n do
  local b = 9 + (i - 1) * 7
  local c = {n = ARGV[b + 1], w = {k = ARGV[b + 2], s = tonumber(ARGV[b + 3]),
             r = tonumber(ARGV[b + 4])}, l = tonumber(ARGV[b + 5]), a = tonumber(ARGV[b + 6]),
             m = tonumber(ARGV[b + 7])}
  if not c.l or not c.a or c.a < 0 or not c.m or not c.w.s or not c.w.r then
    return redis.error_reply('bad_request counter ' .. i)
  end
  local key = tag .. 'c:' .. c.n
  local used, resets, held = advance(key, c.w, off, now)
  if used + held + c.a > c.l then
    if detail ~= '' then journal(maxlen, 'refuse', id, detail) end
    return {'refused', i, int(used), int(held), int(resets)}
  end
  counters[i] = c
  out[#out + 1] = int(used)
  out[#out + 1] = int(held + c.a)
  out[#out + 1] = int(resets)
end

local expires = now + ttl_us
local d = {c = {}, tz = off, rq = request_id, ow = owner, ex = int(expires)}
for i, c in ipairs(counters) do
  redis.call('HINCRBY', tag .. 'c:' .. c.n, 'h', int(c.a))
  d.c[i] = {n = c.n, k = c.w.k, s = int(c.w.s), r = int(c.w.r), m = c.m, a = int(c.a)}
end
redis.call('HSET', tag .. 'h:' .. id, 'st', 'held', 'd', cjson.encode(d), 'j', detail)
redis.call('ZADD', tag .. 'exp', int(expires), id)
if request_id ~= '' then redis.call('SET', tag .. 'rq:' .. request_id, id) end
journal(maxlen, 'reserve', id, detail)
local reply = {'ok', id, int(expires)}
for _, v in ipairs(out) do reply[#reply + 1] = v end
return reply
