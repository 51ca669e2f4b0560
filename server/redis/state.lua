-- state.lua - counters as of now (Redis TIME), for budget reads and the check's
-- budget states.
--
--   EVALSHA <sha> 1 <tag>ver  tz_offset_s n  then n times: counter kind span_us rate_micro
--
-- Answers {version, used1, held1, resets1, ...}; the version lets the caller tell
-- whether its budget definitions are current.
local off, n = tonumber(ARGV[1]), tonumber(ARGV[2])
if not off or not n or n < 0 or #ARGV ~= 2 + 4 * n then
  return redis.error_reply('bad_request state arguments')
end
local now = now_us()
local reply = {redis.call('GET', KEYS[1]) or '0'}
for i = 1, n do
  local b = 2 + (i - 1) * 4
  local key = tag .. 'c:' .. ARGV[b + 1]
  local w = {k = ARGV[b + 2], s = tonumber(ARGV[b + 3]), r = tonumber(ARGV[b + 4])}
  if not w.s or not w.r then return redis.error_reply('bad_request counter ' .. i) end
  local used, resets, held = advance(key, w, off, now)
  reply[#reply + 1] = used -- integer replies: no string to format
  reply[#reply + 1] = held
  reply[#reply + 1] = resets
end
return reply
