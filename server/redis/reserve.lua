-- reserve.lua - hold an amount on every matching budget's counter, all or nothing.
--
--   EVALSHA <sha> 1 <tag>ver  version id request_id ttl_us tz_offset_s owner
--           journal_detail hold_facts journal_maxlen n  then n times:
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
-- journal_detail (the check's decision, packed: server/redis_ledger.h) is journaled once:
-- as 'reserve', or as 'refuse' when a counter refused (the policies allowed, the
-- counters did not). hold_facts (what the hold is for, a few short fields; see
-- server/redis_ledger.h) is kept with the hold: hold.lua reads it for a settle
-- through another replica. Numbers in the answers are integers.
local version, id, request_id = ARGV[1], ARGV[2], ARGV[3]
local ttl_us, off = tonumber(ARGV[4]), tonumber(ARGV[5])
local owner, detail, facts, maxlen, n = ARGV[6], ARGV[7], ARGV[8], ARGV[9], tonumber(ARGV[10])
if not ttl_us or ttl_us <= 0 or not off or not n or n < 0 or #ARGV ~= 10 + 7 * n then
  return redis.error_reply('bad_request reserve arguments')
end

-- The request id is claimed in the same call that looks it up (SET NX GET): an
-- answer that holds nothing (stale, refused, an error) gives the claim back.
local rq = request_id ~= '' and tag .. 'rq:' .. request_id
local function unclaimed(r)
  if rq then redis.call('DEL', rq) end
  return r
end
if rq then
  local prior = redis.call('SET', rq, id, 'NX', 'GET')
  if prior then
    local h = redis.call('HMGET', tag .. 'h:' .. prior, 'st', 'd')
    local ex = h[2] and cjson.decode(h[2]).ex or '0'
    -- the repeated check is journaled, naming the first hold: the reservation is
    -- the journal record's 20th field (DSC_REDIS_JOURNAL_FIELDS, server/redis_ledger.h)
    local f = detail ~= '' and unpack_fields(detail)
    if f and f[20] then
      f[20] = prior
      journal(maxlen, 'decision', id, pack_fields(f))
    end
    return {'repeat', prior, h[1] or 'expired', ex}
  end
end
if redis.call('EXISTS', tag .. 'h:' .. id) == 1 then
  return unclaimed(redis.error_reply('bad_request reservation id in use'))
end
local current = redis.call('GET', KEYS[1]) or '0'
if current ~= version then return unclaimed({'stale', current}) end

local now = now_us()
local expires = now + ttl_us
local reply = {'ok', id, int(expires)}
local held_c = {}
for i = 1, n do
  local b = 10 + (i - 1) * 7
  local w = {k = ARGV[b + 2], s = tonumber(ARGV[b + 3]), r = tonumber(ARGV[b + 4])}
  local l, a, m = tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7])
  if not l or not a or a < 0 or not m or not w.s or not w.r then
    return unclaimed(redis.error_reply('bad_request counter ' .. i))
  end
  local used, resets, held = advance(tag .. 'c:' .. ARGV[b + 1], w, off, now)
  if used + held + a > l then
    if detail ~= '' then journal(maxlen, 'refuse', id, detail) end
    return unclaimed({'refused', i, used, held, resets})
  end
  held_c[i] = {n = ARGV[b + 1], k = w.k, s = int(w.s), r = int(w.r), m = m, a = int(a)}
  reply[3 * i + 1] = used
  reply[3 * i + 2] = held + a
  reply[3 * i + 3] = resets
end

for _, c in ipairs(held_c) do redis.call('HINCRBY', tag .. 'c:' .. c.n, 'h', c.a) end
local d = {c = held_c, tz = off, rq = request_id, ow = owner, ex = reply[3]}
redis.call('HSET', tag .. 'h:' .. id, 'st', 'held', 'd', cjson.encode(d), 'j', facts)
redis.call('ZADD', tag .. 'exp', reply[3], id)
journal(maxlen, 'reserve', id, detail)
return reply
