-- charge.lua - what the scripts that charge or release a hold share (settle, cancel,
-- sweep): writing a counter from what advance read, a hold's release, a finished
-- reservation's record, the hourly rollups. The build (server/redis/embed.cmake)
-- puts it after common.lua in front of those three scripts only: every helper here
-- is a closure made at each call, which the scripts that only read or hold (a
-- reserve, a state read, the rest) do not pay for.

-- Add amount (may be negative: a correction) to counter key at now, after advance.
-- A calendar or rate counter never goes below zero. Answers the counter's used
-- after it for a calendar window (what HINCRBY answered), nil otherwise.
local function add_used(key, w, now, amount, used)
  if w.k == 'rolling' then
    if amount ~= 0 then
      redis.call('HINCRBY', key, 'b' .. int(math.floor(now / math.floor(w.s / 30))), int(amount))
    end
    return nil
  end
  if amount == 0 then return used end
  local u = redis.call('HINCRBY', key, 'u', int(amount))
  if u < 0 then
    redis.call('HSET', key, 'u', 0)
    u = 0
  end
  return u
end

-- Write what advance read back changed, in one HSET: held grows by dh, and used by
-- charge (may be negative: a correction; a calendar or rate counter never goes below
-- zero, a rolling one is charged in its head bucket, whose value advance answered as
-- at_head). The same as HINCRBY of each, one call instead of two. Answers the
-- counter's used, held and reset time after it; the reset time is nil when it
-- cannot be told without reading again (a rate window, a rolling window whose
-- oldest charged bucket was emptied). The rest are what advance answered.
local function put_counter(key, w, now, used, resets, held, at_head, raw, oldest, dh, charge)
  local h = held + dh
  if w.k == 'rolling' then
    if charge == 0 then
      redis.call('HSET', key, 'h', int(h))
      return used, h, resets
    end
    local width = math.floor(w.s / 30)
    local head = math.floor(now / width)
    local v = at_head + charge
    redis.call('HSET', key, 'h', int(h), 'b' .. int(head), int(v))
    if v > 0 then
      oldest = oldest or head
    elseif oldest == head then
      return nil, h, nil
    end
    raw = raw + charge
    if oldest then resets = math.ceil((oldest + 30 + 1) * width / 1000000) end
    return raw > 0 and raw or 0, h, resets
  end
  local calendar = is_calendar(w)
  if charge == 0 then
    redis.call('HSET', key, 'h', int(h))
    return used, h, calendar and resets or nil
  end
  local u = used + charge
  if u < 0 then u = 0 end
  redis.call('HSET', key, 'h', int(h), 'u', int(u))
  return u, h, calendar and resets or nil
end

-- Counters a script has brought to now and changed since, by key: {used, resets,
-- held, tz_offset} as they are after the change, so that an answer about the same
-- counter needs no second read (a rate counter's, or a rolling one's whose oldest
-- charged bucket was emptied, are read again).
local known = {}

-- Bring counter key to now and change it: held += dh, used += charge. Answers its
-- used and held after it, and remembers them in known.
local function touch(key, w, off, now, dh, charge)
  local used, resets, held, at_head, raw, oldest = advance(key, w, off, now)
  local h
  used, h, resets = put_counter(key, w, now, used, resets, held, at_head or 0, raw, oldest, dh,
                                charge)
  if resets then known[key] = {used, resets, h, off} end
  return used, h
end

-- Charge or release every counter of held reservation rec at now: used += charge[m]
-- (the metric's charge, a table indexed by metric), held -= what was held. (rec[5]
-- is H_TZ, the counters start at H_C = 9: see "Cost" above.)
local function release_hold(rec, now, charge)
  local off = rec[5]
  for i = 9, #rec, 6 do
    touch(tag .. 'c:' .. rec[i], {k = rec[i + 1], s = rec[i + 2], r = rec[i + 3]}, off, now,
          -rec[i + 5], charge and charge[rec[i + 4] + 1] or 0)
  end
end

-- What a reservation was charged: seven amounts (zeros while held).
local function charged_of(rec)
  local g, out = rec[8], {} -- H_CHARGED
  for m = 1, 7 do out[m] = tonumber(g[m]) or 0 end
  return out
end

-- The reservation's record after it leaves the held state, kept retain_s seconds in
-- one SET: its state and what it was charged. A settled one keeps no counters (its
-- first H_C - 1 fields): whatever asks again (a repeated settle, a cancel, hold.lua,
-- a repeated request id) is answered from its state, owner, expiry, facts and
-- charges, and a smaller record is less to pack, write and log. A cancelled, expired
-- or released one keeps them for a late settle's difference. was_held: it leaves its
-- expiry set (<tag>exp for a hold of the previous scripts, old, whose hash is deleted).
local function finish(id, rec, state, charged, retain_s, was_held, old)
  local keep = math.max(tonumber(retain_s) or 600, 1)
  local g = {}
  for m = 1, 7 do g[m] = tonumber(charged[m]) or 0 end
  local out = rec
  if state == 'settled' then -- H_ST, H_OW, H_EX, H_RQ, H_TZ, H_GROUP, H_FACTS, H_CHARGED
    out = {state, rec[2], rec[3], rec[4], rec[5], rec[6], rec[7], g}
  else
    rec[1], rec[8] = state, g
  end
  redis.call('SET', tag .. 'hd:' .. id, cmsgpack.pack(out), 'EX', keep)
  if was_held then redis.call('ZREM', tag .. (old and 'exp' or 'hx'), id) end
  if old then redis.call('DEL', tag .. 'h:' .. id) end
  if rec[4] ~= '' then redis.call('EXPIRE', tag .. 'rq:' .. rec[4], keep) end -- H_RQ
end

-- Hourly rollups: what reports and a new budget's past usage read. <tag>ru:<hour>
-- (hour: unix seconds of its start, by Redis TIME) is a hash whose fields are JSON
-- arrays {org, team, user, key, provider, model, purpose} (a charge's subject and
-- what its hold was for) and whose values are the 7 metrics' sums of that hour's
-- charges, "v1,...,v7" (micro-units; a late settle's correction may be negative).
-- Each hour's hash is kept 400 days (a year's window and then some) from its first
-- charge.
-- An hour's sums are read with one match and written with one format: no table and
-- no string per metric.
local function rollup(now, group, charge)
  local SUMS = '^(%-?%d+),(%-?%d+),(%-?%d+),(%-?%d+),(%-?%d+),(%-?%d+),(%-?%d+)$'
  if not group or group == '' then return end
  local c = {}
  local any = false
  for m = 1, 7 do
    c[m] = tonumber(charge[m]) or 0
    any = any or c[m] ~= 0
  end
  if not any then return end
  -- the hour's start in unix seconds (3600 * 1000000 µs an hour)
  local key = tag .. 'ru:' .. int(math.floor(now / 3600000000) * 3600)
  local old = redis.call('HGET', key, group)
  if old then
    local v1, v2, v3, v4, v5, v6, v7 = string.match(old, SUMS)
    if v1 then
      c[1], c[2], c[3], c[4] = c[1] + v1, c[2] + v2, c[3] + v3, c[4] + v4
      c[5], c[6], c[7] = c[5] + v5, c[6] + v6, c[7] + v7
    end
  end
  redis.call('HSET', key, group, string.format('%d,%d,%d,%d,%d,%d,%d', c[1], c[2], c[3], c[4],
                                                c[5], c[6], c[7]))
  if not old then redis.call('EXPIRE', key, 34560000) end -- 400 days
end
