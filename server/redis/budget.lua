-- budget.lua - set or delete one budget definition and tell every replica.
--
--   EVALSHA <sha> 1 <tag>ver  id definition
--   EVALSHA <sha> 1 <tag>ver  id definition tz_offset_s kind span_us rate_micro
--           then per counter: counter m, then m times: hour_s amount
--
-- id "" hands out the next id (<tag>bid); definition "" deletes the budget. The
-- definitions hash and the version change in one step, and the new version is
-- PUBLISHed on channel <tag>budgets: replicas subscribed reload at once, and every
-- reserve carries the version it was checked against, so a replica that missed the
-- message is told 'stale' on its next hold. Answers {id, version}.
--
-- The second form is a new budget that counts the usage already in its window: for
-- each counter, the hourly rollups' sums of its metric for the subjects it counts,
-- each pair the sum of hours that count alike (hour_s: the first one's start; all
-- the hours of a calendar period, the hours of one rolling bucket). In the same step as the definition (no replica charges
-- the counter before it), a calendar counter's used becomes the sum of the hours
-- that begin in its current period (by Redis TIME), a rolling counter's buckets
-- become those hours' sums, each in the bucket of its hour's start (what is held
-- stays).
if #ARGV ~= 2 and #ARGV < 6 then return redis.error_reply('bad_request budget arguments') end
local id, def = ARGV[1], ARGV[2]
local seed = {}
if #ARGV > 2 then
  local w = {k = ARGV[4], s = tonumber(ARGV[5]), r = tonumber(ARGV[6])}
  local off = tonumber(ARGV[3])
  if def == '' or not off or not w.s or not w.r or (not is_calendar(w) and w.k ~= 'rolling') then
    return redis.error_reply('bad_request budget seed')
  end
  local i = 7 -- every counter is read before anything is written
  while i <= #ARGV do
    local c = {n = ARGV[i], m = tonumber(ARGV[i + 1]), h = {}}
    if not c.m or c.m < 0 or i + 1 + 2 * c.m > #ARGV then
      return redis.error_reply('bad_request budget seed counter')
    end
    for j = 1, c.m do
      local hour, v = tonumber(ARGV[i + 2 * j]), tonumber(ARGV[i + 2 * j + 1])
      if not hour or not v then return redis.error_reply('bad_request budget seed hour') end
      c.h[j] = {hour, v}
    end
    seed[#seed + 1] = c
    i = i + 2 + 2 * c.m
  end
  seed.w, seed.off = w, off
end
if id == '' then
  if def == '' then return redis.error_reply('bad_request budget id missing') end
  id = tostring(redis.call('INCR', tag .. 'bid'))
end
if def == '' then
  redis.call('HDEL', tag .. 'budgets', id)
else
  redis.call('HSET', tag .. 'budgets', id, def)
end
if seed.w then
  local w, now = seed.w, now_us()
  for _, c in ipairs(seed) do
    local key = tag .. 'c:' .. c.n
    if is_calendar(w) then
      local s = period(w.k, seed.off, math.floor(now / US))
      local used = 0
      for _, h in ipairs(c.h) do
        if h[1] >= s then used = used + h[2] end
      end
      redis.call('HSET', key, 'u', int(math.max(used, 0)), 'p', s)
    else
      local width = math.floor(w.s / BUCKETS)
      local head = math.floor(now / width)
      local fields = redis.call('HKEYS', key)
      for _, f in ipairs(fields) do
        if string.match(f, '^b%-?%d+$') then redis.call('HDEL', key, f) end
      end
      for _, h in ipairs(c.h) do
        local idx = math.floor(h[1] * US / width)
        if idx >= head - BUCKETS and idx <= head and h[2] ~= 0 then
          redis.call('HINCRBY', key, 'b' .. int(idx), int(h[2]))
        end
      end
    end
  end
end
local version = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', tag .. 'budgets', version)
return {id, version}
