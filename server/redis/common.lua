-- common.lua - what every discern ledger script shares: keys, the clock, windows,
-- reading counters, the journal and reading holds. The build (server/redis/embed.cmake,
-- which generates redis_scripts.c) puts this text in front of each script for SCRIPT
-- LOAD, so each EVALSHA body is self-contained and the helpers exist once; the
-- scripts that charge or release a hold (settle, cancel, sweep) also get charge.lua,
-- its writing helpers, between this text and their own.
--
-- Keys. KEYS[1] is always "<tag>ver", the budgets' version counter, where <tag> is
-- "{<prefix>}" (prefix "discern:" by default): every key of one deployment shares
-- that hash tag, so they sit in one Redis Cluster slot and a script may touch any
-- of them. Derived keys:
--   <tag>ver            budgets version (INCR on every change, PUBLISHed)
--   <tag>budgets        hash: budget id -> definition (JSON text)
--   <tag>bid            last budget id handed out
--   <tag>c:<counter>    hash: one counter (u used, h held, p period start / t last
--                       refill / b<index> rolling buckets)
--   <tag>hd:<id>        string: one reservation, a MessagePack array (see "Holds"
--                       below): state, owner, expiry, counters, what it was for
--   <tag>hx             sorted set: held reservation ids by expiry (unix µs)
--   <tag>h:<id>, <tag>exp  the same as written by the previous scripts (a hash st,
--                       d JSON, g JSON, j; its own expiry set): still read, settled,
--                       cancelled and swept, and rewritten as hd when finished
--   <tag>rq:<request>   request id -> reservation id (idempotent checks)
--   <tag>journal        stream: the decision journal of every replica (capped)
--   <tag>keys           hash: API key id -> its entry (hash, role, scope; no token)
--   <tag>kver           API keys version (INCR on every change)
--
-- The clock. Every script reads Redis TIME: windows reset and holds expire by the
-- Redis server's clock, the one clock all replicas share.
--
-- Numbers. Redis Lua numbers are doubles: amounts (integer micro-units) are exact
-- up to 2^53 µ (9e9 API units) per counter.
--
-- Cost. This text runs at every call, before the script's own: each helper below is
-- a closure made anew, and each local a helper names is an upvalue it captures, a
-- call (the scripts' hot paths are what Redis spends a decision on). So the helpers
-- write the constants below as numbers (US 1000000, DAY 86400, BUCKETS 30, the
-- hold's fields H_* 1..9): the names are for the scripts' own code, where a local is
-- a register. Measured, 13 constants fewer captured cut 7 000 of the ~29 000
-- instructions this text costs a call.
local tag = string.sub(KEYS[1], 1, -4)
local US = 1000000
local DAY = 86400
local BUCKETS = 30

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function int(x)
  return string.format('%d', x)
end

-- The calendar period [start, end) in unix seconds of kind containing t (seconds),
-- in a fixed offset off (seconds east of UTC). Days are counted from 1970-01-01 in
-- the proleptic Gregorian calendar (Howard Hinnant's civil_from_days), with integer
-- divisions written as (a - a % b) / b: no function call on the hot path. A month
-- has 31 and 30 days in turn from January, again from August (February apart):
-- 30 + (m + m // 8) % 2, arithmetic rather than a table made at every call.
local function period(kind, off, t)
  local x = t + off
  local z = (x - x % 86400) / 86400
  local zs, ze
  if kind == 'day' then
    zs, ze = z, z + 1
  elseif kind == 'week' then
    zs = z - ((z + 3) % 7) -- 1970-01-01 was a Thursday; weeks start on Monday
    ze = zs + 7
  else
    local zz = z + 719468
    local era = (zz - zz % 146097) / 146097
    local doe = zz - era * 146097
    local a = doe - (doe - doe % 1460) / 1460 + (doe - doe % 36524) / 36524 - (doe - doe % 146096) / 146096
    local yoe = (a - a % 365) / 365
    local doy = doe - (365 * yoe + (yoe - yoe % 4) / 4 - (yoe - yoe % 100) / 100)
    local b = 5 * doy + 2
    local mp = (b - b % 153) / 153
    local c = 153 * mp + 2
    local mday = doy - (c - c % 5) / 5 -- 0-based day of the month
    local m = mp < 10 and mp + 3 or mp - 9
    local y = yoe + era * 400
    if m <= 2 then y = y + 1 end
    local leap = (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
    if kind == 'month' then
      zs = z - mday
      ze = zs + (m == 2 and (leap and 29 or 28) or 30 + (m + (m - m % 8) / 8) % 2)
    else
      zs = z - mday
      for k = 1, m - 1 do
        zs = zs - (k == 2 and (leap and 29 or 28) or 30 + (k + (k - k % 8) / 8) % 2)
      end
      ze = zs + (leap and 366 or 365)
    end
  end
  return zs * 86400 - off, ze * 86400 - off
end

-- A window as the caller describes it: {k = kind, s = span_us, r = rate_micro}.
local function is_calendar(w)
  return w.k == 'day' or w.k == 'week' or w.k == 'month' or w.k == 'year'
end

-- The period last computed of each kind in this call, {off, now, start, end}:
-- every counter of one call is brought to the same now (one TIME per script), so a
-- subject's several budgets of one kind and offset compute its period once.
local periods = {}
local function period_now(kind, off, now)
  local p = periods[kind]
  if p and p[1] == off and p[2] == now then return p[3], p[4] end
  local s, e = period(kind, off, math.floor(now / 1000000))
  periods[kind] = {off, now, s, e}
  return s, e
end

-- Bring counter key to now: reset a calendar period, drop rolling buckets that left
-- the window, refill a token bucket. Returns used (>= 0), when it next goes down
-- (unix seconds) and what is held on it, read in the same call (each redis.call
-- costs a few µs: the hot path counts them). A rolling window also answers its head
-- bucket's value, the sum of its buckets (may be below zero after a correction) and
-- the oldest bucket holding a charge (nil: none), which put_counter goes on from.
local function advance(key, w, off, now)
  if is_calendar(w) then
    local s, e = period_now(w.k, off, now)
    local f = redis.call('HMGET', key, 'u', 'p', 'h')
    local held = tonumber(f[3]) or 0
    if tonumber(f[2]) ~= s then
      redis.call('HSET', key, 'u', 0, 'p', s)
      return 0, e, held
    end
    local used = tonumber(f[1]) or 0
    return used > 0 and used or 0, e, held
  elseif w.k == 'rolling' then
    local width = math.floor(w.s / 30)
    local head = math.floor(now / width)
    local all = redis.call('HGETALL', key)
    local used, oldest, held, at_head = 0, nil, 0, 0
    for i = 1, #all, 2 do
      local f = all[i]
      if f == 'h' then
        held = tonumber(all[i + 1]) or 0
      elseif string.byte(f) == 98 then -- 'b<index>': a bucket
        local idx = tonumber(string.sub(f, 2))
        if not idx then -- not a bucket's name: left alone
        elseif idx < head - 30 then
          redis.call('HDEL', key, f)
        else
          local v = tonumber(all[i + 1]) or 0
          used = used + v
          if idx == head then at_head = v end
          if v > 0 and (not oldest or idx < oldest) then oldest = idx end
        end
      end
    end
    local resets = math.ceil(now / 1000000)
    if oldest then resets = math.ceil((oldest + 30 + 1) * width / 1000000) end
    return math.max(used, 0), resets, held, at_head, used, oldest
  end
  -- rate: a token bucket refilling r per s; u is what is taken, t when it was last
  -- brought up to date (the fraction of a micro-unit owed is kept in t)
  local f = redis.call('HMGET', key, 'u', 't', 'h')
  local used, t, held = tonumber(f[1]) or 0, tonumber(f[2]), tonumber(f[3]) or 0
  if not t then
    t = now
    redis.call('HSET', key, 't', int(t))
  elseif now > t then
    local refill = w.r * (now - t) / w.s
    if used <= 0 or refill >= used then
      used, t = 0, now
    else
      local whole = math.floor(refill)
      used = used - whole
      t = t + math.floor(whole * w.s / w.r)
    end
    redis.call('HSET', key, 'u', int(used), 't', int(t))
  end
  local resets = math.ceil(now / 1000000)
  if used > 0 then resets = math.ceil((t + math.ceil(used * w.s / w.r)) / 1000000) end
  return used, resets, held
end

-- Append one event to the journal stream, capped near maxlen entries.
-- (n goes as a number: Redis writes an integer's digits itself, no string is made.)
local function journal(maxlen, kind, id, extra)
  local n = math.floor(tonumber(maxlen) or 0)
  if n <= 0 then return end
  if extra and extra ~= '' then
    redis.call('XADD', tag .. 'journal', 'MAXLEN', '~', n, '*', 'event', kind, 'id', id,
               'detail', extra)
  else
    redis.call('XADD', tag .. 'journal', 'MAXLEN', '~', n, '*', 'event', kind, 'id', id)
  end
end

-- Holds. <tag>hd:<id> is a string: one reservation packed with cmsgpack (no JSON,
-- no hash fields to read one by one), the array
--   {state, owner, expires_us, request_id, tz_offset_s, group, facts, charged,
--    then 6 per counter: name, kind, span_us, rate_micro, metric, amount}
-- group is the hourly rollups' group of what the hold is for (JSON text, as the
-- replica wrote it), facts what hold.lua answers (server/redis_ledger.h), charged
-- {} while held and what it was charged (7 amounts) once finished. A held one is in
-- <tag>hx by expiry; a finished one expires retain_s after it finished, and a
-- settled one keeps only the first 8 fields (finish, charge.lua).
local H_ST, H_OW, H_EX, H_RQ, H_TZ, H_GROUP, H_FACTS, H_CHARGED, H_C = 1, 2, 3, 4, 5, 6, 7, 8, 9

-- Packed fields (server/redis_ledger.h, dsc__redis_facts_pack): "<length>:<bytes>"
-- one after the other. Answers the fields as a table, or nil when s is not that.
local function unpack_fields(s)
  local out, at, len = {}, 1, #s
  while at <= len do
    local colon = string.find(s, ':', at, true)
    local n = colon and tonumber(string.sub(s, at, colon - 1))
    if not n or colon + n > len then return nil end
    out[#out + 1] = string.sub(s, colon + 1, colon + n)
    at = colon + n + 1
  end
  return out
end

local function pack_fields(t)
  local parts = {}
  for i, v in ipairs(t) do parts[i] = #v .. ':' .. v end
  return table.concat(parts)
end

-- The rollup group of a reservation and what it held of each metric (a table of 7,
-- or nil), from j, the facts kept with its hold (field j: org, team, user, key,
-- provider, model, zone, purpose, then the 7 amounts held; a hold taken by an
-- earlier version keeps its check's journal text there, JSON); nil when it has none.
-- Read only for a hold of the previous scripts (its group) and by the sweep (what
-- an expiry charges): a settle takes the group the replica wrote with the hold.
local function hold_charge(j)
  if not j or j == '' then return nil end
  local g, held = {}, nil
  if string.sub(j, 1, 1) == '{' then
    local ok, o = pcall(cjson.decode, j)
    if not ok or type(o) ~= 'table' then return nil end
    for i, k in ipairs({'org', 'team', 'user', 'key', 'provider', 'model', 'purpose'}) do
      g[i] = type(o[k]) == 'string' and o[k] or ''
    end
    if type(o.held) == 'table' and #o.held == 7 then held = o.held end
  else
    local f = unpack_fields(j)
    if not f or #f < 8 then return nil end
    g = {f[1], f[2], f[3], f[4], f[5], f[6], f[8]}
    if #f == 15 then
      held = {}
      for m = 1, 7 do held[m] = tonumber(f[8 + m]) or 0 end
    end
  end
  return cjson.encode(g), held
end

-- Reservation id's record as the array of "Holds" above, and whether it was written
-- by the previous scripts (a hash <tag>h:<id>: st, d JSON, g JSON, j), read into the
-- same array; nil when Redis knows neither. only_old: look at the old form only.
local function load_hold(id, only_old)
  if not only_old then
    local s = redis.call('GET', tag .. 'hd:' .. id)
    if s then return cmsgpack.unpack(s), false end
  end
  local h = redis.call('HMGET', tag .. 'h:' .. id, 'st', 'd', 'g', 'j')
  if not h[1] then return nil end
  local d = cjson.decode(h[2])
  local g = h[3] and cjson.decode(h[3]) or d.g or {}
  local rec = {h[1], d.ow or '', tonumber(d.ex) or 0, d.rq or '', tonumber(d.tz) or 0,
               hold_charge(h[4]) or '', h[4] or '', g}
  for _, c in ipairs(d.c) do
    local i = #rec
    rec[i + 1], rec[i + 2], rec[i + 3] = c.n, c.k, tonumber(c.s)
    rec[i + 4], rec[i + 5], rec[i + 6] = tonumber(c.r), tonumber(c.m), tonumber(c.a)
  end
  return rec, true
end
