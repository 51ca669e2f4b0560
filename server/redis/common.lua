-- common.lua - what every discern ledger script shares: keys, the clock, windows,
-- counters and the journal. The loader (server/redis_scripts.c) puts this text in
-- front of each script before SCRIPT LOAD, so each EVALSHA body is self-contained
-- and the helpers exist once.
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
--   <tag>h:<id>         hash: one reservation (st state, d JSON detail)
--   <tag>rq:<request>   request id -> reservation id (idempotent checks)
--   <tag>exp            sorted set: held reservation ids by expiry (unix µs)
--   <tag>journal        stream: the decision journal of every replica (capped)
--   <tag>keys           hash: API key id -> its entry (hash, role, scope; no token)
--   <tag>kver           API keys version (INCR on every change)
--
-- The clock. Every script reads Redis TIME: windows reset and holds expire by the
-- Redis server's clock, the one clock all replicas share.
--
-- Numbers. Redis Lua numbers are doubles: amounts (integer micro-units) are exact
-- up to 2^53 µ (9e9 API units) per counter.
local tag = string.sub(KEYS[1], 1, -4)
local US = 1000000
local DAY = 86400
local BUCKETS = 30

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * US + tonumber(t[2])
end

local function floor_div(a, b)
  return math.floor(a / b)
end

local function int(x)
  return string.format('%d', x)
end

-- Days since 1970-01-01 of a civil date (proleptic Gregorian, m 1..12).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor_div(y, 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = floor_div(153 * mp + 2, 5) + d - 1
  local doe = yoe * 365 + floor_div(yoe, 4) - floor_div(yoe, 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = floor_div(z, 146097)
  local doe = z - era * 146097
  local yoe = floor_div(doe - floor_div(doe, 1460) + floor_div(doe, 36524) - floor_div(doe, 146096), 365)
  local doy = doe - (365 * yoe + floor_div(yoe, 4) - floor_div(yoe, 100))
  local mp = floor_div(5 * doy + 2, 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end

-- The calendar period [start, end) in unix seconds of kind containing t (seconds),
-- in a fixed offset off (seconds east of UTC).
local function period(kind, off, t)
  local z = floor_div(t + off, DAY)
  local zs, ze
  if kind == 'day' then
    zs, ze = z, z + 1
  elseif kind == 'week' then
    zs = z - ((z + 3) % 7) -- 1970-01-01 was a Thursday; weeks start on Monday
    ze = zs + 7
  else
    local y, m = civil_from_days(z)
    if kind == 'month' then
      zs = days_from_civil(y, m, 1)
      ze = m == 12 and days_from_civil(y + 1, 1, 1) or days_from_civil(y, m + 1, 1)
    else
      zs, ze = days_from_civil(y, 1, 1), days_from_civil(y + 1, 1, 1)
    end
  end
  return zs * DAY - off, ze * DAY - off
end

-- A window as the caller describes it: {k = kind, s = span_us, r = rate_micro}.
local function is_calendar(w)
  return w.k == 'day' or w.k == 'week' or w.k == 'month' or w.k == 'year'
end

-- Bring counter key to now: reset a calendar period, drop rolling buckets that left
-- the window, refill a token bucket. Returns used (>= 0), when it next goes down
-- (unix seconds) and what is held on it, read in the same call (each redis.call
-- costs a few µs: the hot path counts them).
local function advance(key, w, off, now)
  if is_calendar(w) then
    local s, e = period(w.k, off, floor_div(now, US))
    local f = redis.call('HMGET', key, 'u', 'p', 'h')
    local held = tonumber(f[3]) or 0
    if tonumber(f[2]) ~= s then
      redis.call('HSET', key, 'u', 0, 'p', s)
      return 0, e, held
    end
    return math.max(tonumber(f[1]) or 0, 0), e, held
  elseif w.k == 'rolling' then
    local width = floor_div(w.s, BUCKETS)
    local head = floor_div(now, width)
    local all = redis.call('HGETALL', key)
    local used, oldest, held = 0, nil, 0
    for i = 1, #all, 2 do
      local idx = tonumber(string.match(all[i], '^b(%-?%d+)$') or '')
      if all[i] == 'h' then
        held = tonumber(all[i + 1]) or 0
      elseif idx then
        if idx < head - BUCKETS then
          redis.call('HDEL', key, all[i])
        else
          local v = tonumber(all[i + 1])
          used = used + v
          if v > 0 and (not oldest or idx < oldest) then oldest = idx end
        end
      end
    end
    local resets = math.ceil(now / US)
    if oldest then resets = math.ceil((oldest + BUCKETS + 1) * width / US) end
    return math.max(used, 0), resets, held
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
  local resets = math.ceil(now / US)
  if used > 0 then resets = math.ceil((t + math.ceil(used * w.s / w.r)) / US) end
  return used, resets, held
end

-- Add amount (may be negative: a correction) to counter key at now, after advance.
-- A calendar or rate counter never goes below zero.
local function add_used(key, w, now, amount)
  if amount == 0 then return end
  if w.k == 'rolling' then
    redis.call('HINCRBY', key, 'b' .. int(floor_div(now, floor_div(w.s, BUCKETS))), int(amount))
    return
  end
  local u = redis.call('HINCRBY', key, 'u', int(amount))
  if u < 0 then redis.call('HSET', key, 'u', 0) end
end

-- Append one event to the journal stream, capped near maxlen entries.
local function journal(maxlen, kind, id, extra)
  local n = tonumber(maxlen) or 0
  if n <= 0 then return end
  local args = {'XADD', tag .. 'journal', 'MAXLEN', '~', int(n), '*', 'event', kind, 'id', id}
  if extra and extra ~= '' then
    args[#args + 1] = 'detail'
    args[#args + 1] = extra
  end
  redis.call(unpack(args))
end

-- A reservation's counter keeps its window as text (JSON numbers lose digits).
local function stored_window(c)
  return {k = c.k, s = tonumber(c.s), r = tonumber(c.r)}
end

-- Charge or release every counter of a held reservation d at now: used += charge[m]
-- (the metric's charge, a table indexed by metric), held -= what was held.
local function release_hold(d, now, charge)
  for _, c in ipairs(d.c) do
    local key, w = tag .. 'c:' .. c.n, stored_window(c)
    advance(key, w, d.tz, now)
    redis.call('HINCRBY', key, 'h', int(-tonumber(c.a)))
    if charge then add_used(key, w, now, charge[c.m + 1] or 0) end
  end
end

-- The reservation's record after it leaves the held state.
local function finish(id, d, state, charged, retain_s)
  d.g = charged
  redis.call('HSET', tag .. 'h:' .. id, 'st', state, 'd', cjson.encode(d))
  redis.call('ZREM', tag .. 'exp', id)
  redis.call('EXPIRE', tag .. 'h:' .. id, math.max(tonumber(retain_s) or 600, 1))
  if d.rq and d.rq ~= '' then
    redis.call('EXPIRE', tag .. 'rq:' .. d.rq, math.max(tonumber(retain_s) or 600, 1))
  end
end

-- Hourly rollups: what reports and a new budget's past usage read. <tag>ru:<hour>
-- (hour: unix seconds of its start, by Redis TIME) is a hash whose fields are JSON
-- arrays {org, team, user, key, provider, model, purpose} (a charge's subject and
-- what its hold was for) and whose values are the 7 metrics' sums of that hour's
-- charges, "v1,...,v7" (micro-units; a late settle's correction may be negative).
-- Each hour's hash is kept ROLLUP_TTL seconds (400 days: a year's window and then
-- some) from its first charge.
local ROLLUP_TTL = 400 * DAY

local function rollup(now, group, charge)
  if not group or group == '' then return end
  local any = false
  for m = 1, 7 do any = any or (tonumber(charge[m]) or 0) ~= 0 end
  if not any then return end
  local key = tag .. 'ru:' .. int(floor_div(now, 3600 * US) * 3600)
  local old = redis.call('HGET', key, group)
  local v, i = {}, 1
  if old then
    for x in string.gmatch(old, '[^,]+') do
      v[i] = tonumber(x) or 0
      i = i + 1
    end
  end
  for m = 1, 7 do v[m] = int((v[m] or 0) + (tonumber(charge[m]) or 0)) end
  redis.call('HSET', key, group, table.concat(v, ','))
  if not old then redis.call('EXPIRE', key, ROLLUP_TTL) end
end

-- The rollup group of reservation id and what it held of each metric (a table of 7,
-- or nil), from the check's decision kept with its hold (field j; its 'held');
-- nil when it has none.
local function hold_charge(id)
  local j = redis.call('HGET', tag .. 'h:' .. id, 'j')
  if not j or j == '' then return nil end
  local ok, o = pcall(cjson.decode, j)
  if not ok or type(o) ~= 'table' then return nil end
  local g = {}
  for i, k in ipairs({'org', 'team', 'user', 'key', 'provider', 'model', 'purpose'}) do
    g[i] = type(o[k]) == 'string' and o[k] or ''
  end
  local held = nil
  if type(o.held) == 'table' and #o.held == 7 then held = o.held end
  return cjson.encode(g), held
end
