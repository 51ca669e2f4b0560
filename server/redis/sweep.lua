-- sweep.lua - finish the holds whose expiry has passed, whichever replica took them.
--
--   EVALSHA <sha> 1 <tag>ver  policy max retain_s journal_maxlen
--
-- policy "charge" charges an expired hold as usage (state expired), "release"
-- releases it (state released). At most max holds are finished per call, oldest
-- expiry first, by Redis TIME. Every live replica may call it: each hold leaves
-- its expiry set (<tag>hx; <tag>exp for the previous scripts' holds, swept after)
-- in the same atomic step that finishes it, so it is finished exactly once. What
-- an expiry charges goes to the hour's rollup. Answers {count, id1, id2, ...}.
local policy, max, retain_s, maxlen = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
if (policy ~= 'charge' and policy ~= 'release') or not max or max < 1 then
  return redis.error_reply('bad_request sweep arguments')
end
local now = now_us()
local reply = {0}

-- Finish the due ids of one expiry set (old: <tag>exp, the previous scripts' holds).
local function sweep(set, old, limit)
  local due = redis.call('ZRANGEBYSCORE', tag .. set, '-inf', int(now), 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    local h = load_hold(id, old)
    redis.call('ZREM', tag .. set, id)
    if h and h[H_ST] == 'held' then
      local charge, g = nil, {}
      if policy == 'charge' then
        charge = {0, 0, 0, 0, 0, 0, 0}
        -- every counter of one metric holds the request's same amount of it
        for c = H_C, #h, 6 do
          local m = h[c + 4] + 1
          if h[c + 5] > charge[m] then charge[m] = h[c + 5] end
        end
        g = charge
      end
      -- what the check held of every metric is what the expiry charges (a late settle
      -- then charges the difference), also of the metrics no budget counts
      local _, held = hold_charge(h[H_FACTS])
      if charge and held then g = held end
      for c = H_C, #h, 6 do
        touch(tag .. 'c:' .. h[c], {k = h[c + 1], s = h[c + 2], r = h[c + 3]}, h[H_TZ], now,
              -h[c + 5], charge and h[c + 5] or 0)
      end
      if charge then rollup(now, h[H_GROUP], g) end
      finish(id, h, charge and 'expired' or 'released', g, retain_s, false, old)
      journal(maxlen, charge and 'expire' or 'release', id, '')
      reply[1] = reply[1] + 1
      reply[#reply + 1] = id
    end
  end
  return #due
end

local swept = sweep('hx', false, max)
if swept < max then sweep('exp', true, max - swept) end
return reply
