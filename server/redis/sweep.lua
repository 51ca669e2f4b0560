-- sweep.lua - finish the holds whose expiry has passed, whichever replica took them.
--
--   EVALSHA <sha> 1 <tag>ver  policy max retain_s journal_maxlen
--
-- policy "charge" charges an expired hold as usage (state expired), "release"
-- releases it (state released). At most max holds are finished per call, oldest
-- expiry first, by Redis TIME. Every live replica may call it: each hold leaves
-- <tag>exp in the same atomic step that finishes it, so it is finished exactly
-- once. What an expiry charges goes to the hour's rollup. Answers {count, id1, id2, ...}.
local policy, max, retain_s, maxlen = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
if (policy ~= 'charge' and policy ~= 'release') or not max or max < 1 then
  return redis.error_reply('bad_request sweep arguments')
end
local now = now_us()
local due = redis.call('ZRANGEBYSCORE', tag .. 'exp', '-inf', int(now), 'LIMIT', 0, max)
local reply = {0}
for _, id in ipairs(due) do
  local h = redis.call('HMGET', tag .. 'h:' .. id, 'st', 'd', 'j')
  redis.call('ZREM', tag .. 'exp', id)
  if h[1] == 'held' then
    local d = cjson.decode(h[2])
    local charge, g = nil, {}
    if policy == 'charge' then
      charge = {0, 0, 0, 0, 0, 0, 0}
      -- every counter of one metric holds the request's same amount of it
      for _, c in ipairs(d.c) do charge[c.m + 1] = math.max(charge[c.m + 1], tonumber(c.a)) end
      for m = 1, 7 do g[m] = int(charge[m]) end
    end
    -- what the check held of every metric is what the expiry charges (a late settle
    -- then charges the difference), also of the metrics no budget counts
    local group, held = hold_charge(h[3])
    if charge and held then
      for m = 1, 7 do g[m] = int(tonumber(held[m]) or 0) end
    end
    for _, c in ipairs(d.c) do
      local key, w = tag .. 'c:' .. c.n, stored_window(c)
      local used, _, held, at_head = advance(key, w, d.tz, now)
      put_counter(key, w, now, used, held, at_head or 0, -tonumber(c.a),
                  charge and tonumber(c.a) or 0)
    end
    if charge then rollup(now, group, held or charge) end
    finish(id, d, charge and 'expired' or 'released', g, retain_s)
    journal(maxlen, charge and 'expire' or 'release', id, '')
    reply[1] = reply[1] + 1
    reply[#reply + 1] = id
  end
end
return reply
