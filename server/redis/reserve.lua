-- reserve.lua - hold an amount on every matching budget's counter, all or nothing.
--
--   EVALSHA <sha> 1 <tag>ver  version id request_id ttl_us tz_offset_s owner
--           journal_detail hold_facts hold_group journal_maxlen n  then n times:
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
-- counter's held grows by its amount, the reservation is written (one SET NX of
-- <tag>hd:<id>, see "Holds" in common.lua) with its expiry in <tag>hx, and the answer is {'ok', id, expires_us, used1, held1, resets1, ...}.
-- journal_detail (the check's decision, packed: server/redis_ledger.h) is journaled once:
-- as 'reserve', or as 'refuse' when a counter refused (the policies allowed, the
-- counters did not). hold_facts (what the hold is for, a few short fields; see
-- server/redis_ledger.h) is kept with the hold: hold.lua reads it for a settle
-- through another replica. hold_group is the hourly rollups' group of what the hold
-- is for (JSON text), under which its settle or expiry is rolled up. Numbers in the
-- answers are integers.
local version, id, request_id = ARGV[1], ARGV[2], ARGV[3]
local ttl_us, off = tonumber(ARGV[4]), tonumber(ARGV[5])
local owner, detail, facts, group = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local maxlen, n = ARGV[10], tonumber(ARGV[11])
if not ttl_us or ttl_us <= 0 or not off or not n or n < 0 or #ARGV ~= 11 + 7 * n then
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
    local h = load_hold(prior)
    -- the repeated check is journaled, naming the first hold: the reservation is
    -- the journal record's 20th field (DSC_REDIS_JOURNAL_FIELDS, server/redis_ledger.h)
    local f = detail ~= '' and unpack_fields(detail)
    if f and f[20] then
      f[20] = prior
      journal(maxlen, 'decision', id, pack_fields(f))
    end
    return {'repeat', prior, h and h[H_ST] or 'expired', h and int(h[H_EX]) or '0'}
  end
end
local current = redis.call('GET', KEYS[1]) or '0'
if current ~= version then return unclaimed({'stale', current}) end

local now = now_us()
local expires = now + ttl_us
local reply = {'ok', id, expires} -- numbers: Redis writes an integer's digits
local rec = {'held', owner, expires, request_id, off, group, facts, {}}
for i = 1, n do
  local b = 11 + (i - 1) * 7
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
  local c = H_C + (i - 1) * 6
  rec[c], rec[c + 1], rec[c + 2] = ARGV[b + 1], w.k, w.s
  rec[c + 3], rec[c + 4], rec[c + 5] = w.r, m, a
  reply[3 * i + 1] = used
  reply[3 * i + 2] = held + a
  reply[3 * i + 3] = resets
end

-- the reservation id is claimed in the step that writes it: one in use holds nothing
if not redis.call('SET', tag .. 'hd:' .. id, cmsgpack.pack(rec), 'NX') then
  return unclaimed(redis.error_reply('bad_request reservation id in use'))
end
for c = H_C, #rec, 6 do redis.call('HINCRBY', tag .. 'c:' .. rec[c], 'h', int(rec[c + 5])) end
redis.call('ZADD', tag .. 'hx', reply[3], id)
journal(maxlen, 'reserve', id, detail)
return reply
