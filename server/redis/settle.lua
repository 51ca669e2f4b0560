-- settle.lua - replace a hold by the actual usage; idempotent by reservation id.
--
--   EVALSHA <sha> 1 <tag>ver  id owner retain_s journal_detail journal_maxlen
--           actual_1 .. actual_7  tz_offset_s n  then n times:
--           counter kind span_us rate_micro metric
--
-- actual_m is the usage of metric m (dsc_metric order, integer micro-units).
-- A held reservation: every counter's hold is released and actual charged; the
-- answer is {'settle', charged_1..7}. Settled already (through any replica):
-- nothing changes, {'repeated', charged_1..7}. Cancelled, expired or released: the
-- difference between actual and what it was charged is charged now, {'late', ...}.
-- Unknown (never reserved, or forgotten after retain_s): the n counters given are
-- charged directly, {'unreserved', ...}, or {'unknown'} when n is 0 and no subject's
-- group (journal_detail) is given. A reservation
-- taken by another owner key answers {'forbidden'} (owner '*' is any key: an admin).
-- Every finished reservation is kept retain_s seconds so a repeated settle answers the same on every replica.
-- What is charged goes to the hour's rollup (common.lua), under the group of the
-- check that took the hold; an unknown id's under journal_detail, the group of the
-- subject charged (a JSON array, as rollup keeps it).
-- After the charges of every answer but 'unknown' and 'forbidden' come the n given
-- counters as of now (used_i, held_i, resets_i, after this settle): the settle
-- reply's budget states, without a state.lua call of their own.
local id, owner, retain_s, detail, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local actual = {}
for m = 1, 7 do
  actual[m] = tonumber(ARGV[5 + m])
  if not actual[m] or actual[m] < 0 then return redis.error_reply('bad_request actual ' .. m) end
end
local off, n = tonumber(ARGV[13]), tonumber(ARGV[14])
if not off or not n or n < 0 or #ARGV ~= 14 + 5 * n then
  return redis.error_reply('bad_request settle arguments')
end

local now = now_us()

-- What is charged and how (kind), by the reservation's state; then the answer.
local kind, charged
local h, old = load_hold(id)
if not h then
  if n == 0 and detail == '' then return {'unknown'} end
  local rec = {'settling', owner, now, '', off, detail, '', {}}
  for i = 1, n do
    local b = 14 + (i - 1) * 5
    local c = H_C + (i - 1) * 6
    rec[c], rec[c + 1], rec[c + 2] = ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3])
    rec[c + 3], rec[c + 4], rec[c + 5] = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), 0
    if not rec[c + 2] or not rec[c + 3] or not rec[c + 4] then
      return redis.error_reply('bad_request counter ' .. i)
    end
  end
  release_hold(rec, now, actual)
  finish(id, rec, 'settled', actual, retain_s, false, false)
  journal(maxlen, 'settle', id, detail)
  rollup(now, detail, actual)
  kind, charged = 'unreserved', actual
elseif h[H_OW] ~= '' and owner ~= '*' and h[H_OW] ~= owner then
  return {'forbidden'}
elseif h[H_ST] == 'settled' then
  kind, charged = 'repeated', charged_of(h)
else
  -- what is charged now: actual less what was charged before (nothing, while held)
  local delta, before = actual, h[H_CHARGED]
  for m = 1, 7 do
    if (tonumber(before[m]) or 0) ~= 0 then
      local was = charged_of(h)
      delta = {}
      for k = 1, 7 do delta[k] = actual[k] - was[k] end
      break
    end
  end
  local held = h[H_ST] == 'held'
  if held then
    release_hold(h, now, delta)
  else
    for c = H_C, #h, 6 do
      local key, w = tag .. 'c:' .. h[c], {k = h[c + 1], s = h[c + 2], r = h[c + 3]}
      local used = advance(key, w, h[H_TZ], now)
      add_used(key, w, now, delta[h[c + 4] + 1] or 0, used)
    end
  end
  finish(id, h, 'settled', actual, retain_s, held, old)
  journal(maxlen, 'settle', id, detail)
  rollup(now, h[H_GROUP], delta)
  kind, charged = held and 'settle' or 'late', actual
end

-- The charges (integer replies: no string to format), then each given counter's
-- used, held and reset time: from what this call wrote (known), else read.
local r = {kind}
for m = 1, 7 do r[m + 1] = charged[m] or 0 end
for i = 1, n do
  local b = 14 + (i - 1) * 5
  local key = tag .. 'c:' .. ARGV[b + 1]
  local k = known[key]
  local used, resets, held
  if k and k[4] == off then
    used, resets, held = k[1], k[2], k[3]
  else
    local w = {k = ARGV[b + 2], s = tonumber(ARGV[b + 3]), r = tonumber(ARGV[b + 4])}
    if not w.s or not w.r then return redis.error_reply('bad_request counter ' .. i) end
    used, resets, held = advance(key, w, off, now)
  end
  r[#r + 1] = used
  r[#r + 1] = held
  r[#r + 1] = resets
end
return r
