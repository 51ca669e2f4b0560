-- rollups.lua - read the hourly rollups (common.lua) of the hours [from, to), a
-- bounded page at a time, for reports and a new budget's past usage.
--
--   EVALSHA <sha> 1 <tag>ver  from_hour to_hour cursor budget
--
-- Hours are unix seconds of an hour's start; cursor is the HSCAN cursor within
-- from_hour ('0' to start it). Reads the hours' hashes in order until about budget
-- fields were read, or 744 hours (a month) were passed. Answers {next_hour, next_cursor, now_s, hour1, group1, sums1,
-- ...}: the next call starts at next_hour and next_cursor (next_hour >= to_hour:
-- done); now_s is Redis TIME, the clock the rollups' hours follow.
local from, to, cursor, budget = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if #ARGV ~= 4 or not from or not to or not budget or budget < 1 or budget > 10000 or
    from % 3600 ~= 0 then
  return redis.error_reply('bad_request rollups arguments')
end
local reply = {'', '', int(math.floor(now_us() / US))}
local hour, read, passed = from, 0, 0
while hour < to and read < budget and passed < 744 do
  local page = redis.call('HSCAN', tag .. 'ru:' .. int(hour), cursor, 'COUNT', budget - read)
  for i = 1, #page[2], 2 do
    reply[#reply + 1] = int(hour)
    reply[#reply + 1] = page[2][i]
    reply[#reply + 1] = page[2][i + 1]
    read = read + 1
  end
  cursor = page[1]
  if cursor == '0' then hour, passed = hour + 3600, passed + 1 end
end
reply[1] = int(hour)
reply[2] = cursor
return reply
